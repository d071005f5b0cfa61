"""The web port: the page's files over HTTP, and the hub over WebSocket (JSON and IRC)."""

import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wsproto
from conftest import WAIT, LineClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol
from wsproto.events import AcceptConnection, CloseConnection, Request

from threadchat.app.server import Server, StartupError
from threadchat.protocols.web.endpoint import OriginPolicy
from threadchat.protocols.web.static import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "threadchat" / "web" / "static"


def web_port(server: Server) -> int:
    return server.listener("web").port


def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request; read the response until the server closes (Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def get(port: int, target: str, *headers: str, method: str = "GET") -> tuple[int, dict, bytes]:
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
    return http_exchange(port, (request + "Connection: close\r\n\r\n").encode("latin-1"))


def ws_connect(
    port: int, subprotocol: str | None = "threadchat.json", origin: str | None = None
) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[Subprotocol(subprotocol)] if subprotocol else None,
        origin=Origin(origin) if origin else None,
        open_timeout=WAIT,
        close_timeout=WAIT,
    )


def expect_json(ws: ClientConnection, kind: str, **fields: object) -> dict:
    seen = []
    deadline = time.monotonic() + WAIT
    while True:
        try:
            message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError as problem:
            raise AssertionError(f"no {kind} with {fields}; saw {seen}") from problem
        assert isinstance(message, str), "JSON comes in text frames"
        event = json.loads(message)
        seen.append(event)
        if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
            return event


def expect_irc(
    ws: ClientConnection, predicate: Callable[[str], bool] | str, frame: type = str
) -> str:
    """The next IRC line that matches; every message on the way is one line in a `frame`."""
    check = predicate if callable(predicate) else (lambda line: predicate in line)
    seen = []
    deadline = time.monotonic() + WAIT
    while True:
        try:
            message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError as problem:
            raise AssertionError(f"no line matching {predicate!r}; saw {seen}") from problem
        assert isinstance(message, frame), f"{type(message).__name__} frame, not {frame.__name__}"
        line = message if isinstance(message, str) else message.decode()
        assert "\r" not in line and "\n" not in line, "one IRC line per frame, no CR LF"
        seen.append(line)
        if check(line):
            return line


@pytest.fixture
def web_clients(server: Server) -> Iterator[Callable[..., ClientConnection]]:
    with contextlib.ExitStack() as opened:

        def open_ws(*args: object, **kwargs: object) -> ClientConnection:
            return opened.enter_context(ws_connect(web_port(server), *args, **kwargs))  # type: ignore[arg-type]

        yield open_ws


# -- HTTP: the page's files ----------------------------------------------------------------------


def test_page_and_its_headers(server: Server) -> None:
    port = web_port(server)
    status, headers, body = get(port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="app.js"></script>' in body
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    assert int(headers["content-length"]) == len(body) == len((STATIC / "index.html").read_bytes())
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")]:  # fmt: skip
        status, headers, body = get(port, f"/{name}")
        assert status == 200 and headers["content-type"].startswith(kind)
        assert body == (STATIC / name).read_bytes()
        assert "content-security-policy" in headers


def test_revalidation_head_and_keep_alive(server: Server) -> None:
    port = web_port(server)
    _, headers, _ = get(port, "/app.js")
    etag = headers["etag"]
    status, headers, body = get(port, "/app.js", f"If-None-Match: {etag}")
    assert status == 304 and body == b"" and headers["etag"] == etag
    status, headers, body = get(port, "/app.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    # Two requests on one kept-alive connection, the second after the first's response.
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        for name in ("render.js", "connection.js"):
            sock.sendall(f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            expected = (STATIC / name).read_bytes()
            data = b""
            while not data.endswith(expected):
                chunk = sock.recv(65536)
                assert chunk, "closed too early"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "target",
    [
        "/../pyproject.toml",
        "/../../threadchat/config.py",
        "/%2e%2e/%2e%2e/pyproject.toml",
        "/..%2f..%2fpyproject.toml",
        "/static/../../../etc/passwd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/index.html%00.js",
        "/.%2e/config.py",
        "http://127.0.0.1/../pyproject.toml",
        "/web/static/index.html",
    ],
)
def test_nothing_outside_the_page_folder(server: Server, target: str) -> None:
    status, _, body = get(web_port(server), target)
    assert status in (400, 404)
    assert b"[build-system]" not in body and b"root:" not in body and b"import" not in body


def test_files_leading_out_of_the_folder_are_not_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text("<p>hi</p>")
    (folder / ".hidden").write_text("secret")
    (tmp_path / "outside.txt").write_text("secret")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    site = StaticFiles.load(folder)
    assert site.find("/") is not None and site.find("/index.html") is not None
    assert site.find("/link.txt") is None and site.find("/.hidden") is None
    assert site.find("/%2e%2e/outside.txt") is None and site.find("/../outside.txt") is None


def test_bad_requests_are_refused_and_harm_no_one(server: Server) -> None:
    port = web_port(server)
    status, headers, _ = get(port, "/", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, body = http_exchange(port, b"THIS IS NOT HTTP\r\n\r\n")
    assert status == 400 and b"bad request" in body
    status, _, _ = http_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000)
    assert status in (400, 431)
    # A plain GET of the WebSocket endpoint is told to upgrade.
    status, headers, _ = get(port, "/ws")
    assert status == 426 and headers["upgrade"] == "websocket"
    assert get(port, "/")[0] == 200


# -- WebSocket: JSON ----------------------------------------------------------------------------


def test_json_over_websocket_chats_with_a_line_user(
    web_clients: Callable[..., ClientConnection], connect: Callable[..., LineClient]
) -> None:
    alice = web_clients()
    assert alice.subprotocol == "threadchat.json"
    alice.send(json.dumps({"type": "hello", "name": "alice"}))
    assert expect_json(alice, "welcome")["name"] == "alice"
    expect_json(alice, "who", room="lobby")
    bob = connect("bob")
    expect_json(alice, "join", room="lobby", name="bob")
    bob.send("hello <b>alice</b>")
    event = expect_json(alice, "message", room="lobby", text="hello <b>alice</b>")
    assert event["from"] == "bob" and event["action"] is False and isinstance(event["id"], int)
    alice.send(json.dumps({"type": "say", "room": "lobby", "text": "hi bob", "ref": 7}))
    expect_json(alice, "ok", ref=7)
    bob.expect("alice: hi bob")
    alice.send(json.dumps({"type": "msg", "to": "bob", "text": "psst"}))
    bob.expect("[private] alice: psst")
    bob.send("/msg alice hi back")
    expect_json(alice, "private", text="hi back", to="alice")
    alice.send(json.dumps({"type": "quit", "reason": "bye"}))
    bob.expect("<-- alice quit (bye)")
    with pytest.raises(ConnectionClosed):
        alice.recv(timeout=WAIT)
    assert alice.close_code == 1000


def test_no_subprotocol_means_json(web_clients: Callable[..., ClientConnection]) -> None:
    carol = web_clients(None)
    assert carol.subprotocol is None
    carol.send(json.dumps({"type": "hello", "name": "carol"}))
    expect_json(carol, "welcome", name="carol")


def test_json_errors_and_limits(make_server: Callable[..., Server]) -> None:
    server = make_server(max_line=100)
    with ws_connect(web_port(server)) as dave:
        dave.send("not json")
        expect_json(dave, "error", code="bad_json")
        dave.send(b"\xff\xfe")
        expect_json(dave, "error", code="bad_encoding")
        dave.send(json.dumps({"type": "hello", "name": "dave"}))
        expect_json(dave, "welcome")
        dave.send(json.dumps({"type": "say", "text": "x" * 200}))
        expect_json(dave, "error", code="line_too_long")
        dave.send(json.dumps({"type": "say", "text": "still here", "ref": 1}))
        expect_json(dave, "ok", ref=1)
        # Past the link's bound the link ends: 1009, message too big.
        dave.send("x" * (70 * 1024))
        with pytest.raises(ConnectionClosed):
            while True:
                dave.recv(timeout=WAIT)
        assert dave.close_code == 1009


def test_unsupported_subprotocol_is_refused(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(web_port(server), "mqtt")
    assert refused.value.response.status_code == 400
    assert b"threadchat.json" in refused.value.response.body


# -- WebSocket: IRC -----------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocol", ["text.ircv3.net", "binary.ircv3.net"])
def test_irc_over_websocket(
    web_clients: Callable[..., ClientConnection],
    connect: Callable[..., LineClient],
    subprotocol: str,
) -> None:
    erin = web_clients(subprotocol)
    assert erin.subprotocol == subprotocol
    frame = str if subprotocol == "text.ircv3.net" else bytes
    send = erin.send if frame is str else (lambda t: erin.send(t.encode()))
    send("NICK erin")
    send("USER erin 0 * :Erin Web")
    expect_irc(erin, lambda line: " 001 erin " in line, frame)
    send("JOIN #lobby")
    expect_irc(erin, lambda line: " 366 erin #lobby " in line, frame)
    frank = connect("frank")
    expect_irc(erin, lambda line: line.startswith(":frank!") and "JOIN" in line, frame)
    frank.send("héllo from nc")
    line = expect_irc(erin, "PRIVMSG", frame)
    assert line.startswith(":frank!") and line.endswith("PRIVMSG #lobby :héllo from nc")
    send("PRIVMSG #lobby :hi frank, from the web")
    frank.expect("erin: hi frank, from the web")
    send("QUIT :bye")
    frank.expect("<-- erin quit")


def test_a_handshake_at_the_root_is_taken(server: Server) -> None:
    """IRC clients are often given only ws://host:port; the root then speaks WebSocket,
    while a plain GET / is still the page."""
    port = web_port(server)
    with connect(
        f"ws://127.0.0.1:{port}/",
        subprotocols=[Subprotocol("text.ircv3.net")],
        open_timeout=WAIT,
        close_timeout=WAIT,
    ) as ws:
        assert ws.subprotocol == "text.ircv3.net"
        ws.send("NICK rooted")
        ws.send("USER rooted 0 * :Root")
        expect_irc(ws, lambda line: " 001 rooted " in line, str)
    status, headers, _body = get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")


def test_irc_over_websocket_offers_labeled_response(
    web_clients: Callable[..., ClientConnection],
) -> None:
    """labeled-response over WebSocket as over TCP: one line labeled, several in a labeled
    batch (the JOIN the hub delivers to the link, framed already, among them), an echo
    labeled, an ACK; and every line still one frame."""
    hana = web_clients("text.ircv3.net")
    hana.send("CAP LS 302")
    listing = expect_irc(hana, lambda line: " CAP * LS " in line)
    assert "labeled-response" in listing and "batch" in listing
    hana.send("CAP REQ :labeled-response batch echo-message")
    expect_irc(hana, lambda line: " CAP * ACK " in line)
    hana.send("CAP END")
    hana.send("NICK hana")
    hana.send("USER hana 0 * :Hana")
    expect_irc(hana, lambda line: " 001 hana " in line)
    expect_irc(hana, lambda line: " 376 hana " in line or " 422 hana " in line)
    hana.send("@label=p1 PING there")
    assert expect_irc(hana, "PONG").startswith("@label=p1 :")
    hana.send("@label=j1 JOIN #den")
    start = expect_irc(hana, "BATCH")
    assert start.startswith("@label=j1 ") and start.endswith(" labeled-response")
    ref = start.split()[3][1:]
    joined = expect_irc(hana, "JOIN")
    assert joined.startswith(f"@batch={ref} :hana!")
    expect_irc(hana, f"BATCH -{ref}")
    hana.send("@label=m1 PRIVMSG #den :hello")
    echo = expect_irc(hana, "PRIVMSG")
    assert echo.startswith("@label=m1") and echo.endswith(" PRIVMSG #den hello")
    hana.send("@label=a1 PONG x")
    assert expect_irc(hana, "ACK").startswith("@label=a1 ")
    # After a labeled response, lines are framed as before.
    hana.send("PING again")
    assert expect_irc(hana, "PONG").endswith(" again")


def test_irc_client_may_end_lines_with_crlf_or_send_binary(
    web_clients: Callable[..., ClientConnection],
) -> None:
    gina = web_clients("text.ircv3.net")
    gina.send("NICK gina\r\n")
    # A binary frame is understood too, whatever was negotiated.
    gina.send(b"USER gina 0 * :Gina")
    expect_irc(gina, lambda line: " 001 gina " in line)


# -- security ----------------------------------------------------------------------------------


def test_origin_is_checked(server: Server) -> None:
    port = web_port(server)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(port, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        ws_connect(port, origin=f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}")
    # The page's own origin, and clients that send none (not a browser page), are let in.
    with ws_connect(port, origin=f"http://127.0.0.1:{port}"), ws_connect(port):
        pass


def test_configured_origins(make_server: Callable[..., Server]) -> None:
    server = make_server(web_origin=["https://chat.example.com"])
    port = web_port(server)
    with ws_connect(port, origin="https://chat.example.com"):
        pass
    with pytest.raises(InvalidStatus):
        ws_connect(port, origin=f"http://127.0.0.1:{port}")
    with pytest.raises(StartupError):
        make_server(web_origin=["not an origin"])


def test_origin_policy_rules() -> None:
    own = OriginPolicy()
    assert own.permits("http://localhost:8080", "localhost:8080")
    assert own.permits("https://chat.example.com", "chat.example.com")
    assert own.permits("http://Chat.Example.com", "chat.example.com:80")
    assert not own.permits("http://chat.example.com:8080", "chat.example.com")
    assert not own.permits("http://evil.example", "chat.example.com")
    assert not own.permits("null", "chat.example.com")
    assert not own.permits("http://localhost:8080", None)
    assert own.permits(None, "chat.example.com")
    assert OriginPolicy.from_settings(["*"]).permits("http://anything.example", "x")


def raw_websocket(port: int) -> tuple[socket.socket, wsproto.WSConnection]:
    """A WebSocket opened with wsproto as the client, for frames a good client never sends."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(client.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
    while True:
        data = sock.recv(65536)
        assert data, "closed during the handshake"
        client.receive_data(data)
        if any(isinstance(event, AcceptConnection) for event in client.events()):
            return sock, client


def close_code(sock: socket.socket, client: wsproto.WSConnection) -> int | None:
    """Read until the server's close frame; its code."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            return None
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, CloseConnection):
                return int(event.code)
    raise AssertionError("no close frame")


def test_bad_frames_get_a_close_code_and_harm_no_one(
    server: Server, connect: Callable[..., LineClient], caplog: pytest.LogCaptureFixture
) -> None:
    port = web_port(server)
    henry = connect("henry")
    # An unmasked client frame: a protocol error (1002).
    sock, client = raw_websocket(port)
    with sock:
        sock.sendall(b"\x81\x05hello")
        assert close_code(sock, client) == 1002
    # Invalid UTF-8 in a text frame (1007).
    sock, client = raw_websocket(port)
    with sock:
        sock.sendall(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
        assert close_code(sock, client) == 1007
    # A frame that announces 1 MiB (1009), before it has even arrived.
    sock, client = raw_websocket(port)
    with sock:
        sock.sendall(b"\x82\xff" + (1 << 20).to_bytes(8, "big") + b"\x00" * 4 + b"x" * 65536)
        sock.sendall(b"x" * 4096)
        assert close_code(sock, client) == 1009
    assert "WebSocket closed with 1002" in caplog.text
    henry.send("/who")
    henry.expect("--- in lobby: henry")


def test_pings_and_name_timeout(make_server: Callable[..., Server]) -> None:
    server = make_server(ping_interval=0.5, ping_timeout=1, name_timeout=1)
    port = web_port(server)
    # A client that never says who it is: closed with 1008 after the name timeout.
    sock, client = raw_websocket(port)
    with sock:
        assert close_code(sock, client) == 1008
    # A registered client is pinged when silent (the library answers by itself).
    with ws_connect(port) as ivy:
        ivy.send(json.dumps({"type": "hello", "name": "ivy"}))
        expect_json(ivy, "welcome")
        pinged = []
        sock, client = raw_websocket(port)
        with sock:
            sock.sendall(client.send(wsproto.events.TextMessage('{"type":"hello","name":"jo"}')))
            deadline = time.monotonic() + WAIT
            while not pinged and time.monotonic() < deadline:
                client.receive_data(sock.recv(65536))
                pinged += [e for e in client.events() if isinstance(e, wsproto.events.Ping)]
        assert pinged
        # Several rounds of ping and timeout: ivy's library answers, which keeps her in.
        time.sleep(3)
        ivy.send(json.dumps({"type": "say", "text": "still here", "ref": 2}))
        expect_json(ivy, "ok", ref=2)


def test_server_shutdown_says_going_away(make_server: Callable[..., Server]) -> None:
    server = make_server()
    sock, client = raw_websocket(web_port(server))
    with sock:
        sock.sendall(client.send(wsproto.events.TextMessage('{"type":"hello","name":"kim"}')))
        server.stop()
        assert close_code(sock, client) == 1001


def test_websocket_and_page_over_tls(make_server: Callable[..., Server]) -> None:
    server = make_server(tls_self_signed=True)
    port = web_port(server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
        context.wrap_socket(raw) as tls_sock,
    ):
        tls_sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls_sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    with connect(f"wss://127.0.0.1:{port}/ws", ssl=context, open_timeout=WAIT) as ws:
        ws.send(json.dumps({"type": "hello", "name": "lee"}))
        expect_json(ws, "welcome", name="lee")


# -- --line-timeout: a message must complete in time, as a line must on TCP -----------------------


def line_user(server: Server, name: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    return client


def test_a_fragmented_message_never_completed_is_cut_off(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadchat")
    server = make_server(line_timeout=0.5)
    watcher = line_user(server, "watcher")
    sock, client = raw_websocket(web_port(server))
    received: list[str] = []
    code = None
    with sock:
        sock.sendall(client.send(wsproto.events.TextMessage('{"type":"hello","name":"slow"}')))
        watcher.expect("--> slow joined lobby")
        # A slowloris over WebSocket: a fragment now and then, each of them input, none the
        # message's last.
        sock.sendall(
            client.send(wsproto.events.TextMessage('{"type":"say",', message_finished=False))
        )
        started = time.monotonic()
        sock.settimeout(0.2)  # also the pace of the attack
        while code is None and time.monotonic() < started + 0.5 + 2 + WAIT:
            with contextlib.suppress(OSError):
                sock.sendall(client.send(wsproto.events.TextMessage(" ", message_finished=False)))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, wsproto.events.TextMessage):
                    received.append(event.data)
                elif isinstance(event, CloseConnection):
                    code = int(event.code)
                    assert event.reason == "message not completed within 0.5 s"
    assert code == 1008
    assert time.monotonic() - started >= 0.5
    assert [json.loads(text).get("code") for text in received][-1:] == ["line_timeout"]
    assert watcher.expect("<-- slow") == "<-- slow quit (line timeout)"
    assert "no WebSocket message completed within 0.5s" in caplog.text
    watcher.close()


def test_fragmented_messages_that_complete_in_time_are_not_cut(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(line_timeout=1.5)
    bob = line_user(server, "bob")
    sock, client = raw_websocket(web_port(server))
    with sock:
        sock.sendall(client.send(wsproto.events.TextMessage('{"type":"hello","name":"amy"}')))
        bob.expect("--> amy joined lobby")
        # Each message completes within its time, though one is always under way; a ping
        # between fragments does not end the message.
        words = ("one", "two", "three", "four", "five")
        for word in words:
            head = '{"type":"say","text":'
            sock.sendall(client.send(wsproto.events.TextMessage(head, message_finished=False)))
            time.sleep(0.5)  # the pace of the client, not synchronisation
            sock.sendall(client.send(wsproto.events.Ping(b"p")))
            sock.sendall(client.send(wsproto.events.TextMessage(f'"{word}"}}')))
        for word in words:
            bob.expect(f"amy: {word}")
    bob.close()


@pytest.mark.parametrize("version", ["1.0", "1.2"])
def test_a_handshake_in_another_http_version_is_refused_in_http(
    server: Server,
    connect: Callable[..., LineClient],
    caplog: pytest.LogCaptureFixture,
    version: str,
) -> None:
    # Found by tests/fuzz/fuzz_websocket.py: h11 parses any HTTP/1.x request but would not
    # write one out again for the WebSocket library, which raised in the reader thread (no
    # answer, a traceback in the log).
    port = web_port(server)
    henry = connect("henry")
    status, _, body = http_exchange(
        port,
        f"GET /ws HTTP/{version}\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    assert status == 505 and b"HTTP/1.1" in body
    assert "internal error" not in caplog.text
    henry.send("/who")
    henry.expect("--- in lobby: henry")
