"""UDP transport: native JSON events in datagrams, on the same hub as every TCP user.

The protocol itself (envelope, handshake, reliability, limits) is sans-I/O in
`threadchat.protocols.udp`; this module only runs it.  Threads and locks:

- **receive thread**: `recvmmsg` (up to 64 datagrams per call, keeping the interpreter lock:
  `mmsg.py`; `recvfrom` where that is missing) -> `ServerEndpoint.receive` for each -> sends
  the batch's acks with one `sendmmsg` (and every
  other datagram the endpoint asks for) at once, and queues the rest of the actions (a
  request to handle, a user registered, paced or gone) for the user's hub worker.  It never
  takes the hub lock, so no acknowledgement waits for it: with a thousand TCP reader
  threads queueing for that lock, a receive thread that handled requests itself left every
  UDP user unacknowledged for seconds, and their clients gave up (the 1,000-client soak).
  It also hands over, at their pace, the requests the endpoint holds for users who send
  faster than `flood_rate` (`ServerEndpoint.release`): it then waits on the socket only
  until the next of those is due.
- **hub worker**, one per UDP user, as a TCP user has its reader thread: started when the
  session registers, ended once it is over.  It gets its user's actions in the order the
  endpoint made them, so the requests are handled in order, after the registration and
  before the leaving.  One thread per user, not a few shared ones: the hub lock is not fair,
  and a few workers queueing for it among a thousand TCP readers got a few tickets in its
  lottery for hundreds of UDP users, whose requests then waited for seconds (the soak).  If
  no thread can be started, the user's work goes to one shared worker, started with the
  listener.  A worker handles what it finds queued (up to WORK_BATCH items) as one read, as
  a TCP reader's recv is (`hub.pipeline.reading`): its messages share one store commit and
  are relayed and answered after it, while the worker goes on.  Requests of UDP users are
  parsed and handled here by each user's `NativeSession`.  An acknowledgement means "taken
  in": what is queued here is never dropped.  The queue is bounded per user instead
  (`MAX_IN_HAND`, the endpoint's `max_in_hand`): past it the endpoint holds further requests
  unacknowledged, the client's window fills and it waits, as for flood control, until the
  worker reports them done (`ServerEndpoint.handled`).  Any exception while handling one
  item is logged and counted (`internal_errors`); the worker goes on with the next.
- **sender thread**: drains the outbound queue of (user, bytes) items that the hub filled via
  `UdpUser.send_bytes`, hands each user's events of a round together to
  `ServerEndpoint.send_events` (packed into as few datagrams as fit, for clients that agreed
  to packing), and calls
  `ServerEndpoint.poll` at `next_deadline()` for retransmissions and timeouts.  Ending a
  session (timed out, unreachable, send queue exceeded, no name in time) is hub work too:
  queued for the user's worker, so the sender never waits for the hub lock either.
- `_lock` guards the endpoint and the address -> user table.  Nothing but a worker's queue
  lock (a leaf) is taken and no hub method is called while it is held.  Actions are queued
  for the workers under it, so that what two threads got from the endpoint reaches a worker
  in the endpoint's order (a request before the timeout that ended its session).
- `_cond` guards the outbound queue; also a leaf (taken by `send_bytes` under the hub lock).
- each `UdpUser.lock` serialises that user's session: handling a request and dropping the
  user, so a drop can never race a registration.  Order: user lock, then hub lock, then
  `_cond`.

Sockets are never written under a lock, and sends use MSG_DONTWAIT: a full socket buffer is
just loss, which the reliable channel repairs by retransmission.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from threadchat.core import events, names
from threadchat.core.admission import Ticket
from threadchat.core.events import Event
from threadchat.core.hub import encode_contained
from threadchat.protocols import udp as proto
from threadchat.protocols.native import jsonlines
from threadchat.protocols.native.line import JSON_MODE
from threadchat.protocols.native.session import NativeSession, SessionEnded
from threadchat.transports import mmsg

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)

# Events queued for one UDP user in the outbound queue (before the reliable channel, which has
# its own bound of proto.MAX_SEND_QUEUE).  The sender drains this queue within milliseconds,
# so reaching the bound means the sender is far behind: drop the user rather than grow.
MAX_USER_BACKLOG = 1024
# Items the sender thread takes from the queue per round, so timers are not starved by a burst.
SENDER_BATCH = 256
# Datagrams the receive thread takes in per round (one `hub.pipeline.reading`): bounds how long
# the first message of a round waits for its relay and `ok` behind the others.
RECEIVE_BATCH = 256
# Timers may move earlier because of what the receive thread did (data sent in reply to an ack
# opening the window); the sender therefore re-reads next_deadline at least this often while
# any session exists.  50 ms is small against the 200 ms initial retransmission timeout.
TIMER_SLACK = 0.05
# The UDP socket's receive buffer (see UdpListener.__init__).
RECEIVE_BUFFER = 4 * 1024 * 1024
# Items a hub worker takes from its queue per round (one `hub.pipeline.reading`).
WORK_BATCH = 256
# Requests of one user handed to its worker and not yet handled: past this the endpoint
# holds the next ones unacknowledged (module docstring). Above flood_burst (20 by default),
# so that it never bites while the hub keeps up; 4,096 sessions at most bound the queues.
MAX_IN_HAND = 32
# How often sessions that never got a name past the hub are checked against name_timeout.
HOUSEKEEPING_INTERVAL = 1.0
# Poll step while waiting for the last events to be acknowledged on shutdown.
FLUSH_POLL = 0.01
# Added to the wait for the next held request: a token bucket's refill time, computed in
# floating point, may land a hair before the token is whole, and the thread would wake for
# nothing.
RELEASE_SLACK = 0.001

# The endpoint says "send queue full"; users everywhere else see TCP's wording.
_DROP_REASONS = {"send queue full": "send queue exceeded"}


def _drop_reason(reason: str) -> str:
    """What the rooms see: the endpoint's wording mapped, a peer's bye reason sanitised."""
    reason = _DROP_REASONS.get(reason, reason)
    return "quit" if names.text_error(reason) else reason


@dataclass(frozen=True, slots=True)
class _EndSession:
    """Hub work from the sender thread: end `user`'s session (see `UdpListener._close_user`)."""

    user: UdpUser
    reason: str
    last_word: str | None = None

    @property
    def addr(self) -> proto.Address:
        return self.user.addr


# What a hub worker does: the endpoint's actions other than sends, and sessions to end.
_Work = proto.Deliver | proto.Registered | proto.Paced | proto.Drop | proto.ErrorReply | _EndSession


class _HubWorker:
    """One hub worker's queue (see the module docstring); `cond`'s lock is a leaf.

    `addr` is its user's address (None: the shared worker).  Items are put only under the
    listener's `_lock`, so under it an empty queue stays empty."""

    def __init__(self, addr: proto.Address | None) -> None:
        self.addr = addr
        self.cond = threading.Condition(threading.Lock())
        self.queue: deque[_Work] = deque()
        self.busy = False
        self.thread: threading.Thread | None = None

    def put(self, item: _Work) -> None:
        with self.cond:
            self.queue.append(item)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self.busy


class UdpUser:
    """One UDP session as the hub sees it: the hub's `Connection` interface plus a session."""

    kind = "udp"

    def __init__(self, listener: UdpListener, addr: proto.Address, ticket: Ticket) -> None:
        self.listener = listener
        # This user's place in the server's limits, released when the session ends.
        self.ticket = ticket
        self.addr = addr
        self.label = f"udp {addr[0]}:{addr[1]}"
        self.lock = threading.Lock()
        self.gone = False
        self.created = time.monotonic()
        # Items in the outbound queue (guarded by the listener's _cond).
        self.backlog = 0
        self.overflowed = False
        self.session = NativeSession(
            listener.server.hub, self, self.reply, label=self.label, host=str(addr[0])
        )

    # -- the hub's side (any thread, hub lock held) ----------------------------------------

    def codec_key(self) -> Hashable:
        # The same bytes as TCP JSON mode: one encoding per event serves both transports.
        return JSON_MODE

    def encode(self, event: Event) -> bytes | None:
        return jsonlines.encode_event(event)

    def direct_queue(self) -> None:
        return None  # served through send_bytes: UDP wraps events in datagrams of its own

    def send_bytes(self, data: bytes) -> None:
        self.listener.enqueue(self, data)

    # -- the session's side ----------------------------------------------------------------

    def reply(self, event: Event) -> None:
        data = encode_contained(self.encode, event)
        if data:
            self.send_bytes(data)


def _count_taken(items: list[tuple[UdpUser, bytes | None]]) -> None:
    """Items taken off the outbound queue (its lock held) leave their users' backlogs. A
    function of its own, so that its loop variables do not outlive the round."""
    for user, data in items:
        if data is not None:
            user.backlog -= 1


class UdpListener:
    """A UDP socket serving native JSON users; see the module docstring for the threads."""

    name = "udp"

    def __init__(self, server: Host, host: str, port: int) -> None:
        self.server = server
        config = server.config
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        # Every UDP user's datagrams queue on this one socket while the receive thread waits
        # for its turn: at the default buffer (208 KiB on Linux, a couple of hundred
        # datagrams) a soak of 170 UDP users saw about 2,000 drops a second, among them the
        # byes of users leaving, whose sessions then lingered for the give-up time with the
        # server retransmitting to closed ports. The kernel caps this at net.core.rmem_max.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.setblocking(False)
        # Batched reads and sends that keep the interpreter lock (transports/mmsg.py), where
        # the system has them; else recvfrom and sendto, one datagram per call.
        self._batched_receive = (
            mmsg.Receiver(self.sock, proto.RECV_BUFFER_SIZE) if mmsg.available() else None
        )
        self._batched_send = mmsg.Sender(self.sock) if mmsg.available() else None
        # stop() writes here to wake the receive thread: it blocks with no timeout, since
        # periodic wake-ups cost every other thread latency for nothing.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.address = self.sock.getsockname()
        # Requests are paced by the endpoint: flood_burst at once, then flood_rate per second,
        # as a TCP reader paces lines (see `ReliableChannel`).
        self.endpoint = proto.ServerEndpoint(
            session_timeout=config.udp_timeout,
            pace_rate=config.flood_rate,
            pace_burst=config.flood_burst,
            # Exempt hosts (loopback by default) skip the per-host hello limits, as they skip
            # the per-address limits of every listener: many local clients are not a flood.
            exempt=server.admission.is_exempt,
            max_in_hand=MAX_IN_HAND,
        )
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._users: dict[proto.Address, UdpUser] = {}
        self._cond = threading.Condition(threading.Lock())
        # (user, JSON line) to send, or (user, None): drop the user (backlog exceeded).
        self._queue: deque[tuple[UdpUser, bytes | None]] = deque()
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._closing = False
        self._receiver = threading.Thread(target=self._receive_loop, name="udp-receiver")
        self._sender = threading.Thread(target=self._send_loop, name="udp-sender")
        # Each user's hub worker, by address (guarded by _lock); the shared one for users
        # whose own could not be started.
        self._workers: dict[proto.Address, _HubWorker] = {}
        self._shared = _HubWorker(None)
        self._shared.thread = threading.Thread(
            target=self._work_loop, args=(self._shared,), name="udp-hub-shared"
        )

    @property
    def port(self) -> int:
        return int(self.address[1])

    def start(self) -> None:
        assert self._shared.thread is not None
        self._shared.thread.start()
        self._receiver.start()
        self._sender.start()

    def users(self) -> list[UdpUser]:
        with self._lock:
            return list(self._users.values())

    def endpoint_stats(self) -> dict[str, int]:
        with self._lock:
            return self.endpoint.stats

    # -- outbound queue (any thread; called under the hub lock) ----------------------------

    def enqueue(self, user: UdpUser, data: bytes) -> None:
        """Queue one encoded event for `user`; never blocks, never does I/O."""
        with self._cond:
            if user.overflowed or user.gone:
                return
            if user.backlog >= MAX_USER_BACKLOG:
                user.overflowed = True
                self._queue.append((user, None))
            else:
                user.backlog += 1
                self._queue.append((user, data))
            self._cond.notify()

    # -- the receive thread ----------------------------------------------------------------

    def _receive_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                with self._lock:
                    release_at = self.endpoint.next_release()
                timeout = None
                if release_at is not None:
                    timeout = max(0.0, release_at - time.monotonic()) + RELEASE_SLACK
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.sock:
                        self._drain()
                    else:
                        # A worker's wake-up (see `_handled`): only the timeout changes.
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                if release_at is not None:
                    self._release_held()

    def _release_held(self) -> None:
        """Hand over the held requests whose pace allows them now."""
        try:
            with self._lock:
                sends = self._route(self.endpoint.release(time.monotonic()))
            self._send_all(sends)
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("udp: error handing over paced requests")

    def _drain(self) -> None:
        """Take in what the socket holds, a batch at a time (up to RECEIVE_BATCH datagrams);
        each batch's replies (the acknowledgements) go out together."""
        per_call = mmsg.BATCH if self._batched_receive is not None else 1
        for _ in range(RECEIVE_BATCH // per_call):
            if self._stop.is_set():
                return
            try:
                datagrams = self._read_some()
            except OSError as problem:
                # e.g. ECONNREFUSED from an ICMP error about an earlier send: not fatal.
                self.stats["recv_errors"] += 1
                log.debug("udp: receive: %s", problem)
                return
            sends: list[proto.Send] = []
            for data, addr in datagrams:
                try:
                    sends.extend(self._take_datagram(data, addr))
                except Exception:
                    self.stats["internal_errors"] += 1
                    log.exception("udp: error handling a datagram from %s", addr)
            self._send_all(sends)
            if len(datagrams) < per_call:
                return

    def _read_some(self) -> list[tuple[bytes, proto.Address]]:
        """The datagrams waiting now: a batch (`mmsg`), or one by `recvfrom`; [] when none."""
        if self._batched_receive is not None:
            return self._batched_receive.recv_many()
        try:
            return [self.sock.recvfrom(proto.RECV_BUFFER_SIZE)]
        except (BlockingIOError, InterruptedError):
            return []

    def _take_datagram(self, data: bytes, addr: proto.Address) -> list[proto.Send]:
        """Hand one datagram to the endpoint; return what to send back."""
        now = time.monotonic()
        with self._lock:
            had_timers = self._deadline is not None
            sends = self._route(self.endpoint.receive(data, addr, now))
        if not had_timers and sends:
            # The sender may be sleeping without a deadline: let it look again.
            with self._cond:
                self._deadline = now
                self._cond.notify()
        return sends

    def _route(self, actions: list[proto.Action]) -> list[proto.Send]:
        """Queue the hub's part of `actions` for the workers, in order; return the sends.

        Called with `_lock` held, so that each worker gets a user's actions in the order the
        endpoint made them, whichever thread got them."""
        sends: list[proto.Send] = []
        for action in actions:
            match action:
                case proto.Send():
                    sends.append(action)
                case proto.Rejected(addr, reason):
                    log.debug("udp: ignored datagram from %s: %s", addr, reason)
                case proto.Connected():  # pragma: no cover - a client's action
                    pass
                case proto.Registered(addr):
                    self._start_worker(addr).put(action)
                case _:
                    self._worker_for(action.addr).put(action)
        return sends

    def _worker_for(self, addr: proto.Address) -> _HubWorker:
        return self._workers.get(addr, self._shared)

    def _start_worker(self, addr: proto.Address) -> _HubWorker:
        """A new session's own worker (called with `_lock` held); the shared one if no
        thread can be started now (out of threads: the process's or the system's limit)."""
        worker = _HubWorker(addr)
        worker.thread = threading.Thread(
            target=self._work_loop, args=(worker,), name=f"udp-hub {addr[0]}:{addr[1]}"
        )
        try:
            self.server.start_reader(worker.thread)  # Thread.start, as for a TCP reader
        except RuntimeError as problem:
            self.stats["shared_worker"] += 1
            log.warning("udp %s:%s: no thread of its own (%s), shares one", *addr[:2], problem)
            # All of this session's work must go to one thread: not to the worker of a
            # session that ended at this address (it retires once its queue is done).
            self._workers.pop(addr, None)
            return self._shared
        # A worker still at this address serves the session that ended there: it finishes
        # that session's work, and retires (see `_retire`).
        self._workers[addr] = worker
        return worker

    def _send_all(self, sends: list[proto.Send]) -> None:
        if self._batched_send is None or not sends:
            for send in sends:
                self._sendto(send.data, send.addr)
            return
        for problem in self._batched_send.send_many([(send.data, send.addr) for send in sends]):
            # As for sendto: loss, which retransmission or the session timeout repairs.
            self.stats["send_errors"] += 1
            log.debug("udp: sendmmsg: %s", problem)

    # -- the hub workers ---------------------------------------------------------------------

    def _work_loop(self, worker: _HubWorker) -> None:
        while True:
            with worker.cond:
                while not worker.queue and not self._stop.is_set():
                    worker.cond.wait()
                if self._stop.is_set():
                    return
                batch = [worker.queue.popleft() for _ in range(min(WORK_BATCH, len(worker.queue)))]
                worker.busy = True
            try:
                self._work_round(batch)
            finally:
                with worker.cond:
                    worker.busy = False
            # Not kept while waiting for the next: an ended session's user would stay alive.
            del batch
            if worker.addr is not None and self._retire(worker):
                return

    def _retire(self, worker: _HubWorker) -> bool:
        """Whether `worker` is done: nothing queued, and its session over (or another
        session at its address has a worker of its own). Nothing is queued for it after."""
        assert worker.addr is not None
        with self._lock:
            if worker.queue:
                return False
            current = self._workers.get(worker.addr) is worker
            if current and self.endpoint.has_session(worker.addr):
                return False
            if current:
                del self._workers[worker.addr]
            return True

    def _work_round(self, batch: list[_Work]) -> None:
        """The batch as one read (`hub.pipeline.reading`), then its requests reported done."""
        done: Counter[proto.Address] = Counter()
        with self.server.hub.pipeline.reading():
            for item in batch:
                if isinstance(item, proto.Deliver):
                    done[item.addr] += 1
                try:
                    self._do(item)
                except Exception:
                    self.stats["internal_errors"] += 1
                    log.exception("udp: error handling %s from %s", type(item).__name__, item.addr)
        if done:
            self._handled(done)

    def _do(self, item: _Work) -> None:
        match item:
            case proto.Registered(addr, name):
                self._admit(addr, name)
            case proto.Paced(addr):
                self._paced(addr)
            case proto.Deliver(addr, event):
                self._deliver(addr, event)
            case proto.Drop(addr, reason):
                self._drop(addr, _drop_reason(reason))
            case proto.ErrorReply(addr, code, message):
                with self._lock:
                    user = self._users.get(addr)
                if user is not None:
                    user.reply(events.Error(code=code, message=message))
            case _EndSession(user, reason, last_word):
                self._close_user(user, reason, last_word)

    def _handled(self, done: Counter[proto.Address]) -> None:
        """Tell the endpoint which requests are done: what it held for them goes on."""
        now = time.monotonic()
        with self._lock:
            actions: list[proto.Action] = []
            for addr, count in done.items():
                actions.extend(self.endpoint.handled(addr, count, now))
            sends = self._route(actions)
            paced_wait = self.endpoint.next_release() is not None
        self._send_all(sends)
        if paced_wait:
            # What was held for the worker may now wait for the pace: the receive thread
            # must wake for it, and may be waiting on its socket with no timeout.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0", socket.MSG_DONTWAIT)

    def _admit(self, addr: proto.Address, name: str) -> None:
        """A session's address is proven: a user, if the server's limits allow one more.

        Checked only now, so a spoofed hello cannot use up another host's share. A refused
        session is told why (an error, then a bye with the same reason) and forgotten; the
        hello that follows it finds no user and is ignored.
        """
        admission = self.server.admission
        host = str(addr[0])
        refusal = admission.admit(host, self.name)
        if refusal is None:
            user = UdpUser(self, addr, Ticket(admission, host))
            with self._lock:
                self._users[addr] = user
            log.info("%s: address proven for %s", user.label, name)
            return
        self.stats["refused"] += 1
        error = jsonlines.event_to_dict(events.Error(code=refusal.code, message=refusal.text))
        assert error is not None
        now = time.monotonic()
        with self._lock:
            actions = self.endpoint.send_event(addr, error, now)
            actions.extend(self.endpoint.close(addr, refusal.text))
            sends = self._route(actions)
        self._send_all(sends)

    def _paced(self, addr: proto.Address) -> None:
        with self._lock:
            user = self._users.get(addr)
        if user is None or user.session.user is None:
            return
        log.info("%s: flood, requests paced", user.label)
        config = self.server.config
        user.reply(
            events.Notice(
                text=f"flood control: over {config.flood_burst} requests at once or "
                f"{config.flood_rate:g} requests/s, your requests are now taken more slowly"
            )
        )

    def _sendto(self, data: bytes, addr: proto.Address) -> None:
        try:
            self.sock.sendto(data, socket.MSG_DONTWAIT, addr)
        except OSError as problem:
            # Full buffer or unreachable peer: as if the network lost it; retransmission
            # or the session timeout takes care of the rest.
            self.stats["send_errors"] += 1
            log.debug("udp: sendto %s: %s", addr, problem)

    def _deliver(self, addr: proto.Address, event: proto.Event) -> None:
        with self._lock:
            user = self._users.get(addr)
        if user is None:
            return
        request = jsonlines.parse_request(event)
        with user.lock:
            if user.gone:
                return
            # Requests over the flood limit never get here: the endpoint holds them
            # (unacknowledged) and hands them over at the pace's rate.
            try:
                user.session.handle_pipelined(request)
            except SessionEnded as ended:
                reason = ended.reason
            else:
                return
        self._close_user(user, reason)

    # -- ending sessions (either thread) ---------------------------------------------------

    def _close_user(self, user: UdpUser, reason: str, last_word: str | None = None) -> None:
        """End a session the endpoint still holds: tell the peer with a bye, then drop.

        `last_word` is an error code sent (best effort, just before the bye) with `reason`
        as its message; the outbound queue is bypassed because the session ends now.
        """
        actions: list[proto.Action] = []
        with self._lock:
            if last_word is not None:
                error = jsonlines.event_to_dict(events.Error(code=last_word, message=reason))
                assert error is not None
                actions.extend(self.endpoint.send_event(user.addr, error, time.monotonic()))
            actions.extend(self.endpoint.close(user.addr, reason))
            sends = self._route(actions)
        self._send_all(sends)
        self._drop(user.addr, reason, user)

    def _drop(self, addr: proto.Address, reason: str, user: UdpUser | None = None) -> None:
        """Forget the user at `addr` (the endpoint already has) and take it off the hub."""
        with self._lock:
            if user is None:
                user = self._users.get(addr)
            if user is None or self._users.get(addr) is not user:
                return
            del self._users[addr]
        user.ticket.release()
        with user.lock:
            if user.gone:
                return
            user.gone = True
            hub_user = user.session.user
        log.info("%s: session ended (%s)", user.label, reason)
        if hub_user is not None:
            # The user's last messages go out before the others see them leave.
            self.server.hub.pipeline.complete()
            self.server.hub.detach(hub_user, user, reason)
        # Nothing is handled for it any more (`_deliver` checks `gone` first): the session
        # lets go of this user, so that reference counting frees both (see
        # `NativeSession.release`).
        user.session.release()

    # -- the sender thread -----------------------------------------------------------------

    def _send_loop(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    timeout = None
                    if self._deadline is not None:
                        timeout = self._deadline - time.monotonic()
                        if timeout <= 0:
                            break
                    self._cond.wait(timeout)
                if self._stop.is_set():
                    return
                items = [self._queue.popleft() for _ in range(min(SENDER_BATCH, len(self._queue)))]
                _count_taken(items)
            try:
                self._send_round(items)
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
                    self._housekeep(now)
            except Exception:
                self.stats["internal_errors"] += 1
                log.exception("udp: sender round failed")
            # Not kept while waiting for the next round: an ended session's user would stay
            # alive (with its session) until then.
            del items

    def _send_round(self, items: list[tuple[UdpUser, bytes | None]]) -> None:
        now = time.monotonic()
        actions: list[proto.Action] = []
        overflowed: list[UdpUser] = []
        # Each user's events of the round, in order, handed to the endpoint together: to a
        # client that agreed to packing they go out in as few datagrams as fit, so a busy
        # room costs it far fewer datagrams (and acks) than events.
        per_user: dict[UdpUser, list[proto.OutEvent]] = {}
        for user, data in items:
            if data is None:
                overflowed.append(user)
            else:
                per_user.setdefault(user, []).extend(self._fit(data))
        with self._lock:
            for user, events in per_user.items():
                if self._users.get(user.addr) is not user:
                    continue  # dropped meanwhile
                actions.extend(self.endpoint.send_events(user.addr, events, now))
            deadline = self.endpoint.next_deadline()
            if deadline is not None and now >= deadline:
                actions.extend(self.endpoint.poll(now))
                deadline = self.endpoint.next_deadline()
            sends = self._route(actions)  # a Drop is hub work: the user's worker detaches it
            for user in overflowed:
                log.warning("%s: send queue exceeded (%d events)", user.label, MAX_USER_BACKLOG)
                self._worker_for(user.addr).put(_EndSession(user, "send queue exceeded"))
        if deadline is not None:
            # Re-read at least every TIMER_SLACK: the receive thread may have added timers.
            deadline = min(deadline, now + TIMER_SLACK)
        with self._cond:
            self._deadline = deadline
        self._send_all(sends)

    def _fit(self, data: bytes) -> list[proto.OutEvent]:
        encoded = proto.EncodedEvent(data.rstrip(b"\n"))
        if proto.event_fits(encoded):
            return [encoded]
        # Rare (long member lists, long texts from TCP users): parse once and cut to size.
        pieces = proto.fit_event(json.loads(encoded.json))
        self.stats["split_events"] += 1
        if not pieces:
            self.stats["unsendable_events"] += 1
            log.warning("udp: event too large for a datagram, not sent: %.200r", data)
        return list(pieces)

    def _housekeep(self, now: float) -> None:
        limit = self.server.config.name_timeout
        for user in self.users():
            if user.session.user is None and now - user.created > limit:
                with self._lock:
                    self._worker_for(user.addr).put(
                        _EndSession(user, "no name given in time", last_word="timeout")
                    )

    # -- shutdown --------------------------------------------------------------------------

    def stop(self, deadline: float) -> None:
        """Flush what is queued until `deadline` (monotonic), say bye to everyone, stop."""
        if self._closing:
            return
        self._closing = True
        while time.monotonic() < deadline:
            with self._cond:
                queued = bool(self._queue)
            with self._lock:
                unacked = self.endpoint.unacked()
            with self._lock:
                workers = [self._shared, *self._workers.values()]
            working = not all(worker.idle() for worker in workers)
            if not queued and not unacked and not working:
                break
            self._stop.wait(FLUSH_POLL)
        self._stop.set()
        with self._lock:
            workers = [self._shared, *self._workers.values()]
        for worker in workers:
            with worker.cond:
                worker.cond.notify_all()
        for worker in workers:
            if worker.thread is not None and worker.thread.is_alive():
                worker.thread.join()
        # The workers are gone: ending the sessions here races nobody's requests.
        for user in self.users():
            self._close_user(user, "server shutdown")
        with self._cond:
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        for thread in (self._receiver, self._sender):
            if thread.is_alive():
                thread.join()
        for sock in (self.sock, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
        if self._batched_receive is not None:
            self._batched_receive.close()
