"""HTTP on the web port, sans-I/O (h11): the page's files, and the door to the WebSocket.

`HttpEndpoint.receive_data` takes what the socket read and returns a `Step`: bytes to send,
whether to close afterwards (and why, for the log), and a WebSocket upgrade that passed every
check here (path, method, headers, `Origin`, subprotocol). The WebSocket handshake itself is
the WebSocket library's (see `websocket.py`); if it still refuses, `refuse` answers in HTTP.

Every response carries the security headers (`SECURITY_HEADERS`): a Content-Security-Policy
that allows no inline script and no other site, no MIME sniffing, no referrer, no framing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from threadchat.protocols.web.static import StaticFiles, url_path

log = logging.getLogger(__name__)

WEBSOCKET_PATH = "/ws"
# The subprotocols of `Sec-WebSocket-Protocol` (docs/protocol.md, "WebSocket"); none is JSON.
JSON_SUBPROTOCOL = "threadchat.json"
IRC_TEXT_SUBPROTOCOL = "text.ircv3.net"
IRC_BINARY_SUBPROTOCOL = "binary.ircv3.net"
SUBPROTOCOLS = (JSON_SUBPROTOCOL, IRC_TEXT_SUBPROTOCOL, IRC_BINARY_SUBPROTOCOL)
# The longest request head (request line and headers) a client may send.
MAX_REQUEST_HEAD = 16 * 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
)
CACHE_CONTROL = b"no-cache"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Upgrade:
    """A WebSocket handshake request that passed every check of this endpoint."""

    request: h11.Request
    subprotocol: str | None
    # Bytes the client sent after the request (normally none: it waits for the 101).
    trailing: bytes


@dataclass
class Step:
    """What one `receive_data` asks of the transport."""

    send: bytes = b""
    # Close once `send` is out; the text says why (for the log).
    close: str | None = None
    upgrade: Upgrade | None = None


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """("https", "chat.example.com", 443) for "https://chat.example.com"; None if malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme]


def parse_host(host: str) -> tuple[str, int | None] | None:
    """("chat.example.com", 8080) for a Host header "chat.example.com:8080"; port None if
    absent; None if malformed."""
    try:
        parts = urlsplit("//" + host.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.username is not None:
        return None
    return parts.hostname.lower().rstrip("."), port


@dataclass(frozen=True)
class OriginPolicy:
    """Which pages may open a WebSocket here (cross-site WebSocket hijacking: a page on
    another site would otherwise act with the visitor's network position).

    With no `allowed` origins, the page's own origin: the `Origin` host and port must be the
    request's `Host` (a Host without a port means the Origin scheme's default port). `*`
    allows every origin. A request without `Origin` does not come from a browser page (IRC
    clients and libraries send none) and is allowed: the attack needs a victim's browser.
    """

    allowed: frozenset[tuple[str, str, int]] = frozenset()
    any_origin: bool = False

    @classmethod
    def from_settings(cls, origins: Iterable[str]) -> OriginPolicy:
        allowed = set()
        any_origin = False
        for text in origins:
            if text.strip() == "*":
                any_origin = True
                continue
            parsed = parse_origin(text)
            if parsed is None:
                raise ValueError(f"--web-origin {text!r} is not an origin like https://host:port")
            allowed.add(parsed)
        return cls(frozenset(allowed), any_origin)

    def permits(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if self.allowed:
            return parsed in self.allowed
        own = parse_host(host) if host is not None else None
        if own is None:
            return False
        scheme, origin_host, origin_port = parsed
        own_host, own_port = own
        return origin_host == own_host and origin_port == (own_port or DEFAULT_PORTS[scheme])


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The client's first offered subprotocol that we speak; "" when it offered only others
    (refused), None when it offered none (JSON)."""
    if not offered:
        return None
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return ""


def _header(request: h11.Request, name: bytes) -> str | None:
    values = [value for key, value in request.headers if key == name]
    if len(values) != 1:
        return None if not values else ",".join(v.decode("latin-1") for v in values)
    return values[0].decode("latin-1")


def _tokens(request: h11.Request, name: bytes) -> list[str]:
    tokens: list[str] = []
    for key, value in request.headers:
        if key == name:
            tokens += [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]
    return tokens


@dataclass
class HttpEndpoint:
    site: StaticFiles
    origins: OriginPolicy
    label: str = "?"
    _conn: h11.Connection = field(init=False)
    _pending: Upgrade | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)

    def receive_data(self, data: bytes) -> Step:
        step = Step()
        self._conn.receive_data(data)
        while step.close is None and step.upgrade is None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as problem:
                self._respond_error(step, problem.error_status_hint, f"bad request: {problem}")
                step.close = f"bad HTTP request: {problem}"
                break
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                self._on_request(step, event)
            elif isinstance(event, h11.EndOfMessage):
                self._next_cycle(step)
            elif event is h11.PAUSED:
                if self._pending is None:
                    # Only an upgrade we are not making can leave h11 here: nothing more to say.
                    step.close = "HTTP connection paused"
                    break
                trailing, _ = self._conn.trailing_data
                step.upgrade = Upgrade(self._pending.request, self._pending.subprotocol, trailing)
                self._pending = None
            elif isinstance(event, h11.ConnectionClosed):
                step.close = "EOF"
            # h11.Data: a request body, ignored (a method that means one is refused and closed).
        return step

    def refuse(self, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        """A refusal of the pending upgrade (the WebSocket library's verdict), then close."""
        step = Step()
        self._respond(step, status, text.encode() + b"\n", "text/plain; charset=utf-8",
                      extra=headers, close=True)  # fmt: skip
        return step.send

    # -- requests ----------------------------------------------------------------------------

    def _on_request(self, step: Step, request: h11.Request) -> None:
        target = request.target.decode("latin-1")
        method = request.method.decode("latin-1")
        path = url_path(target)
        # A handshake at the root is taken too: IRC clients are often given only
        # ws://host:port (the IRCv3 WebSocket spec names no path); a plain GET / is the page.
        if path == WEBSOCKET_PATH or (path == "/" and _asks_upgrade(request)):
            self._on_websocket(step, request, method)
            return
        if method not in ("GET", "HEAD"):
            self._respond_error(step, 405, f"{method} is not allowed here",
                                extra=[(b"Allow", b"GET, HEAD")])  # fmt: skip
            step.close = f"HTTP {method} refused"
            return
        found = self.site.find(target)
        if found is None:
            log.info("%s: HTTP 404 for %s %r", self.label, method, target[:200])
            self._respond_error(step, 404, "not found", close=False)
            return
        if found.etag in _tokens(request, b"if-none-match"):
            self._respond(step, 304, b"", None, extra=[(b"ETag", found.etag.encode())],
                          head=True)  # fmt: skip
            return
        self._respond(
            step,
            200,
            found.body,
            found.content_type,
            extra=[(b"ETag", found.etag.encode()), (b"Cache-Control", CACHE_CONTROL)],
            head=method == "HEAD",
        )

    def _on_websocket(self, step: Step, request: h11.Request, method: str) -> None:
        upgrade = [t.lower() for t in _tokens(request, b"upgrade")]
        connection = [t.lower() for t in _tokens(request, b"connection")]
        problem: tuple[int, str] | None = None
        if method != "GET":
            problem = (405, f"{WEBSOCKET_PATH} takes a WebSocket handshake (GET), not {method}")
        elif "websocket" not in upgrade or "upgrade" not in connection:
            problem = (426, f"{WEBSOCKET_PATH} is a WebSocket endpoint: upgrade to websocket")
        elif not self.origins.permits(_header(request, b"origin"), _header(request, b"host")):
            origin = _header(request, b"origin")
            problem = (403, f"pages from {origin} may not open a WebSocket here")
        else:
            subprotocol = choose_subprotocol(_tokens(request, b"sec-websocket-protocol"))
            if subprotocol == "":
                problem = (400, "no supported subprotocol; this server speaks "
                                + ", ".join(SUBPROTOCOLS))  # fmt: skip
        if problem is not None:
            status, text = problem
            log.warning("%s: WebSocket handshake refused (%d): %s", self.label, status, text)
            extra = [(b"Upgrade", b"websocket")] if status == 426 else []
            self._respond_error(step, status, text, extra=extra)
            step.close = f"WebSocket handshake refused: {text}"
            return
        # The handshake is decided once h11 has seen the whole request (it then pauses).
        self._pending = Upgrade(request, subprotocol, b"")

    # -- responses ---------------------------------------------------------------------------

    def _respond_error(
        self,
        step: Step,
        status: int,
        text: str,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
        close: bool = True,
    ) -> None:
        body = text.encode("utf-8", "replace") + b"\n"
        self._respond(step, status, body, "text/plain; charset=utf-8", extra=extra, close=close)

    def _respond(
        self,
        step: Step,
        status: int,
        body: bytes,
        content_type: str | None,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
        head: bool = False,
        close: bool = False,
    ) -> None:
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # nothing more can be said in HTTP: the caller closes
        headers = [*SECURITY_HEADERS, *extra]
        if content_type is not None:
            headers.append((b"Content-Type", content_type.encode()))
        if status != 304:
            headers.append((b"Content-Length", str(len(body)).encode()))
        if close:
            headers.append((b"Connection", b"close"))
        try:
            out = self._conn.send(h11.Response(status_code=status, headers=headers)) or b""
            if body and not head:
                out += self._conn.send(h11.Data(data=body)) or b""
            out += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as problem:
            log.warning("%s: cannot answer in HTTP: %s", self.label, problem)
            step.close = "HTTP error"
            return
        step.send += out
        if close:
            step.close = step.close or "closed after the response"

    def _next_cycle(self, step: Step) -> None:
        """The client's request ended: on a kept-alive connection, wait for the next one."""
        if self._conn.our_state is h11.MUST_CLOSE:
            step.close = step.close or "closed after the response"
        elif self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()


def _asks_upgrade(request: h11.Request) -> bool:
    """Whether `request` asks for a WebSocket (its Upgrade header names websocket)."""
    return "websocket" in (t.lower() for t in _tokens(request, b"upgrade"))
