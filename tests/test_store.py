"""Tests of the storage layer: history queries, accounts, durability.

Every test taking `store` or `backend` runs against both backends, SQLite and PostgreSQL
(tests/store_backends.py: a database of its own per test); those taking `sqlite_store` test
what only SQLite has (its data directory, its PRAGMAs, its file-level migrations).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import writer_held
from store_backends import (
    Backend,
    PostgresBackend,
    postgres_database,
)

from threadchat.core.errors import StoreError
from threadchat.core.history import MAX_HISTORY_LIMIT, HistoryQuery, Ref
from threadchat.store import passwords
from threadchat.store.base import (
    AccountExistsError,
    AlwaysOnRecord,
    NewMessage,
    PartlyStored,
    RoomRecord,
    Store,
)
from threadchat.store.postgres_schema import SCHEMA_VERSION as SCHEMA_VERSION_PG
from threadchat.store.schema import MIGRATIONS, SCHEMA_VERSION
from threadchat.store.sqlite import DB_FILENAME, ROWS_PER_INSERT, SQLiteStore, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
EVIL = "x'); DROP TABLE messages; --\"\\%_*?[]"
# Legal in a JSON string, but not encodable as UTF-8: SQLite cannot take it.
LONE_SURROGATE = "hi \ud800"


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "data")
    yield s
    s.close()


def say(s: Store, room: str, text: str, sender: str = "alice") -> int:
    return s.append(sender=sender, room=room, text=text).id


def texts(messages: list) -> list[str]:
    return [m.text for m in messages]


def test_implements_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_restart_keeps_messages_rooms_accounts_bans(backend: Backend) -> None:
    s = backend.open()
    say(s, "Dev", "hello")
    s.append(sender="alice", sender_account="alice", target="bob", target_account="bob", text="pm")
    room = RoomRecord(
        name="Dev",
        created_ts=1000,
        topic="the topic",
        topic_by="alice",
        topic_ts=2000,
        owner="alice",
        operators=frozenset({"alice", "carol"}),
        voiced=frozenset({"dave"}),
        modes=frozenset("tnkl"),
        key="sesame",
        limit=25,
        bans=frozenset({"*!*@bad.example", "mallory"}),
    )
    s.save_room(room)
    s.create_account("Alice", "correct horse")
    s.close()

    s = backend.open()
    try:
        assert texts(s.room_history("dev", HistoryQuery.latest(10))) == ["hello"]
        assert texts(s.private_history("bob", "alice", HistoryQuery.latest(10))) == ["pm"]
        assert s.load_rooms() == [room]
        assert s.verify_password("alice", "correct horse")
        assert s.account_exists("ALICE")
    finally:
        s.close()


def test_room_upsert_and_delete(store: Store) -> None:
    store.save_room(RoomRecord(name="dev", created_ts=1, bans=frozenset({"a", "b"})))
    store.save_room(RoomRecord(name="Dev", created_ts=1, topic="new", bans=frozenset({"b"})))
    (room,) = store.load_rooms()
    assert (room.name, room.topic, room.bans) == ("Dev", "new", frozenset({"b"}))
    assert store.delete_room("DEV")
    assert not store.delete_room("dev")
    assert store.load_rooms() == []


def test_concurrent_appends_unique_increasing_ids(store: Store) -> None:
    threads, per_thread = 12, 40  # 480: fits in one history page
    ids: dict[int, list[int]] = {}
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        start.wait(timeout=10)
        ids[n] = [say(store, "load", f"{n}:{i}") for i in range(per_thread)]

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=30)
    assert len(ids) == threads
    for own in ids.values():
        assert own == sorted(own)
    every = [i for own in ids.values() for i in own]
    assert len(set(every)) == threads * per_thread
    stored = store.room_history("load", HistoryQuery.latest(MAX_HISTORY_LIMIT))
    assert sorted(every) == [m.id for m in stored]
    # Timestamps never go backwards along ids.
    assert [m.ts for m in stored] == sorted(m.ts for m in stored)


CHILD = textwrap.dedent(
    """
    import sys, threading
    from store_backends import open_child_store

    store = open_child_store(sys.argv[1], sys.argv[2])
    out = threading.Lock()

    def loop(n):
        i = 0
        while True:
            mid = store.append(sender="w%d" % n, room="crash", text="m%d-%d" % (n, i)).id
            i += 1
            with out:
                sys.stdout.write("%d\\n" % mid)
                sys.stdout.flush()

    for n in range(4):
        threading.Thread(target=loop, args=(n,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigkill_loses_no_acknowledged_message(tmp_path: Path, backend: Backend) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(REPO_ROOT), str(REPO_ROOT / "tests"))))
    proc = subprocess.Popen(
        [sys.executable, str(script), backend.name, backend.location],
        stdout=subprocess.PIPE,
        env=env,
    )
    acknowledged: list[int] = []
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 500:
            line = proc.stdout.readline()
            assert line, "child exited early"
            acknowledged.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # Lines printed before the kill but not yet read count too; a cut-off last line does not.
    acknowledged += [int(x) for x in rest.decode().split("\n")[:-1]]

    s = backend.open()
    try:
        rows = {r[0] for r in backend.sql("SELECT id FROM messages")}
        assert set(acknowledged) <= rows
        # The store is usable after the crash and ids keep increasing.
        assert say(s, "crash", "after") > max(rows)
    finally:
        s.close()


def test_private_history_isolation(store: Store) -> None:
    store.append(sender="Alice", sender_account="alice", target="bob", target_account="Bob",
                 text="a->b")  # fmt: skip
    store.append(sender="bob", sender_account="bob", target="alice", target_account="alice",
                 text="b->a")  # fmt: skip
    store.append(sender="carol", sender_account="carol", target="bob", target_account="bob",
                 text="c->b")  # fmt: skip
    store.append(sender="guest", sender_account=None, target="bob", target_account="bob",
                 text="anonymous")  # fmt: skip
    q = HistoryQuery.latest(50)
    assert texts(store.private_history("alice", "bob", q)) == ["a->b", "b->a"]
    assert texts(store.private_history("BOB", "ALICE", q)) == ["a->b", "b->a"]
    assert texts(store.private_history("bob", "carol", q)) == ["c->b"]
    assert texts(store.private_history("carol", "alice", q)) == []
    assert store.room_history("bob", q) == []
    with pytest.raises(ValueError):
        store.private_history("", "bob", q)


def test_limits_clamped(store: Store) -> None:
    for i in range(MAX_HISTORY_LIMIT + 20):
        say(store, "big", str(i))
    latest = store.room_history("big", HistoryQuery.latest(10**9))
    assert len(latest) == MAX_HISTORY_LIMIT
    assert latest[-1].text == str(MAX_HISTORY_LIMIT + 19)
    assert store.room_history("big", HistoryQuery.latest(-3)) == []
    assert len(store.room_history("big", HistoryQuery.after(Ref.msgid(0), 10**6))) == 500


def test_history_modes(store: Store) -> None:
    msgs = [store.append(sender="a", room="r", text=str(i)) for i in range(10)]
    say(store, "other", "noise")
    ids = [m.id for m in msgs]

    def q(query: HistoryQuery) -> list[str]:
        return texts(store.room_history("R", query))

    assert q(HistoryQuery.latest(3)) == ["7", "8", "9"]
    assert q(HistoryQuery.latest(5, after=Ref.msgid(ids[7]))) == ["8", "9"]
    assert q(HistoryQuery.before(Ref.msgid(ids[5]), 3)) == ["2", "3", "4"]
    assert q(HistoryQuery.after(Ref.msgid(ids[5]), 3)) == ["6", "7", "8"]
    assert q(HistoryQuery.around(Ref.msgid(ids[5]), 4)) == ["3", "4", "5", "6"]
    assert q(HistoryQuery.between(Ref.msgid(ids[1]), Ref.msgid(ids[8]), 3)) == ["2", "3", "4"]
    assert q(HistoryQuery.between(Ref.msgid(ids[8]), Ref.msgid(ids[1]), 3)) == ["5", "6", "7"]
    # Timestamp references: strictly before/after a time.
    ts_after_all = msgs[-1].ts + 1
    assert q(HistoryQuery.before(Ref.at(ts_after_all), 2)) == ["8", "9"]
    assert q(HistoryQuery.after(Ref.at(msgs[0].ts - 1), 2)) == ["0", "1"]
    assert q(HistoryQuery.after(Ref.at(ts_after_all), 2)) == []
    assert q(HistoryQuery.between(Ref.at(msgs[0].ts - 1), Ref.msgid(ids[3]), 50)) == [
        "0",
        "1",
        "2",
    ]
    assert q(HistoryQuery.between(Ref.msgid(10**9), Ref.at(0), 5)) == []


def test_sql_metacharacters_stored_verbatim(store: Store) -> None:
    store.append(sender=EVIL, sender_account=EVIL, room=EVIL, text=EVIL, action=True)
    (m,) = store.room_history(EVIL, HistoryQuery.latest(5))
    assert (m.room, m.sender, m.sender_account, m.text, m.action) == (EVIL, EVIL, EVIL, EVIL, True)
    assert (
        store.room_history("x'); DROP TABLE messages; --\"\\%_*?[x", HistoryQuery.latest(5)) == []
    )
    room = RoomRecord(name=EVIL, created_ts=1, topic=EVIL, key=EVIL, bans=frozenset({EVIL}))
    store.save_room(room)
    assert store.load_rooms() == [room]
    store.create_account(EVIL, EVIL)
    assert store.verify_password(EVIL, EVIL)
    assert not store.account_exists("x%")


def test_accounts(store: Store, backend: Backend) -> None:
    assert not store.account_exists("alice")
    assert not store.verify_password("alice", "pw")
    store.create_account("Alice", "s3cret!")
    with pytest.raises(AccountExistsError):
        store.create_account("ALICE", "other")
    assert store.account_exists("aLiCe")
    assert store.verify_password("alice", "s3cret!")
    assert not store.verify_password("alice", "S3cret!")
    assert not store.change_password("alice", "wrong", "new")
    assert store.change_password("ALICE", "s3cret!", "new pass")
    assert not store.verify_password("alice", "s3cret!")
    assert store.verify_password("alice", "new pass")
    assert not store.change_password("nobody", "x", "y")
    [(stored,)] = backend.sql("SELECT password_hash FROM accounts")
    assert "new pass" not in stored and stored.startswith("scrypt$")


def test_password_hash_format_and_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = passwords.hash_password("pw"), passwords.hash_password("pw")
    assert a != b  # per-hash random salt
    assert passwords.verify_password("pw", a) and not passwords.verify_password("pW", a)
    assert not passwords.needs_rehash(a)
    for broken in ("", "scrypt$1$2", "md5$x$y$z$a$b", a[:-4] + "!!!!", "scrypt$99999999$8$1$AA$AA"):
        assert not passwords.verify_password("pw", broken)
    with pytest.raises(ValueError):
        passwords.hash_password("x" * (passwords.MAX_PASSWORD_BYTES + 1))
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**15)
    assert passwords.needs_rehash(a)
    assert passwords.verify_password("pw", a)  # old parameters still verify


def test_password_upgraded_on_login(
    store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_account("alice", "pw")
    monkeypatch.setattr(passwords, "SCRYPT_N", 2**13)
    assert store.verify_password("alice", "pw")
    [(stored,)] = backend.sql("SELECT password_hash FROM accounts")
    assert stored.startswith("scrypt$8192$")
    assert store.verify_password("alice", "pw")


def test_purge_older_than(store: Store, backend: Backend) -> None:
    old = [store.append(sender="a", room="r", text=f"old{i}") for i in range(3)]
    cutoff = old[-1].ts + 1
    # Age them without sleeping.
    backend.sql("UPDATE messages SET ts = ts - 10 WHERE id <= ?", (old[-1].id,))
    new = store.append(sender="a", room="r", text="new")
    assert store.purge_older_than(cutoff - 5) == 3
    assert texts(store.room_history("r", HistoryQuery.latest(10))) == ["new"]
    assert store.append(sender="a", room="r", text="next").id > new.id


def test_migration_upgrades_v1_and_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / DB_FILENAME)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO messages (ts, room_key, room, sender, text) VALUES (5, 'dev', 'Dev', 'a', 'x')"
    )
    conn.execute(
        "INSERT INTO messages (ts, sender, sender_account, target, target_account, pair_lo,"
        " pair_hi, text) VALUES (6, 'ann', 'ann', 'bob', 'bob', 'ann', 'bob', 'private')"
    )
    conn.execute("INSERT INTO rooms (room_key, name, topic, created_ts) VALUES ('dev','Dev','t',1)")
    conn.execute(
        "INSERT INTO accounts VALUES ('alice', 'Alice', ?, 1)", (passwords.hash_password("pw"),)
    )
    conn.commit()
    conn.close()

    s = SQLiteStore(data)
    try:
        assert texts(s.room_history("dev", HistoryQuery.latest(5))) == ["x"]
        assert texts(s.private_history("bob", "ann", HistoryQuery.latest(5))) == ["private"]
        assert s.load_rooms() == [RoomRecord(name="Dev", created_ts=1, topic="t")]
        assert s.verify_password("alice", "pw")
        assert say(s, "dev", "y") > 1
    finally:
        s.close()
    with sqlite3.connect(data / DB_FILENAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_upgrade_to_v6_copies_each_messages_reactions_to_its_row(tmp_path: Path) -> None:
    # A database of v5, with reactions in their table only: v6 gives each message's row its
    # reactions (what history pages read), in the order they were given.
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / DB_FILENAME)
    for step in MIGRATIONS[:5]:
        for statement in step:
            assert isinstance(statement, str)
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    for text in ("first", "second"):
        conn.execute(
            "INSERT INTO messages (ts, room_key, room, sender, text)"
            " VALUES (5, 'dev', 'dev', 'a', ?)",
            (text,),
        )
    given = [
        (1, "n:bob", "🎉", "bob", 30),
        (1, "n:ann", "👍", "ann", 10),
        (1, "n:cy", "👍", "cy", 20),
    ]
    conn.executemany(
        "INSERT INTO reactions (message_id, reactor_key, reaction, reactor, ts)"
        " VALUES (?, ?, ?, ?, ?)",
        given,
    )
    conn.commit()
    conn.close()
    s = SQLiteStore(data)
    try:
        first, second = s.room_history("dev", HistoryQuery.latest(5))
        assert first.reactions == (("👍", ("ann", "cy")), ("🎉", ("bob",)))
        assert second.reactions == ()
        # The writer keeps the row's copy from now on.
        assert s.set_reaction(2, "n:ann", "ann", "👀", True)
        assert s.set_reaction(1, "n:ann", "ann", "👍", False)
        first, second = s.room_history("dev", HistoryQuery.latest(5))
        assert first.reactions == (("👍", ("cy",)), ("🎉", ("bob",)))
        assert second.reactions == (("👀", ("ann",)),)
        assert s.delete_message(1)
        assert s.room_history("dev", HistoryQuery.latest(5))[0].reactions == ()
    finally:
        s.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / DB_FILENAME) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(data)


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("")
    with pytest.raises(StoreError, match="not-a-dir") as info:
        SQLiteStore(path)
    assert "not a directory" in str(info.value)
    with pytest.raises(StoreError, match="not-a-dir"):
        SQLiteStore(path / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable") as info:
            SQLiteStore(data)
        assert str(data) in str(info.value)
    finally:
        data.chmod(0o700)


def test_second_open_of_same_dir_refused(sqlite_store: Store) -> None:
    with pytest.raises(StoreError, match="in use"):
        SQLiteStore(sqlite_store.data_dir)


def test_write_failure_reported_and_writer_survives(sqlite_store: Store) -> None:
    store = sqlite_store
    say(store, "r", "before")

    def disk_full(conn: sqlite3.Connection) -> None:
        # Simulates a full disk: SQLite fails with SQLITE_FULL once the file would grow.
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    store._submit(disk_full, None)
    with pytest.raises(StoreError, match="full"):
        store.append(sender="a", room="r", text="x" * 200_000)
    store._submit(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"), None)
    say(store, "r", "after")
    assert texts(store.room_history("r", HistoryQuery.latest(5))) == ["before", "after"]


def test_close_flushes_and_rejects_later_writes(backend: Backend) -> None:
    s = backend.open()
    done: list[int] = []
    failed: list[StoreError] = []
    go = threading.Barrier(9)

    def writer() -> None:
        go.wait(timeout=10)
        for _ in range(50):
            try:
                done.append(say(s, "r", "m"))
            except StoreError as e:
                failed.append(e)
                return

    workers = [threading.Thread(target=writer) for _ in range(8)]
    for t in workers:
        t.start()
    go.wait(timeout=10)
    s.close()
    for t in workers:
        t.join(timeout=30)
    with pytest.raises(StoreError, match="closed"):
        say(s, "r", "late")
    s.close()  # idempotent
    s = backend.open()
    try:
        stored = {m.id for m in s.room_history("r", HistoryQuery.latest(MAX_HISTORY_LIMIT))}
        assert set(done) == stored
    finally:
        s.close()


def test_append_many_gives_each_message_the_id_it_is_stored_under(
    store: Store, backend: Backend
) -> None:
    # More rows than one INSERT statement takes, rooms and private messages mixed.
    count = ROWS_PER_INSERT * 2 + 7
    messages = [
        NewMessage(sender=f"u{i}", text=f"t{i}", room="lobby")
        if i % 3
        else NewMessage(
            sender="ann", text=f"t{i}", target="bob", sender_account="ann", target_account="bob"
        )
        for i in range(count)
    ]
    stamps = wait_for(store.append_many(messages), 10)
    ids = [mid for mid, _ in stamps]
    assert len(ids) == count and ids == sorted(set(ids))
    stored = dict(backend.sql("SELECT id, text FROM messages"))
    assert stored == {mid: f"t{i}" for i, mid in enumerate(ids)}
    assert store.private_history("ann", "bob", HistoryQuery.latest(1))[0].id == ids[-1 - 2]


def test_message_jobs_sharing_a_commit_each_get_their_own_ids(
    store: Store, backend: Backend
) -> None:
    # The writer is held, so the three jobs queue up and are written by one transaction,
    # their rows by shared INSERT statements.
    with writer_held(store):
        futures = [
            store.append_many(
                [NewMessage(sender=f"s{job}", text=f"{job}-{i}", room="lobby") for i in range(n)]
            )
            for job, n in enumerate((3, 1, 5))
        ]
    written = [[mid for mid, _ in wait_for(future, 10)] for future in futures]
    stored = dict(backend.sql("SELECT id, text FROM messages"))
    for job, ids in enumerate(written):
        assert [stored[mid] for mid in ids] == [f"{job}-{i}" for i in range(len(ids))]


@pytest.mark.parametrize("rooms", [("lobby",), ("lobby", "dev")])
def test_room_runs_sharing_a_commit_keep_their_rooms_and_order(
    store: Store, backend: Backend, rooms: tuple[str, ...]
) -> None:
    # One room's jobs go into statements that bind the room once (split when longer than one
    # statement takes); jobs of several rooms fall back to whole rows. Either way each row
    # must keep its own room, text and place.
    sizes = (3, ROWS_PER_INSERT + 5, 1)
    with writer_held(store):
        futures = [
            store.append_many(
                [
                    NewMessage(sender=f"s{job}", text=f"{job}-{i}", room=rooms[job % len(rooms)])
                    for i in range(n)
                ]
            )
            for job, n in enumerate(sizes)
        ]
    written = [[mid for mid, _ in wait_for(future, 10)] for future in futures]
    ids = [mid for job in written for mid in job]
    assert ids == sorted(set(ids)) and len(ids) == sum(sizes)
    stored = {mid: (room, key, text) for mid, room, key, text in backend.sql(
        "SELECT id, room, room_key, text FROM messages"
    )}  # fmt: skip
    for job, job_ids in enumerate(written):
        room = rooms[job % len(rooms)]
        assert [stored[mid] for mid in job_ids] == [
            (room, room, f"{job}-{i}") for i in range(len(job_ids))
        ]


def test_a_bad_message_fails_alone_when_jobs_share_one_insert(store: Store) -> None:
    # The rows of jobs sharing a commit go into one INSERT; if it fails, each job is retried
    # on its own, so only the bad one (text NULL breaks NOT NULL) gets the error.
    with writer_held(store):
        texts_sent = ["good-1", None, "good-2"]
        futures = [
            store.append_many([NewMessage(sender="s", text=text, room="lobby")])  # type: ignore[arg-type]
            for text in texts_sent
        ]
    assert len(wait_for(futures[0], 10)) == 1
    with pytest.raises(StoreError):
        wait_for(futures[1], 10)
    assert len(wait_for(futures[2], 10)) == 1
    assert texts(store.room_history("lobby", HistoryQuery.latest(10))) == ["good-1", "good-2"]


def test_a_write_waited_for_from_the_writer_thread_is_refused(store: Store) -> None:
    # Code the writer runs after a commit (the history relay) must not wait for a write: the
    # writer would be waiting for itself. The store says so instead of hanging.
    outcome: list[BaseException | None] = []
    hook_ran = threading.Event()

    def after_commit() -> None:
        if hook_ran.is_set():
            return
        try:
            store.append(sender="x", text="from the writer", room="lobby")
            outcome.append(None)
        except StoreError as problem:
            outcome.append(problem)
        hook_ran.set()

    store.after_commit = after_commit
    wait_for(store.append_many([NewMessage(sender="a", text="first", room="lobby")]), 10)
    assert hook_ran.wait(10)
    assert isinstance(outcome[0], StoreError)
    store.after_commit = None
    assert texts(store.room_history("lobby", HistoryQuery.latest(10))) == ["first"]


def test_private_history_uses_the_partial_pair_index(sqlite_store: Store) -> None:
    store = sqlite_store
    # Since schema v3 the pair index holds private messages only (room messages no longer pay
    # for an entry of NULLs); the equality on pair_lo must still let SQLite use it.
    with sqlite3.connect(store.db_path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE pair_lo = ? AND pair_hi = ?"
            " ORDER BY id DESC LIMIT 5",
            ("alice", "bob"),
        ).fetchall()
        [index_sql] = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'messages_pair'"
        ).fetchone()
    assert "WHERE pair_lo IS NOT NULL" in index_sql
    assert any("messages_pair" in row[-1] for row in plan), plan


def test_a_write_queued_as_the_store_closes_fails_at_once(backend: Backend) -> None:
    # The closed check in front of the queue takes no lock, so a write can pass it just
    # before close() and land in the queue after the writer is gone. Its caller must get
    # StoreError at once, not after waiting out its timeout (here: an hour).
    s: Any = backend.open()
    s.close()
    s._closed = False  # as if the check had run just before close()
    future = s.append_many([NewMessage(sender="a", text="late", room="lobby")])
    assert future.done()
    with pytest.raises(StoreError, match="closed"):
        wait_for(future, 3600)


def test_a_message_the_database_cannot_take_fails_alone(store: Store) -> None:
    # One reader's burst is one job; its jobs share a commit with other readers' jobs. A
    # message SQLite refuses (a lone surrogate cannot be encoded) must fail alone: the rest
    # of its job and every other job of the commit are stored.
    with writer_held(store):
        futures = [
            store.append_many([NewMessage(sender="a", text="a-1", room="lobby")]),
            store.append_many(
                [
                    NewMessage(sender="b", text="b-1", room="dev"),
                    NewMessage(sender="b", text=LONE_SURROGATE, room="dev"),
                    NewMessage(sender="b", text="b-2", room="dev"),
                ]
            ),
            store.append_many([NewMessage(sender="c", text="c-1", room="lobby")]),
        ]
    assert len(wait_for(futures[0], 10)) == 1
    assert len(wait_for(futures[2], 10)) == 1
    with pytest.raises(PartlyStored) as partly:
        wait_for(futures[1], 10)
    first, failed, last = partly.value.outcomes
    assert isinstance(failed, StoreError) and "UnicodeEncodeError" in str(failed)
    assert not isinstance(first, StoreError) and not isinstance(last, StoreError)
    assert texts(store.room_history("dev", HistoryQuery.latest(10))) == ["b-1", "b-2"]
    assert [m.id for m in store.room_history("dev", HistoryQuery.latest(10))] == [
        first[0],
        last[0],
    ]
    assert texts(store.room_history("lobby", HistoryQuery.latest(10))) == ["a-1", "c-1"]
    # Alone in its commit (one INSERT, no transaction of its own), and on its own.
    with pytest.raises(PartlyStored):
        wait_for(
            store.append_many(
                [
                    NewMessage(sender="d", text=LONE_SURROGATE, room="dev"),
                    NewMessage(sender="d", text="d-1", room="dev"),
                ]
            ),
            10,
        )
    with pytest.raises(StoreError, match="UnicodeEncodeError"):
        store.append(sender="e", text=LONE_SURROGATE, room="dev")
    say(store, "dev", "after")
    assert texts(store.room_history("dev", HistoryQuery.latest(10))) == [
        "b-1",
        "b-2",
        "d-1",
        "after",
    ]


def test_deleting_a_rooms_messages_follows_the_writes_queued_before_it(
    store: Store,
) -> None:
    say(store, "secret", "committed before")
    with writer_held(store):
        queued = store.append_many([NewMessage(sender="a", text="queued", room="Secret")])
        other = store.append_many([NewMessage(sender="a", text="elsewhere", room="lobby")])
        deleted = store.delete_room_messages("SECRET")
        later = store.append_many([NewMessage(sender="b", text="next life", room="secret")])
    for future in (queued, other, later):
        wait_for(future, 10)
    assert wait_for(deleted, 10) == 2
    assert texts(store.room_history("secret", HistoryQuery.latest(10))) == ["next life"]
    assert texts(store.room_history("lobby", HistoryQuery.latest(10))) == ["elsewhere"]


def test_renaming_a_rooms_messages_moves_them_all_in_order(store: Store) -> None:
    said = [
        NewMessage(sender="a", text="one", room="Old"),
        NewMessage(sender="b", text="two", room="old"),
        NewMessage(sender="c", text="stays", room="other"),
    ]
    wait_for(store.append_many(said), 10)
    assert wait_for(store.rename_room_messages("OLD", "New"), 10) == 2
    assert texts(store.room_history("new", HistoryQuery.latest(10))) == ["one", "two"]
    assert texts(store.room_history("old", HistoryQuery.latest(10))) == []
    assert texts(store.room_history("other", HistoryQuery.latest(10))) == ["stays"]


def test_purging_rooms_not_kept_leaves_kept_rooms_and_private_messages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{type(store).__module__}.PURGE_CHUNK", 2)  # several chunks
    store.save_room(RoomRecord(name="Club", created_ts=1))
    for room in ("club", "gone", "Gone", "lobby", "gone"):
        say(store, room, f"in {room}")
    store.append(sender="ann", text="private", target="bob", sender_account="ann",
                 target_account="bob")  # fmt: skip
    assert store.purge_rooms_not_kept() == 4
    assert texts(store.room_history("club", HistoryQuery.latest(10))) == ["in club"]
    assert store.room_history("gone", HistoryQuery.latest(10)) == []
    assert store.room_history("lobby", HistoryQuery.latest(10)) == []
    assert texts(store.private_history("bob", "ann", HistoryQuery.latest(10))) == ["private"]


# -- PostgreSQL only: the database several nodes share ---------------------------------------


@pytest.fixture
def postgres() -> Iterator[PostgresBackend]:
    with postgres_database() as url:
        yield PostgresBackend(url)


def test_postgres_newer_schema_refused(postgres: PostgresBackend) -> None:
    postgres.open().close()
    postgres.sql("UPDATE schema_version SET version = version + 1")
    with pytest.raises(StoreError, match="newer"):
        postgres.open()


def test_postgres_unreachable_is_a_store_error_without_the_password() -> None:
    from threadchat.store.postgres import PostgresStore

    # A port nothing listens on: bind one, keep it bound without listening.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as info:
            PostgresStore(f"postgresql://someone:hunter2@127.0.0.1:{port}/chat")
    assert "hunter2" not in str(info.value)


def test_postgres_nodes_starting_together_migrate_once(postgres: PostgresBackend) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def open_one() -> None:
        go.wait(timeout=10)
        try:
            stores.append(postgres.open())
        except BaseException as problem:
            errors.append(problem)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == [] and len(stores) == 4
        assert postgres.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION_PG,)]
    finally:
        for s in stores:
            s.close()


def test_postgres_two_nodes_share_ids_in_commit_order(postgres: PostgresBackend) -> None:
    # Two stores on one database, as two nodes: their appends interleave, yet ids are unique,
    # each node's own increase, and times never go back along ids.
    nodes = [postgres.open(), postgres.open()]
    written: dict[int, list[int]] = {}
    go = threading.Barrier(4)

    def writer(n: int) -> None:
        go.wait(timeout=10)
        written[n] = [say(nodes[n % 2], "shared", f"{n}:{i}") for i in range(60)]

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        every = sorted(i for ids in written.values() for i in ids)
        assert len(set(every)) == 240 and all(ids == sorted(ids) for ids in written.values())
        seen = nodes[1].room_history("shared", HistoryQuery.latest(MAX_HISTORY_LIMIT))
        assert [m.id for m in seen] == every
        assert [m.ts for m in seen] == sorted(m.ts for m in seen)
    finally:
        for s in nodes:
            s.close()


def test_postgres_writer_reconnects_after_losing_its_connection(
    postgres: PostgresBackend,
) -> None:
    s = postgres.open()
    try:
        say(s, "r", "before")
        # The database server ends every other session of this database, as a restart would.
        postgres.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        outcomes: list[str] = []
        for attempt in range(3):  # the first may fail: its connection was cut under it
            try:
                say(s, "r", f"after {attempt}")
                outcomes.append("stored")
                break
            except StoreError:
                outcomes.append("failed")
        assert outcomes[-1] == "stored" and outcomes.count("failed") <= 1
        assert texts(s.room_history("r", HistoryQuery.latest(5)))[0] == "before"
    finally:
        s.close()


def test_read_markers_only_move_forward(store: Store) -> None:
    assert store.read_markers("alice") == {}
    assert store.set_read_marker("Alice", "#Dev", 1000) == 1000
    assert store.set_read_marker("alice", "#dev", 500) == 1000  # never back
    assert store.set_read_marker("alice", "@Bob", 700) == 700
    assert store.set_read_marker("bob", "#dev", 10) == 10
    assert store.read_markers("ALICE") == {"#dev": 1000, "@bob": 700}
    assert store.read_markers("bob") == {"#dev": 10}


def test_always_on_accounts_and_their_rooms(backend: Backend) -> None:
    with backend.open() as s:
        wait_for(s.save_always_on("Alice", "alice_", ["#Dev", "#ops", "#dev"]), 5)
        wait_for(s.always_on_room("alice", "#new", joined=True), 5)
        wait_for(s.always_on_room("alice", "#OPS", joined=False), 5)
        # Only an always-on account's rooms are kept.
        wait_for(s.always_on_room("bob", "#dev", joined=True), 5)
        wait_for(s.save_always_on("carol", "carol", []), 5)
        wait_for(s.always_on_seen("alice", 1234, 56), 5)
    with backend.open() as s:  # it survives a restart
        records = s.load_always_on()
        assert records == [
            AlwaysOnRecord("Alice", "alice_", 1234, 56, ("#Dev", "#new")),
            AlwaysOnRecord("carol", "carol", None, None, ()),
        ]
        # Saving again replaces the nick and rooms, and keeps when it was last seen.
        wait_for(s.save_always_on("alice", "alice", ["#x"]), 5)
        wait_for(s.always_on_seen("carol", None, None), 5)
        wait_for(s.delete_always_on("CAROL"), 5)
        assert s.load_always_on() == [AlwaysOnRecord("alice", "alice", 1234, 56, ("#x",))]


def test_replies_edits_tombstones_and_reactions_are_kept_with_their_message(
    backend: Backend, store: Store
) -> None:
    parent = store.append(sender="alice", text="first words of a long question", room="dev")
    reply = store.append(sender="bob", text="an answer", room="dev")
    [(reply_id, _)] = store.append_many(
        [NewMessage(sender="carol", text="me too", room="dev", reply_to=parent.id)]
    ).result(5)
    assert store.set_reaction(parent.id, "n:bob", "bob", "👍", True)
    assert not store.set_reaction(parent.id, "n:bob", "bob", "👍", True)  # once per person
    assert store.set_reaction(parent.id, "a:carol", "carol", "👍", True)
    assert store.set_reaction(parent.id, "a:carol", "carol", "🎉", True)
    assert store.edit_message(reply.id, "a better answer")
    page = {m.id: m for m in store.room_history("dev", HistoryQuery.latest(10))}
    # In the order given; these came within a millisecond or two, so compared as a set.
    given = {(name, frozenset(who)) for name, who in page[parent.id].reactions}
    assert given == {("👍", frozenset({"bob", "carol"})), ("🎉", frozenset({"carol"}))}
    assert (page[reply.id].text, page[reply.id].edited) == ("a better answer", True)
    answer = page[reply_id]
    assert (answer.reply_to, answer.reply_sender) == (parent.id, "alice")
    assert answer.reply_text == "first words of a long question"
    # A deletion leaves a tombstone without text or reactions; nothing more is done to it.
    assert store.delete_message(parent.id)
    tombstone = store.message(parent.id)
    assert tombstone is not None and tombstone.deleted and tombstone.text == ""
    assert tombstone.reactions == ()
    assert not store.delete_message(parent.id)
    assert not store.edit_message(parent.id, "back")
    assert not store.set_reaction(parent.id, "n:bob", "bob", "👍", True)
    assert store.message(10**9) is None
    # Reactions go with their message when it is purged.
    assert store.set_reaction(reply.id, "n:carol", "carol", "👍", True)
    store.purge_older_than(2**62)
    assert backend.sql("SELECT COUNT(*) FROM reactions") == [(0,)]


def test_reactions_go_with_an_ended_room_and_stay_with_a_renamed_one(
    backend: Backend, store: Store
) -> None:
    ended = say(store, "gone", "bye")
    kept = say(store, "old", "hello")
    assert store.set_reaction(ended, "n:bob", "bob", "👋", True)
    assert store.set_reaction(kept, "n:bob", "bob", "👍", True)
    assert wait_for(store.delete_room_messages("gone"), 5) == 1
    assert wait_for(store.rename_room_messages("old", "new"), 5) == 1
    assert backend.sql("SELECT message_id FROM reactions") == [(kept,)]
    [message] = store.room_history("new", HistoryQuery.latest(10))
    assert message.reactions == (("👍", ("bob",)),)
    assert not store.set_reaction(ended, "n:bob", "bob", "👋", True)  # gone with its room


def _sqlite_memory_used() -> int | None:
    """Bytes SQLite holds in this process, from the library Python's sqlite3 uses (None when
    that library cannot be reached from ctypes)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_libversion.restype = ctypes.c_char_p
    if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None  # Python's sqlite3 is linked against another copy
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


def test_batches_of_every_size_do_not_fill_the_writer_with_prepared_statements(
    sqlite_store: SQLiteStore,
) -> None:
    # Each row count is its own multi-row INSERT; 128 cached ones of a few hundred rows held
    # tens of MB after a soak. The writer keeps few, so memory stays small however varied.
    before = _sqlite_memory_used()
    if before is None:
        pytest.skip("the SQLite library Python uses is not reachable through ctypes")
    sent = 0
    for size in range(300, 0, -1):
        batch = [NewMessage(sender="u", text=f"{sent + i}", room="lobby") for i in range(size)]
        wait_for(sqlite_store.append_many(batch), 10.0)
        sent += size
    grown = (_sqlite_memory_used() or 0) - before
    # Measured: with 128 statements kept (Python's default) SQLite grew by 9.4 MB here; with
    # 16, by 2.7 MB.
    assert grown < 6 * 1024 * 1024, f"SQLite grew by {grown / 1e6:.1f} MB"
