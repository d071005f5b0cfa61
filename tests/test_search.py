"""Full-text search of history (issue 15): the index, its upkeep, and who finds what.

Store-level tests run on both backends (tests/store_backends.py): SQLite's FTS5 index and
PostgreSQL's tsvector column must give the same requests the same results. The rest run a
real server with JSON, text and IRC clients. An edit and a deletion are done as issue 14
stores them: an UPDATE of the row's text (a deletion empties it).
"""

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import IrcClient, JsonClient, LineClient, unref
from store_backends import Backend, postgres_database
from test_irc_accounts import PASSWORD, register_account

from threadchat.app.server import Server
from threadchat.core.search import build_search, parse_filters, parse_terms
from threadchat.protocols.irc.wire import parse
from threadchat.store import postgres_schema
from threadchat.store.base import Store
from threadchat.store.postgres import PostgresStore, tsquery_of
from threadchat.store.schema import MIGRATIONS
from threadchat.store.sqlite import DB_FILENAME, SQLiteStore


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


def add(store: Store, *texts: tuple[str, str]) -> None:
    """Store (room, text) messages, in order."""
    for room, text in texts:
        store.append(sender="alice", sender_account="alice", room=room, text=text)


def found(store: Store, words: str, rooms: tuple[str, ...] = ("dev",), **kw: Any) -> list[str]:
    return [m.text for m in store.search(build_search(words, **kw), rooms, None)]


def test_words_phrases_and_prefixes(store: Store) -> None:
    add(
        store,
        ("dev", "the build is green again"),
        ("dev", "green tea for everyone"),
        ("dev", "a greenhouse in the garden"),
        ("dev", "Café crème at noon"),
        ("dev", "see example.com and foo_bar-baz"),
    )
    # Newest first; every word must match; case and accents do not matter.
    assert found(store, "green") == ["green tea for everyone", "the build is green again"]
    assert found(store, "GREEN build") == ["the build is green again"]
    assert found(store, "green*") == [
        "a greenhouse in the garden",
        "green tea for everyone",
        "the build is green again",
    ]
    assert found(store, '"green tea"') == ["green tea for everyone"]
    assert found(store, '"tea green"') == []
    assert found(store, "cafe creme") == ["Café crème at noon"]
    assert found(store, "CAF*") == ["Café crème at noon"]
    # Anything not a letter or digit splits words, in the text as in the query.
    assert found(store, "example") == ["see example.com and foo_bar-baz"]
    assert found(store, "bar baz foo") == ["see example.com and foo_bar-baz"]
    assert found(store, '"example.com"') == ["see example.com and foo_bar-baz"]
    assert found(store, "foo_ba*") == ["see example.com and foo_bar-baz"]
    # Query syntax typed by a user is only words: no column filter, no NEAR, no operator,
    # no error, on either backend.
    assert found(store, "text:green NEAR(x) AND OR") == []
    assert found(store, 'green" OR "x') == []
    assert found(store, "green | tea") == ["green tea for everyone"]
    assert found(store, "!green & 'x' <-> tea:*") == []
    assert found(store, "green\\ tea)") == ["green tea for everyone"]


def test_the_postgres_query_is_quoted_words_only() -> None:
    assert tsquery_of(parse_terms('"green tea" pre* it\'s a|b')) == (
        "('green' <-> 'tea') & ('pre':*) & ('it') & ('s') & ('a') & ('b')"
    )
    assert tsquery_of(parse_terms("foo_ba*")) == "('foo' <-> 'ba':*)"
    assert tsquery_of([("___", False)]) == ""


def test_query_building_refuses_what_it_cannot_run() -> None:
    assert parse_terms('"a phrase" pre* plain') == [
        ("a phrase", False),
        ("pre", True),
        ("plain", False),
    ]
    assert build_search('"a phrase" pre*').match == 'text : ("a phrase" "pre"*)'
    for bad in ("", "  ", "***", "a*"):
        with pytest.raises(ValueError):
            build_search(bad)
    with pytest.raises(ValueError):
        build_search(" ".join(f"w{i}" for i in range(40)))
    assert build_search("x", limit=10**6).limit == 100
    words, filters = parse_filters('deploy "from:me" from:bob in:#dev after:2026-01-01')
    assert words == 'deploy "from:me"'
    assert filters == {"from": "bob", "in": "#dev", "after": "2026-01-01"}


def test_filters_by_author_room_and_time(store: Store) -> None:
    store.append(sender="bob", room="dev", text="deploy one")
    first = store.append(sender="alice", room="ops", text="deploy two")
    time.sleep(0.005)  # a later millisecond for the next one: the time filter needs one
    later = store.append(sender="Alice", room="dev", text="deploy three")
    rooms = ("dev", "ops")
    assert found(store, "deploy", rooms) == ["deploy three", "deploy two", "deploy one"]
    assert found(store, "deploy", rooms, sender="alice") == ["deploy three", "deploy two"]
    assert found(store, "deploy", rooms, room="DEV") == ["deploy three", "deploy one"]
    assert found(store, "deploy", rooms, after_ts=first.ts) == ["deploy three"]
    assert found(store, "deploy", rooms, before_ts=later.ts) == ["deploy two", "deploy one"]
    assert found(store, "deploy", rooms, limit=1) == ["deploy three"]
    # Only the rooms given are searched, whatever the filter asks.
    assert found(store, "deploy", ("dev",), room="ops") == []


def test_private_messages_only_of_the_askers_conversations(store: Store) -> None:
    store.append(sender="bob", sender_account="bob", target="alice", target_account="alice",
                 text="secret plan")  # fmt: skip
    store.append(sender="bob", sender_account="bob", target="carol", target_account="carol",
                 text="secret party")  # fmt: skip
    store.append(sender="bob", room="dev", text="secret room")

    def texts(account: str | None, **kw: Any) -> list[str]:
        query = build_search("secret", **kw)
        return [m.text for m in store.search(query, ("dev",), account)]

    assert texts("alice") == ["secret room", "secret plan"]
    assert texts("CAROL") == ["secret room", "secret party"]
    assert texts(None) == ["secret room"]
    assert texts("dave") == ["secret room"]
    only_bob = dataclasses.replace(build_search("secret"), peer="bob")
    assert [m.text for m in store.search(only_bob, ("dev",), "alice")] == ["secret plan"]
    assert store.search(only_bob, ("dev",), None) == []


def test_an_edit_is_found_by_its_new_text_and_a_deletion_no_more(backend: Backend) -> None:
    with backend.open() as store:
        edited = store.append(sender="alice", room="dev", text="the meeting is on monday")
        deleted = store.append(sender="alice", room="dev", text="my password is hunter2")
        store.append(sender="bob", room="dev", text="see you on monday")
    # As issue 14 stores them: the edit replaces the text, the deletion empties it.
    backend.sql("UPDATE messages SET text = ? WHERE id = ?", ("moved to tuesday", edited.id))
    backend.sql("UPDATE messages SET text = '' WHERE id = ?", (deleted.id,))
    with backend.open() as store:
        assert found(store, "tuesday") == ["moved to tuesday"]
        assert found(store, "monday") == ["see you on monday"]
        assert found(store, "hunter2") == []
        assert found(store, "password") == []
        # Retention deletes rows: they leave the index with them.
        assert store.purge_older_than(int(time.time() * 1000) + 1000) == 3
        assert found(store, "monday") == []


def test_the_migration_indexes_what_is_already_stored(tmp_path: Path) -> None:
    # A data directory of the previous schema, with messages in it.
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    for step in MIGRATIONS[:3]:
        for statement in step:
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    db.execute(
        "INSERT INTO messages (ts, room_key, room, sender, text) VALUES (1, 'dev', 'dev', 'a', ?)",
        ("written before search existed",),
    )
    db.commit()
    db.close()
    with SQLiteStore(tmp_path) as store:
        assert found(store, "existed") == ["written before search existed"]
        store.append(sender="b", room="dev", text="written after")
        assert found(store, "written") == ["written after", "written before search existed"]


def test_the_postgres_migration_indexes_what_is_already_stored() -> None:
    with postgres_database() as url:
        # A database of the previous schema (v1, before search), with a message in it.
        with psycopg.connect(url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO schema_version (version) VALUES (1)")
                for statement in postgres_schema.MIGRATIONS[0]:
                    conn.execute(statement)  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO messages (id, ts, room_key, room, sender, text)"
                " VALUES (1, 1, 'dev', 'dev', 'a', 'written before search existed')"
            )
            conn.execute("UPDATE message_counter SET last_id = 1, last_ts = 1")
        with PostgresStore(url) as store:
            assert found(store, "existed") == ["written before search existed"]
            store.append(sender="b", room="dev", text="written after")
            assert found(store, "written") == ["written after", "written before search existed"]
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            assert row == (postgres_schema.SCHEMA_VERSION,)


def hello(server: Server, name: str, password: str | None = None) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    fields = {"password": password} if password else {}
    client.send_json(type="hello", name=name, ref="hi", **fields)
    client.expect_event("ok", ref="hi")
    return client


def search(client: JsonClient, ref: str, **fields: object) -> list[str]:
    client.send_json(type="search", ref=ref, **fields)
    return [m["text"] for m in client.expect_event("search", ref=ref)["messages"]]


def test_a_user_finds_only_what_they_may_read(make_server: Callable[..., Server]) -> None:
    server = make_server()
    for name in ("alice", "bob", "carol"):
        register_account(server, name)
    alice = hello(server, "alice", PASSWORD)
    bob = hello(server, "bob", PASSWORD)
    carol = hello(server, "carol", PASSWORD)
    guest = hello(server, "guest")
    for client, room in ((alice, "secret"), (bob, "secret"), (alice, "open")):
        client.send_json(type="join", room=room, ref="j")
        client.expect_event("ok", ref="j")
    # Carol is in neither room (guests and accounts alike read only the rooms they are in).
    steps = [
        (alice, {"type": "say", "room": "lobby", "text": "zebra in the lobby"}),
        (alice, {"type": "say", "room": "secret", "text": "zebra plans in secret"}),
        (alice, {"type": "say", "room": "open", "text": "zebra in the open"}),
        (alice, {"type": "msg", "to": "bob", "text": "zebra between alice and bob"}),
        (bob, {"type": "msg", "to": "alice", "text": "zebra reply to alice"}),
        (carol, {"type": "msg", "to": "guest", "text": "zebra to a guest"}),
    ]
    for n, (client, request) in enumerate(steps):
        client.send_json(ref=f"s{n}", **request)
        client.expect_event("ok", ref=f"s{n}")

    assert search(alice, "a", text="zebra") == [
        "zebra reply to alice",
        "zebra between alice and bob",
        "zebra in the open",
        "zebra plans in secret",
        "zebra in the lobby",
    ]
    assert search(bob, "b", text="zebra") == [
        "zebra reply to alice",
        "zebra between alice and bob",
        "zebra plans in secret",
        "zebra in the lobby",
    ]
    # Carol: not in the secret or open room, and not one of alice and bob's conversation;
    # her message to a guest is not a conversation between two accounts.
    assert search(carol, "c", text="zebra") == ["zebra in the lobby"]
    assert search(guest, "g", text="zebra") == ["zebra in the lobby"]
    carol.send_json(type="search", text="zebra", room="secret", ref="c2")
    assert carol.expect_event("error", ref="c2")["code"] == "not_in_room"
    # Filters over what one may read.
    assert search(alice, "f", text="zebra", room="open") == ["zebra in the open"]
    # A result opens the conversation around it (a history page centred on its id).
    alice.send_json(type="search", text="secret", ref="s")
    [hit] = alice.expect_event("search", ref="s")["messages"]
    alice.send_json(type="say", room="secret", text="said after", ref="after")
    alice.expect_event("ok", ref="after")
    alice.send_json(type="history", room="secret", around=hit["id"], limit=4, ref="ctx")
    page = alice.expect_event("history", ref="ctx")
    assert [m["text"] for m in page["messages"]] == ["zebra plans in secret", "said after"]
    assert search(alice, "f2", text="zebra", **{"from": "bob"}) == ["zebra reply to alice"]
    # Once out of a room, its history is out of reach too.
    bob.send_json(type="leave", room="secret", ref="l")
    bob.expect_event("ok", ref="l")
    assert "zebra plans in secret" not in search(bob, "b2", text="zebra")
    alice.send_json(type="search", text="", ref="bad")
    assert alice.expect_event("error", ref="bad")["code"] == "bad_request"


def test_search_in_text_mode_and_on_irc(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    text = LineClient(server.listener("line").port)
    text.send(f"alice {PASSWORD}")
    text.expect("--- in lobby:")
    text.send("the quick brown fox", "a quick reply", "brown bread")
    text.send('/search "quick brown"')
    text.expect("--- found for")
    assert "alice: the quick brown fox" in text.read_line()
    text.send("/search bro* from:alice in:lobby after:2000-01-01")
    text.expect("--- found for")
    assert [
        unref(text.read_line()).endswith(t) for t in ("brown bread", "the quick brown fox")
    ] == [
        True,
        True,
    ]
    text.send("/search nothing-here")
    text.expect("--- nothing found for nothing-here")

    irc = IrcClient(server.listener("irc").port)
    irc.send("CAP LS 302", "CAP REQ :soju.im/search batch server-time message-tags")
    irc.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    irc.send("NICK bob", "USER bob 0 * :Bob", "CAP END")
    irc.expect_msg("001")
    irc.send("JOIN #lobby")
    irc.expect_msg("366")
    irc.send("SEARCH text=quick;in=#lobby;limit=5")
    # (the JOIN's replay came as a chathistory batch before)
    start = irc.expect_msg("BATCH", lambda m: m.params[1:] == ["soju.im/search"])
    lines = [parse(irc.read_line()) for _ in range(3)]
    # Oldest first, each with its time and msgid, in the batch.
    assert [m.params[-1] for m in lines[:2]] == ["the quick brown fox", "a quick reply"]
    assert all(m.tags.get("batch") == start.params[0][1:] and "msgid" in m.tags for m in lines[:2])
    assert lines[2].command == "BATCH" and lines[2].params == ["-" + start.params[0][1:]]
    irc.send("SEARCH text=quick;in=#nowhere")
    assert irc.expect_msg("FAIL").params[:2] == ["SEARCH", "INVALID_PARAMS"]
    irc.send("SEARCH colour=blue")
    assert irc.expect_msg("FAIL").params[:2] == ["SEARCH", "INVALID_PARAMS"]


def test_edits_and_deletions_right_after_the_message_are_indexed_right(
    store: Store, backend: Backend
) -> None:
    # SQLite indexes new messages after their commit (many at once), PostgreSQL in the
    # INSERT itself; an edit or deletion may come before that, or after: the index must say
    # the same either way.
    mark = "?" if backend.name == "sqlite" else "%s"
    for attempt in range(20):
        edited = store.append(sender="a", room="dev", text=f"draft{attempt} words")
        gone = store.append(sender="a", room="dev", text=f"secret{attempt} words")

        def change(conn: Any, edited: int = edited.id, gone: int = gone.id) -> None:
            conn.execute(f"UPDATE messages SET text = 'final words' WHERE id = {mark}", (edited,))
            conn.execute(f"UPDATE messages SET text = '' WHERE id = {mark}", (gone,))

        store._submit(change, None)  # type: ignore[attr-defined]  (both backends have it)
        assert found(store, f"draft{attempt}") == []
        assert found(store, f"secret{attempt}") == []
    assert len(found(store, "final", limit=100)) == 20
    assert len(found(store, "words", limit=100)) == 20
