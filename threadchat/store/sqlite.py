"""The embedded SQLite store: one file, threadchat.db, in the data directory.

Writes: one writer thread owns the only connection that writes. Callers enqueue a job and wait
for its Future; the writer takes everything queued (group commit), runs the jobs in one
transaction (the rows of message jobs in one INSERT), commits once, then completes every
Future; only when that fails does it retry the jobs one by one, each in a SAVEPOINT. So
append() returns only after its message is committed, yet N concurrent appends cost one
commit, not N.

Reads: a small pool of separate read-only connections. In WAL mode readers see the last commit
and never wait for the writer.

Durability: journal_mode=WAL with synchronous=NORMAL by default. A commit is then written to the
WAL file (in the OS page cache) before append() returns, but fsync happens only at checkpoints.
That survives a crash of the process (kill -9, OOM kill): the kernel still holds the data and
writes it out. Only an OS crash or power loss can lose the last commits (the database stays
consistent either way). Chat history does not justify an fsync per commit; an operator who
wants power-loss durability passes synchronous="FULL" (see bench/store_bench.py for the cost).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import logging
import operator
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar

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
from threadchat.store.schema import (
    MIGRATIONS,
    REACTION_PEOPLE_SEPARATOR,
    REACTIONS_SEPARATOR,
    SCHEMA_VERSION,
    summarize_reactions,
)

log = logging.getLogger(__name__)

DB_FILENAME = "threadchat.db"
LOCK_FILENAME = "threadchat.lock"

# How long a writer waits for its commit by default. Long enough to ride out a checkpoint or a
# slow disk; short enough that a hung disk reaches the sender as an error instead of a thread
# stuck forever.
WRITE_TIMEOUT = 10.0
# Jobs the writer folds into one transaction at most: bounds the time one commit holds waiters
# and the work lost to a failed commit.
MAX_BATCH = 1000
# Jobs queued at most; beyond that writers get StoreError at once rather than growing memory
# without bound while the disk cannot keep up.
MAX_PENDING_WRITES = 20_000
# Read connections kept open: enough for concurrent history requests on two cores; each costs a
# page cache, so not one per client thread.
READ_POOL_SIZE = 4
# How long a reader waits for a free read connection before giving up.
READ_WAIT_TIMEOUT = 10.0
# How long close() waits for the writer thread to finish the queue.
CLOSE_TIMEOUT = 10.0
# How long a connection waits for a lock held by another connection (checkpoints, migrations).
BUSY_TIMEOUT = 5.0
# Rows deleted per purge transaction, so that retention never holds up appends for long.
PURGE_CHUNK = 5000

_T = TypeVar("_T")
_COLUMNS = (
    "id, ts, room, sender, sender_account, target, target_account, text, action,"
    " reply_to, edited, deleted, reactions"
)
_ENTRY_KINDS = {"op": "operators", "voice": "voiced", "ban": "bans"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_INSERT = (
    "INSERT INTO messages (ts, room_key, room, sender, sender_account, target, target_account,"
    " pair_lo, pair_hi, text, action, reply_to) VALUES "
)
# ?1 is the commit's time, bound once for every row.
_INSERT_VALUES = "(?1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_PARAMETERS = 11  # per row, besides ?1
# Rows of one room (the common case): ?2 and ?3 are its key and name, bound once; a row binds
# sender, sender_account, text and action. Binding is done holding the GIL: this form took
# 0.6 ms of CPU for 400 rows where the general one took 1.0 ms.
_ROOM_VALUES = "(?1, ?2, ?3, ?, ?, NULL, NULL, NULL, NULL, ?, ?, NULL)"
# A NewMessage's values for _ROOM_VALUES: sender, sender_account, text, action.
_ROOM_ROW_OF_MESSAGE = operator.itemgetter(0, 4, 1, 6)
_ROOM_OF_MESSAGE = operator.itemgetter(2)
_TARGET_OF_MESSAGE = operator.itemgetter(3)
_REPLY_OF_MESSAGE = operator.itemgetter(7)
_ROOM_PARAMETERS = 4
# New messages are indexed for search once the writer has been idle this long (seconds),
# and at least every INDEX_EVERY seconds while it is busy (see `_writer_loop`).
INDEX_AFTER = 0.05
INDEX_EVERY = 0.5
# Rows per INSERT statement at most. One statement for many rows, even across the jobs of one
# commit, because sqlite3 lets go of the GIL for every statement it runs and the writer then
# waits to win it back from the readers: per statement, that wait was the writer's largest
# cost under load (a commit took 8 ms, 2.6 ms of it CPU). Fewer if the SQLite build allows
# fewer parameters per statement (999 before SQLite 3.32). Each row count is its own prepared
# statement, so the writer keeps fewer of them (WRITER_CACHED_STATEMENTS).
ROWS_PER_INSERT = 1000
# Prepared statements the writer's connection keeps (Python's default is 128). Under varied
# load a batch's row count seldom repeats, and 128 large INSERTs of different sizes held
# 33 MB after a soak of 1,000 clients (sqlite3_memory_used, docs/reliability.md), for few
# hits. The statements that repeat (BEGIN, COMMIT, savepoints, small INSERTs) stay in the
# least-recently-used cache; a large INSERT is prepared again, as it nearly always was.
WRITER_CACHED_STATEMENTS = 16


@functools.cache
def _insert_statement(rows: int, one_room: bool) -> str:
    return _INSERT + ", ".join([_ROOM_VALUES if one_room else _INSERT_VALUES] * rows)


class _Rows:
    """The rows one message job inserts.

    A reader's burst is nearly always room messages to one room: then `room` is that room and
    `flat` holds only what varies per row (`_ROOM_PARAMETERS` values each, made at C speed in
    the caller's thread), so the writer joins jobs into one statement without touching rows
    one by one. Otherwise `room` is None and `flat` holds whole `_insert_row` rows.
    """

    __slots__ = ("count", "flat", "messages", "room")

    def __init__(self, messages: Sequence[NewMessage]) -> None:
        self.count = len(messages)
        self.messages = messages
        rooms = set(map(_ROOM_OF_MESSAGE, messages))
        if (
            len(rooms) == 1
            and None not in rooms
            and set(map(_TARGET_OF_MESSAGE, messages)) == {None}
            and set(map(_REPLY_OF_MESSAGE, messages)) == {None}
        ):
            self.room: str | None = rooms.pop()
            self.flat: list[Any] = list(
                itertools.chain.from_iterable(map(_ROOM_ROW_OF_MESSAGE, messages))
            )
        else:
            self.room = None
            self.flat = [_insert_row(m) for m in messages]  # checks each message

    def general(self) -> list[tuple[Any, ...]]:
        """The rows in the general form (`_insert_row`)."""
        if self.room is None:
            return self.flat
        return [_insert_row(m) for m in self.messages]


def _insert_statements(
    ts: int, parts: Sequence[_Rows], step: int
) -> Iterator[tuple[str, list[Any], int]]:
    """The statements (with parameters and row count) inserting `parts` at time `ts`, at most
    `step` rows each, in order."""
    room = parts[0].room if parts else None
    if room is not None and all(part.room == room for part in parts):
        flat = list(itertools.chain.from_iterable(part.flat for part in parts))
        width = _ROOM_PARAMETERS * step
        for start in range(0, len(flat), width):
            values = [ts, fold(room), room]
            values += flat[start : start + width]
            count = (len(values) - 3) // _ROOM_PARAMETERS
            yield _insert_statement(count, True), values, count
        return
    rows = list(itertools.chain.from_iterable(part.general() for part in parts))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        values = [ts]
        values += itertools.chain.from_iterable(chunk)
        yield _insert_statement(len(chunk), False), values, len(chunk)


def _index_statements(conn: sqlite3.Connection) -> None:
    """Index the messages after the search index's progress mark, and move the mark."""
    conn.execute(
        "INSERT INTO messages_fts (rowid, text, sender, sender_account)"
        " SELECT id, text, sender, sender_account FROM messages"
        " WHERE id > (SELECT upto FROM messages_fts_progress) ORDER BY id"
    )
    conn.execute(
        "UPDATE messages_fts_progress SET upto = (SELECT COALESCE(MAX(id), upto) FROM messages)"
    )


def _roll_back(conn: sqlite3.Connection) -> None:
    """End an open transaction, if any, undoing it (best effort: this is the error path)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _settle(results: list[tuple[_Job, Any]]) -> None:
    for job, result in results:
        job.future.set_result(result)


def _insert_row(m: NewMessage) -> tuple[Any, ...]:
    """The values of _INSERT after ts, for one message (checked in the caller's thread)."""
    room, target = m.room, m.target
    if (room is None) == (target is None):
        raise ValueError("exactly one of room and target must be given")
    pair_lo = pair_hi = None
    if room is None and m.sender_account and m.target_account:
        pair_lo, pair_hi = sorted((fold(m.sender_account), fold(m.target_account)))
    room_key = fold(room) if room is not None else None
    return (room_key, room, m.sender, m.sender_account, target, m.target_account,
            pair_lo, pair_hi, m.text, int(m.action), m.reply_to)  # fmt: skip


def _row_to_message(row: tuple[Any, ...], parent: tuple[str, str] | None = None) -> StoredMessage:
    (mid, ts, room, sender, sender_account, target, target_account, text, action,
     reply_to, edited, deleted, summary) = row  # fmt: skip
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
        reactions=_reactions(summary) if summary is not None else (),
    )


def _reactions(summary: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A message's reactions from its `reactions` column (schema.reactions_summary). A plain
    loop: the quickest of the forms measured (this runs for every message with reactions
    on every history page)."""
    found = []
    for part in summary.split(REACTIONS_SEPARATOR):
        reaction, *people = part.split(REACTION_PEOPLE_SEPARATOR)
        found.append((reaction, tuple(people)))
    return tuple(found)


_REPLY_TO_OF_ROW = operator.itemgetter(9)


def _messages(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[StoredMessage]:
    """Rows of `_COLUMNS` as messages, with the sender and text of the message each replies
    to (one query by id, only for a page that has replies). Each message is built once,
    whole; its reactions come with its row (schema v6)."""
    if not rows:
        return []
    wanted = [r for r in map(_REPLY_TO_OF_ROW, rows) if r is not None]
    if not wanted:
        return [_row_to_message(r) for r in rows]
    parents: dict[int, tuple[str, str]] = {}
    for pid, sender, text in conn.execute(
        "SELECT id, sender, text FROM messages WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(wanted),),
    ):
        parents[pid] = (sender, text)
    return [_row_to_message(r, parents.get(r[9]) if r[9] is not None else None) for r in rows]


class _Job:
    """A write for the writer thread. `rows` is set for message inserts (`fn` inserts them),
    so that the writer can insert the rows of many such jobs with one statement."""

    __slots__ = ("fn", "future", "rows")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], rows: _Rows | None = None) -> None:
        self.fn = fn
        self.rows = rows
        self.future: Future[Any] = Future()


_STOP = object()


class SQLiteStore:
    """Store backed by SQLite in `data_dir` (created if missing). Implements base.Store.

    Raises StoreError, naming the path and the reason, if the directory cannot be created or
    written, is used by another process, or holds a database of a newer schema.
    `group_commit=False` commits each write on its own, `search_index=False` leaves new
    messages out of the search index (both for benchmarks only).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        group_commit: bool = True,
        search_index: bool = True,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_FILENAME
        self._synchronous = synchronous
        self._max_batch = MAX_BATCH if group_commit else 1
        # SimpleQueue (C, no Python-level lock) because every message passes through it: a
        # bounded queue.Queue under a lock of ours was measured as the largest item of a busy
        # server with history on. The bound is checked with qsize() instead.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        # Set once close() has stopped the writer: nothing queued after that will ever run.
        self._drained = False
        # Called in the writer thread after each group commit, once every Future of it is
        # settled (and every `then` has run): the history service relays from here.
        self.after_commit: Callable[[], None] | None = None
        # See `Store.commit_interval`: 0 unless the history service's relay is spaced.
        self.commit_interval = 0.0
        # When the next group commit may start (time.monotonic()); the writer thread's.
        self._next_commit = 0.0
        # Group commits (transactions) the writer has run, failed ones included: shows how
        # well writes are grouped (tests, benchmarks). Only the writer thread changes it.
        self.commits = 0
        # Messages committed but not yet in the search index (see `_index_new`); True at
        # start, as the last run may have stopped before indexing its last messages.
        self._unindexed = True
        self._search_index = search_index
        self._indexed_at = 0.0
        self._state_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._free_readers: queue.Queue[sqlite3.Connection] = queue.Queue()
        self._lock_fd = self._prepare_directory()
        try:
            self._wconn = self._connect_writer()
            try:
                self._migrate(self._wconn)
                row = self._wconn.execute("SELECT MAX(ts) FROM messages").fetchone()
            except BaseException:
                self._wconn.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        # Only the writer thread touches this after start: ts never decreases along ids, so
        # "ordered by id" and "ordered by time" agree even if the wall clock steps back.
        self._last_ts: int = row[0] or 0
        self._writer = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        self._writer.start()

    # --- opening ------------------------------------------------------------------------------

    def _prepare_directory(self) -> int:
        path = self.data_dir
        if path.exists() and not path.is_dir():
            raise StoreError(f"data directory {path} is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data directory {path}: {e.strerror or e}") from e
        # SQLite reports a read-only directory only as "unable to open database file"; a probe
        # file gives the operator the real reason (permission denied, read-only file system...).
        probe = path / f".write-test-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise StoreError(f"data directory {path} is not writable: {e.strerror or e}") from e
        try:
            lock_fd = os.open(path / LOCK_FILENAME, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as e:
            raise StoreError(f"cannot open lock file in {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(lock_fd)
            raise StoreError(f"data directory {path} is in use by another process") from e
        return lock_fd

    def _connect(self, cached_statements: int = 128) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.db_path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # handed between threads, never shared at once
                cached_statements=cached_statements,
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open database {self.db_path}: {e}") from e
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect(WRITER_CACHED_STATEMENTS)
        parameters = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_insert = max(1, min(ROWS_PER_INSERT, (parameters - 1) // _INSERT_PARAMETERS))
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"database {self.db_path}: cannot enable WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open database {self.db_path}: {e}") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"cannot read database {self.db_path}: {e}") from e
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.db_path} has schema v{version}, newer than this release "
                f"(v{SCHEMA_VERSION}); refusing to touch it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in MIGRATIONS[target - 1]:
                    if isinstance(statement, str):
                        conn.execute(statement)
                    else:
                        statement(conn)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"upgrading {self.db_path} to schema v{target} failed: {e}") from e
            log.info("upgraded %s to schema v%d", self.db_path, target)

    # --- the writer ---------------------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], _T], timeout: float | None) -> _T:
        """Run `fn(conn)` in the writer's transaction; return its result once committed."""
        self._refuse_writer_thread()
        return wait_for(self._enqueue(fn), timeout)

    def _refuse_writer_thread(self) -> None:
        # Code run by `then` or `after_commit` must not wait for a write: the writer would
        # wait for itself.
        if threading.current_thread() is self._writer:
            raise StoreError("a write waited for from the store's own writer thread")

    def _enqueue(
        self,
        fn: Callable[[sqlite3.Connection], _T],
        rows: _Rows | None = None,
        then: Callable[[Future[_T]], None] | None = None,
    ) -> Future[_T]:
        """Queue `fn(conn)` for the writer; the Future completes once it is committed, and
        `then` (if given) runs in the writer thread as it does."""
        if self._closed:
            raise StoreError("store is closed")
        if self._queue.qsize() >= MAX_PENDING_WRITES:
            raise StoreError("too many pending writes; the disk cannot keep up")
        job = _Job(fn, rows)
        if then is not None:
            job.future.add_done_callback(then)
        # No lock against close() on this path (every message takes it). A job queued in the
        # instant after close() emptied the queue would wait for a writer that is gone: its
        # thread fails it at once instead.
        self._queue.put(job)
        if self._drained:
            self._fail_queued()
        return job.future

    def _writer_loop(self) -> None:
        conn = self._wconn
        stopping = False
        while not stopping:
            batch: list[_Job] = []
            if self._unindexed:
                # New messages wait for the index until the writer has had nothing to do
                # for INDEX_AFTER: one index transaction for many commits, never one each.
                wait = self._indexed_at + INDEX_AFTER - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(wait, 0.001))
                except queue.Empty:
                    self._index_new(conn)
                    continue
            else:
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
                    self._commit_batch(conn, batch)
                except Exception as e:  # never let the writer die: fail this batch, go on
                    log.exception("store writer: unexpected error")
                    _roll_back(conn)
                    self._fail(batch, StoreError(f"write failed: {e}"))
                if self.after_commit is not None:
                    try:
                        self.after_commit()
                    except Exception:
                        log.exception("store writer: after_commit failed")
            # The last job (its rows, and the batch of connections and users its relay
            # holds) is not kept while the writer waits for the next one.
            del item
            # Under a steady load the writer is never idle: the index is brought up to
            # date at least every INDEX_EVERY seconds all the same.
            if self._unindexed and time.monotonic() - self._indexed_at >= INDEX_EVERY:
                self._index_new(conn)
        if self._unindexed:
            self._index_new(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def _index_new(self, conn: sqlite3.Connection) -> None:
        """Put the messages committed since the last time into the search index, in one
        transaction (writer thread). A failure is logged and tried again next time."""
        self._indexed_at = time.monotonic()
        if not self._search_index:
            self._unindexed = False
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            _index_statements(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as problem:
            _roll_back(conn)
            log.error("search index not brought up to date: %s", problem)
            return
        self._unindexed = False

    def index_new_messages(self) -> None:
        """Bring the search index up to date with every message committed so far (waits
        for the writer; not from its thread). Search calls it, so a search finds what was
        said just before."""
        if self._unindexed:
            # A job runs inside the writer's transaction; the flag is cleared by the writer's
            # own next round (a message committed meanwhile must keep it set).
            self._submit(_index_statements, None)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        if self._commit_optimistic(conn, batch):
            return
        pending = batch
        # Some errors (disk full, I/O error) make SQLite roll back the whole transaction, which
        # undoes the jobs before the failing one too: retry the others in a fresh transaction.
        while pending:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                self._fail(pending, StoreError(f"cannot start a write transaction: {e}"))
                return
            results: list[tuple[_Job, Any]] = []
            errors: list[tuple[_Job, BaseException]] = []
            retry: list[_Job] | None = None
            for i, job in enumerate(pending):
                conn.execute("SAVEPOINT job")
                try:
                    results.append((job, job.fn(conn)))
                    conn.execute("RELEASE job")
                except Exception as e:
                    err = self._wrap(e)
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        if job.rows is not None and job.rows.count > 1:
                            # One reader's burst is one job: a message the database cannot
                            # take (text that is not valid Unicode) must fail alone.
                            each = self._insert_each(conn, job.rows)
                            if isinstance(each, list):
                                results.append((job, each))
                                continue
                            err = each
                    if not conn.in_transaction:
                        job.future.set_exception(err)
                        # Partly stored jobs lost their stored part with the transaction: they
                        # are retried with the ones that went in, in their order.
                        final = [(j, e) for j, e in errors if not isinstance(e, PartlyStored)]
                        self._settle_errors(final)
                        settled = {id(j) for j, _ in final}
                        retry = [j for j in pending[:i] if id(j) not in settled] + pending[i + 1 :]
                        break
                    errors.append((job, err))
            if retry is not None:
                pending = retry
                continue
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                _roll_back(conn)
                self._fail(pending, StoreError(f"commit failed: {e}"))
                return
            _settle(results)
            self._settle_errors(errors)
            return

    def _commit_optimistic(self, conn: sqlite3.Connection, batch: list[_Job]) -> bool:
        """Commit the batch without a savepoint per job; False (all undone) if any job fails.

        Failures are rare, and a SAVEPOINT/RELEASE pair per message was measured as most of
        the writer's time; on failure the careful per-job path below runs instead.
        """
        rows = [job.rows.count if job.rows is not None else -1 for job in batch]
        if min(rows) >= 0 and sum(rows) <= self._rows_per_insert:
            return self._commit_one_insert(conn, batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
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
            conn.execute("COMMIT")
        except Exception:
            _roll_back(conn)
            return False
        _settle(results)
        return True

    def _commit_one_insert(self, conn: sqlite3.Connection, batch: list[_Job]) -> bool:
        """Commit message jobs whose rows fit one INSERT as that statement alone.

        Outside BEGIN a statement is its own transaction, all or nothing: one statement, so
        one GIL round trip, instead of three. Each round trip costs the writer up to a GIL
        switch interval while readers are busy: measured alone, a commit of 400 rows took
        1.4 ms; beside one thread that only computes, 18.5 ms as BEGIN, INSERT and COMMIT and
        8.3 ms as the INSERT alone.
        """
        try:
            results = self._insert_jobs(conn, batch)
        except Exception:
            _roll_back(conn)  # not expected outside BEGIN; never leave one open
            return False
        _settle(results)
        return True

    def _insert_jobs(
        self, conn: sqlite3.Connection, jobs: list[_Job]
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

    def _insert_rows(self, conn: sqlite3.Connection, parts: Sequence[_Rows]) -> list[Stamp]:
        """Insert message rows (writer thread, in its transaction); their (id, ts) in order."""
        ts = max(_now_ms(), self._last_ts)
        stamps: list[Stamp] = []
        self._unindexed = True
        for sql, values, count in _insert_statements(ts, parts, self._rows_per_insert):
            cur = conn.execute(sql, values)
            # One statement of the only writing connection: its rows got consecutive ids
            # (AUTOINCREMENT), the last of which is lastrowid.
            last = cur.lastrowid
            assert last is not None
            stamps += zip(
                range(last - count + 1, last + 1), itertools.repeat(ts, count), strict=True
            )
        self._last_ts = ts
        return stamps

    def _insert_each(self, conn: sqlite3.Connection, rows: _Rows) -> list[Stamp] | StoreError:
        """Insert a failed job's messages one by one, each in a savepoint of its own (writer
        thread, in its transaction): their stamps when all went in this time, PartlyStored
        when some did, or the error that lost the transaction (disk full: then none of them
        is stored)."""
        outcomes: list[Stamp | StoreError] = []
        for message in rows.messages:
            conn.execute("SAVEPOINT message")
            try:
                [stamp] = self._insert_rows(conn, [_Rows([message])])
                conn.execute("RELEASE message")
                outcomes.append(stamp)
            except Exception as e:
                err = self._wrap(e)
                if not conn.in_transaction:
                    return err
                conn.execute("ROLLBACK TO message")
                conn.execute("RELEASE message")
                outcomes.append(err)
        stamps = [o for o in outcomes if not isinstance(o, StoreError)]
        return stamps if len(stamps) == len(outcomes) else PartlyStored(outcomes)

    @staticmethod
    def _settle_errors(errors: list[tuple[_Job, BaseException]]) -> None:
        for job, err in errors:
            if not job.future.done():
                job.future.set_exception(err)

    @staticmethod
    def _wrap(e: Exception) -> StoreError:
        """Any failure of a job as a StoreError: callers handle that alone, and a failure of
        one message (UnicodeEncodeError for a lone surrogate) must not escape as another."""
        if isinstance(e, StoreError):
            return e
        if isinstance(e, sqlite3.Error):
            problem = StoreError(f"write failed: {e}")
        else:
            problem = StoreError(f"cannot store this: {type(e).__name__}: {e}")
        problem.__cause__ = e
        return problem

    # --- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = self._free_readers.get_nowait()
        except queue.Empty:
            with self._state_lock:
                create = len(self._readers) < READ_POOL_SIZE
                if create:
                    conn = self._connect()
                    conn.execute("PRAGMA query_only=1")
                    self._readers.append(conn)
            if not create:
                try:
                    conn = self._free_readers.get(timeout=READ_WAIT_TIMEOUT)
                except queue.Empty:
                    raise StoreError("no read connection free in time") from None
        try:
            yield conn
        except sqlite3.Error as e:
            raise StoreError(f"read failed: {e}") from e
        finally:
            self._free_readers.put(conn)

    def _query(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        with self._reader() as conn:
            return conn.execute(sql, args).fetchall()

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
        # One job for all: a Future (with its Condition) per message was measured as a tenth
        # of a busy server's time with history on.
        rows = _Rows(messages)
        return self._enqueue(lambda conn: self._insert_rows(conn, [rows]), rows, then)

    def room_history(self, room: str, query: HistoryQuery) -> list[StoredMessage]:
        return self._history("room_key = ?", (fold(room),), query)

    def private_history(
        self, asker_account: str, peer_account: str, query: HistoryQuery
    ) -> list[StoredMessage]:
        if not asker_account or not peer_account:
            raise ValueError("private history needs both accounts")
        lo, hi = sorted((fold(asker_account), fold(peer_account)))
        return self._history("pair_lo = ? AND pair_hi = ?", (lo, hi), query)

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
                sql += f" AND {_column(ref)} {op} ?"
                args.append(ref.value)
            sql += f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?"
            args.append(n)
            with self._reader() as conn:
                rows = _messages(conn, conn.execute(sql, args).fetchall())
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
        with self._reader() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (msgid,))
            found = _messages(conn, rows.fetchall())
            return found[0] if found else None

    def delete_message(self, msgid: int) -> bool:
        def tombstone(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE messages SET text = '', deleted = 1 WHERE id = ? AND deleted = 0",
                (msgid,),
            )
            conn.execute("DELETE FROM reactions WHERE message_id = ?", (msgid,))
            conn.execute("UPDATE messages SET reactions = NULL WHERE id = ?", (msgid,))
            return cur.rowcount > 0

        return self._submit(tombstone, None)

    def edit_message(self, msgid: int, text: str) -> bool:
        def edit(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE messages SET text = ?, edited = 1 WHERE id = ? AND deleted = 0",
                (text, msgid),
            )
            return cur.rowcount > 0

        return self._submit(edit, None)

    def set_reaction(
        self, msgid: int, reactor_key: str, reactor: str, reaction: str, on: bool
    ) -> bool:
        def change(conn: sqlite3.Connection) -> bool:
            if on:
                # Only to a message that is there and not deleted (a deletion may have come
                # between the hub's check and this write).
                cur = conn.execute(
                    "INSERT OR IGNORE INTO reactions"
                    " (message_id, reactor_key, reaction, reactor, ts)"
                    " SELECT id, ?, ?, ?, ? FROM messages WHERE id = ? AND deleted = 0",
                    # Microseconds: reactions are listed in the order given, and two
                    # often come within the same millisecond.
                    (reactor_key, reaction, reactor, time.time_ns() // 1000, msgid),
                )
            else:
                cur = conn.execute(
                    "DELETE FROM reactions"
                    " WHERE message_id = ? AND reactor_key = ? AND reaction = ?",
                    (msgid, reactor_key, reaction),
                )
            if cur.rowcount > 0:
                # The row's copy of its reactions, read with it by history pages.
                summarize_reactions(conn, (msgid,))
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
            # The newest by id through the (room_key, id) index: one step per room.
            rows = self._query(
                "SELECT ts FROM messages WHERE room_key = ? ORDER BY id DESC LIMIT 1", (fold(room),)
            )
            if rows:
                latest.append((room, True, rows[0][0]))
        if account:
            me = fold(account)
            # Per conversation, the newest message's row (SQLite gives the other columns of
            # the row where MAX is found): its time, and whose account is the peer's.
            sql = (
                "SELECT MAX(id), ts, sender_account, target_account FROM messages"
                " WHERE pair_lo = ? OR pair_hi = ? GROUP BY pair_lo, pair_hi"
            )
            for _id, ts, sender, target in self._query(sql, (me, me)):
                peer = target if fold(sender or "") == me else sender
                if peer:
                    latest.append((peer, False, ts))
        # A conversation whose newest message is outside the span is not listed, even if
        # it has older messages inside it: the span selects by latest activity.
        found = [item for item in latest if after_ts < item[2] < before_ts]
        found.sort(key=lambda item: item[2])
        return found[:limit]

    def search(
        self, query: SearchQuery, rooms: Sequence[str], account: str | None
    ) -> list[StoredMessage]:
        scopes, args = [], []
        keys = sorted({fold(room) for room in rooms})
        if query.room is not None:
            keys = [key for key in keys if key == fold(query.room)]
        if query.peer is not None:
            keys = []
            if account:
                scopes.append("m.pair_lo = ? AND m.pair_hi = ?")
                args += sorted((fold(account), fold(query.peer)))
        elif account and query.room is None:
            scopes.append("m.pair_lo = ? OR m.pair_hi = ?")
            args += [fold(account)] * 2
        if keys:
            scopes.append("m.room_key IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(keys))
        if not scopes:
            return []
        self.index_new_messages()
        # The index gives its matches newest first (rowid is the message id), so a search
        # with a LIMIT stops as soon as it has enough within the asker's scope.
        sql = (
            f"SELECT {', '.join('m.' + c for c in _COLUMNS.split(', '))}"
            " FROM messages_fts f JOIN messages m ON m.id = f.rowid"
            f" WHERE messages_fts MATCH ? AND ({' OR '.join(f'({s})' for s in scopes)})"
        )
        args.insert(0, query.match)
        if query.sender is not None:
            sql += " AND (m.sender = ? COLLATE NOCASE OR m.sender_account = ? COLLATE NOCASE)"
            args += [query.sender, query.sender]
        if query.before_ts is not None:
            sql += " AND m.ts < ?"
            args.append(query.before_ts)
        if query.after_ts is not None:
            sql += " AND m.ts > ?"
            args.append(query.after_ts)
        sql += " ORDER BY f.rowid DESC LIMIT ?"
        args.append(query.limit)
        return [_row_to_message(r) for r in self._query(sql, args)]

    # --- read markers and always-on accounts --------------------------------------------------

    def set_read_marker(self, account: str, target: str, read_ts: int) -> int:
        key, target_key = fold(account), fold(target)

        def upsert(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO read_markers (account_key, target_key, read_ts) VALUES (?, ?, ?)"
                " ON CONFLICT (account_key, target_key)"
                " DO UPDATE SET read_ts = MAX(read_ts, excluded.read_ts)",
                (key, target_key, read_ts),
            )
            row = conn.execute(
                "SELECT read_ts FROM read_markers WHERE account_key = ? AND target_key = ?",
                (key, target_key),
            ).fetchone()
            return int(row[0])

        return self._submit(upsert, None)

    def read_markers(self, account: str) -> dict[str, int]:
        rows = self._query(
            "SELECT target_key, read_ts FROM read_markers WHERE account_key = ?", (fold(account),)
        )
        return {target: ts for target, ts in rows}

    def save_always_on(self, account: str, nick: str, rooms: Sequence[str]) -> Future[None]:
        key = fold(account)

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO always_on (account_key, account, nick, last_seen_ts, last_seen_id)"
                " VALUES (?, ?, ?, NULL, NULL) ON CONFLICT (account_key)"
                " DO UPDATE SET account = excluded.account, nick = excluded.nick",
                (key, account, nick),
            )
            conn.execute("DELETE FROM always_on_rooms WHERE account_key = ?", (key,))
            conn.executemany(
                "INSERT OR IGNORE INTO always_on_rooms (account_key, room_key, room)"
                " VALUES (?, ?, ?)",
                rows,
            )

        rows = [(key, fold(room), room) for room in rooms]
        return self._enqueue(save)

    def always_on_room(self, account: str, room: str, *, joined: bool) -> Future[None]:
        key = fold(account)

        def change(conn: sqlite3.Connection) -> None:
            if joined:
                conn.execute(
                    "INSERT OR IGNORE INTO always_on_rooms (account_key, room_key, room)"
                    " SELECT ?, ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM always_on WHERE account_key = ?)",
                    (key, fold(room), room, key),
                )
            else:
                conn.execute(
                    "DELETE FROM always_on_rooms WHERE account_key = ? AND room_key = ?",
                    (key, fold(room)),
                )

        return self._enqueue(change)

    def always_on_seen(
        self, account: str, last_seen_ts: int | None, last_seen_id: int | None
    ) -> Future[None]:
        key = fold(account)

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE always_on SET last_seen_ts = ?, last_seen_id = ? WHERE account_key = ?",
                (last_seen_ts, last_seen_id, key),
            )

        return self._enqueue(update)

    def delete_always_on(self, account: str) -> Future[None]:
        key = fold(account)

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM always_on_rooms WHERE account_key = ?", (key,))
            conn.execute("DELETE FROM always_on WHERE account_key = ?", (key,))

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
            rows = self._query("SELECT ts FROM messages WHERE id = ?", (ref.value,))
            if not rows:
                return None
            ts.append(rows[0][0])
        return ts[0] <= ts[1]

    def _delete_in_chunks(self, where: str, params: tuple[object, ...]) -> int:
        """Delete the messages matching `where`, PURGE_CHUNK at a time, each chunk its own
        write job, so other writers are never held up by one long delete."""

        def delete_chunk(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM messages WHERE id IN"
                f" (SELECT id FROM messages WHERE {where} ORDER BY id LIMIT ?)",
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
        return self._delete_in_chunks("ts < ?", (cutoff_ts,))

    def delete_room_messages(self, room: str) -> Future[int]:
        key = fold(room)

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM messages WHERE room_key = ?", (key,)).rowcount

        return self._enqueue(delete)

    def rename_room_messages(self, old: str, new: str) -> Future[int]:
        old_key, new_key = fold(old), fold(new)

        def rename(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE messages SET room_key = ?, room = ? WHERE room_key = ?",
                (new_key, new, old_key),
            ).rowcount

        return self._enqueue(rename)

    def purge_rooms_not_kept(self, keep: Iterable[str] = ()) -> int:
        return self._delete_in_chunks(
            "room_key IS NOT NULL AND room_key NOT IN (SELECT room_key FROM rooms)"
            " AND room_key NOT IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(set(keep))),),
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

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO rooms (room_key, name, topic, topic_by, topic_ts, created_ts, owner,"
                " modes, room_password, user_limit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_key) DO UPDATE SET name = excluded.name,"
                " topic = excluded.topic, topic_by = excluded.topic_by,"
                " topic_ts = excluded.topic_ts, created_ts = excluded.created_ts,"
                " owner = excluded.owner, modes = excluded.modes,"
                " room_password = excluded.room_password, user_limit = excluded.user_limit",
                (key, room.name, room.topic, room.topic_by, room.topic_ts, room.created_ts,
                 room.owner, "".join(sorted(room.modes)), room.key, room.limit),
            )  # fmt: skip
            conn.execute("DELETE FROM room_entries WHERE room_key = ?", (key,))
            conn.executemany(
                "INSERT INTO room_entries (room_key, kind, value) VALUES (?, ?, ?)",
                [
                    (key, kind, value)
                    for kind, attr in _ENTRY_KINDS.items()
                    for value in getattr(room, attr)
                ],
            )

        self._submit(upsert, None)

    def delete_room(self, name: str) -> bool:
        key = fold(name)

        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM room_entries WHERE room_key = ?", (key,))
            return conn.execute("DELETE FROM rooms WHERE room_key = ?", (key,)).rowcount > 0

        return self._submit(delete, None)

    # --- accounts -----------------------------------------------------------------------------

    def create_account(self, name: str, password: str) -> None:
        if not name:
            raise ValueError("empty account name")
        key = fold(name)
        # Hash in the caller's thread: scrypt takes tens of ms and must not stall the writer.
        encoded = passwords.hash_password(password)

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO accounts (name_key, name, password_hash, created_ts)"
                    " VALUES (?, ?, ?, ?)",
                    (key, name, encoded, _now_ms()),
                )
            except sqlite3.IntegrityError:
                raise AccountExistsError(f"account {name!r} already exists") from None

        self._submit(insert, None)

    def _password_hash(self, name: str) -> str | None:
        rows = self._query("SELECT password_hash FROM accounts WHERE name_key = ?", (fold(name),))
        return rows[0][0] if rows else None

    def _replace_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        key = fold(name)

        def update(conn: sqlite3.Connection) -> bool:
            # Compare-and-set: a concurrent password change wins over a stale one.
            cur = conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE name_key = ? AND password_hash = ?",
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
            # Parameters were raised since this hash was made: upgrade it now that we know the
            # password. Best effort; the login itself already succeeded.
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
        return bool(self._query("SELECT 1 FROM accounts WHERE name_key = ?", (fold(name),)))

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
        # Anything still queued (if the writer hung, or queued meanwhile) must not leave
        # callers waiting; from now on `_enqueue` checks too.
        self._drained = True
        self._fail_queued()
        with self._state_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        os.close(self._lock_fd)

    def _fail_queued(self) -> None:
        leftovers: list[_Job] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        self._fail(leftovers, StoreError("store is closed"))

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(future: Future[_T], timeout: float | None) -> _T:
    """The result of a write Future, waiting at most `timeout` (None: WRITE_TIMEOUT) seconds.

    Raises StoreError when the write failed or was not confirmed in time.
    """
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
