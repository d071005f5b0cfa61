"""The PostgreSQL store (`--database-url postgresql://...`), shared by several server nodes.

It implements `base.Store` as `sqlite.py` does, with the same shape, so that a method added to
one is ported to the other mechanically: writes are functions of a connection run by the
writer thread (`_submit` waits for the commit, `_enqueue` does not), reads go through
`_query`; only the SQL changes (`%s` for `?`, PostgreSQL's spelling of the odd SQLite idiom).

Writes: one writer thread per node owns one connection. It takes everything queued (group
commit), runs the jobs in one transaction, commits once, then completes every Future; only
when that fails does it run the jobs again one by one, each in a SAVEPOINT, so a message the
database refuses fails alone. The rows of consecutive message jobs go in with one INSERT of
column arrays (`unnest`): one round trip for any number of rows.

Ids and times across nodes: every commit that writes messages first updates the one row of
`message_counter` (ids and the last time, in one round trip), and holds its row lock until it
commits. So the message commits of all nodes are ordered, ids increase in commit order and
are never reused, and times never go back along ids, even between nodes whose clocks differ.
The cost is that the nodes' message commits are serial; group commit makes that one commit
per node per round, not one per message.

Reads: a `psycopg_pool.ConnectionPool` of autocommit connections, checked before each use,
so a restarted database server costs the failed reads, not the node.

Durability: append() returns after PostgreSQL acknowledged the COMMIT, which with the
server's default `synchronous_commit = on` means the commit is flushed to its WAL.
Losing the connection fails the writes in flight with StoreError (never acknowledged, so
never claimed), and the writer reconnects for the next batch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo

from threadchat.core.errors import StoreError
from threadchat.core.history import HistoryQuery, Ref, clamp_limit
from threadchat.core.names import fold
from threadchat.core.search import SearchQuery
from threadchat.store import passwords
from threadchat.store.base import (
    AccountExistsError,
    AlwaysOnRecord,
    NewMessage,
    PartlyStored,
    RoomRecord,
    Stamp,
    StoredMessage,
)
from threadchat.store.postgres_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

# Seconds to wait for a connection to the database server (start, reconnects, the pool).
CONNECT_TIMEOUT = 5.0
# As in sqlite.py: the default wait for a commit, the most jobs per transaction, the queue
# bound, the read connections, the close wait and the rows of one purge transaction.
WRITE_TIMEOUT = 10.0
MAX_BATCH = 1000
MAX_PENDING_WRITES = 20_000
READ_POOL_SIZE = 4
READ_WAIT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
PURGE_CHUNK = 5000
# The writer's pause before reconnecting after a failed attempt, doubling up to the maximum:
# while the database is down each batch fails at once instead of hammering it.
RECONNECT_BACKOFF = 0.1
RECONNECT_BACKOFF_MAX = 5.0

_T = TypeVar("_T")
_COLUMNS = (
    "id, ts, room, sender, sender_account, target, target_account, text, action,"
    " reply_to, edited, deleted"
)
_ENTRY_KINDS = {"op": "operators", "voice": "voiced", "ban": "bans"}

# Takes `n` ids and the commit's time; the row lock orders every node's message commits.
_TAKE_IDS = (
    "UPDATE message_counter SET last_id = last_id + %s, last_ts = GREATEST(last_ts, %s)"
    " RETURNING last_id, last_ts"
)
# One statement for any number of rows: one array per column, the ids from the first.
_INSERT = (
    "INSERT INTO messages (id, ts, room_key, room, sender, sender_account, target,"
    " target_account, pair_lo, pair_hi, text, action, reply_to)"
    " SELECT %s::bigint + r.n - 1, %s::bigint, r.room_key, r.room, r.sender, r.sender_account,"
    " r.target, r.target_account, r.pair_lo, r.pair_hi, r.text, r.action, r.reply_to"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::boolean[], %s::bigint[]) WITH ORDINALITY"
    " AS r(room_key, room, sender, sender_account, target, target_account, pair_lo, pair_hi,"
    " text, action, reply_to, n)"
)
_INSERT_COLUMNS = 11
# What a page's messages need of other rows (see `_messages`): their parents' sender and
# text, and their reactions in the order given.
_PARENTS_OF_IDS = "SELECT id, sender, text FROM messages WHERE id = ANY(%s::bigint[])"
_REACTIONS_OF_IDS = (
    "SELECT message_id, reaction, reactor FROM reactions"
    " WHERE message_id = ANY(%s::bigint[]) ORDER BY ts, reactor_key"
)


# What PostgreSQL's search takes as one word: a run of letters and digits (the split of the
# indexed text, `postgres_schema.py` v2; the underscore splits too, as in SQLite's index).
_SEARCH_WORD = re.compile(r"[^\W_]+")


def tsquery_of(terms: Sequence[tuple[str, bool]]) -> str:
    """The `to_tsquery` text of a search's terms (`SearchQuery.terms`): every term must
    match, a phrase's words in a row, a prefix term by its start. Each word is a quoted
    literal of letters and digits only, so nothing a user typed is tsquery syntax; the
    configuration then lowers and unaccents it as it did the indexed text. Empty if no
    term has a word."""
    parts = []
    for term, prefix in terms:
        words = _SEARCH_WORD.findall(term)
        if not words:
            continue
        quoted = [f"'{word}'" for word in words]
        if prefix:
            quoted[-1] += ":*"  # FTS5's "a b"*: the phrase's last word is the prefix
        parts.append(f"({' <-> '.join(quoted)})")
    return " & ".join(parts)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def describe_url(url: str) -> str:
    """The database a URL names, for messages and logs: never its password."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def _insert_row(m: NewMessage) -> tuple[Any, ...]:
    """The column values of one message after id and ts (checked in the caller's thread)."""
    room, target = m.room, m.target
    if (room is None) == (target is None):
        raise ValueError("exactly one of room and target must be given")
    pair_lo = pair_hi = None
    if room is None and m.sender_account and m.target_account:
        pair_lo, pair_hi = sorted((fold(m.sender_account), fold(m.target_account)))
    room_key = fold(room) if room is not None else None
    return (room_key, room, m.sender, m.sender_account, target, m.target_account,
            pair_lo, pair_hi, m.text, bool(m.action), m.reply_to)  # fmt: skip


def _row_to_message(
    row: tuple[Any, ...],
    parent: tuple[str, str] | None = None,
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> StoredMessage:
    (mid, ts, room, sender, sender_account, target, target_account, text, action,
     reply_to, edited, deleted) = row  # fmt: skip
    return StoredMessage(
        id=mid,
        ts=ts,
        sender=sender,
        sender_account=sender_account,
        text=text,
        action=bool(action),
        room=room,
        target=target,
        target_account=target_account,
        reply_to=reply_to,
        reply_sender=parent[0] if parent else "",
        reply_text=parent[1] if parent else "",
        edited=bool(edited),
        deleted=bool(deleted),
        reactions=reactions,
    )


def _messages(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> list[StoredMessage]:
    """Rows of `_COLUMNS` as messages, with what other rows say of them: the sender and text
    of the message each replies to, and their reactions (one query each, by the list of
    ids; the parents' only for a page that has replies), as `sqlite._messages`. Each
    message is built once, whole."""
    if not rows:
        return []
    parents: dict[int, tuple[str, str]] = {}
    wanted = [r[9] for r in rows if r[9] is not None]
    if wanted:
        for pid, sender, text in conn.execute(_PARENTS_OF_IDS, (wanted,)):
            parents[pid] = (sender, text)
    given: dict[int, dict[str, list[str]]] = {}
    for mid, reaction, reactor in conn.execute(_REACTIONS_OF_IDS, ([r[0] for r in rows],)):
        given.setdefault(mid, {}).setdefault(reaction, []).append(reactor)
    if not parents and not given:
        return [_row_to_message(r) for r in rows]
    return [
        _row_to_message(
            r,
            parents.get(r[9]) if r[9] is not None else None,
            tuple((name, tuple(who)) for name, who in given[r[0]].items()) if r[0] in given else (),
        )
        for r in rows
    ]


class _Rows:
    """The rows of one message job, made in the caller's thread."""

    __slots__ = ("count", "messages", "rows")

    def __init__(self, messages: Sequence[NewMessage]) -> None:
        self.messages = messages
        self.rows = [_insert_row(m) for m in messages]
        self.count = len(self.rows)


class _Job:
    """A write for the writer thread; `rows` is set for message inserts (see sqlite.py)."""

    __slots__ = ("fn", "future", "rows")

    def __init__(self, fn: Callable[[psycopg.Connection], Any], rows: _Rows | None = None) -> None:
        self.fn = fn
        self.rows = rows
        self.future: Future[Any] = Future()


class _ConnectionLost(Exception):
    """The writer's connection broke during a batch: the batch fails, the writer reconnects."""


_STOP = object()


def _settle(results: list[tuple[_Job, Any]]) -> None:
    for job, result in results:
        if not job.future.done():
            job.future.set_result(result)


def _fail(jobs: Iterable[_Job], error: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


def _wrap(e: BaseException) -> StoreError:
    """Any failure of a job as a StoreError (see SQLiteStore._wrap)."""
    if isinstance(e, StoreError):
        return e
    if isinstance(e, psycopg.Error):
        problem = StoreError(f"write failed: {e}")
    else:
        problem = StoreError(f"cannot store this: {type(e).__name__}: {e}")
    problem.__cause__ = e
    return problem


class PostgresStore:
    """Store backed by the PostgreSQL database at `url`. Implements base.Store.

    Raises StoreError, naming the database (never the password) and the reason, if it
    cannot be reached or holds a schema newer than this release. `group_commit=False` commits
    each write on its own (for benchmarks only).
    """

    def __init__(self, url: str, *, group_commit: bool = True) -> None:
        self.url = url
        self.where = describe_url(url)
        self._max_batch = MAX_BATCH if group_commit else 1
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._drained = False
        self.after_commit: Callable[[], None] | None = None
        # See `Store.commit_interval`: 0 unless the history service's relay is spaced.
        self.commit_interval = 0.0
        # When the next group commit may start (time.monotonic()); the writer thread's.
        self._next_commit = 0.0
        self.commits = 0
        self._state_lock = threading.Lock()
        self._migrate()
        self._wconn: psycopg.Connection | None = self._connect()
        self._backoff = RECONNECT_BACKOFF
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=READ_POOL_SIZE,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=READ_WAIT_TIMEOUT,
            name=f"threadchat-read {self.where}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout as e:
            self._wconn.close()
            self._pool.close()
            raise StoreError(f"cannot open read connections to {self.where}: {e}") from e
        self._writer = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        self._writer.start()

    # --- opening ------------------------------------------------------------------------------

    def _connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url, autocommit=autocommit, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to PostgreSQL at {self.where}: {e}") from e

    def _migrate(self) -> None:
        with self._connect(autocommit=True) as conn:
            try:
                # Nodes started together upgrade one at a time; the others then find it done.
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = row[0] if row else 0
            except psycopg.Error as e:
                raise StoreError(f"cannot read the schema of {self.where}: {e}") from e
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.where} has schema v{version}, newer than this release "
                    f"(v{SCHEMA_VERSION}); refusing to touch it"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    with conn.transaction():
                        for statement in MIGRATIONS[target - 1]:
                            conn.execute(statement)  # type: ignore[arg-type]
                        conn.execute("UPDATE schema_version SET version = %s", (target,))
                except psycopg.Error as e:
                    raise StoreError(
                        f"upgrading {self.where} to schema v{target} failed: {e}"
                    ) from e
                log.info("upgraded %s to schema v%d", self.where, target)
            # The lock goes with the connection, closed here.

    # --- the writer ---------------------------------------------------------------------------

    def _submit(self, fn: Callable[[psycopg.Connection], _T], timeout: float | None) -> _T:
        """Run `fn(conn)` in the writer's transaction; return its result once committed."""
        self._refuse_writer_thread()
        return wait_for(self._enqueue(fn), timeout)

    def _refuse_writer_thread(self) -> None:
        if threading.current_thread() is self._writer:
            raise StoreError("a write waited for from the store's own writer thread")

    def _enqueue(
        self,
        fn: Callable[[psycopg.Connection], _T],
        rows: _Rows | None = None,
        then: Callable[[Future[_T]], None] | None = None,
    ) -> Future[_T]:
        """Queue `fn(conn)` for the writer; the Future completes once it is committed, and
        `then` (if given) runs in the writer thread as it does."""
        if self._closed:
            raise StoreError("store is closed")
        if self._queue.qsize() >= MAX_PENDING_WRITES:
            raise StoreError("too many pending writes; the database cannot keep up")
        job = _Job(fn, rows)
        if then is not None:
            job.future.add_done_callback(then)
        self._queue.put(job)
        if self._drained:
            self._fail_queued()
        return job.future

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Job] = []
            item = self._queue.get()
            if self.commit_interval > 0 and item is not _STOP and item.rows is not None:
                # Spaced commits of messages: what is queued until the interval is over joins
                # this one. Other writes (a room's rename or end, accounts) are not held back:
                # other nodes learn of them over the bus and read the shared database.
                wait = self._next_commit - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._next_commit = time.monotonic() + self.commit_interval
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self.commits += 1
                try:
                    self._commit_batch(self._writer_connection(), batch)
                except (StoreError, _ConnectionLost) as e:
                    log.error("store writer: %s", e)
                    self._drop_writer_connection()
                    _fail(batch, e if isinstance(e, StoreError) else StoreError(str(e)))
                except Exception as e:  # never let the writer die: fail this batch, go on
                    log.exception("store writer: unexpected error")
                    self._drop_writer_connection()
                    _fail(batch, StoreError(f"write failed: {e}"))
                if self.after_commit is not None:
                    try:
                        self.after_commit()
                    except Exception:
                        log.exception("store writer: after_commit failed")
        self._drop_writer_connection()

    def _writer_connection(self) -> psycopg.Connection:
        if self._wconn is not None and not self._wconn.closed:
            return self._wconn
        try:
            self._wconn = self._connect()
        except StoreError:
            # Down: this batch fails now; the next one waits a little longer before trying.
            time.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, RECONNECT_BACKOFF_MAX)
            raise
        self._backoff = RECONNECT_BACKOFF
        log.info("store writer: reconnected to %s", self.where)
        return self._wconn

    def _drop_writer_connection(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _commit_batch(self, conn: psycopg.Connection, batch: list[_Job]) -> None:
        """Commit the batch in one transaction; if any job fails, again job by job."""
        try:
            results: list[tuple[_Job, Any]] = []
            inserts: list[_Job] = []
            for job in batch:
                if job.rows is not None:
                    inserts.append(job)
                    continue
                if inserts:
                    results += self._insert_jobs(conn, inserts)
                    inserts = []
                results.append((job, job.fn(conn)))
            if inserts:
                results += self._insert_jobs(conn, inserts)
            conn.commit()
        except Exception:
            self._roll_back(conn)
        else:
            _settle(results)
            return
        results, errors = [], []
        try:
            for job in batch:
                outcome = self._in_savepoint(conn, "job", job.fn)
                if isinstance(outcome, StoreError) and job.rows is not None and job.rows.count > 1:
                    # One reader's burst is one job: a message the database cannot take must
                    # fail alone.
                    outcome = self._insert_each(conn, job.rows)
                if isinstance(outcome, StoreError):
                    errors.append((job, outcome))
                else:
                    results.append((job, outcome))
            conn.commit()
        except psycopg.Error as e:
            self._roll_back(conn)
            raise _ConnectionLost(f"commit failed: {e}") from e
        _settle(results)
        _fail_each(errors)

    def _in_savepoint(
        self, conn: psycopg.Connection, name: str, fn: Callable[[psycopg.Connection], _T]
    ) -> _T | StoreError:
        """fn(conn) in a savepoint: its result, or the StoreError it failed with (undone)."""
        conn.execute(f"SAVEPOINT {name}")  # type: ignore[arg-type]
        try:
            result = fn(conn)
        except Exception as e:
            if conn.broken or conn.closed:
                raise _ConnectionLost(f"connection to {self.where} lost: {e}") from e
            conn.execute(f"ROLLBACK TO SAVEPOINT {name}")  # type: ignore[arg-type]
            conn.execute(f"RELEASE SAVEPOINT {name}")  # type: ignore[arg-type]
            return _wrap(e)
        conn.execute(f"RELEASE SAVEPOINT {name}")  # type: ignore[arg-type]
        return result

    def _roll_back(self, conn: psycopg.Connection) -> None:
        if conn.broken or conn.closed:
            raise _ConnectionLost(f"connection to {self.where} lost")
        try:
            conn.rollback()
        except psycopg.Error as e:
            raise _ConnectionLost(f"connection to {self.where} lost: {e}") from e

    def _insert_jobs(
        self, conn: psycopg.Connection, jobs: list[_Job]
    ) -> list[tuple[_Job, list[Stamp]]]:
        """Insert the rows of consecutive message jobs together; each job's stamps."""
        stamps = self._insert_rows(conn, [job.rows for job in jobs if job.rows is not None])
        results: list[tuple[_Job, list[Stamp]]] = []
        start = 0
        for job in jobs:
            end = start + (job.rows.count if job.rows is not None else 0)
            results.append((job, stamps[start:end]))
            start = end
        return results

    def _insert_rows(self, conn: psycopg.Connection, parts: Sequence[_Rows]) -> list[Stamp]:
        """Insert message rows (writer thread, in its transaction); their (id, ts) in order."""
        rows = list(itertools.chain.from_iterable(part.rows for part in parts))
        count = len(rows)
        if not count:
            return []
        taken = conn.execute(_TAKE_IDS, (count, _now_ms())).fetchone()
        assert taken is not None
        last, ts = taken
        first = last - count + 1
        columns = list(zip(*rows, strict=True)) if rows else [()] * _INSERT_COLUMNS
        conn.execute(_INSERT, (first, ts, *map(list, columns)))
        return list(zip(range(first, last + 1), itertools.repeat(ts, count), strict=True))

    def _insert_each(self, conn: psycopg.Connection, rows: _Rows) -> list[Stamp] | StoreError:
        """Insert a failed job's messages one by one, each in a savepoint: their stamps when
        all went in this time, else PartlyStored saying which did."""
        outcomes: list[Stamp | StoreError] = []
        for message in rows.messages:
            outcome = self._in_savepoint(
                conn, "message", lambda c, m=message: self._insert_rows(c, [_Rows([m])])
            )
            outcomes.append(outcome if isinstance(outcome, StoreError) else outcome[0])
        stamps = [o for o in outcomes if not isinstance(o, StoreError)]
        return stamps if len(stamps) == len(outcomes) else PartlyStored(outcomes)

    # --- reads --------------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        if self._closed:
            raise StoreError("store is closed")
        try:
            with self._pool.connection() as conn:
                return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
        except psycopg_pool.PoolTimeout:
            raise StoreError("no read connection free in time") from None
        except psycopg.Error as e:
            raise StoreError(f"read failed: {e}") from e

    def _query_messages(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[StoredMessage]:
        """The messages `sql` selects (`_COLUMNS`) with their parents and reactions, read on
        one connection of the pool."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            with self._pool.connection() as conn:
                return _messages(conn, conn.execute(sql, args).fetchall())  # type: ignore[arg-type]
        except psycopg_pool.PoolTimeout:
            raise StoreError("no read connection free in time") from None
        except psycopg.Error as e:
            raise StoreError(f"read failed: {e}") from e

    # --- messages -----------------------------------------------------------------------------

    def append(
        self,
        *,
        sender: str,
        text: str,
        room: str | None = None,
        target: str | None = None,
        sender_account: str | None = None,
        target_account: str | None = None,
        action: bool = False,
        timeout: float | None = None,
    ) -> StoredMessage:
        message = NewMessage(
            sender=sender,
            text=text,
            room=room,
            target=target,
            sender_account=sender_account,
            target_account=target_account,
            action=action,
        )
        self._refuse_writer_thread()
        [(mid, ts)] = wait_for(self.append_many([message]), timeout)
        return StoredMessage(id=mid, ts=ts, **message._replace(action=bool(action))._asdict())

    def append_many(
        self,
        messages: Sequence[NewMessage],
        then: Callable[[Future[list[Stamp]]], None] | None = None,
    ) -> Future[list[Stamp]]:
        rows = _Rows(messages)
        return self._enqueue(lambda conn: self._insert_rows(conn, [rows]), rows, then)

    def room_history(self, room: str, query: HistoryQuery) -> list[StoredMessage]:
        return self._history("room_key = %s", (fold(room),), query)

    def private_history(
        self, asker_account: str, peer_account: str, query: HistoryQuery
    ) -> list[StoredMessage]:
        if not asker_account or not peer_account:
            raise ValueError("private history needs both accounts")
        lo, hi = sorted((fold(asker_account), fold(peer_account)))
        return self._history("pair_lo = %s AND pair_hi = %s", (lo, hi), query)

    def _history(
        self, scope: str, scope_args: tuple[str, ...], q: HistoryQuery
    ) -> list[StoredMessage]:
        limit = clamp_limit(q.limit)
        if limit == 0:
            return []
        base = f"SELECT {_COLUMNS} FROM messages WHERE {scope}"

        def select(conds: list[tuple[Ref, str]], newest: bool, n: int) -> list[StoredMessage]:
            sql, args = base, list(scope_args)
            for ref, op in conds:
                sql += f" AND {_column(ref)} {op} %s"
                args.append(ref.value)
            sql += f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT %s"
            args.append(n)
            rows = self._query_messages(sql, args)
            return rows[::-1] if newest else rows

        if q.mode == "latest":
            return select([(q.ref, ">")] if q.ref else [], True, limit)
        if q.ref is None:
            raise ValueError(f"history mode {q.mode} needs a reference")
        if q.mode == "before":
            return select([(q.ref, "<")], True, limit)
        if q.mode == "after":
            return select([(q.ref, ">")], False, limit)
        if q.mode == "around":
            older = select([(q.ref, "<")], True, limit // 2)
            return older + select([(q.ref, ">=")], False, limit - len(older))
        if q.mode == "between":
            if q.end is None:
                raise ValueError("history mode between needs two references")
            forward = self._is_before(q.ref, q.end)
            if forward is None:
                return []
            if forward:
                return select([(q.ref, ">"), (q.end, "<")], False, limit)
            return select([(q.ref, "<"), (q.end, ">")], True, limit)
        raise ValueError(f"unknown history mode {q.mode!r}")

    def message(self, msgid: int) -> StoredMessage | None:
        found = self._query_messages(f"SELECT {_COLUMNS} FROM messages WHERE id = %s", (msgid,))
        return found[0] if found else None

    def delete_message(self, msgid: int) -> bool:
        def tombstone(conn: psycopg.Connection) -> bool:
            cur = conn.execute(
                "UPDATE messages SET text = '', deleted = TRUE WHERE id = %s AND NOT deleted",
                (msgid,),
            )
            conn.execute("DELETE FROM reactions WHERE message_id = %s", (msgid,))
            return cur.rowcount > 0

        return self._submit(tombstone, None)

    def edit_message(self, msgid: int, text: str) -> bool:
        def edit(conn: psycopg.Connection) -> bool:
            cur = conn.execute(
                "UPDATE messages SET text = %s, edited = TRUE WHERE id = %s AND NOT deleted",
                (text, msgid),
            )
            return cur.rowcount > 0

        return self._submit(edit, None)

    def set_reaction(
        self, msgid: int, reactor_key: str, reactor: str, reaction: str, on: bool
    ) -> bool:
        def change(conn: psycopg.Connection) -> bool:
            if on:
                # Only to a message that is there and not deleted (a deletion may have come
                # between the hub's check and this write, on this node or another). FOR
                # SHARE waits for another node's deletion in flight and then sees it: the
                # foreign key's own lock would let the reaction in beside the tombstone.
                cur = conn.execute(
                    "INSERT INTO reactions (message_id, reactor_key, reaction, reactor, ts)"
                    " SELECT id, %s, %s, %s, %s FROM messages WHERE id = %s AND NOT deleted"
                    " FOR SHARE ON CONFLICT DO NOTHING",
                    # Microseconds: two reactions often come within the same millisecond.
                    (reactor_key, reaction, reactor, time.time_ns() // 1000, msgid),
                )
            else:
                cur = conn.execute(
                    "DELETE FROM reactions"
                    " WHERE message_id = %s AND reactor_key = %s AND reaction = %s",
                    (msgid, reactor_key, reaction),
                )
            return cur.rowcount > 0

        return self._submit(change, None)

    def conversation_targets(
        self, rooms: Sequence[str], account: str | None, after_ts: int, before_ts: int, limit: int
    ) -> list[tuple[str, bool, int]]:
        limit = clamp_limit(limit)
        if not limit:
            return []
        latest: list[tuple[str, bool, int]] = []
        for room in rooms:
            rows = self._query(
                "SELECT ts FROM messages WHERE room_key = %s ORDER BY id DESC LIMIT 1",
                (fold(room),),
            )
            if rows:
                latest.append((room, True, rows[0][0]))
        if account:
            me = fold(account)
            # Per conversation, its newest row (SQLite's bare-column MAX, here DISTINCT ON).
            sql = (
                "SELECT DISTINCT ON (pair_lo, pair_hi) ts, sender_account, target_account"
                " FROM messages WHERE pair_lo = %s OR pair_hi = %s"
                " ORDER BY pair_lo, pair_hi, id DESC"
            )
            for ts, sender, target in self._query(sql, (me, me)):
                peer = target if fold(sender or "") == me else sender
                if peer:
                    latest.append((peer, False, ts))
        found = [item for item in latest if after_ts < item[2] < before_ts]
        found.sort(key=lambda item: item[2])
        return found[:limit]

    def search(
        self, query: SearchQuery, rooms: Sequence[str], account: str | None
    ) -> list[StoredMessage]:
        # The asker's scope exactly as SQLiteStore.search builds it.
        scopes, args = [], []
        keys = sorted({fold(room) for room in rooms})
        if query.room is not None:
            keys = [key for key in keys if key == fold(query.room)]
        if query.peer is not None:
            keys = []
            if account:
                scopes.append("pair_lo = %s AND pair_hi = %s")
                args += sorted((fold(account), fold(query.peer)))
        elif account and query.room is None:
            scopes.append("pair_lo = %s OR pair_hi = %s")
            args += [fold(account)] * 2
        if keys:
            scopes.append("room_key = ANY(%s::text[])")
            args.append(keys)
        match = tsquery_of(query.terms)
        if not scopes or not match:
            return []
        sql = (
            f"SELECT {_COLUMNS} FROM messages"
            " WHERE search_vector @@ to_tsquery('threadchat_search', %s)"
            f" AND ({' OR '.join(f'({s})' for s in scopes)})"
        )
        args.insert(0, match)
        if query.sender is not None:
            # SQLite's COLLATE NOCASE: ASCII letters only, as nicks and accounts are.
            sql += (
                ' AND (lower(sender COLLATE "C") = lower(%s COLLATE "C")'
                ' OR lower(sender_account COLLATE "C") = lower(%s COLLATE "C"))'
            )
            args += [query.sender, query.sender]
        if query.before_ts is not None:
            sql += " AND ts < %s"
            args.append(query.before_ts)
        if query.after_ts is not None:
            sql += " AND ts > %s"
            args.append(query.after_ts)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(query.limit)
        return [_row_to_message(r) for r in self._query(sql, args)]

    # --- read markers and always-on accounts --------------------------------------------------

    def set_read_marker(self, account: str, target: str, read_ts: int) -> int:
        key, target_key = fold(account), fold(target)

        def upsert(conn: psycopg.Connection) -> int:
            # One statement: the marker only moves forward, and every node sees the same row.
            row = conn.execute(
                "INSERT INTO read_markers (account_key, target_key, read_ts) VALUES (%s, %s, %s)"
                " ON CONFLICT (account_key, target_key)"
                " DO UPDATE SET read_ts = GREATEST(read_markers.read_ts, excluded.read_ts)"
                " RETURNING read_ts",
                (key, target_key, read_ts),
            ).fetchone()
            assert row is not None  # an upsert always returns its row
            return int(row[0])

        return self._submit(upsert, None)

    def read_markers(self, account: str) -> dict[str, int]:
        rows = self._query(
            "SELECT target_key, read_ts FROM read_markers WHERE account_key = %s", (fold(account),)
        )
        return {target: ts for target, ts in rows}

    def save_always_on(self, account: str, nick: str, rooms: Sequence[str]) -> Future[None]:
        key = fold(account)
        rows = [(key, fold(room), room) for room in rooms]

        def save(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO always_on (account_key, account, nick, last_seen_ts, last_seen_id)"
                " VALUES (%s, %s, %s, NULL, NULL) ON CONFLICT (account_key)"
                " DO UPDATE SET account = excluded.account, nick = excluded.nick",
                (key, account, nick),
            )
            conn.execute("DELETE FROM always_on_rooms WHERE account_key = %s", (key,))
            conn.cursor().executemany(
                "INSERT INTO always_on_rooms (account_key, room_key, room)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                rows,
            )

        return self._enqueue(save)

    def always_on_room(self, account: str, room: str, *, joined: bool) -> Future[None]:
        key = fold(account)

        def change(conn: psycopg.Connection) -> None:
            if joined:
                conn.execute(
                    "INSERT INTO always_on_rooms (account_key, room_key, room)"
                    " SELECT %s, %s, %s WHERE EXISTS"
                    " (SELECT 1 FROM always_on WHERE account_key = %s) ON CONFLICT DO NOTHING",
                    (key, fold(room), room, key),
                )
            else:
                conn.execute(
                    "DELETE FROM always_on_rooms WHERE account_key = %s AND room_key = %s",
                    (key, fold(room)),
                )

        return self._enqueue(change)

    def always_on_seen(
        self, account: str, last_seen_ts: int | None, last_seen_id: int | None
    ) -> Future[None]:
        key = fold(account)

        def update(conn: psycopg.Connection) -> None:
            conn.execute(
                "UPDATE always_on SET last_seen_ts = %s, last_seen_id = %s WHERE account_key = %s",
                (last_seen_ts, last_seen_id, key),
            )

        return self._enqueue(update)

    def delete_always_on(self, account: str) -> Future[None]:
        key = fold(account)

        def delete(conn: psycopg.Connection) -> None:
            conn.execute("DELETE FROM always_on_rooms WHERE account_key = %s", (key,))
            conn.execute("DELETE FROM always_on WHERE account_key = %s", (key,))

        return self._enqueue(delete)

    def load_always_on(self) -> list[AlwaysOnRecord]:
        accounts = self._query(
            "SELECT account_key, account, nick, last_seen_ts, last_seen_id FROM always_on"
            " ORDER BY account_key",
            (),
        )
        rooms: dict[str, list[str]] = {}
        for key, room in self._query(
            "SELECT account_key, room FROM always_on_rooms ORDER BY account_key, room_key", ()
        ):
            rooms.setdefault(key, []).append(room)
        return [
            AlwaysOnRecord(account, nick, seen, seen_id, tuple(rooms.get(key, ())))
            for key, account, nick, seen, seen_id in accounts
        ]

    def _is_before(self, a: Ref, b: Ref) -> bool | None:
        """Whether position a is not later than b; None if an id reference is unknown."""
        if a.kind == b.kind:
            return a.value <= b.value
        ts: list[int] = []
        for ref in (a, b):
            if ref.kind == "ts":
                ts.append(ref.value)
                continue
            rows = self._query("SELECT ts FROM messages WHERE id = %s", (ref.value,))
            if not rows:
                return None
            ts.append(rows[0][0])
        return ts[0] <= ts[1]

    def _delete_in_chunks(self, where: str, params: tuple[object, ...]) -> int:
        """Delete the messages matching `where`, PURGE_CHUNK at a time, each chunk its own
        write job, so other writers are never held up by one long delete."""

        def delete_chunk(conn: psycopg.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM messages WHERE id IN"  # type: ignore[arg-type]
                f" (SELECT id FROM messages WHERE {where} ORDER BY id LIMIT %s)",
                (*params, PURGE_CHUNK),
            )
            return cur.rowcount

        total = 0
        while True:
            n = self._submit(delete_chunk, None)
            total += n
            if n < PURGE_CHUNK:
                return total

    def purge_older_than(self, cutoff_ts: int) -> int:
        return self._delete_in_chunks("ts < %s", (cutoff_ts,))

    def delete_room_messages(self, room: str) -> Future[int]:
        key = fold(room)

        def delete(conn: psycopg.Connection) -> int:
            return conn.execute("DELETE FROM messages WHERE room_key = %s", (key,)).rowcount

        return self._enqueue(delete)

    def rename_room_messages(self, old: str, new: str) -> Future[int]:
        old_key, new_key = fold(old), fold(new)

        def rename(conn: psycopg.Connection) -> int:
            return conn.execute(
                "UPDATE messages SET room_key = %s, room = %s WHERE room_key = %s",
                (new_key, new, old_key),
            ).rowcount

        return self._enqueue(rename)

    def purge_rooms_not_kept(self, keep: Iterable[str] = ()) -> int:
        return self._delete_in_chunks(
            "room_key IS NOT NULL AND room_key NOT IN (SELECT room_key FROM rooms)"
            " AND room_key <> ALL(%s::text[])",
            (sorted(set(keep)),),
        )

    # --- rooms --------------------------------------------------------------------------------

    def load_rooms(self) -> list[RoomRecord]:
        rows = self._query(
            "SELECT room_key, name, topic, topic_by, topic_ts, created_ts, owner, modes,"
            " room_password, user_limit FROM rooms ORDER BY room_key",
            (),
        )
        entries: dict[str, dict[str, set[str]]] = {}
        for key, kind, value in self._query("SELECT room_key, kind, value FROM room_entries", ()):
            entries.setdefault(key, {}).setdefault(kind, set()).add(value)
        rooms = []
        for key, name, topic, topic_by, topic_ts, created, owner, modes, rkey, limit in rows:
            lists = entries.get(key, {})
            rooms.append(
                RoomRecord(
                    name=name,
                    created_ts=created,
                    topic=topic,
                    topic_by=topic_by,
                    topic_ts=topic_ts,
                    owner=owner,
                    operators=frozenset(lists.get("op", ())),
                    voiced=frozenset(lists.get("voice", ())),
                    modes=frozenset(modes),
                    key=rkey,
                    limit=limit,
                    bans=frozenset(lists.get("ban", ())),
                )
            )
        return rooms

    def save_room(self, room: RoomRecord) -> None:
        key = fold(room.name)

        def upsert(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO rooms (room_key, name, topic, topic_by, topic_ts, created_ts, owner,"
                " modes, room_password, user_limit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (room_key) DO UPDATE SET name = excluded.name,"
                " topic = excluded.topic, topic_by = excluded.topic_by,"
                " topic_ts = excluded.topic_ts, created_ts = excluded.created_ts,"
                " owner = excluded.owner, modes = excluded.modes,"
                " room_password = excluded.room_password, user_limit = excluded.user_limit",
                (key, room.name, room.topic, room.topic_by, room.topic_ts, room.created_ts,
                 room.owner, "".join(sorted(room.modes)), room.key, room.limit),
            )  # fmt: skip
            conn.execute("DELETE FROM room_entries WHERE room_key = %s", (key,))
            conn.cursor().executemany(
                "INSERT INTO room_entries (room_key, kind, value) VALUES (%s, %s, %s)",
                [
                    (key, kind, value)
                    for kind, attr in _ENTRY_KINDS.items()
                    for value in getattr(room, attr)
                ],
            )

        self._submit(upsert, None)

    def delete_room(self, name: str) -> bool:
        key = fold(name)

        def delete(conn: psycopg.Connection) -> bool:
            conn.execute("DELETE FROM room_entries WHERE room_key = %s", (key,))
            return conn.execute("DELETE FROM rooms WHERE room_key = %s", (key,)).rowcount > 0

        return self._submit(delete, None)

    # --- accounts -----------------------------------------------------------------------------

    def create_account(self, name: str, password: str) -> None:
        if not name:
            raise ValueError("empty account name")
        key = fold(name)
        encoded = passwords.hash_password(password)  # in the caller's thread (scrypt is slow)

        def insert(conn: psycopg.Connection) -> None:
            # ON CONFLICT instead of catching the violation: an error would abort the whole
            # group's transaction and send every job of it down the one-by-one path.
            inserted = conn.execute(
                "INSERT INTO accounts (name_key, name, password_hash, created_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name_key) DO NOTHING",
                (key, name, encoded, _now_ms()),
            ).rowcount
            if not inserted:
                raise AccountExistsError(f"account {name!r} already exists")

        self._submit(insert, None)

    def _password_hash(self, name: str) -> str | None:
        rows = self._query("SELECT password_hash FROM accounts WHERE name_key = %s", (fold(name),))
        return rows[0][0] if rows else None

    def _replace_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        key = fold(name)

        def update(conn: psycopg.Connection) -> bool:
            cur = conn.execute(
                "UPDATE accounts SET password_hash = %s WHERE name_key = %s AND password_hash = %s",
                (new_hash, key, old_hash),
            )
            return cur.rowcount == 1

        return self._submit(update, None)

    def verify_password(self, name: str, password: str) -> bool:
        stored = self._password_hash(name)
        if stored is None:
            passwords.burn_time(password)
            return False
        if not passwords.verify_password(password, stored):
            return False
        if passwords.needs_rehash(stored):
            with contextlib.suppress(StoreError, ValueError):
                self._replace_hash(name, stored, passwords.hash_password(password))
        return True

    def change_password(self, name: str, old_password: str, new_password: str) -> bool:
        stored = self._password_hash(name)
        if stored is None:
            passwords.burn_time(old_password)
            return False
        if not passwords.verify_password(old_password, stored):
            return False
        return self._replace_hash(name, stored, passwords.hash_password(new_password))

    def account_exists(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM accounts WHERE name_key = %s", (fold(name),)))

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._writer.join(CLOSE_TIMEOUT)
        if self._writer.is_alive():
            log.error("store writer did not stop within %ss", CLOSE_TIMEOUT)
        self._drained = True
        self._fail_queued()
        self._pool.close()

    def _fail_queued(self) -> None:
        leftovers: list[_Job] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        _fail(leftovers, StoreError("store is closed"))

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fail_each(errors: list[tuple[_Job, StoreError]]) -> None:
    for job, err in errors:
        if not job.future.done():
            job.future.set_exception(err)


def wait_for(future: Future[_T], timeout: float | None) -> _T:
    """The result of a write Future, waiting at most `timeout` (None: WRITE_TIMEOUT) seconds."""
    wait = WRITE_TIMEOUT if timeout is None else timeout
    try:
        return future.result(timeout=wait)
    except TimeoutError:
        raise StoreError(f"write not confirmed within {wait:g}s") from None


def _column(ref: Ref) -> str:
    # The column name comes from this fixed mapping, never from input: only values are bound.
    if ref.kind == "id":
        return "id"
    if ref.kind == "ts":
        return "ts"
    raise ValueError(f"unknown reference kind {ref.kind!r}")
