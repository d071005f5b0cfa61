"""The client's UDP transport: native JSON events over the reliable datagram protocol.

Threads:

- the **caller's thread** (the one reading what the user types) calls `send(obj)`: the event
  goes through the `ClientEndpoint` and out of the socket at once;
- the **receive thread** waits on the socket, feeds datagrams to the endpoint, hands each
  event dict to `on_event` in order, and also runs the endpoint's timers (retransmissions,
  keepalives, give-up): it never waits past `next_deadline()`.  When `send` creates an earlier
  deadline it wakes the receive thread through a socket pair, so no third thread is needed.

`_lock` guards the endpoint (not thread-safe) and is never held while calling back or while
doing socket I/O.  When the endpoint's send queue is full (the server paces a flood: it
acknowledges no faster than its flood limit) `send` waits for room (`_room`, on `_lock`), as
a TCP `sendall` waits for the kernel: what the user typed or piped in is delayed, not lost.

When the session ends `on_closed(problem)` is called exactly once: None
after a quit we sent or our own `close`, else "server unreachable" (no answer for the
protocol's give-up time), "timed out", or the reason in the server's bye ("server shutdown").
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

# Events whose text may be cut into several requests when it does not fit in one datagram.
_SPLIT_TEXT_TYPES = frozenset({"say", "msg"})
# How long `close` waits for the receive thread.
CLOSE_JOIN = 2.0
# A sender waiting for room in the send queue looks this often whether the session ended.
ROOM_POLL = 0.5

# The endpoint's wording -> what a person at a terminal is told.
_REASONS = {"peer unreachable": "server unreachable"}


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
    """One UDP session with a server; the client's `Transport` (see `transport.py`).

    The session starts with the first object sent, which must be a hello: its name (and ref)
    travel in the handshake.  Later hellos (after a refused name) go as ordinary requests.
    Objects sent before the server accepted the handshake are queued and go out when it does.
    """

    def __init__(
        self, host: str, port: int, *, endpoint_options: dict[str, Any] | None = None
    ) -> None:
        """Resolve the server (raises OSError); nothing is sent before the first hello."""
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.server = sockaddr
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.endpoint: proto.ClientEndpoint | None = None
        self._endpoint_options = endpoint_options or {}
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None
        self.on_closed: Callable[[str | None], None] = lambda problem: None
        self.closed = threading.Event()
        self.close_reason: str | None = None
        self._quit_sent = False
        self._closing = False
        self._lock = threading.Lock()
        # Notified when acks may have made room in the endpoint's send queue.
        self._room = threading.Condition(self._lock)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-receive", daemon=True)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return self.endpoint.stats if self.endpoint is not None else {}

    def start(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_closed: Callable[[str | None], None],
    ) -> None:
        """Run the receive thread.  `on_closed(problem)` gets None after a quit we sent."""
        self.on_event = on_event
        self.on_closed = on_closed
        self._thread.start()

    def send(self, obj: dict[str, Any]) -> bool:
        """Send one request (a long say/msg is split); False if it could not be sent."""
        if self.closed.is_set() or self._closing:
            return False
        try:
            pieces = split_request(obj)
            actions = self._queue(obj, pieces)
        except proto.UdpProtocolError as problem:
            log.warning("udp client: not sent: %s", problem)
            return False
        self._carry_out(actions)
        self._wake()
        return True

    def _queue(self, obj: dict[str, Any], pieces: list[dict[str, Any]]) -> list[proto.Action]:
        now = time.monotonic()
        with self._lock:
            if self.endpoint is None:
                name = obj.get("name")
                if obj.get("type") != "hello" or not isinstance(name, str):
                    raise proto.UdpProtocolError("the first request must be a hello")
                ref = obj.get("ref")
                self.endpoint = proto.ClientEndpoint(
                    name,
                    self.server,
                    hello_ref=ref if isinstance(ref, str | int) else None,
                    **self._endpoint_options,
                )
                return self.endpoint.connect(now)
            if obj.get("type") == "quit":
                self._quit_sent = True
            actions: list[proto.Action] = []
            for piece in pieces:
                while self.endpoint.queue_full and not self._closing:
                    self._room.wait(ROOM_POLL)
                actions.extend(self.endpoint.send(piece, time.monotonic()))
            return actions

    def unsent(self) -> int:
        """Requests not yet acknowledged by the server (it paces a flood by holding them)."""
        with self._lock:
            endpoint = self.endpoint
            if endpoint is None or endpoint.channel is None or endpoint.state == "closed":
                return 0
            return endpoint.channel.unacked

    def close(self) -> None:
        """End the session (a bye) and the receive thread; idempotent, from any thread."""
        if self._closing:
            return
        self._closing = True
        with self._lock:
            actions = self.endpoint.close("quit") if self.endpoint is not None else []
        self._carry_out(actions)
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(CLOSE_JOIN)
        self._disconnected(None)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

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
                    log.debug("udp client: session accepted by %s", self.server)
                case proto.Deliver(_, event):
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("udp client: event callback failed")
                case proto.Drop(_, reason):
                    self._disconnected(_REASONS.get(reason, reason))
                case proto.Rejected(addr, why):
                    log.debug("udp client: ignored datagram from %s: %s", addr, why)

    def _disconnected(self, reason: str | None) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        if reason is not None and self._quit_sent:
            reason = None  # the server's bye answering our quit: a clean end
        self.close_reason = reason
        self._stop.set()
        try:
            self.on_closed(reason)
        except Exception:
            log.exception("udp client: close callback failed")

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
                    endpoint = self.endpoint
                    deadline = endpoint.next_deadline() if endpoint is not None else None
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
                    actions = endpoint.poll(time.monotonic()) if endpoint is not None else []
                self._carry_out(actions)

    def _drain(self) -> None:
        try:
            self._receive_all()
        finally:
            # Everything the socket held is in: one ack covers it (the endpoint delays acks
            # of in-order data, so a burst from a busy room is not a round trip per datagram).
            with self._lock:
                endpoint = self.endpoint
                actions = endpoint.flush_acks(time.monotonic()) if endpoint is not None else []
            self._carry_out(actions)

    def _receive_all(self) -> None:
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
                if self.endpoint is None:
                    continue  # nothing sent yet: nothing can be an answer
                actions = self.endpoint.receive(data, addr, time.monotonic())
                self._room.notify_all()
            self._carry_out(actions)
