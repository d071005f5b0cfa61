"""Several nodes as one chat: the hub's bus (`core.ports.Bus`) on Redis (`--redis-url`).

What travels: each node publishes what its own users do (joins, leaves, messages with their
stored id and time, topics, modes, kicks, nick changes, quits, presence) once, as plain data
the hub made (`Hub._user_record`, `_message_record`...), to a Redis Stream; every other node
reads it and hands it to `Hub.apply_remote`, which fans it out to its local members with the
same per-codec encoding as a local event.

Key layout (every key begins with `--redis-prefix`, so that one Redis serves several chats
or test runs; `{...}` is a Redis Cluster hash tag):
- `P:events:{sN}`: the event streams, `SHARDS` of them. A room's events all go to the stream
  of its folded name's shard, the events of a node's users (presence, nick, quit; private
  messages and kills to them) to the shard of the node's name, so order within a room
  holds (one stream is totally ordered) while the load spreads over `SHARDS` keys, hence
  over the masters of a Redis Cluster. Each is one key read by one
  thread, so no command ever spans two hash slots.
- `P:node:{NAME}`: the node's heartbeat, a key with a time to live of `--node-expiry`
  seconds that the node sets again every third of it. A node whose key is gone is lost:
  the others remove its users with the reason `node lost`.
- `P:nick:{FOLDED}`: who owns a nick: SET NX (so a nick is unique across nodes), with the
  user's record (node, nick, identity, flags, rooms) as its value, expiring like the
  heartbeat and set again with it. A node starting reads these to learn who is on the others.
- `P:room:{FOLDED}`: a room's state (topic, modes, lists, statuses; `Hub._room_record`),
  set by the node where it changes, in the same round trip and before the event that tells
  of the change, and kept alive (EXPIRE, and SET NX when missing) by every node with members
  there. A node that gains its first member of a room, or starts, reads it
  (`catch_up`, `start`): state set before it arrived is not waited for until its next change.

Streams rather than pub/sub: a node that was cut off reads on from the last id it saw, so it
catches up whatever Redis still holds (each stream keeps its last `STREAM_MAXLEN` events);
beyond that it says how many were lost. With pub/sub what was published while a subscriber
was away is gone, silently. Measured in `bench/bus_bench.py` (see docs/architecture.md).

Threads: one publisher (drains the queue `publish` fills, pipelining XADDs), one reader per
shard (XREAD BLOCK), one keeper (heartbeat, presence keys, lost nodes). Each has its own
Redis connection from the client's pool. The hub lock is never held across a Redis call:
`publish` and `release_nick` only queue; `claim_nick` runs without the lock.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import zlib
from typing import Any

import redis

from threadchat.core.errors import StoreError
from threadchat.core.hub import Hub, node_shard
from threadchat.core.names import fold

log = logging.getLogger(__name__)

# Event streams: enough to spread over a small Redis Cluster's masters, few enough that a
# node's reader threads (one each) cost little.
SHARDS = 8
# Events each stream keeps (approximately: MAXLEN ~ trims whole radix-tree nodes, cheaply):
# how far back a node that was cut off can catch up. At 10,000 events/s per shard, 10 s.
STREAM_MAXLEN = 100_000
# Events read per XREAD, and how long it blocks (ms) before looking at `stopping` again.
READ_COUNT = 1000
READ_BLOCK_MS = 500
# Renames in a row that a node starting follows (`_follow_renames`).
RENAME_HOPS = 4
# How long a join waits at most for its room's events to be applied (`catch_up`).
CATCH_UP_TIMEOUT = 1.0
# Events the publisher sends per round trip at most.
PUBLISH_BATCH = 500
# Room and private messages whose ids a node remembers, to show a message sent twice once.
MESSAGE_KINDS = frozenset({"msg", "pm"})
RECENT_MESSAGES = 16_384
# Events held for Redis while it is away, at most; later ones are dropped (and counted, and
# reported when Redis is back) rather than growing memory without bound.
MAX_UNSENT = 200_000
# How often the keeper looks for lost nodes (its heartbeat is every third of the expiry).
CHECK_INTERVAL = 1.0
# Redis calls give up after this long (connect and each command, XREAD's BLOCK aside).
SOCKET_TIMEOUT = 5.0
# The pause after a failed Redis call, doubling up to the maximum, while Redis is away.
BACKOFF = 0.2
BACKOFF_MAX = 2.0

_STOP = object()


class BusError(StoreError):
    """Redis cannot be used at start (unreachable, or the node name is taken)."""


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode()) % SHARDS


class RedisBus:
    """`core.ports.Bus` on Redis Streams; see the module docstring."""

    def __init__(
        self, hub: Hub, url: str, node: str, *, expiry: float = 15.0, prefix: str = "threadchat"
    ) -> None:
        self.hub = hub
        self.node = node
        self.expiry = expiry
        self.prefix = prefix
        self.url = url
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        # XREAD BLOCK holds its connection longer than SOCKET_TIMEOUT allows: its own client.
        self._reader_client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT + READ_BLOCK_MS / 1000,
            socket_connect_timeout=SOCKET_TIMEOUT,
        )
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Whether Redis answered the last call of the keeper; flips are told to users.
        self._linked = True
        # Remote nodes are not judged lost before this (monotonic) time: after a start or
        # a reconnection, their heartbeats get one expiry to show up.
        self._judge_after = 0.0
        # The last stream id each reader applied; `_advanced` is told when one moves.
        self._positions: dict[int, str] = {}
        self._advanced = threading.Condition()
        # Redis's run id: a new one after a cut means Redis restarted, its streams gone.
        self._run_id: str | None = None
        # Events not published because Redis was away too long (see MAX_UNSENT).
        self.dropped = 0
        # Users of other nodes whose nick key was missing at the last check (`_reconcile`).
        self._suspects: set[tuple[str, str]] = set()
        # Events published / applied, for logs and tests.
        self.published = 0
        self.applied = 0
        # The ids of messages applied lately (see `_first_time`), oldest first, and a lock:
        # every shard's reader thread applies events.
        self._recent_messages: collections.deque[tuple[str, int]] = collections.deque()
        self._recent_message_keys: set[tuple[str, int]] = set()
        self._recent_lock = threading.Lock()

    # -- keys ----------------------------------------------------------------------------------

    def _stream(self, shard: int) -> str:
        return f"{self.prefix}:events:{{s{shard}}}"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{{{node}}}"

    def _nick_key(self, nick: str) -> str:
        return f"{self.prefix}:nick:{{{fold(nick)}}}"

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}:room:{{{fold(room)}}}"

    def _renamed_key(self, room: str) -> str:
        return f"{self.prefix}:renamed:{{{fold(room)}}}"

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Join the chat: check Redis and the node name, learn who is on the other nodes,
        start the threads. Raises BusError saying why not."""
        try:
            self._client.ping()
            self._take_node_name()
            self._run_id = self._server_run_id()
            positions = {shard: self._last_id(shard) for shard in range(SHARDS)}
            known = self._load_presence()
            self._follow_renames()
            self._load_rooms(self.hub.remote_room_names())
        except redis.RedisError as problem:
            raise BusError(f"cannot use Redis at {self._where()}: {problem}") from problem
        self._judge_after = time.monotonic() + self.expiry
        log.info(
            "bus: node %s on Redis %s, %d users on %d other nodes",
            self.node,
            self._where(),
            known[0],
            known[1],
        )
        self._spawn(self._publisher, "bus-publisher")
        self._positions = dict(positions)
        for shard, position in positions.items():
            self._spawn(lambda s=shard, p=position: self._reader(s, p), f"bus-reader-{shard}")
        self._spawn(self._keeper, "bus-keeper")

    def _take_node_name(self) -> None:
        """Set the heartbeat, if no running node has the name. A node restarted after a
        crash waits for its old heartbeat to expire: until then the other nodes still hold
        its users, and must first see them leave."""
        deadline = time.monotonic() + self.expiry + 1
        while not self._client.set(self._node_key(self.node), "1", nx=True, ex=self._ttl()):
            if time.monotonic() > deadline:
                raise BusError(
                    f"node name {self.node!r} is in use by a running node; give each node "
                    "its own --node-name"
                )
            log.info("bus: node name %s still held; waiting for it to expire", self.node)
            time.sleep(min(1.0, self.expiry / 4))

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Leave the chat: publish what is queued (the local users' quits), give up the
        node's keys, stop the threads."""
        self._queue.put(_STOP)
        self._stopping.set()
        for thread in self._threads:
            thread.join(SOCKET_TIMEOUT + 1)
        try:
            self._client.delete(self._node_key(self.node))
        except redis.RedisError as problem:
            log.warning("bus: cannot remove the node's heartbeat: %s", problem)
        self._client.close()
        self._reader_client.close()

    def _where(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    def _server_run_id(self) -> str | None:
        return self._client.info("server").get("run_id")

    def _ttl(self) -> int:
        return max(1, round(self.expiry))

    def _last_id(self, shard: int) -> str:
        newest = self._client.xrevrange(self._stream(shard), count=1)
        return newest[0][0].decode() if newest else "0-0"

    def _load_presence(self) -> tuple[int, int]:
        """Make the users of the other nodes known to the hub; (users, nodes)."""
        users, nodes = 0, set()
        for key in self._client.scan_iter(match=f"{self.prefix}:nick:*", count=1000):
            raw = self._client.get(key)
            if raw is None:
                continue
            try:
                record = json.loads(raw)
                node = record["node"]
            except (ValueError, KeyError, TypeError):
                log.warning("bus: unreadable presence key %r", key)
                continue
            if node == self.node or "nick" not in record:
                continue
            self.hub.apply_remote("user", node, record)
            users += 1
            nodes.add(node)
        return users, len(nodes)

    def _follow_renames(self) -> None:
        """Rooms renamed lately under their new names: the presence keys of other nodes'
        users may name the old one until their node refreshes them (a third of the expiry),
        so a rename leaves a marker for as long as the expiry."""
        for _ in range(RENAME_HOPS):
            rooms = self.hub.remote_room_names()
            if not rooms:
                return
            pipe = self._client.pipeline(transaction=False)
            for room in rooms:
                pipe.get(self._renamed_key(room))
            renamed = [
                (room, new.decode())
                for room, new in zip(rooms, pipe.execute(), strict=True)
                if new is not None
            ]
            if not renamed:
                return
            for old, new in renamed:
                record = {"old": old, "new": new, "by": "", "reason": ""}
                self.hub.apply_remote("rename", "", record)

    def _load_rooms(self, rooms: list[str]) -> None:
        """Take the state other nodes keep of `rooms` (topic, modes, lists, statuses)."""
        if not rooms:
            return
        pipe = self._client.pipeline(transaction=False)
        for room in rooms:
            pipe.get(self._room_key(room))
        for room, raw in zip(rooms, pipe.execute(), strict=True):
            if raw is None:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                log.warning("bus: unreadable state of room %s", room)
                continue
            self.hub.apply_remote("room", record.get("node", ""), record)

    # -- ports.Bus -----------------------------------------------------------------------------

    def claim_nick(self, nick: str) -> bool:
        record = json.dumps({"node": self.node, "claimed": nick})
        try:
            return bool(self._client.set(self._nick_key(nick), record, nx=True, ex=self._ttl()))
        except redis.RedisError as problem:
            # Cut off: the node goes on serving its own users; the nick is checked locally
            # now and claimed with the presence keys when Redis is back.
            log.warning(
                "bus: cannot claim %s in Redis (%s); checked on this node only", nick, problem
            )
            return True

    def release_nick(self, nick: str) -> None:
        self._queue.put(("release", nick))

    def publish(self, kind: str, shard: str, data: dict[str, Any]) -> None:
        if self._queue.qsize() >= MAX_UNSENT:
            self.dropped += 1
            return
        self._queue.put((kind, shard, data))

    def catch_up(self, shard: str) -> None:
        number = shard_of(shard)
        try:
            target = self._last_id(number)
        except redis.RedisError:
            return  # cut off: nothing newer can be had now
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        with self._advanced:
            while _id_after(target, self._positions.get(number, "0-0")):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("bus: shard %d not caught up within %ss", number, CATCH_UP_TIMEOUT)
                    break
                self._advanced.wait(remaining)
        # The first member here of a room others hold: its state as they keep it, which is
        # at least as new as the events just applied (it is set before each is added).
        if self.hub.wants_room_state(shard):
            try:
                self._load_rooms([shard])
            except redis.RedisError as problem:
                log.warning("bus: cannot read the state of room %s: %s", shard, problem)

    # -- threads -------------------------------------------------------------------------------

    def _publisher(self) -> None:
        backoff = BACKOFF
        pending: list[Any] = []
        stopping = False
        while not (stopping and not pending):
            if not pending:
                item = self._queue.get()
                while True:
                    if item is _STOP:
                        stopping = True
                    else:
                        pending.append(item)
                    if len(pending) >= PUBLISH_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
            if not pending:
                continue
            try:
                self._send(pending)
                pending = []
                backoff = BACKOFF
            except Exception as problem:  # RedisError, or a socket error it did not wrap
                # Kept, in order, and sent again once Redis is back: nothing is reordered.
                log.warning("bus: cannot publish %d events: %s", len(pending), problem)
                if self._stopping.is_set():
                    log.error("bus: %d events not published: stopping", len(pending))
                    return
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _send(self, items: list[Any]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            if item[0] == "release":
                pipe.delete(self._nick_key(item[1]))
                continue
            kind, shard, data = item
            state = data.pop("room_state", None)
            if state is not None:
                # Before the event: whoever reads the event finds the state as new as it.
                value = json.dumps({"node": self.node, **state}, separators=(",", ":"))
                pipe.set(self._room_key(state["name"]), value, ex=self._ttl())
                if kind == "rename" and fold(data["old"]) != fold(data["new"]):
                    pipe.set(self._renamed_key(data["old"]), data["new"], ex=self._ttl())
            presence = data.pop("presence", None)
            if presence is not None:
                # A local user's rooms changed (join, leave, kick): their presence key too,
                # before the event, for the reason given below.
                record = json.dumps({"node": self.node, **presence}, separators=(",", ":"))
                pipe.set(self._nick_key(presence["nick"]), record, ex=self._ttl())
            if kind == "user" and "rooms" in data:
                # The nick key gets the whole record before the event is added: a node
                # starting now either reads the event (its streams' positions were taken
                # before it) or finds the record (its presence load comes after them), never
                # neither, as it would with the bare claim until the next refresh.
                record = json.dumps({"node": self.node, **data}, separators=(",", ":"))
                pipe.set(self._nick_key(data["nick"]), record, ex=self._ttl())
            entry = json.dumps([self.node, kind, data], separators=(",", ":"))
            pipe.xadd(
                self._stream(shard_of(shard)), {"e": entry}, maxlen=STREAM_MAXLEN, approximate=True
            )
        pipe.execute()
        self.published += len(items)

    def _reader(self, shard: int, position: str) -> None:
        stream = self._stream(shard)
        backoff = BACKOFF
        cut_off_at: float | None = None
        while not self._stopping.is_set():
            try:
                answer = self._reader_client.xread(
                    {stream: position}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except Exception as problem:  # RedisError, or a socket error it did not wrap
                if cut_off_at is None:
                    cut_off_at = time.monotonic()
                    log.warning("bus: shard %d cut off from Redis: %s", shard, problem)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if cut_off_at is not None:
                missed = self._gap(stream, position)
                log.warning(
                    "bus: shard %d back after %.1f s; %s",
                    shard,
                    time.monotonic() - cut_off_at,
                    f"{missed} events lost (trimmed or Redis restarted)"
                    if missed
                    else "caught up with what was published meanwhile",
                )
                cut_off_at, backoff = None, BACKOFF
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    position = entry_id.decode()
                    self._apply(fields.get(b"e"))
            if answer:
                with self._advanced:
                    self._positions[shard] = position
                    self._advanced.notify_all()

    def _gap(self, stream: str, position: str) -> int | str:
        """After a cut: whether events after `position` are gone (0: none known lost)."""
        try:
            oldest = self._reader_client.xrange(stream, count=1)
        except redis.RedisError:
            return "an unknown number of"
        if position == "0-0" or not oldest:
            return 0
        first = oldest[0][0].decode()
        return "some" if _id_after(first, position) else 0

    def _apply(self, raw: bytes | None) -> None:
        try:
            node, kind, data = json.loads(raw or b"")
        except (ValueError, TypeError):
            log.warning("bus: unreadable event %r", raw[:200] if raw else raw)
            return
        if node == self.node:
            return
        if kind in MESSAGE_KINDS and not self._first_time(kind, data.get("id")):
            return
        try:
            self.hub.apply_remote(kind, node, data)
            self.applied += 1
        except Exception:
            # A bad event from another node (another release?) costs that event only.
            log.exception("bus: cannot apply %s from %s", kind, node)

    def _first_time(self, kind: str, message_id: object) -> bool:
        """False for a message this node applied already. The publisher sends a batch again
        when its pipeline failed, and one that failed part way had reached Redis in part: a
        stream may hold an event twice (at least once), and a message must show once."""
        if not isinstance(message_id, int):
            return True
        key = (kind, message_id)
        with self._recent_lock:
            if key in self._recent_message_keys:
                return False
            self._recent_message_keys.add(key)
            self._recent_messages.append(key)
            if len(self._recent_messages) > RECENT_MESSAGES:
                self._recent_message_keys.discard(self._recent_messages.popleft())
        return True

    def _keeper(self) -> None:
        interval = self.expiry / 3
        next_refresh = 0.0
        while not self._stopping.wait(CHECK_INTERVAL if next_refresh else 0):
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    self._refresh()
                    self._reconcile()
                    next_refresh = now + interval
                self._find_lost_nodes()
            except Exception as problem:  # RedisError, or a socket error it did not wrap
                if self._linked:
                    self._linked = False
                    log.error("bus: lost Redis (%s); serving local users only", problem)
                    self.hub.broadcast_notice(
                        "this server lost its link to the other servers; users elsewhere "
                        "may not see you until it is back"
                    )
                next_refresh = now  # try again at the next check
                continue
            if not self._linked:
                self._relinked()

    def _relinked(self) -> None:
        """Redis answers again: say what the cut cost, as far as this node can tell."""
        self._linked = True
        self._judge_after = time.monotonic() + self.expiry
        try:
            run_id = self._server_run_id()
        except redis.RedisError:
            run_id = self._run_id
        restarted = run_id != self._run_id
        self._run_id = run_id
        lost = []
        if restarted:
            lost.append("Redis restarted, so events other servers sent during the cut are lost")
        if self.dropped:
            lost.append(f"{self.dropped} events from here could not be sent")
            self.dropped = 0
        gap = "; ".join(lost) or "what was sent meanwhile is caught up"
        log.warning("bus: Redis is back; presence sent again; %s", gap)
        self.hub.broadcast_notice(f"this server is linked to the other servers again ({gap})")

    def _refresh(self, *, relinking: bool = False) -> None:
        """The heartbeat and the local users' presence keys, set again. When the heartbeat
        was gone (a cut longer than the expiry, or a Redis that restarted empty) the users
        are also published again, so that nodes that dropped them take them back."""
        records = self.hub.local_user_records()
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._node_key(self.node), "1", ex=self._ttl(), get=True)
        for record in records:
            value = json.dumps({"node": self.node, **record}, separators=(",", ":"))
            pipe.set(self._nick_key(record["nick"]), value, ex=self._ttl())
        for room, state in self.hub.local_room_records():
            # Kept while this node has members there; written when missing (a room from
            # before the node started, or whose key expired during a cut).
            room_key = self._room_key(room)
            value = json.dumps({"node": self.node, **state}, separators=(",", ":"))
            pipe.set(room_key, value, ex=self._ttl(), nx=True)
            pipe.expire(room_key, self._ttl())
        previous = pipe.execute()[0]
        if previous is None or relinking or not self._linked:
            self._judge_after = time.monotonic() + self.expiry
            for record in records:
                self.publish("user", node_shard(self.node), record)

    def _reconcile(self) -> None:
        """Users of other nodes whose nick key is gone, or another user's now, at two checks
        in a row leave here with the reason `gone`: their quit was overtaken by an event of
        theirs in another stream, or lost in a cut. (Twice, so that a rename, which gives
        the old key up just before its event arrives, is not taken for a quit.) The users of
        lost nodes are left to `_find_lost_nodes`, which says `node lost`."""
        users = self.hub.remote_users()
        if not users:
            self._suspects = set()
            return
        nodes = sorted({node for _, node in users})
        pipe = self._client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._node_key(node))
        for nick, _ in users:
            pipe.get(self._nick_key(nick))
        answers = pipe.execute()
        alive = {node for node, up in zip(nodes, answers[: len(nodes)], strict=True) if up}
        suspects = set()
        for (nick, node), raw in zip(users, answers[len(nodes) :], strict=True):
            if node in alive and _owner(raw) != node:
                suspects.add((nick, node))
        gone = suspects & self._suspects
        for nick, node in gone:
            if self.hub.remote_user_gone(nick, node, "gone"):
                log.info("bus: %s of node %s was gone; removed here", nick, node)
        self._suspects = suspects - gone

    def _find_lost_nodes(self) -> None:
        if time.monotonic() < self._judge_after:
            return
        nodes = sorted(self.hub.remote_nodes())
        if not nodes:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(self._node_key(self.node))
        for node in nodes:
            pipe.exists(self._node_key(node))
        mine, *alive_nodes = pipe.execute()
        if not mine:
            # Our own heartbeat is gone too: Redis lost its keys (restarted empty), not the
            # nodes their lives. Set ours again and give the others an expiry to do so.
            self._refresh(relinking=True)
            return
        for node, alive in zip(nodes, alive_nodes, strict=True):
            if not alive:
                self.hub.remote_node_lost(node, "node lost")


def _owner(raw: bytes | None) -> str | None:
    """The node a nick key's value names (None: no key, or not ours to read)."""
    if raw is None:
        return None
    try:
        return json.loads(raw).get("node")
    except (ValueError, AttributeError):
        return None


def _id_after(a: str, b: str) -> bool:
    """Whether stream id `a` comes after `b`: the entry after `b` that a reader would have
    read next was trimmed away (or Redis lost the stream)."""
    a_ms, a_seq = (int(x) for x in a.split("-"))
    b_ms, b_seq = (int(x) for x in b.split("-"))
    return (a_ms, a_seq) > (b_ms, b_seq)
