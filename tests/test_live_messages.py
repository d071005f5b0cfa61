"""Messages that live on (issue 14): ids, replies, reactions, deletions, edits, typing and
multiline, once in the core and shown by every protocol, on real sockets.

Each test puts users of several protocols in one room: an IRC client with the
capabilities and one without, a JSON client, an nc-style text user, and a UDP client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IrcClient, JsonClient, LineClient
from store_backends import Backend, PostgresBackend, backend_of
from test_udp import UdpClient

from threadchat.app.server import Server
from threadchat.core import live
from threadchat.protocols.irc.wire import Message, parse

ConnectJson = Callable[..., JsonClient]
Connect = Callable[..., LineClient]
Irc = Callable[..., IrcClient]

# What a modern IRC client asks for.
FULL_CAPS = (
    "message-tags",
    "echo-message",
    "batch",
    "server-time",
    "draft/multiline",
    "draft/message-redaction",
)


def _ref_of(line: str) -> str:
    """The short reference (`#a3f`) at the end of a text-mode message line."""
    found = re.search(r"  (#[0-9a-f]{3})", line)
    assert found, line
    return found.group(1)


def _join(client: IrcClient, channel: str = "#lobby") -> None:
    client.send(f"JOIN {channel}")
    client.expect(lambda line: " 366 " in line)


def _say(client: JsonClient, text: str, **fields: Any) -> dict[str, Any]:
    """Say `text` in the lobby and return the stored message's JSON as a peer sees it."""
    client.send_json(type="say", room="lobby", text=text, ref=text, **fields)
    client.expect_event("ok", ref=text)
    return {}


@pytest.fixture
def udp(server: Server) -> Iterator[Callable[[str], UdpClient]]:
    clients: list[UdpClient] = []

    def open_client(name: str) -> UdpClient:
        assert server.udp is not None
        client = UdpClient(server.udp.port, name)
        clients.append(client)
        client.expect_event("who", room="lobby")
        return client

    yield open_client
    for client in clients:
        client.close()


def test_every_protocol_names_a_message_by_the_same_id(
    connect_json: ConnectJson, connect: Connect, irc: Irc
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    text_user = connect("tess")
    tagged, plain = irc("tagged", FULL_CAPS), irc("plain")
    for client in (tagged, plain):
        _join(client)
    alice.send_json(type="say", room="lobby", text="hello all")
    seen = bob.expect_event("message", text="hello all")
    msgid = seen["msgid"]
    assert msgid == seen["id"] and isinstance(msgid, int)
    assert tagged.expect_msg("PRIVMSG").tags["msgid"] == str(msgid)
    assert plain.expect_msg("PRIVMSG").tags == {}
    line = text_user.expect("alice: hello all")
    assert line == f"alice: hello all  {live.short_ref(msgid)}"


def test_the_ok_for_a_stored_message_names_it(connect_json: ConnectJson) -> None:
    """The sender is not sent its own message back: the `ok` for it carries its msgid, so a
    client (the web page) can edit, delete or react to what it just said."""
    alice, bob = connect_json("alice"), connect_json("bob")
    alice.send_json(type="say", room="lobby", text="first\nsecond", ref="s1")
    ok = alice.expect_event("ok", ref="s1")
    seen = bob.expect_event("message", text="first\nsecond")
    assert ok["msgid"] == seen["msgid"]
    alice.send_json(type="edit", msgid=ok["msgid"], text="edited", ref="e1")
    alice.expect_event("ok", ref="e1")
    assert bob.expect_event("edit", msgid=seen["msgid"])["text"] == "edited"
    alice.send_json(type="msg", to="bob", text="just you", ref="p1")
    private_ok = alice.expect_event("ok", ref="p1")
    assert private_ok["msgid"] == bob.expect_event("private", text="just you")["msgid"]
    # A request that is not a message keeps its plain `ok`.
    alice.send_json(type="typing", room="lobby", state="active", ref="t1")
    assert "msgid" not in alice.expect_event("ok", ref="t1")


def test_replies_across_protocols(
    connect_json: ConnectJson, connect: Connect, irc: Irc, udp: Callable[[str], UdpClient]
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    text_user = connect("tess")
    tagged, plain = irc("tagged", FULL_CAPS), irc("plain")
    for client in (tagged, plain):
        _join(client)
    alice.send_json(type="say", room="lobby", text="what shall we build next week?")
    parent = bob.expect_event("message", **{"from": "alice"})["msgid"]
    ref = _ref_of(text_user.expect("alice: what shall"))
    # The text user answers by the short reference.
    text_user.send(f"/reply {ref} a chat server")
    reply = bob.expect_event("message", text="a chat server")
    assert reply["reply_to"] == parent
    assert reply["reply"] == {"from": "alice", "text": "what shall we build next week?"}
    relayed = tagged.expect_msg("PRIVMSG", lambda m: m.params[1] == "a chat server")
    assert relayed.tags["+draft/reply"] == str(parent)
    assert plain.expect_msg("PRIVMSG", lambda m: m.params[1] == "a chat server").tags == {}
    # IRC's +draft/reply becomes a reply for everyone else.
    tagged.send(f"@+draft/reply={parent} PRIVMSG #lobby :from irc")
    from_irc = bob.expect_event("message", text="from irc")
    assert from_irc["reply_to"] == parent
    assert text_user.expect("↪") == "↪ alice: what shall we build next week?"
    # A UDP user replies with the JSON field.
    dave = udp("dave")
    dave.send(type="say", room="lobby", text="from udp", reply_to=parent)
    assert bob.expect_event("message", text="from udp")["reply_to"] == parent
    # Refused: an unknown id, in JSON and text mode.
    alice.send_json(type="say", room="lobby", text="x", reply_to=99999999, ref="r")
    assert alice.expect_event("error", ref="r")["code"] == "unknown_message"
    text_user.send("/reply #fff nothing there")
    assert text_user.expect("!!!").startswith("!!! there is no message")


def test_reactions_across_protocols(
    connect_json: ConnectJson, connect: Connect, irc: Irc, udp: Callable[[str], UdpClient]
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    text_user = connect("tess")
    tagged = irc("tagged", FULL_CAPS)
    _join(tagged)
    dave = udp("dave")
    alice.send_json(type="say", room="lobby", text="lunch at noon?")
    msgid = bob.expect_event("message", text="lunch at noon?")["msgid"]
    ref = _ref_of(text_user.expect("alice: lunch"))
    text_user.send(f"/react {ref} 👍")
    got = bob.expect_event("react", msgid=msgid)
    assert (got["from"], got["reaction"], got["on"]) == ("tess", "👍", True)
    on_irc = tagged.expect_msg("TAGMSG")
    assert on_irc.tags["+draft/react"] == "👍" and on_irc.tags["+draft/reply"] == str(msgid)
    assert dave.expect_event("react", msgid=msgid)["from"] == "tess"
    # IRC reacts with TAGMSG; JSON and text users see it.
    tagged.send(f"@+draft/reply={msgid};+draft/react=🎉 TAGMSG #lobby")
    assert bob.expect_event("react", reaction="🎉")["from"] == "tagged"
    assert text_user.expect("reacted 🎉") == f"--- tagged reacted 🎉 to {ref}"
    # The same reaction twice changes nothing; taking it back does.
    bob.send_json(type="react", msgid=msgid, reaction="🎉", ref=1)
    bob.expect_event("ok", ref=1)
    bob.send_json(type="react", msgid=msgid, reaction="🎉", ref=2)
    bob.expect_event("ok", ref=2)
    dave.send(type="react", msgid=msgid, reaction="🎉", on=False, ref=3)
    dave.expect_event("ok", ref=3)
    reacts = [e for e in map(json.loads, alice.quiet(0.5)) if e["type"] == "react"]
    assert [(e["from"], e["on"]) for e in reacts] == [
        ("tess", True),
        ("tagged", True),
        ("bob", True),
    ]
    # History replays the reactions with the message.
    alice.send_json(type="history", room="lobby", ref="h")
    page = alice.expect_event("history", ref="h")["messages"]
    reactions = next(m for m in page if m["msgid"] == msgid)["reactions"]
    assert reactions == [
        {"reaction": "👍", "from": ["tess"], "count": 1},
        {"reaction": "🎉", "from": ["tagged", "bob"], "count": 2},
    ]
    # IRC history replays them too, as the TAGMSGs that made them, after the message.
    tagged.send("CAP REQ :draft/chathistory", "CHATHISTORY LATEST #lobby * 10")
    replayed = [tagged.expect_msg("BATCH", lambda m: m.params[0].startswith("+"))]
    while not replayed or replayed[-1].command != "BATCH" or replayed[-1].params[0][0] != "-":
        replayed.append(parse(tagged.read_line()))
    reacted = [m for m in replayed if m.command == "TAGMSG"]
    assert [(m.source.split("!")[0], m.tags["+draft/react"]) for m in reacted] == [
        ("tess", "👍"),
        ("tagged", "🎉"),
        ("bob", "🎉"),
    ]
    assert all(m.tags["+draft/reply"] == str(msgid) for m in reacted)
    # Refusals: unknown id, too long.
    bob.send_json(type="react", msgid=123456789, reaction="👍", ref="u")
    assert bob.expect_event("error", ref="u")["code"] == "unknown_message"
    bob.send_json(type="react", msgid=msgid, reaction="x" * 40, ref="l")
    assert bob.expect_event("error", ref="l")["code"] == "too_long"
    tagged.send("@+draft/reply=123456789;+draft/react=👍 TAGMSG #lobby")
    fail = tagged.expect_msg("FAIL")
    # The message is named as the IRC client named it (the msgid), not by text mode's hex
    # reference (`#75bcd15`).
    assert fail.params == ["TAGMSG", "UNKNOWN_MSGID", "#lobby", "123456789", "No such message"]


def test_deletions_across_protocols(
    connect_json: ConnectJson, connect: Connect, irc: Irc, udp: Callable[[str], UdpClient]
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")  # alice made the lobby: operator
    text_user = connect("tess")
    tagged, plain = irc("tagged", FULL_CAPS), irc("plain")
    for client in (tagged, plain):
        _join(client)
    bob.send_json(type="say", room="lobby", text="oops, wrong room")
    first = alice.expect_event("message", text="oops, wrong room")["msgid"]
    bob.send_json(type="say", room="lobby", text="spam spam")
    second = alice.expect_event("message", text="spam spam")["msgid"]
    tagged.send("PRIVMSG #lobby :my own words")
    third = alice.expect_event("message", text="my own words")["msgid"]
    # Not yours: the text user may not delete bob's message; IRC gets FAIL.
    ref = _ref_of(text_user.expect("bob: oops"))
    text_user.send(f"/delete {ref}")
    assert (
        text_user.expect("!!!")
        == f"!!! {live.full_ref(first)} is not yours and you are no operator"
    )
    tagged.send(f"REDACT #lobby {first} :nope")
    fail = tagged.expect_msg("FAIL")
    assert fail.params == [
        "REDACT",
        "REDACT_FORBIDDEN",
        "#lobby",
        str(first),
        "That message is not yours",
    ]
    # The author deletes their own.
    bob.send_json(type="delete", msgid=first, ref="d")
    bob.expect_event("ok", ref="d")
    gone = alice.expect_event("delete", msgid=first)
    assert (gone["by"], gone["from"]) == ("bob", "bob")
    redact = tagged.expect_msg("REDACT")
    assert redact.params == ["#lobby", str(first)] and redact.source.startswith("bob!")
    assert "deleted their own messages" in plain.expect_msg("NOTICE").params[1]
    assert text_user.expect("deleted") == f"--- bob deleted their message {ref}"
    # A room operator deletes anyone's, with a reason; the IRC author deletes by REDACT.
    alice.send_json(type="delete", msgid=second, reason="spam", ref="op")
    alice.expect_event("ok", ref="op")
    assert bob.expect_event("delete", msgid=second)["reason"] == "spam"
    tagged.send(f"REDACT #lobby {third}")
    assert bob.expect_event("delete", msgid=third)["by"] == "tagged"
    # A deleted message is unknown from now on; a UDP user is told so.
    dave = udp("dave")
    dave.send(type="delete", msgid=first, ref="again")
    assert dave.expect_event("error", ref="again")["code"] == "unknown_message"
    # Not in that room.
    alice.send_json(type="join", room="attic")
    alice.expect_event("who", room="attic")
    alice.send_json(type="say", room="attic", text="up here", ref="a")
    alice.expect_event("ok", ref="a")
    bob.send_json(type="history", room="lobby", ref="h")
    bob.expect_event("history", ref="h")
    alice.send_json(type="history", room="attic", ref="ha")
    attic = alice.expect_event("history", ref="ha")["messages"][-1]["msgid"]
    bob.send_json(type="delete", msgid=attic, ref="n")
    assert bob.expect_event("error", ref="n")["code"] == "not_in_room"
    # The draft's INVALID_TARGET names the target alone; a channel one is not in (or that
    # does not exist) is refused so, whatever the msgid (not UNKNOWN_MSGID).
    tagged.send(f"REDACT #attic {attic}")
    assert tagged.expect_msg("FAIL").params[:3] == ["REDACT", "INVALID_TARGET", "#attic"]
    tagged.send("REDACT #nowhere notanid")
    invalid = tagged.expect_msg("FAIL")
    assert invalid.params[:3] == ["REDACT", "INVALID_TARGET", "#nowhere"]
    assert len(invalid.params) == 4  # the target and the description, no msgid
    text_user.send(f"/react {live.full_ref(attic)} 👍")
    assert text_user.expect("!!!") == "!!! you are not in attic"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_deletion_and_an_edit_outlive_a_restart(
    make_server: Callable[..., Server], tmp_path: Path, kind: str
) -> None:
    with backend_of(kind, tmp_path) as where:
        _deletion_and_edit_outlive_a_restart(make_server, where)


def _deletion_and_edit_outlive_a_restart(
    make_server: Callable[..., Server], where: Backend
) -> None:
    # The store is SQLite's data directory or a PostgreSQL database: the server's setting
    # for each (tests/store_backends.py).
    store = (
        {"database_url": where.url}
        if isinstance(where, PostgresBackend)
        else {"data_dir": where.location}
    )
    first = make_server(**store)
    alice = JsonClient(first.listener("line").port)
    alice.send_json(type="hello", name="alice")
    alice.expect_event("who", room="lobby")
    for text in ("keep me", "delete me", "edit me"):
        alice.send_json(type="say", room="lobby", text=text, ref=text)
        alice.expect_event("ok", ref=text)
    alice.send_json(type="history", room="lobby", ref="h")
    ids = {m["text"]: m["msgid"] for m in alice.expect_event("history", ref="h")["messages"]}
    alice.send_json(type="delete", msgid=ids["delete me"], ref="d")
    alice.expect_event("ok", ref="d")
    alice.send_json(type="edit", msgid=ids["edit me"], text="edited twice\nover two lines", ref="e")
    alice.expect_event("ok", ref="e")
    alice.close()
    first.stop()

    second = make_server(**store)
    bob = JsonClient(second.listener("line").port)
    bob.send_json(type="hello", name="bob")
    bob.expect_event("who", room="lobby")
    bob.send_json(type="history", room="lobby", ref="h")
    page = {m["msgid"]: m for m in bob.expect_event("history", ref="h")["messages"]}
    assert page[ids["keep me"]]["text"] == "keep me" and "deleted" not in page[ids["keep me"]]
    tombstone = page[ids["delete me"]]
    assert tombstone["deleted"] is True and tombstone["text"] == ""
    edited = page[ids["edit me"]]
    assert edited["edited"] is True and edited["text"] == "edited twice\nover two lines"
    # Text mode and IRC say so too.
    text_user = LineClient(second.listener("line").port)
    text_user.send("tess", "/history 10")
    assert "alice: (deleted)" in text_user.expect("(deleted)")
    assert text_user.expect("(edited)").endswith(f"{live.short_ref(ids['edit me'])} (edited)")
    assert text_user.read_line() == "  | over two lines"
    irc_user = IrcClient(second.listener("irc").port)
    irc_user.register("ircer", ("message-tags", "batch", "server-time", "draft/message-redaction"))
    irc_user.send("JOIN #lobby")
    redact = irc_user.expect_msg("REDACT")
    assert redact.params == ["#lobby", str(ids["delete me"])]
    # Search follows: an edited message is found by its new words, a deleted one not at all.
    for words, found in (
        ("twice", ["edited twice\nover two lines"]),
        ("delete", []),
        ("keep", ["keep me"]),
    ):
        bob.send_json(type="search", text=words, ref=words)
        assert [m["text"] for m in bob.expect_event("search", ref=words)["messages"]] == found
    # Deleted stays deleted: it cannot be edited or deleted again.
    bob.send_json(type="delete", msgid=ids["delete me"], ref="x")
    assert bob.expect_event("error", ref="x")["code"] == "unknown_message"
    for client in (bob, text_user, irc_user):
        client.close()


def test_edits_across_protocols(
    connect_json: ConnectJson, connect: Connect, irc: Irc, udp: Callable[[str], UdpClient]
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    text_user = connect("tess")
    tagged, plain = irc("tagged", FULL_CAPS), irc("plain")
    for client in (tagged, plain):
        _join(client)
    text_user.send("teh plan")
    msgid = alice.expect_event("message", text="teh plan")["msgid"]
    ref = live.short_ref(msgid)
    # Text mode does not echo one's own lines: `/edit` alone edits the last one.
    text_user.send("/edit the plan")
    edit = alice.expect_event("edit", msgid=msgid)
    assert (edit["from"], edit["text"]) == ("tess", "the plan")
    line = tagged.expect_msg("PRIVMSG", lambda m: m.params[1].startswith("(edit)"))
    assert line.params[1] == "(edit) the plan"
    assert line.tags["draft/target-msgid"] == str(msgid) == line.tags["+draft/reply"]
    assert plain.expect_msg("PRIVMSG", lambda m: "(edit)" in m.params[1]).tags == {}
    assert text_user.expect("edited") == f"--- tess edited {ref}: the plan"
    # Nobody edits another's words, not even an operator; a UDP user is told.
    alice.send_json(type="edit", msgid=msgid, text="mine now", ref="a")
    assert alice.expect_event("error", ref="a")["code"] == "not_yours"
    dave = udp("dave")
    dave.send(type="edit", msgid=msgid, text="mine now", ref="d")
    assert dave.expect_event("error", ref="d")["code"] == "not_yours"
    too_long = "\n".join(["x"] * (live.MULTILINE_MAX_LINES + 1))
    text_user.send(f"/edit {ref} fine")
    alice.expect_event("edit", text="fine")
    bob.send_json(type="say", room="lobby", text="bob's", ref="b")
    bob.expect_event("ok", ref="b")
    own = alice.expect_event("message", text="bob's")["msgid"]
    bob.send_json(type="edit", msgid=own, text=too_long, ref="l")
    assert bob.expect_event("error", ref="l")["code"] == "too_long"
    # History keeps the latest text, marked edited.
    bob.send_json(type="history", room="lobby", ref="h")
    page = bob.expect_event("history", ref="h")["messages"]
    stored = next(m for m in page if m["msgid"] == msgid)
    assert (stored["text"], stored["edited"]) == ("fine", True)


def test_typing_is_relayed_rate_limited_and_never_stored(
    make_server: Callable[..., Server], irc: Irc
) -> None:
    server = make_server(quiet_room_size=4)
    port = server.listener("line").port
    clients = []
    for name in ("alice", "bob"):
        client = JsonClient(port)
        client.send_json(type="hello", name=name)
        client.expect_event("who", room="lobby")
        clients.append(client)
    alice, bob = clients
    tagged = IrcClient(server.listener("irc").port)
    tagged.register("tagged", FULL_CAPS)
    _join(tagged)
    alice.send_json(type="typing", room="lobby", state="active", ref=1)
    alice.expect_event("ok", ref=1)
    got = bob.expect_event("typing")
    assert (got["from"], got["state"], got["room"]) == ("alice", "active", "lobby")
    assert tagged.expect_msg("TAGMSG").tags["+typing"] == "active"
    # A second notice within 3 s is refused; a `done` passes once.
    alice.send_json(type="typing", room="lobby", state="active", ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "too_often"
    alice.send_json(type="typing", room="lobby", state="done", ref=3)
    alice.expect_event("ok", ref=3)
    assert bob.expect_event("typing")["state"] == "done"
    alice.send_json(type="typing", room="lobby", state="done", ref=4)
    assert alice.expect_event("error", ref=4)["code"] == "too_often"
    # IRC's +typing goes through the same rule, and is refused as FAIL.
    tagged.send("@+typing=active TAGMSG #lobby")
    assert bob.expect_event("typing")["from"] == "tagged"
    tagged.send("@+typing=paused TAGMSG #lobby")
    assert tagged.expect_msg("FAIL").params[:2] == ["TAGMSG", "RATE_LIMITED"]
    # Never stored.
    alice.send_json(type="history", room="lobby", ref="h")
    assert alice.expect_event("history", ref="h")["messages"] == []
    # Not sent to a room over the quiet-room size (4 here).
    for name in ("c1", "c2", "c3"):
        extra = JsonClient(port)
        extra.send_json(type="hello", name=name)
        extra.expect_event("welcome")
        clients.append(extra)
    bob.send_json(type="typing", room="lobby", state="active", ref=5)
    bob.expect_event("ok", ref=5)
    assert [e for e in map(json.loads, alice.quiet(0.5)) if e["type"] == "typing"] == []
    for client in (*clients, tagged):
        client.close()


def _batch_lines(client: IrcClient) -> list[Message]:
    """The lines of one multiline batch, BATCH + to BATCH -."""
    start = client.expect_msg("BATCH", lambda m: m.params[0].startswith("+"))
    lines = [start]
    while True:
        message = parse(client.read_line())
        lines.append(message)
        if message.command == "BATCH":
            return lines


def test_multiline_across_protocols(connect_json: ConnectJson, connect: Connect, irc: Irc) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    text_user = connect("tess")
    tagged, plain = irc("tagged", FULL_CAPS), irc("plain")
    for client in (tagged, plain):
        _join(client)
    # The limits are advertised.
    probe = irc()
    probe.send("CAP LS 302")
    caps = probe.expect(lambda line: " LS " in line and "multiline" in line)
    assert f"draft/multiline=max-bytes={live.MULTILINE_MAX_BYTES}," in caps
    # JSON: text with newlines is one message.
    alice.send_json(type="say", room="lobby", text="first\n\nthird", ref="m")
    alice.expect_event("ok", ref="m")
    got = bob.expect_event("message", **{"from": "alice"})
    assert got["text"] == "first\n\nthird"
    batch = _batch_lines(tagged)
    assert batch[0].params[1:] == ["draft/multiline", "#lobby"]
    assert batch[0].tags["msgid"] == str(got["msgid"])
    assert [m.params[1] for m in batch[1:-1]] == ["first", "", "third"]
    assert all(m.tags["batch"] == batch[0].params[0][1:] for m in batch[1:-1])
    # Without the capability: one PRIVMSG per non-blank line.
    fallback = [plain.expect_msg("PRIVMSG") for _ in range(2)]
    assert [m.params[1] for m in fallback] == ["first", "third"]
    assert text_user.expect("alice: first").startswith("alice: first  #")
    assert text_user.read_line() == "  | "
    assert text_user.read_line() == "  | third"
    # IRC sends a batch: one message for everyone.
    tagged.send(
        "BATCH +b1 draft/multiline #lobby",
        "@batch=b1 PRIVMSG #lobby :line one",
        "@batch=b1 PRIVMSG #lobby :line two is ",
        "@batch=b1;draft/multiline-concat PRIVMSG #lobby :long",
        "BATCH -b1",
    )
    assert bob.expect_event("message", **{"from": "tagged"})["text"] == "line one\nline two is long"
    # The text user continues a line with a backslash.
    text_user.send("roses are red \\", "violets are blue")
    assert (
        bob.expect_event("message", **{"from": "tess"})["text"]
        == "roses are red \nviolets are blue"
    )
    # Too long: refused in each protocol.
    many = "\n".join(str(i) for i in range(live.MULTILINE_MAX_LINES + 1))
    alice.send_json(type="say", room="lobby", text=many, ref="long")
    assert alice.expect_event("error", ref="long")["code"] == "too_long"
    lines = [f"@batch=b2 PRIVMSG #lobby :{i}" for i in range(live.MULTILINE_MAX_LINES + 1)]
    tagged.send("BATCH +b2 draft/multiline #lobby", *lines, "BATCH -b2")
    fail = tagged.expect_msg("FAIL")
    assert fail.params[:3] == ["BATCH", "MULTILINE_MAX_LINES", str(live.MULTILINE_MAX_LINES)]
    text_user.send(*[f"{i} \\" for i in range(live.MULTILINE_MAX_LINES + 1)])
    assert text_user.expect("!!!") == f"!!! message dropped: over {live.MULTILINE_MAX_LINES} lines"
    # History keeps one message.
    bob.send_json(type="history", room="lobby", ref="h")
    texts = [m["text"] for m in bob.expect_event("history", ref="h")["messages"]]
    assert "first\n\nthird" in texts and "line one\nline two is long" in texts


def test_multiline_keeps_the_lines_as_sent_blank_ones_and_joined_ones(
    connect_json: ConnectJson, irc: Irc
) -> None:
    """The multiline draft: blank lines are relayed (never to clients without the
    capability), a `draft/multiline-concat` line stays a line of its own, tagged, in the
    batch, and in the fallback (the server keeps the sender's line composition); the
    message's tags ride on every fallback line, its msgid on the first only."""
    bob = connect_json("bob")
    sender = irc("sender", (*FULL_CAPS, "labeled-response"))
    tagged = irc("tagged", FULL_CAPS)
    plain = irc("plain", ("message-tags", "server-time"))
    for client in (sender, tagged, plain):
        _join(client)
    sender.send(
        "@label=ml1;+client-only BATCH +b1 draft/multiline #lobby",
        "@batch=b1 PRIVMSG #lobby :",
        "@batch=b1 PRIVMSG #lobby :#how is ",
        "@batch=b1;draft/multiline-concat PRIVMSG #lobby :everyone?",
        "BATCH -b1",
    )
    # The echo is the response: one batch, labeled on its opening line (no ACK before it).
    echo = _batch_lines(sender)
    assert echo[0].tags["label"] == "ml1" and echo[0].params[1:] == ["draft/multiline", "#lobby"]
    assert [m.params[1] for m in echo[1:-1]] == ["", "#how is ", "everyone?"]
    assert ["draft/multiline-concat" in m.tags for m in echo[1:-1]] == [False, False, True]
    assert all("msgid" not in m.tags and "label" not in m.tags for m in echo[1:])
    relay = _batch_lines(tagged)
    msgid, when = relay[0].tags["msgid"], relay[0].tags["time"]
    assert relay[0].tags["+client-only"] is None and "label" not in relay[0].tags
    assert [m.params[1] for m in relay[1:-1]] == ["", "#how is ", "everyone?"]
    assert ["draft/multiline-concat" in m.tags for m in relay[1:-1]] == [False, False, True]
    assert echo[0].tags["msgid"] == msgid
    # Without the capability: the non-blank lines as sent, every one with the message's
    # tags and time, the msgid on the first only, no concat tag.
    fallback = [plain.expect_msg("PRIVMSG") for _ in range(2)]
    assert [m.params[1] for m in fallback] == ["#how is ", "everyone?"]
    assert [m.tags.get("msgid") for m in fallback] == [msgid, None]
    assert all(m.tags["time"] == when and "+client-only" in m.tags for m in fallback)
    assert not any("draft/multiline-concat" in m.tags for m in fallback)
    # Everyone else gets the one message, as the lines join.
    assert bob.expect_event("message", **{"from": "sender"})["text"] == "\n#how is everyone?"
    # A refusal of a labeled batch carries the label too.
    sender.send(
        "@label=ml2 BATCH +b2 draft/multiline #lobby",
        "@batch=b2 PRIVMSG #lobby :hi",
        "@batch=b2;draft/multiline-concat PRIVMSG #lobby :",
        "BATCH -b2",
        "@label=p3 PING after",
    )
    answers = _until_pong(sender)
    # No ACK for the opening line: the FAIL is the batch's labeled response.
    assert [m.command for m in answers] == ["FAIL", "PONG"]
    assert answers[0].params[:2] == ["BATCH", "MULTILINE_INVALID"]
    assert answers[0].tags["label"] == "ml2" and answers[1].tags["label"] == "p3"


def _until_pong(client: IrcClient) -> list[Message]:
    """Every line up to and including the next PONG."""
    lines = [parse(client.read_line())]
    while lines[-1].command != "PONG":
        lines.append(parse(client.read_line()))
    return lines


def test_a_labeled_reaction_is_echoed_with_its_label(irc: Irc) -> None:
    """labeled-response with echo-message: a TAGMSG reaction's response is its echo, labeled;
    the other members get it without the label, and a sender without echo-message gets an
    ACK and not its own reaction back."""
    caps = ("message-tags", "echo-message", "batch", "labeled-response")
    alice, bob = irc("alice", caps), irc("bob", caps)
    quiet = irc("quiet", ("message-tags", "labeled-response", "batch"))
    for client in (alice, bob, quiet):
        _join(client)
    alice.send("PRIVMSG #lobby :react to me")
    msgid = alice.expect_msg("PRIVMSG").tags["msgid"]
    bob.expect_msg("PRIVMSG")
    alice.send(f"@label=r1;+draft/reply={msgid};+draft/react=👍 TAGMSG #lobby")
    echoed = alice.expect_msg("TAGMSG")
    assert echoed.tags["label"] == "r1" and echoed.tags["+draft/react"] == "👍"
    relayed = bob.expect_msg("TAGMSG")
    assert "label" not in relayed.tags and relayed.tags["+draft/reply"] == msgid
    assert quiet.expect_msg("TAGMSG").tags["+draft/react"] == "👍"
    quiet.send(f"@label=r2;+draft/reply={msgid};+draft/react=🎉 TAGMSG #lobby", "PING done")
    assert [m.command for m in _until_pong(quiet)] == ["ACK", "PONG"]
    assert alice.expect_msg("TAGMSG").tags["+draft/react"] == "🎉"
