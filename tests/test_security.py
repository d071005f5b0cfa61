"""Security checks on every path in: logins are rate-limited per account and per address
whatever the protocol, no password ever reaches the logs (at debug level too), TLS refuses
versions below 1.2 on every TCP listener, and private messages, mutes and bans hold
whatever protocol each user speaks.

A login path is a function that logs a fresh guest in to an account over one protocol and
says what the client was told: "ok", or the refusal it was given in its own protocol.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import queue
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import WAIT, IrcClient, JsonClient, LineClient
from test_udp import UdpClient
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import parse
from threadchat.services import accounts

PASSWORD = "correct-horse-battery"
_guests = itertools.count()


def guest() -> str:
    return f"guest{next(_guests)}"


def sasl_plain(name: str, password: str) -> str:
    return base64.b64encode(f"{name}\0{name}\0{password}".encode()).decode()


@contextlib.contextmanager
def closing(client: LineClient) -> Iterator[LineClient]:
    try:
        yield client
    finally:
        client.close()


# -- the login paths: each says "ok" or what refusal its client was given ---------------------


def text_login(server: Server, name: str, password: str) -> str:
    with closing(LineClient(server.listener("line").port)) as client:
        client.send(guest())
        client.expect("--- in lobby:")
        client.send(f"/login {name} {password}")
        line = client.expect(lambda line: "logged in as" in line or line.startswith("!!! "))
        return "ok" if "logged in as" in line else line


def text_first_line_login(server: Server, name: str, password: str) -> str:
    # The first line may be a login: it names the user after the account.
    with closing(LineClient(server.listener("line").port)) as client:
        client.send(f"/login {name} {password}")
        line = client.expect(lambda line: "logged in as" in line or line.startswith("!!! "))
        return "ok" if "logged in as" in line else line


def json_login(server: Server, name: str, password: str) -> str:
    with closing(JsonClient(server.listener("line").port)) as client:
        assert isinstance(client, JsonClient)
        client.send_json(type="hello", name=guest())
        client.expect_event("who", room="lobby")
        client.send_json(type="login", name=name, password=password, ref=1)
        event = _json_answer(client)
        return "ok" if event["type"] == "logged_in" else f"{event['code']}: {event['message']}"


def json_hello_login(server: Server, name: str, password: str) -> str:
    with closing(JsonClient(server.listener("line").port)) as client:
        assert isinstance(client, JsonClient)
        client.send_json(type="hello", name=name, password=password, ref=1)
        event = _json_answer(client)
        return (
            "ok"
            if event["type"] in ("logged_in", "welcome")
            else (f"{event['code']}: {event['message']}")
        )


def _json_answer(client: JsonClient) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        event = client.read_event(max(0.0, deadline - time.monotonic()))
        if event["type"] == "logged_in" or (event["type"] == "error" and event.get("ref") == 1):
            return event


def irc_sasl_login(server: Server, name: str, password: str) -> str:
    with closing(IrcClient(server.listener("irc").port)) as client:
        assert isinstance(client, IrcClient)
        client.send("CAP LS 302", "CAP REQ :sasl", f"NICK {guest()}", "USER g 0 * :G")
        client.expect_msg("CAP", lambda m: m.params[1] == "ACK")
        client.send("AUTHENTICATE PLAIN")
        client.expect_msg("AUTHENTICATE")
        client.send(f"AUTHENTICATE {sasl_plain(name, password)}")
        reply = parse(client.expect(lambda line: parse(line).command in ("903", "904")))
        return "ok" if reply.command == "903" else f"904 {reply.params[-1]}"


def irc_pass_login(server: Server, name: str, password: str) -> str:
    # PASS logs in to the nick's account (the server has no connection password).
    with closing(IrcClient(server.listener("irc").port)) as client:
        client.send(f"PASS {password}", f"NICK {name}", "USER g 0 * :G")
        line = client.expect(
            lambda line: parse(line).command == "001" or "did not log you in" in line
        )
        return "ok" if parse(line).command == "001" else parse(line).params[-1]


def irc_nickserv_login(server: Server, name: str, password: str) -> str:
    with closing(IrcClient(server.listener("irc").port)) as client:
        assert isinstance(client, IrcClient)
        client.register(guest())
        client.send(f"PRIVMSG NickServ :IDENTIFY {name} {password}")
        line = parse(client.expect(lambda line: parse(line).source.startswith("NickServ")))
        return "ok" if "identified for" in line.params[-1] else line.params[-1]


def udp_login(server: Server, name: str, password: str) -> str:
    assert server.udp is not None
    client = UdpClient(server.udp.port, guest())
    try:
        client.expect_event("who", room="lobby")
        client.send(type="login", name=name, password=password, ref=1)
        deadline = time.monotonic() + WAIT
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            event = client.events.get(timeout=remaining)
            if event["type"] == "logged_in":
                return "ok"
            if event["type"] == "error" and event.get("ref") == 1:
                return f"{event['code']}: {event['message']}"
    finally:
        client.close()


def _ws(server: Server, subprotocol: str) -> ClientConnection:
    port = server.listener("web").port
    return connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[Subprotocol(subprotocol)],
        open_timeout=WAIT,
        close_timeout=WAIT,
        # Unbounded: a client left with unread messages would otherwise stop reading, miss
        # the server's close frame and wait out close_timeout.
        max_queue=None,
    )


def _ws_lines(ws: ClientConnection) -> Iterator[str]:
    deadline = time.monotonic() + WAIT
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        yield message if isinstance(message, str) else message.decode()


def web_json_login(server: Server, name: str, password: str) -> str:
    with _ws(server, "threadchat.json") as ws:
        ws.send(json.dumps({"type": "hello", "name": guest()}))
        ws.send(json.dumps({"type": "login", "name": name, "password": password, "ref": 1}))
        for line in _ws_lines(ws):
            event = json.loads(line)
            if event["type"] == "logged_in":
                return "ok"
            if event["type"] == "error" and event.get("ref") == 1:
                return f"{event['code']}: {event['message']}"
    raise AssertionError("unreachable")


def web_irc_sasl_login(server: Server, name: str, password: str) -> str:
    with _ws(server, "text.ircv3.net") as ws:
        for line in ("CAP LS 302", "CAP REQ :sasl", f"NICK {guest()}", "USER g 0 * :G",
                     "AUTHENTICATE PLAIN"):  # fmt: skip
            ws.send(line)
        lines = _ws_lines(ws)
        next(line for line in lines if parse(line).command == "AUTHENTICATE")
        ws.send(f"AUTHENTICATE {sasl_plain(name, password)}")
        reply = parse(next(line for line in lines if parse(line).command in ("903", "904")))
        return "ok" if reply.command == "903" else f"904 {reply.params[-1]}"


LOGIN_PATHS: dict[str, Callable[[Server, str, str], str]] = {
    "text /login": text_login,
    "text first line": text_first_line_login,
    "json login": json_login,
    "json hello": json_hello_login,
    "irc sasl": irc_sasl_login,
    "irc pass": irc_pass_login,
    "irc nickserv": irc_nickserv_login,
    "udp": udp_login,
    "web json": web_json_login,
    "web irc sasl": web_irc_sasl_login,
}
# Where the protocol can say why (SASL has one failure numeric, 904, for all of them).
SAYS_WHY = {path for path in LOGIN_PATHS if "sasl" not in path}


def register(server: Server, name: str, password: str = PASSWORD) -> None:
    with closing(JsonClient(server.listener("line").port)) as client:
        assert isinstance(client, JsonClient)
        client.send_json(type="hello", name=name)
        client.expect_event("who", room="lobby")
        client.send_json(type="register", password=password, ref="reg")
        client.expect_event("logged_in", ref="reg")


# -- rate limits on every path ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(LOGIN_PATHS))
def test_failed_logins_are_limited_per_account_on_every_path(
    make_server: Callable[..., Server], path: str
) -> None:
    server = make_server()
    register(server, "alice")
    login = LOGIN_PATHS[path]
    assert login(server, "alice", PASSWORD) == "ok", "the path works"
    for n in range(accounts.MAX_FAILS_PER_ACCOUNT):
        assert login(server, "alice", f"wrong-guess-{n}") != "ok"
    # Now even the right password is refused from this address, with the reason...
    refused = login(server, "alice", PASSWORD)
    assert refused != "ok"
    if path in SAYS_WHY:
        assert "too many failed logins" in refused, refused
    # ... by every other path too: the limit is the account's, not the protocol's.
    for other in ("json login", "irc nickserv", "web json"):
        assert LOGIN_PATHS[other](server, "alice", PASSWORD) != "ok", other


@pytest.mark.parametrize("path", sorted(LOGIN_PATHS))
def test_failed_logins_are_limited_per_address_on_every_path(
    make_server: Callable[..., Server], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "MAX_FAILS_PER_ADDRESS", 4)
    server = make_server()
    for name in ("victim", "user0", "user1", "user2", "user3"):
        register(server, name)
    login = LOGIN_PATHS[path]
    # Four accounts, one guess each (under the per-account limit): the address's budget.
    for n in range(4):
        assert login(server, f"user{n}", "a-wrong-guess") != "ok"
    refused = login(server, "victim", PASSWORD)
    assert refused != "ok"
    if path in SAYS_WHY:
        assert "too many failed logins" in refused, refused


# -- no password in the logs -----------------------------------------------------------------


def test_no_password_ever_reaches_the_logs_on_any_path(
    make_server: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every path fails once against alice here: no limit may stop the right logins after.
    monkeypatch.setattr(accounts, "MAX_FAILS_PER_ACCOUNT", 100)
    caplog.set_level(logging.DEBUG)
    server = make_server(log_level="debug")
    secrets: list[str] = []

    def secret(label: str) -> str:
        # Each looks like a nick, on purpose: being name-like must not get it logged.
        made = f"Sekr1t{label.title().replace(' ', '')}Pw{len(secrets)}"
        secrets.append(made)
        return made

    # Registering, on every path that can.
    password = secret("json register")
    register(server, "alice", password)
    with closing(LineClient(server.listener("line").port)) as text:
        text.send("bob")
        text.expect("--- in lobby:")
        bob_password = secret("text register")
        text.send(f"/register {bob_password}")
        text.expect("logged in as")
        new_password = secret("text password")
        text.send(f"/password {bob_password} {new_password}")
        text.expect("password")
    with closing(IrcClient(server.listener("irc").port)) as irc:
        assert isinstance(irc, IrcClient)
        irc.register("carol", caps=("draft/account-registration",))
        irc.send(f"REGISTER carol * {secret('irc register')}")
        irc.expect(lambda line: parse(line).command in ("REGISTER", "FAIL"))
    with _ws(server, "threadchat.json") as ws:
        ws.send(json.dumps({"type": "hello", "name": "dave"}))
        ws.send(json.dumps({"type": "register", "password": secret("web register"), "ref": 1}))
        next(line for line in _ws_lines(ws) if '"logged_in"' in line)
    # Logging in, right and wrong, on every path.
    for path, login in LOGIN_PATHS.items():
        wrong = secret(path + " wrong")
        assert login(server, "alice", wrong) != "ok"
        if "sasl" in path:
            secrets.append(sasl_plain("alice", wrong))
    for path, login in LOGIN_PATHS.items():
        assert login(server, "alice", password) == "ok", path
    if any("sasl" in path for path in LOGIN_PATHS):
        secrets.append(sasl_plain("alice", password))

    logged = "\n".join(record.getMessage() for record in caplog.records)
    server_records = [r for r in caplog.records if r.name.startswith("threadchat")]
    assert any(r.levelno == logging.DEBUG for r in server_records), "not at debug level"
    assert "failed login" in logged or "SASL failed" in logged, "logins are logged at all"
    found = [
        (record.name, record.getMessage()[:120])
        for record in caplog.records
        if any(s in record.getMessage() + (record.exc_text or "") for s in secrets)
        # The test's own WebSocket client logs what it sends: not the server's log.
        and not record.name.startswith("websockets.client")
    ]
    assert not found, f"passwords in the log: {found}"


def test_login_as_a_first_line_is_a_login_even_for_an_unknown_name(server: Server) -> None:
    # Not a name with spaces, refused as such: a failed login, counted as one.
    with closing(LineClient(server.listener("line").port)) as client:
        client.send("/login nobody some-guess")
        assert client.expect("!!! ") == "!!! invalid account name or password"


# -- TLS versions ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("listener", ["line", "irc", "web"])
def test_tls_below_1_2_is_refused_on_every_tcp_listener(
    make_server: Callable[..., Server], listener: str
) -> None:
    server = make_server(tls_self_signed=True)
    port = server.listener(listener).port

    def handshake(oldest: ssl.TLSVersion, newest: ssl.TLSVersion) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        # Let this client offer old versions at all (OpenSSL's default level refuses them).
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version, context.maximum_version = oldest, newest
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            try:
                with context.wrap_socket(raw) as tls_sock:
                    return str(tls_sock.version())
            except ssl.SSLError as problem:
                return problem.reason or str(problem)

    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # The server's alert, not a client that could not offer the version.
        assert handshake(old, old) == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert handshake(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED) == "TLSv1.3"


# -- private messages, mutes and bans hold across every protocol -------------------------------


class Chatter:
    """One user over one protocol: join, say in a room, send a private message, and
    everything received so far as text (enough to look for a unique word in it)."""

    def __init__(self, server: Server, protocol: str, name: str) -> None:
        self.protocol, self.name, self.seen = protocol, name, ""
        self._opened = contextlib.ExitStack()
        self.client: Any
        if protocol in ("text", "json"):
            self.client = LineClient(server.listener("line").port)
            self.client.send(
                name if protocol == "text" else json.dumps({"type": "hello", "name": name})
            )
        elif protocol == "irc":
            self.client = IrcClient(server.listener("irc").port)
            self.client.register(name)
        elif protocol == "udp":
            assert server.udp is not None
            self.client = UdpClient(server.udp.port, name)
        else:
            subprotocol = "threadchat.json" if protocol == "web json" else "text.ircv3.net"
            self.client = self._opened.enter_context(_ws(server, subprotocol))
            if protocol == "web json":
                self.client.send(json.dumps({"type": "hello", "name": name}))
            else:
                self.client.send(f"NICK {name}")
                self.client.send(f"USER {name} 0 * :{name}")
        if protocol != "irc":  # register() waited already
            assert self.wait_for(name), f"{name} never registered over {protocol}"

    @property
    def speaks_irc(self) -> bool:
        return self.protocol in ("irc", "web irc")

    def send(self, request: dict, irc_line: str, text_line: str) -> None:
        if self.speaks_irc:
            sent = irc_line
        elif self.protocol == "text":
            sent = text_line
        else:
            sent = json.dumps(request)
        if self.protocol == "udp":
            self.client.send(**request)
        elif self.protocol.startswith("web"):
            self.client.send(sent)
        else:
            self.client.send(sent)

    def join(self, room: str) -> None:
        self.send({"type": "join", "room": room}, f"JOIN #{room}", f"/join {room}")

    def say(self, room: str, text: str) -> None:
        self.send({"type": "say", "room": room, "text": text}, f"PRIVMSG #{room} :{text}",
                  f"/join {room}\n{text}")  # fmt: skip

    def tell(self, nick: str, text: str) -> None:
        self.send({"type": "msg", "to": nick, "text": text}, f"PRIVMSG {nick} :{text}",
                  f"/msg {nick} {text}")  # fmt: skip

    def wait_for(self, word: str, timeout: float = WAIT) -> bool:
        """Read until `word` has been received or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while word not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.seen += self._read(min(remaining, 0.2))
        return True

    def _read(self, timeout: float) -> str:
        try:
            if self.protocol == "udp":
                return json.dumps(self.client.events.get(timeout=timeout))
            if self.protocol.startswith("web"):
                message = self.client.recv(timeout=timeout)
                return (message if isinstance(message, str) else message.decode()) + "\n"
            return self.client.read_line(timeout) + "\n"
        except (TimeoutError, queue.Empty):
            return ""

    def close(self) -> None:
        self.client.close()
        self._opened.close()


CHAT_PROTOCOLS = ("text", "json", "irc", "udp", "web json", "web irc")


@pytest.fixture
def chatters(server: Server) -> Iterator[list[Chatter]]:
    """One user per protocol, p0 to p5 (their names say nothing of their protocol)."""
    opened = [Chatter(server, protocol, f"p{n}") for n, protocol in enumerate(CHAT_PROTOCOLS)]
    yield opened
    for chatter in opened:
        chatter.close()


def test_a_private_message_reaches_its_target_alone_across_protocols(
    chatters: list[Chatter],
) -> None:
    # Each tells the next one (every protocol to another) a word no one else may see.
    words = {}
    for n, sender in enumerate(chatters):
        target = chatters[(n + 1) % len(chatters)]
        words[target.name] = f"secret{n}for{target.name}"
        sender.tell(target.name, words[target.name])
    for chatter in chatters:
        assert chatter.wait_for(words[chatter.name]), (chatter.protocol, chatter.seen[-500:])
    for chatter in chatters:
        chatter.wait_for("never", timeout=0.3)
        others = [w for name, w in words.items() if name != chatter.name and w in chatter.seen]
        assert not others, f"{chatter.protocol} saw {others}"


def test_mutes_and_bans_hold_whatever_the_protocol(server: Server, chatters: list[Chatter]) -> None:
    op = JsonClient(server.listener("line").port)
    op.send_json(type="hello", name="op")
    op.expect_event("who", room="lobby")
    for room in ("hall", "vault"):
        op.send_json(type="join", room=room)
        op.expect_event("who", room=room)
    for chatter in chatters:
        chatter.join("hall")
        op.expect_event("join", room="hall", name=chatter.name)
    # Heard before the mute: the path works for each of them.
    for chatter in chatters:
        chatter.say("hall", f"before-{chatter.name}")
        op.expect_event("message", room="hall", text=f"before-{chatter.name}")
    for n, chatter in enumerate(chatters):
        op.send_json(type="mute", room="hall", name=chatter.name, ref=f"m{n}")
        op.expect_event("ok", ref=f"m{n}")
        op.send_json(type="ban", room="vault", name=chatter.name, ref=f"b{n}")
        op.expect_event("ok", ref=f"b{n}")
    for chatter in chatters:
        chatter.say("hall", f"muted-{chatter.name}")
        chatter.join("vault")
        chatter.say("vault", f"banned-{chatter.name}")
    # A fence: the op's own message comes after theirs, in every room they reached.
    op.send_json(type="say", room="hall", text="fence", ref="f")
    op.expect_event("ok", ref="f")
    heard = op.quiet(0.5)
    op.close()
    assert not [line for line in heard if "muted-" in line or "banned-" in line], heard
    assert not [c.name for c in chatters if server.hub.find_user(c.name) is None]
