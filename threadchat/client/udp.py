"""The client's UDP transport: native JSON events over the reliable datagram protocol.

Threads:

- the **caller's thread** (the one reading what the user types) calls `send(obj)`: the event
  goes through the `ClientEndpoint` and out of the socket at once;
- the **receive thread** waits on the socket, feeds datagrams to the endpoint, hands each
  event dict to `on_event` in order, and also runs the endpoint's timers (retransmissions,
  keepalives, give-up): it never waits past `next_deadline()`.  When `send` creates an earlier
  deadline it wakes the receive thread through a socket pair, so no third thread is needed.

`_lock` guards the endpoint (not thread-safe) and is never held while calling back or while
doing socket I/O.  When the session ends (server unreachable, timed out, or a bye from the
server) `on_disconnect(reason)` is called once, from the receive thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from threadchat.protocols import udp as proto

log = logging.getLogger(__name__)

DEFAULT_PORT = 7000
# Events whose text may be cut into several requests when it does not fit in one datagram.
_SPLIT_TEXT_TYPES = frozenset({"say", "msg"})
# How long `close` waits for the receive thread.
CLOSE_JOIN = 2.0
# How long `close` lets queued events (the quit) be acknowledged before the bye.
CLOSE_FLUSH = 1.0

# The endpoint's wording -> what a person at a terminal is told.
_REASONS = {"peer unreachable": "server unreachable"}


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST[:PORT], with [v6]:PORT for IPv6 literals."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host or "127.0.0.1", int(port)
    return text or "127.0.0.1", default_port


def split_request(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """`obj` as requests that each fit in a datagram: long say/msg texts become several."""
    if proto.event_fits(obj):
        return [obj]
    if obj.get("type") not in _SPLIT_TEXT_TYPES or not isinstance(obj.get("text"), str):
        raise proto.DatagramTooLarge("request too large for one datagram")
    text: str = obj["text"]
    pieces: list[dict[str, Any]] = []
    while text:
        low, high = 1, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if proto.event_fits({**obj, "text": text[:middle]}):
                low = middle
            else:
                high = middle - 1
        if not proto.event_fits({**obj, "text": text[:low]}):
            raise proto.DatagramTooLarge("request too large for one datagram")
        pieces.append({**obj, "text": text[:low]})
        text = text[low:]
    return pieces


class UdpTransport:
    """One UDP session with a server, delivering event dicts to `on_event`.

    `send(obj)` may be called from any thread once `start` returned; events sent before the
    server accepted the hello are queued and go out when it does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        on_event: Callable[[dict[str, Any]], None],
        on_disconnect: Callable[[str], None],
        *,
        endpoint_options: dict[str, Any] | None = None,
    ) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.server = sockaddr
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.endpoint = proto.ClientEndpoint(name, sockaddr, **(endpoint_options or {}))
        self.on_event = on_event
        self.on_disconnect = on_disconnect
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.close_reason: str | None = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="udp-client-receiver", daemon=True)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return self.endpoint.stats

    def start(self) -> UdpTransport:
        with self._lock:
            actions = self.endpoint.connect(time.monotonic())
        self._thread.start()
        self._carry_out(actions)
        return self

    def send(self, obj: dict[str, Any]) -> None:
        """Send one request (split if it is a long say/msg); raises DatagramTooLarge if it
        cannot fit, SendQueueFull if the server stopped acknowledging long ago."""
        pieces = split_request(obj)
        actions: list[proto.Action] = []
        with self._lock:
            for piece in pieces:
                actions.extend(self.endpoint.send(piece, time.monotonic()))
        self._carry_out(actions)
        self._wake()

    def close(self, reason: str = "") -> None:
        """Quit (reliably, if the server still answers), say bye, stop the receive thread.

        `on_disconnect` is not called for a close the caller asked for.  Idempotent.
        """
        if self._closing:
            return
        self._closing = True
        if not self.closed.is_set() and self.connected.is_set():
            with contextlib.suppress(proto.UdpProtocolError):
                self.send({"type": "quit", "reason": reason} if reason else {"type": "quit"})
            self._wait_acked(CLOSE_FLUSH)
        with self._lock:
            actions = self.endpoint.close(reason)
        self._carry_out(actions)
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(CLOSE_JOIN)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

    def _wait_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed.is_set():
            with self._lock:
                channel = self.endpoint.channel
                if channel is None or channel.unacked == 0:
                    return
            self.closed.wait(0.01)

    # -- socket I/O (no lock held) ---------------------------------------------------------

    def _carry_out(self, actions: list[proto.Action]) -> None:
        for action in actions:
            match action:
                case proto.Send(addr, data):
                    try:
                        self.sock.sendto(data, addr)
                    except OSError as problem:
                        # Lost like any datagram; retransmission or give-up follows.
                        log.debug("udp client: sendto: %s", problem)
                case proto.Connected():
                    self.connected.set()
                case proto.Deliver(_, event):
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("udp client: event callback failed")
                case proto.Drop(_, reason):
                    self._disconnected(_REASONS.get(reason, reason))
                case proto.Rejected(addr, why):
                    log.debug("udp client: ignored datagram from %s: %s", addr, why)

    def _disconnected(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._stop.set()
        if self._closing:
            return
        try:
            self.on_disconnect(reason)
        except Exception:
            log.exception("udp client: disconnect callback failed")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the receive thread ----------------------------------------------------------------

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                with self._lock:
                    deadline = self.endpoint.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    ready = selector.select(timeout)
                except OSError:
                    break  # sockets closed under us by close()
                for key, _ in ready:
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._drain()
                with self._lock:
                    actions = self.endpoint.poll(time.monotonic())
                self._carry_out(actions)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(proto.RECV_BUFFER_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as problem:
                # ICMP port unreachable shows up here: the server is not (yet) there.
                log.debug("udp client: recvfrom: %s", problem)
                return
            with self._lock:
                actions = self.endpoint.receive(data, addr, time.monotonic())
            self._carry_out(actions)
