"""The client's transports: how JSON objects travel to and from the server.

A transport sends one object at a time from any thread (`send`) and runs one receive thread
that hands each incoming object to `on_event` and, once, the end of the connection to
`on_closed`. TCP carries the native JSON-lines mode; other transports (UDP, TLS) can follow
the same shape.
"""

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

from threadchat.transports.tls import wrap_client

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7000
# How long connecting may take before the client gives up.
CONNECT_TIMEOUT = 10.0
# The longest server line the client buffers. The largest legitimate events (a room list on a
# big server) stay far below; a server that sends more without a newline is not speaking JSON
# lines, and the client must not buffer it without bound.
MAX_LINE = 1024 * 1024


class Transport(Protocol):
    """What the client needs from a transport (TCP now; UDP and TLS can follow)."""

    closed: threading.Event

    def send(self, obj: dict[str, Any]) -> bool: ...

    def start(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_closed: Callable[[str | None], None],
    ) -> None: ...

    def close(self) -> None: ...

    def unsent(self) -> int:
        """Requests sent but not yet taken by the server, which closing now would lose."""
        ...


class AddressError(ValueError):
    pass


def parse_address(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; defaults fill in what is left out."""
    text = text.strip()
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            raise AddressError(f"bad address {text!r}: expected [IPv6] or [IPv6]:PORT")
        host, port = text[1:end], text[end + 2 :]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port:
        return host or DEFAULT_HOST, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"bad port {port!r} in {text!r}")
    return host or DEFAULT_HOST, int(port)


class TcpTransport:
    """The native protocol's JSON mode over one TCP connection."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = CONNECT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Connect (raises OSError when that fails, ssl.SSLError for a TLS problem such as an
        unverified certificate); receiving starts with `start`.

        With `tls` the socket is a tls.TlsChannel, which (unlike an SSLSocket) may be read
        by the receive thread while `send` writes from another.
        """
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            try:
                sock = wrap_client(sock, host, tls, timeout)  # type: ignore[assignment]
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def send(self, obj: dict[str, Any]) -> bool:
        """Send one object; False when the connection is already gone. Safe from any thread."""
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def start(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_closed: Callable[[str | None], None],
    ) -> None:
        """Run the receive thread. `on_closed(problem)` gets None after a clean EOF."""
        self.thread = threading.Thread(
            target=self._receive, args=(on_event, on_closed), name="receive", daemon=True
        )
        self.thread.start()

    def _receive(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_closed: Callable[[str | None], None],
    ) -> None:
        problem: str | None = None
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE:
                    problem = "the server sent an over-long line"
                    break
                for line in lines:
                    event = _decode(line)
                    if event is not None:
                        on_event(event)
        except OSError as error:
            problem = error.strerror or str(error) or type(error).__name__
        finally:
            self.closed.set()
            self._close_socket()
        on_closed(problem)

    def unsent(self) -> int:
        # What sendall gave the kernel is the kernel's to deliver, closed or not.
        return 0

    def close(self) -> None:
        """Close the connection; the receive thread ends. Safe from any thread, idempotent."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._close_socket()

    def _close_socket(self) -> None:
        with self._send_lock:
            self.sock.close()


def _decode(line: bytes) -> dict[str, Any] | None:
    # A line that is not a JSON object is skipped: showing it raw could carry escapes, and one
    # bad line is no reason to drop a working connection.
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None
