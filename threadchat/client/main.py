"""`threadchat connect`: the terminal client.

Two threads, as in the classic exercise: the input thread reads what the user types and sends
it; the transport's receive thread prints what arrives. On a terminal, input is a
prompt_toolkit prompt and incoming lines appear above it; otherwise stdin is read line by line
and events are printed as plain lines, so the client can be scripted.
"""

import argparse
import contextlib
import os
import ssl
import sys
import threading
from typing import Any

from threadchat.client import render
from threadchat.client.chat import (
    CLOSED,
    LOGIN_NEEDED,
    REFUSED,
    REGISTERED,
    ChatClient,
    holds_password,
)
from threadchat.client.render import Line
from threadchat.client.transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    AddressError,
    TcpTransport,
    Transport,
    parse_address,
)
from threadchat.transports.tls import client_context

# How long the client waits for the server to close after it sent quit.
QUIT_WAIT = 5.0
# How long registration (hello -> welcome) may take.
REGISTER_WAIT = 10.0
# Where a client without a terminal finds the password of a registered name (as PGPASSWORD).
PASSWORD_VARIABLE = "THREADCHAT_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address",
        nargs="?",
        default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        help=f"HOST[:PORT] of the server's line port (default {DEFAULT_HOST}:{DEFAULT_PORT})",
    )
    parser.add_argument("--name", help="your nickname (asked for when not given)")
    parser.add_argument(
        "--udp",
        action="store_true",
        help="speak the UDP datagram protocol to the server's udp_port (same default port)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--cafile", help="PEM file of the CA (or self-signed certificate) to trust (implies --tls)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="TLS without checking the server's certificate (implies --tls; testing only)",
    )


class _StdinLines:
    """Lines from file descriptor 0, read with os.read.

    Unbuffered reads on purpose: the input thread may still be blocked here when the client
    exits, and a thread blocked inside sys.stdin's buffer would hold its lock at shutdown.
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._buffer = b""
        self._eof = False

    def readline(self) -> str | None:
        """The next line without its terminator, or None at end of input."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = os.read(self.fd, 65536)
            self._eof = not chunk
            self._buffer += chunk
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace").removesuffix("\r")


class _PlainUI:
    """Scripted use: stdin lines in, plain lines out."""

    def __init__(self) -> None:
        self.stdin = _StdinLines()
        self._print_lock = threading.Lock()
        self._finished = threading.Event()
        # Offered once: a wrong one is reported, not retried.
        self._password = os.environ.get(PASSWORD_VARIABLE) or None

    def ask_name(self, problem: str | None) -> str | None:
        if problem is not None:
            return None  # nobody to ask again: the caller reports the refusal
        line = self.stdin.readline()
        return line.strip() if line is not None else None

    def ask_password(self, name: str) -> str | None:
        # Never from stdin: a script unaware that the name is registered would send its
        # next chat line as a password.
        password, self._password = self._password, None
        return password

    def show(self, lines: list[Line]) -> None:
        with self._print_lock:
            for line in lines:
                print(render.to_plain(line), flush=True)

    def run(self, client: ChatClient) -> None:
        """Send stdin lines until EOF or /quit (then quit), or until the server goes away."""

        def read() -> None:
            while not client.closed.is_set():
                line = self.stdin.readline()
                if line is None:
                    client.quit()
                    break
                if not client.handle_input(line):
                    break
            finished.set()

        finished = self._finished
        threading.Thread(target=read, name="input", daemon=True).start()
        finished.wait()

    def wake(self) -> None:
        """The connection ended: stop waiting for input."""
        self._finished.set()


class _TtyUI:
    """A person at a terminal: a prompt that stays at the bottom, colours, the room shown."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory

        class _History(InMemoryHistory):
            # Up-arrow recall must not bring a password back on the screen.
            def append_string(self, string: str) -> None:
                if not holds_password(string):
                    super().append_string(string)

        # erase_when_done: an accepted line leaves the screen; what it did (the message as
        # sent, the join) is shown instead, so nothing appears twice (and a typed password
        # does not stay).
        self.session: Any = PromptSession(erase_when_done=True, history=_History())
        self._print_lock = threading.Lock()
        self._client: ChatClient | None = None

    def ask_name(self, problem: str | None) -> str | None:
        # A refusal was already shown as the server's error line: just ask again.
        try:
            name = str(self.session.prompt("your name: ")).strip()
        except (EOFError, KeyboardInterrupt):
            return None
        return name or self.ask_name(None)

    def ask_password(self, name: str) -> str | None:
        """The password of the registered `name`, typed unseen; None to pick another name."""
        from prompt_toolkit import prompt

        # A prompt of its own: the session's history must never hold a password.
        try:
            password = str(prompt(f"password for {name} (empty: another name): ", is_password=True))
        except (EOFError, KeyboardInterrupt):
            return None
        return password or None

    def show(self, lines: list[Line]) -> None:
        # Under patch_stdout(raw=True) a print appears above the prompt; raw so that the
        # colours pass, which is safe because render neutralised every control from the wire.
        with self._print_lock:
            for line in lines:
                print(render.to_ansi(line), flush=True)

    def run(self, client: ChatClient) -> None:
        from prompt_toolkit.patch_stdout import patch_stdout

        self._client = client
        with patch_stdout(raw=True):
            while not client.closed.is_set():
                try:
                    line = self.session.prompt(client.prompt_text, pre_run=self._stop_if_closed)
                except (EOFError, KeyboardInterrupt):
                    if not client.closed.is_set():
                        client.quit()
                    return
                if not client.handle_input(line):
                    return

    def _stop_if_closed(self) -> None:
        # Runs in the prompt's event loop, both from pre_run and from wake().
        if self._client is not None and self._client.closed.is_set():
            self.session.app.exit(exception=EOFError())

    def wake(self) -> None:
        """The connection ended: end the prompt (from the receive thread)."""
        app = self.session.app
        loop = app.loop
        if app.is_running and loop is not None:
            # A RuntimeError means that loop has ended; pre_run sees `closed` before the next
            # prompt.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_if_closed)


def _connect(
    address: str, udp: bool = False, tls: ssl.SSLContext | None = None
) -> tuple[Transport | None, str]:
    # The one place that picks a transport.
    try:
        host, port = parse_address(address)
    except AddressError as problem:
        return None, str(problem)
    if udp and tls is not None:
        return None, "--udp and --tls cannot be combined"
    try:
        if udp:
            from threadchat.client.udp import UdpTransport

            return UdpTransport(host, port), ""
        return TcpTransport(host, port, tls=tls), ""
    except ssl.SSLCertVerificationError as problem:
        detail = problem.verify_message or problem.reason
        return None, (
            f"cannot connect to {host}:{port}: the server's certificate is not trusted "
            f"({detail}); --cafile FILE trusts it, --insecure skips the check"
        )
    except OSError as problem:
        return None, f"cannot connect to {host}:{port}: {problem.strerror or problem}"


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    ui: _PlainUI | _TtyUI = _TtyUI() if interactive else _PlainUI()
    name = args.name or ui.ask_name(None)
    if not name:
        print("threadchat: no name given", file=sys.stderr)
        return 2
    context = None
    if args.tls or args.cafile or args.insecure:
        try:
            context = client_context(args.cafile, args.insecure)
        except OSError as error:  # an unreadable --cafile
            print(f"threadchat: cannot use {args.cafile}: {error}", file=sys.stderr)
            return 1
    transport, problem = _connect(args.address, getattr(args, "udp", False), context)
    if transport is None:
        print(f"threadchat: {problem}", file=sys.stderr)
        return 1
    client = ChatClient(transport.send, ui.show)

    def on_closed(problem: str | None) -> None:
        client.handle_closed(problem)
        ui.wake()

    transport.start(client.handle_event, on_closed)
    password: str | None = None
    try:
        while True:
            client.hello(name, password)
            outcome, detail = client.wait_registered(REGISTER_WAIT)
            if outcome == REGISTERED:
                break
            if outcome == CLOSED:
                print(f"threadchat: {detail}", file=sys.stderr)
                return 1
            if outcome == LOGIN_NEEDED:
                # The name is an account's: log in to it (again, after a wrong password).
                password = ui.ask_password(name)
                if password is not None:
                    continue
            assert outcome in (REFUSED, LOGIN_NEEDED)
            password = None  # it was for that name
            retry = ui.ask_name(detail)
            if not retry:
                print(f"threadchat: {detail}", file=sys.stderr)
                return 1
            name = retry
        try:
            ui.run(client)
        except KeyboardInterrupt:
            client.quit()
        if client.quitting:
            # Quitting is clean once the server closes; if it does not, close anyway. But
            # not while the server is still taking what was sent before the quit (over UDP
            # it paces a pasted flood by holding it unacknowledged): closing would lose it.
            # A server that stops making progress ends the session itself (give-up time).
            while not client.closed.wait(QUIT_WAIT) and transport.unsent():
                pass
            return 0
        print(f"threadchat: {client.reason()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while waiting for the server to accept the name
        return 130
    finally:
        transport.close()
