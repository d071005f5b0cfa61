"""Message history: commit before relay, replay on join, history pages, retention.

`MessageLog` is the hub's `history` service. The hub hands every room and private message to
`submit` *before* relaying it, outside the hub lock; the message is relayed only once the store
has committed it (group commit: concurrent senders share one commit), and the relayed event
then carries the stored id and time. So a message any recipient has seen is on disk.

If a write fails later (disk full, file system turned read-only), live chat goes on: the
message is still relayed with ordinary event ids, and its sender is told "message not saved"
(with the request's ref, instead of its `ok`: an `ok` means stored). Refusing to relay would
turn a storage problem into a chat outage; the sender knows exactly which message is missing
from history. A message the store cannot take (see `PartlyStored`) fails alone: the other
messages of its commit are stored, relayed and acknowledged as usual.

A room that is not kept (see moderation.py) takes its history with it when it ends: its
messages are deleted (`MessageLog.room_ended`), so whoever makes a room of that name later
starts with an empty history.

IRC NOTICEs are not stored: they are meant for automatic replies and bots (never answered,
often noisy), and the store has no kind for them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from threadchat.core import delivery, events, names
from threadchat.core.errors import StoreError
from threadchat.core.events import Event
from threadchat.core.history import DEFAULT_PAGE, HistoryQuery, Replay, clamp_limit
from threadchat.core.hub import HubError, RoomRelay, User
from threadchat.core.live import MessageExtra, excerpt
from threadchat.core.search import SearchQuery
from threadchat.store.base import (
    NewMessage,
    PartlyStored,
    Stamp,
    Store,
    StoredMessage,
)
from threadchat.store.sqlite import wait_for

log = logging.getLogger(__name__)

# How long a sender waits for its message to be committed before it is relayed anyway (with a
# "not saved" error): longer than any healthy group commit (milliseconds), short enough that a
# hung disk does not freeze a conversation for long.
RECORD_TIMEOUT = 5.0
# A storage failure is logged at most once per this many seconds: a full disk would otherwise
# log one error per chat message.
ERROR_LOG_INTERVAL = 60.0
# How often the retention thread deletes expired messages. Hourly keeps the database within an
# hour of the configured age while costing next to nothing.
RETENTION_INTERVAL = 3600.0
# Ended rooms remembered so that a message checked before its room ended, still in its
# reader's batch, is not stored into a later room of that name (see `_dispatch`). A batch
# lives for one read; far more rooms than this cannot end during one.
ENDED_ROOMS_REMEMBERED = 4096

# Why a message was not stored, as its sender is told: an error's code and message (with
# the request's ref when it had one).
Refusal = tuple[str, str]
# A message relayed but not stored. Details go to the operator's log, not to users.
NOT_SAVED: Refusal = (
    "not_saved",
    "message not saved: the server could not store it; "
    "it was delivered but will be missing from history",
)


Relay = Callable[[dict[str, Any]], None]

# Pipelining: a reader thread that handles several lines from one recv() queues all their
# writes and goes on reading. Right after those writes' group commit the store's writer
# thread relays the messages, in order, with their stored ids (`MessageLog._relay_committed`).
# The messages still reach nobody before they are committed, and the reader never waits for
# the disk unless something must not overtake them (see `complete`). Measured: a reader that
# waited for each read's commit itself halved fan-out throughput with history on.
# Thread-local, like delivery batches.
_local = threading.local()


class _Ack:
    """The answer to a message request that carried a ref, given once the message's fate is
    known: `ok` when it is stored, else the error saying why not, with the ref and no `ok`."""

    __slots__ = ("ref", "reply", "used")

    def __init__(self, ref: object, reply: Callable[[Event], None]) -> None:
        self.ref = ref
        self.reply = reply
        self.used = False

    def answer(self, refusal: Refusal | None, msgid: int | None = None) -> None:
        if refusal is None:
            self.reply(events.Ok(ref=self.ref, msgid=msgid))
        else:
            self.reply(events.Error(code=refusal[0], message=refusal[1], ref=self.ref))


# A reader's queued entry: the index of its message among the batch's writes (NOT_STORED
# for a message relayed without history, see `defer`), the sender and the relay; or
# (index, None, ack) for the acknowledgement of the message at that index; or
# (None, None, callback) for a `then` callback.
Entry = tuple["int | None", "User | None", "Relay | _Ack"]
NOT_STORED = -1
# A reader's written batch: its entries, its write, and the event its reader's `complete()`
# waits for.
_Queued = tuple[list[Entry], "Future[list[Stamp]] | BaseException", threading.Event]
# The event fields (id, ts) of a batch's writes, in order ({} for a message not stored), and
# the error each message that was not stored gets, by its index.
_Stamped = tuple[list[dict[str, Any]], dict[int, Refusal]]


@contextlib.contextmanager
def pipelined() -> Iterator[None]:
    """Within this block, messages of this thread are committed and relayed together, after
    it ends (or at `complete()`). Re-entrant: only the outermost block dispatches."""
    if getattr(_local, "pending", None) is not None:
        yield
        return
    _local.pending = []
    _local.writes = []
    try:
        yield
    finally:
        try:
            _dispatch()
        finally:
            _local.pending = None


@contextlib.contextmanager
def reading(flush: delivery.batch | None = None) -> Iterator[None]:
    """The scope of one read of requests, the same for every transport: a TCP reader's recv,
    or a UDP receive round (the datagrams of all UDP users that one wake-up takes in).

    What it sends is flushed once at its end (`flush`: a delivery batch of the caller's, else
    a fresh one), and its messages are pipelined: they share one commit and are relayed after
    it, while the reader goes on. Within it, a request that is not a message must first
    `complete()` what is queued (see `NativeSession.handle_pipelined`)."""
    with flush if flush is not None else delivery.batch(), pipelined():
        yield


def acknowledged(
    ref: object, reply: Callable[[Event], None]
) -> contextlib.AbstractContextManager[None]:
    """Answer the request with `ref` whose message is sent within this block (`Hub.say`,
    `Hub.send_private`) once the message's fate is known: `ok` when it is stored, an error
    with the ref and no `ok` when it is not. Without history (nothing is stored) `ok` once it
    is relayed. Nothing is answered when the block raises: the caller answers that error.

    A plain class, and one shared no-op for the usual message without a ref: this runs for
    every native message, and a generator-based context manager there cost the JSON fan-out
    benchmark about a tenth of its throughput."""
    if ref is None:
        return _NO_ACK
    return _Acknowledging(_Ack(ref, reply))


_NO_ACK = contextlib.nullcontext()


class _Acknowledging:
    __slots__ = ("ack",)

    def __init__(self, ack: _Ack) -> None:
        self.ack = ack

    def __enter__(self) -> None:
        _local.ack = self.ack

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        _local.ack = None
        ack = self.ack
        if kind is None and not ack.used:
            then(lambda: ack.answer(None))


def then(callback: Callable[[], None]) -> None:
    """Run `callback` after this thread's queued messages are committed and relayed (now when
    nothing is queued). Acknowledgements use it: an `ok` for a message must not reach the
    sender before the message is durable, or a crash could lose a message it was told is
    accepted."""
    pending = getattr(_local, "pending", None)
    if not pending:
        callback()
    else:
        pending.append((None, None, lambda _stamp: callback()))


def defer(relay: RoomRelay) -> bool:
    """Without history: queue a room message with the others of this thread's read, to be
    relayed as one run when the read ends (`Hub.relay_room_run`, in this thread). False when
    the thread is not in `pipelined()`; the caller then relays it at once.

    Measured with history off (fanout-100), one fan-out per message gave 2.96M / 3.06M
    deliveries/s (IRC / JSON) where history on, relaying runs, gave 4.27M / 4.76M.
    """
    pending: list[Entry] | None = getattr(_local, "pending", None)
    if pending is None:
        return False
    pending.append((NOT_STORED, relay.user, relay))
    return True


def complete() -> None:
    """Relay this thread's queued messages and wait until that is done, in order.

    A caller must complete before anything that could overtake the queued messages: another
    request of the same user (a /leave after a line), a flood pause, or leaving the hub.
    """
    _dispatch()
    tail: threading.Event | None = getattr(_local, "tail", None)
    if tail is not None and not tail.wait(RECORD_TIMEOUT):
        log.warning("queued messages not relayed within %ss", RECORD_TIMEOUT)


def _dispatch() -> None:
    """Queue this thread's messages for the store as one write, relayed after its commit (or
    run them here when nothing is written: callbacks, and messages relayed without
    history)."""
    pending: list[Entry] | None = getattr(_local, "pending", None)
    if not pending:
        return
    batch = pending[:]
    pending.clear()
    writes: list[NewMessage] = _local.writes[:]
    _local.writes.clear()
    previous: threading.Event | None = getattr(_local, "tail", None)
    done = threading.Event()
    _local.tail = done

    def relay_without_writes() -> None:
        # Nothing to wait for; still after what an earlier read of this thread queued.
        if previous is not None:
            previous.wait(RECORD_TIMEOUT)
        try:
            _relay_round([(batch, [], {})])
        finally:
            done.set()

    if not writes:
        relay_without_writes()
        return
    service: MessageLog = _local.service
    if service.ends != _local.ends_seen:
        batch, writes = service.without_ended_rooms(batch, writes, _local.ends_seen)
        if not writes:
            relay_without_writes()
            return
    try:
        service.store.append_many(writes, lambda written: service.committed(batch, written, done))
    except Exception as problem:  # StoreError; anything else is as much a failed write
        # Not queued: relay here (unstamped, each sender told), after what came before.
        if not isinstance(problem, StoreError):
            log.exception("queueing messages for the store failed")
        if previous is not None:
            previous.wait(RECORD_TIMEOUT)
        try:
            _relay_round([(batch, *service._stamps(batch, problem))])
        finally:
            done.set()


# One NewMessage per message: `_make` skips the generated __new__, 0.16 us against 0.22 for
# a positional call and 0.44 with keywords (measured).
_make_message = NewMessage._make


def _new_message(
    user: User,
    text: str,
    kind: str,
    room: str | None,
    target: User | None,
    reply_to: int | None = None,
) -> NewMessage:
    """What the store keeps of one message."""
    to_nick, to_account = (target.nick, target.account) if target is not None else (None, None)
    return _make_message(
        (user.nick, text, room, to_nick, user.account, to_account, kind == events.ACTION, reply_to)
    )


def _relay_round(
    batches: list[tuple[list[Entry], list[dict[str, Any]], dict[int, Refusal]]],
) -> None:
    """Relay queued messages (each batch's entries with the stamps of its writes and the
    errors of those not stored) in order, then run the callbacks and acknowledgements. A run
    of consecutive relays that offer `relay_many` goes in one call: the hub then fans a run
    of room messages out as one chunk per member."""
    callbacks: list[tuple[Callable[[Any], None], Any]] = []
    queued: list[tuple[Relay, dict[str, Any], User]] = []
    for entries, stamps, failures in batches:
        for index, user, relay in entries:
            if index is None or user is None:
                if isinstance(relay, _Ack):
                    stored = stamps[index].get("id") if index is not None and index >= 0 else None
                    callbacks.append(
                        (
                            lambda refusal, ack=relay, msgid=stored: ack.answer(refusal, msgid),
                            failures.get(index),
                        )
                    )
                else:
                    callbacks.append((relay, {}))
            else:
                queued.append((relay, stamps[index] if index >= 0 else {}, user))
    start, count = 0, len(queued)
    while start < count:
        relay, stamp, user = queued[start]
        many = getattr(relay, "relay_many", None)
        end = start + 1
        if many is not None:
            while end < count and getattr(queued[end][0], "relay_many", None) == many:
                end += 1
        try:
            if many is None:
                relay(stamp)
            else:
                many([(r, s) for r, s, _ in queued[start:end]])
        except HubError as problem:
            # Checked before queueing; only a kick, mute or quit meanwhile gets here. The
            # message is stored but not relayed, as if it had arrived just after the change.
            log.debug("%s: queued message not relayed: %s", user.nick, problem.message)
        except Exception:
            # Runs for many senders at once: one bad relay must not stop the others.
            log.exception("%s: relaying a stored message failed", user.nick)
        start = end
    # Acknowledgements go last: after every message queued before them has been relayed.
    for callback, outcome in callbacks:
        try:
            callback(outcome)
        except Exception:
            log.exception("a callback after relaying failed")


def _extra(message: StoredMessage) -> MessageExtra | None:
    """What a stored message carries beyond its text (see core/live.py), or None."""
    if not (message.reply_to or message.edited or message.deleted or message.reactions):
        return None
    return MessageExtra(
        reply_to=message.reply_to,
        reply_sender=message.reply_sender,
        reply_excerpt=excerpt(message.reply_text) if message.reply_text else "",
        edited=message.edited,
        deleted=message.deleted,
        reactions=message.reactions,
    )


def to_event(message: StoredMessage) -> Event:
    """A stored message as a RoomMessage / PrivateMessage event marked as history."""
    kind = events.ACTION if message.action else events.TEXT
    if message.room is not None:
        return events.RoomMessage(
            extra=_extra(message),
            id=message.id,
            ts=message.ts / 1000,
            room=message.room,
            sender=message.sender,
            text=message.text,
            kind=kind,
            account=message.sender_account,
            history=True,
        )
    return events.PrivateMessage(
        extra=_extra(message),
        target_account=message.target_account,
        id=message.id,
        ts=message.ts / 1000,
        sender=message.sender,
        target=message.target or "",
        text=message.text,
        kind=kind,
        account=message.sender_account,
        history=True,
    )


class MessageLog:
    """Writes messages to the store and reads pages of history back. Thread-safe."""

    def __init__(self, store: Store, *, on_join: int = DEFAULT_PAGE) -> None:
        self.store = store
        self.on_join = clamp_limit(on_join)
        self._last_error_log = 0.0
        # Batches whose write is settled and that the next round relays; only the store's
        # writer thread touches this list (in `committed` and `_relay_committed`).
        self._committed: list[_Queued] = []
        store.after_commit = self._relay_committed
        # Rooms that ended (`room_ended`, hub lock held): how many have, and when each did
        # last (by that count), so that a reader's batch can tell whether one of its rooms
        # ended after the batch began.
        self.ends = 0
        self._ended: dict[str, int] = {}
        # The deletions of ended rooms' messages that are not known to be committed yet, by
        # folded room name: a read of such a room waits for its deletion first.
        self._forgetting: dict[str, Future[int]] = {}
        # Renamed rooms whose messages are being moved to the new name, by its folded name.
        self._moving: dict[str, Future[int]] = {}
        self._forgetting_lock = threading.Lock()

    def committed(
        self, batch: list[Entry], written: Future[list[Stamp]] | StoreError, done: threading.Event
    ) -> None:
        """A reader's batch is written (store writer thread): relay it with this commit."""
        self._committed.append((batch, written, done))

    def _relay_committed(self) -> None:
        """After a group commit, in the store's writer thread: relay every batch it held as one
        round, in the order they were queued, and hand the flush to the flusher thread.

        Relaying here, not in a thread of its own, saves a hand-over per commit: each costs
        up to a GIL switch interval behind busy readers. Measured (fan-out C=100, history on,
        medians of 3): IRC 5.25M -> 5.72M, JSON 4.90M -> 5.39M deliveries/s. Nothing here
        may wait for a store write (the store refuses: it would wait for itself).
        """
        waiting, self._committed = self._committed, []
        if not waiting:
            return
        try:
            with delivery.handed_off():
                _relay_round(
                    [(batch, *self._stamps(batch, written)) for batch, written, _ in waiting]
                )
        except Exception:
            log.exception("history relay round failed")
        finally:
            for _, _, done in waiting:
                done.set()

    def _stamps(self, batch: list[Entry], written: Future[list[Stamp]] | BaseException) -> _Stamped:
        """The event fields (id, ts) of a batch's writes, in order, and the errors of those
        not stored: {} for each of those, which are relayed anyway. A sender whose message
        has no acknowledgement to carry the error (no ref) is told here."""
        try:
            if isinstance(written, BaseException):
                raise written
            stamps = wait_for(written, RECORD_TIMEOUT)
            return [{"id": mid, "ts": ts / 1000} for mid, ts in stamps], {}
        except PartlyStored as partial:
            outcomes: list[Stamp | StoreError] = partial.outcomes
        except Exception as problem:  # any failure of the write fails its messages, no more
            if not isinstance(problem, StoreError):
                log.error("a write failed unexpectedly", exc_info=problem)
                problem = StoreError(f"write failed: {problem!r}")
            count = sum(1 for i, user, _ in batch if user is not None and i is not None and i >= 0)
            outcomes = [problem] * count
        fields: list[dict[str, Any]] = []
        failures: dict[int, Refusal] = {}
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, StoreError):
                self._log_failure(outcome)
                failures[index] = NOT_SAVED
                fields.append({})
            else:
                fields.append({"id": outcome[0], "ts": outcome[1] / 1000})
        acknowledged = {index for index, user, _ in batch if user is None and index is not None}
        for index, user, _ in batch:
            if user is not None and index in failures and index not in acknowledged:
                self._tell(user, failures[index])
        return fields, failures

    def room_ended(self, room: str) -> None:
        """A room that is not kept ended (hub lock held: this only queues work). Its history
        ends with it: its messages are deleted in the store's write order, so after every
        message queued for it before; reads of the room wait for that (`_forgotten`); and a
        message checked before the end but still in its reader's batch is not stored
        (`without_ended_rooms`)."""
        key = names.fold(room)
        self.ends += 1
        self._ended.pop(key, None)
        self._ended[key] = self.ends
        while len(self._ended) > ENDED_ROOMS_REMEMBERED:
            del self._ended[next(iter(self._ended))]
        self._forget(room)

    def room_renamed(self, old: str, new: str) -> None:
        """The room's messages move with it, in the store's write order (after every message
        queued under the old name); reads of the new name wait for that."""
        try:
            moving = self.store.rename_room_messages(old, new)
        except StoreError as problem:
            log.error("cannot move the history of %s to %s: %s", old, new, problem)
            return
        key = names.fold(new)
        with self._forgetting_lock:
            self._moving[key] = moving
        moving.add_done_callback(lambda done: self._moved(key, done))

    def _moved(self, key: str, moving: Future[int]) -> None:
        problem = moving.exception()
        if problem is not None:
            log.error("history of a renamed room not moved: %s", problem)
        with self._forgetting_lock:
            if self._moving.get(key) is moving:
                del self._moving[key]

    def room_created(self, room: str) -> None:
        """A room was created (hub lock held: this only queues work). It starts with no
        history: whatever an ended room of the name left, if its deletion failed or did not
        run (the server stopped first, and the purge at start failed), is deleted now, and
        its first replay waits for that."""
        self._forget(room)

    def _forget(self, room: str) -> Future[int]:
        """Queue the deletion of a room's messages; reads of the room wait for it."""
        key = names.fold(room)
        try:
            deletion = self.store.delete_room_messages(room)
        except StoreError as problem:
            # Not queued (store closed or far behind): reads of the room try again first.
            log.error("cannot delete the history of %s: %s", room, problem)
            deletion = Future()
            deletion.set_exception(problem)
        with self._forgetting_lock:
            self._forgetting[key] = deletion
        deletion.add_done_callback(lambda done: self._forgotten_done(key, done))
        return deletion

    def _forgotten_done(self, key: str, deletion: Future[int]) -> None:
        if deletion.exception() is None:
            with self._forgetting_lock:
                if self._forgetting.get(key) is deletion:
                    del self._forgetting[key]

    def _forgotten(self, room: str) -> None:
        """Wait until the messages of an ended room of this name are deleted, trying again
        if that failed: a later room of the name must never show them. Raises StoreError."""
        with self._forgetting_lock:
            deletion = self._forgetting.get(names.fold(room))
            moving = self._moving.get(names.fold(room))
        if moving is not None:
            # A failure is logged by `_moved`; the messages then stay under the old name.
            with contextlib.suppress(StoreError):
                wait_for(moving, RECORD_TIMEOUT)
        if deletion is None:
            return
        try:
            wait_for(deletion, RECORD_TIMEOUT)
        except StoreError as problem:
            log.error("history of %s not yet deleted (%s); trying again", room, problem)
            wait_for(self._forget(room), RECORD_TIMEOUT)

    def without_ended_rooms(
        self, batch: list[Entry], writes: list[NewMessage], since: int
    ) -> tuple[list[Entry], list[NewMessage]]:
        """A reader's batch without the room messages whose room ended after the batch began
        (`since`: the count of ended rooms then): checked against that room, they must not
        be stored into, or relayed to, a later room of its name. Their senders are told the
        room is gone."""
        ended = {
            index
            for index, user, relay in batch
            if user is not None
            and index is not None
            and index >= 0
            and isinstance(relay, RoomRelay)
            and self._ended.get(names.fold(relay.room_name), 0) > since
        }
        if not ended:
            return batch, writes
        acknowledged = {index for index, user, relay in batch if isinstance(relay, _Ack)}
        renumbered: dict[int, int] = {}
        for index in range(len(writes)):
            if index not in ended:
                renumbered[index] = len(renumbered)
        kept: list[Entry] = []
        for index, user, relay in batch:
            if index is None or index not in ended:  # NOT_STORED is never in `ended`
                kept.append((None if index is None else renumbered.get(index, index), user, relay))
                continue
            gone: Refusal = (
                "no_such_room",
                f"{writes[index].room} ended before your message was stored; it was not sent",
            )
            if isinstance(relay, _Ack):
                kept.append((None, None, lambda _stamp, ack=relay, why=gone: ack.answer(why)))
            elif user is not None and index not in acknowledged:
                kept.append((None, None, lambda _stamp, to=user, why=gone: self._tell(to, why)))
        return kept, [m for index, m in enumerate(writes) if index not in ended]

    def close(self) -> None:
        """Nothing of its own to stop: what is queued is relayed as the store's close() lets
        its writer finish the queue."""

    # -- writing (called by the hub for every message, outside its lock) --------------------

    def submit(
        self,
        user: User,
        text: str,
        kind: str,
        relay: Relay,
        *,
        room: str | None = None,
        target: User | None = None,
        reply_to: int | None = None,
    ) -> None:
        """Commit a message, then call `relay` with the event fields (id, ts) to relay it with.

        Outside `pipelined()` this happens before returning, and relay's HubError reaches
        the caller. Inside it the write is only queued; `complete()` relays.
        """
        # The acknowledgement waiting for this message, if its request had a ref (see
        # `acknowledged`): answered with the message's fate.
        ack: _Ack | None = getattr(_local, "ack", None)
        if ack is not None:
            _local.ack = None
            ack.used = True
        pending = getattr(_local, "pending", None)
        if pending is None or kind == events.NOTICE:
            stamp, refusal = self.record(
                user, text, kind, room=room, target=target, reply_to=reply_to
            )
            if refusal is not None and ack is None:
                self._tell(user, refusal)
            relay(stamp)
            if ack is not None:
                ack.answer(refusal, stamp.get("id"))
            return
        writes: list[NewMessage] = _local.writes
        if not writes:
            _local.service = self
            _local.ends_seen = self.ends
        writes.append(_new_message(user, text, kind, room, target, reply_to))
        pending.append((len(writes) - 1, user, relay))
        if ack is not None:
            pending.append((len(writes) - 1, None, ack))

    def record(
        self,
        user: User,
        text: str,
        kind: str,
        *,
        room: str | None = None,
        target: User | None = None,
        reply_to: int | None = None,
    ) -> tuple[dict[str, Any], Refusal | None]:
        """Commit one message; return the event fields it must be relayed with (id, ts), and
        the error its sender must get when it was not stored.

        The fields are {} when the message is not stored (a notice, or a failed write: it
        then goes out with ordinary event ids).
        """
        if kind == events.NOTICE:
            return {}, None
        try:
            stored = self.store.append(
                **_new_message(user, text, kind, room, target, reply_to)._asdict(),
                timeout=RECORD_TIMEOUT,
            )
        except StoreError as problem:
            self._log_failure(problem)
            return {}, NOT_SAVED
        return {"id": stored.id, "ts": stored.ts / 1000}, None

    def _log_failure(self, problem: StoreError) -> None:
        """Log a failed write, at most once per ERROR_LOG_INTERVAL (a full disk would log one
        line per message)."""
        now = time.monotonic()
        if now - self._last_error_log > ERROR_LOG_INTERVAL:
            self._last_error_log = now
            log.error("cannot store messages (relaying them anyway): %s", problem)

    @staticmethod
    def _tell(user: User, refusal: Refusal) -> None:
        """Tell `user` (each of their connections) why a message of theirs was not stored
        (its request had no ref)."""
        try:
            error = events.Error(code=refusal[0], message=refusal[1])
            for conn in user.connections:
                data = conn.encode(error)
                if data:
                    conn.send_bytes(data)
        except Exception:
            log.exception("%s: telling about a message not stored failed", user.nick)

    # -- messages that live on (called without the hub lock; they wait for the store) -------

    def lookup(self, msgid: int) -> events.RoomMessage | events.PrivateMessage | None:
        """The stored message `msgid` as a history event, or None."""
        stored = self.store.message(msgid)
        if stored is None:
            return None
        event = to_event(stored)
        assert isinstance(event, events.RoomMessage | events.PrivateMessage)
        return event

    def delete(self, msgid: int) -> bool:
        return self.store.delete_message(msgid)

    def edit(self, msgid: int, text: str) -> bool:
        return self.store.edit_message(msgid, text)

    def react(self, msgid: int, identity: str, nick: str, reaction: str, on: bool) -> bool:
        return self.store.set_reaction(msgid, identity, nick, reaction, on)

    # -- reading ----------------------------------------------------------------------------

    def replay(self, room: str) -> Replay | None:
        """The room's last `on_join` messages, for someone who just joined it (see
        `Hub.replay`, which decides to whom); None when there are none to show, or when they
        cannot be read (logged: a join goes on without its replay)."""
        if self.on_join == 0:
            return None
        try:
            messages = self.read(HistoryQuery.latest(self.on_join), room=room)
        except StoreError as problem:
            log.error("cannot read history of %s: %s", room, problem)
            return None
        if not messages:
            return None
        return Replay(room=room, messages=tuple(messages), page=self.on_join)

    def targets(
        self, rooms: Sequence[str], account: str | None, after_ms: int, before_ms: int, limit: int
    ) -> list[tuple[str, bool, int]]:
        """The conversations whose latest message is between two times (see the store's
        `conversation_targets`); raises StoreError."""
        return self.store.conversation_targets(rooms, account, after_ms, before_ms, limit)

    def search(self, query: SearchQuery, rooms: Sequence[str], account: str | None) -> list[Event]:
        """Messages matching `query` within `rooms` and the private conversations of
        `account`, newest first, as events marked history. Who may read what is the
        caller's rule (`Hub.search`); raises StoreError."""
        for room in rooms:
            self._forgotten(room)
        return [to_event(m) for m in self.store.search(query, rooms, account)]

    def set_read_marker(self, account: str, target: str, read_ms: int) -> int:
        """Move the account's read marker of `target` forward; its time (ms) after that.
        Waits for the disk: never called with the hub lock held. Raises StoreError."""
        return self.store.set_read_marker(account, target, read_ms)

    def read_markers(self, account: str) -> dict[str, int]:
        """The account's read markers (folded target -> ms). Raises StoreError."""
        return self.store.read_markers(account)

    def read(
        self,
        query: HistoryQuery,
        *,
        room: str | None = None,
        asker_account: str | None = None,
        peer: str | None = None,
    ) -> list[Event]:
        """Messages of a room (`room`) or of the private conversation between the accounts
        `asker_account` and `peer`, selected by `query`, oldest first, as events marked
        history. Access checks are the caller's (`Hub.read_history`); raises StoreError."""
        if peer is not None:
            assert asker_account is not None
            stored = self.store.private_history(asker_account, peer, query)
        else:
            assert room is not None
            self._forgotten(room)
            stored = self.store.room_history(room, query)
        return [to_event(m) for m in stored]


class ReadPipeline:
    """This module's pipelined read, as the hub's `core.ports.Pipeline` (the wiring plugs it
    in with `Hub.use_pipeline`): transports and protocols reach it through the hub."""

    reading = staticmethod(reading)
    complete = staticmethod(complete)
    acknowledged = staticmethod(acknowledged)
    then = staticmethod(then)
    defer = staticmethod(defer)


PIPELINE = ReadPipeline()


class Retention(threading.Thread):
    """Deletes messages older than `days` days: once at start, then every `interval` seconds.

    Stops when `stopping` is set; each purge works in bounded chunks (see the store).
    """

    def __init__(
        self,
        store: Store,
        days: float,
        stopping: threading.Event,
        interval: float = RETENTION_INTERVAL,
    ) -> None:
        super().__init__(name="history-retention", daemon=True)
        self.store = store
        self.days = days
        self.stopping = stopping
        self.interval = interval

    def purge_once(self) -> int:
        cutoff = int((time.time() - self.days * 86400) * 1000)
        deleted = self.store.purge_older_than(cutoff)
        if deleted:
            log.info("retention: deleted %d messages older than %g days", deleted, self.days)
        return deleted

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.purge_once()
            except StoreError as problem:
                log.error("retention: purge failed: %s", problem)
            if self.stopping.wait(self.interval):
                return


__all__ = [
    "PIPELINE",
    "MessageLog",
    "ReadPipeline",
    "Retention",
]
