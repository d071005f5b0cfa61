"""Messages that live on (issue 14) in private conversations: replies, reactions, edits,
deletions and typing between two people, on real sockets, once in the core and shown by every
protocol: an IRC client with the capabilities and one without (two devices of one account),
a JSON client, an nc-style text user and a UDP client. History replays what they did, also
after a restart, on both store backends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import IrcClient, JsonClient, LineClient
from store_backends import PostgresBackend, backend_of
from test_irc_accounts import PASSWORD, register_account
from test_live_messages import FULL_CAPS
from test_udp import UdpClient

from threadchat.app.server import Server
from threadchat.core import live
from threadchat.protocols.irc.wire import Message, parse

HISTORY_CAPS = (*FULL_CAPS, "draft/chathistory")


def _json(server: Server, name: str, password: str | None = PASSWORD) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name, password=password)
    client.expect_event("who", room="lobby")
    return client


def _irc(server: Server, nick: str, caps: tuple[str, ...] = ()) -> IrcClient:
    client = IrcClient(server.listener("irc").port)
    client.send(f"PASS {PASSWORD}")
    client.register(nick, caps)
    return client


def _text(server: Server, name: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(f"{name} {PASSWORD}")
    client.expect("--- in lobby:")
    return client


def _ref_of(line: str) -> str:
    found = re.search(r"  (#[0-9a-f]{3})$", line)
    assert found, line
    return found.group(1)


def _history_batch(client: IrcClient, target: str) -> list[Message]:
    """CHATHISTORY LATEST `target`: the lines of its batch, BATCH + to BATCH -."""
    client.send(f"CHATHISTORY LATEST {target} * 20")
    lines = [client.expect_msg("BATCH", lambda m: m.params[0].startswith("+"))]
    while lines[-1].command != "BATCH" or lines[-1].params[0][0] != "-" or len(lines) == 1:
        lines.append(parse(client.read_line()))
    return lines


@pytest.fixture
def people(make_server: Callable[..., Server]) -> Server:
    server = make_server()
    for name in ("alice", "bob", "carol"):
        register_account(server, name)
    return server


def test_replies_reactions_edits_and_deletions_between_json_and_irc(people: Server) -> None:
    server = people
    alice = _json(server, "alice")
    bob = _irc(server, "bob", HISTORY_CAPS)
    bob_phone = _irc(server, "bob")  # the same account, a client without capabilities
    carol = _json(server, "carol")
    alice.send_json(type="msg", to="bob", text="lunch at noon?", ref="m")
    alice.expect_event("ok", ref="m")
    first = bob.expect_msg("PRIVMSG", lambda m: m.params[1] == "lunch at noon?")
    msgid = int(first.tags["msgid"])
    assert bob_phone.expect_msg("PRIVMSG", lambda m: m.params[1] == "lunch at noon?").tags == {}

    # A reply by IRC's +draft/reply: the JSON side sees what it answers.
    bob.send(f"@+draft/reply={msgid} PRIVMSG alice :yes, at the usual place")
    reply = alice.expect_event("private", text="yes, at the usual place")
    assert reply["reply_to"] == msgid
    assert reply["reply"] == {"from": "alice", "text": "lunch at noon?"}
    answer = reply["msgid"]
    own = bob_phone.expect_msg("PRIVMSG", lambda m: m.params[1] == "yes, at the usual place")
    assert own.source.startswith("bob!") and own.params[0] == "alice"
    # JSON replies with reply_to; IRC shows the tag.
    alice.send_json(type="msg", to="bob", text="great", reply_to=answer, ref="r")
    alice.expect_event("ok", ref="r")
    great = bob.expect_msg("PRIVMSG", lambda m: m.params[1] == "great")
    assert great.tags["+draft/reply"] == str(answer)

    # Reactions by either person: IRC's TAGMSG to the nick, JSON's react.
    bob.send(f"@+draft/reply={msgid};+draft/react=👍 TAGMSG alice")
    got = alice.expect_event("react", msgid=msgid)
    assert (got["from"], got["to"], got["reaction"], got["on"]) == ("bob", "alice", "👍", True)
    back = bob.expect_msg("TAGMSG")
    assert back.params == ["alice"] and back.tags["+draft/react"] == "👍"
    alice.send_json(type="react", msgid=answer, reaction="🎉", ref="re")
    alice.expect_event("ok", ref="re")
    on_irc = bob.expect_msg("TAGMSG", lambda m: "+draft/react" in m.tags)
    assert on_irc.source.startswith("alice!") and on_irc.params == ["bob"]
    assert on_irc.tags["+draft/reply"] == str(answer) and on_irc.tags["+draft/react"] == "🎉"

    # An edit, by its author only.
    alice.send_json(type="edit", msgid=msgid, text="lunch at one?", ref="e")
    # Both people are shown it, on each of their connections (the one who asked before ok).
    edited = alice.expect_event("edit", msgid=msgid)
    alice.expect_event("ok", ref="e")
    assert (edited["from"], edited["to"], edited["text"]) == ("alice", "bob", "lunch at one?")
    line = bob.expect_msg("PRIVMSG", lambda m: m.params[1].startswith("(edit)"))
    assert line.params == ["bob", "(edit) lunch at one?"]
    assert line.tags["draft/target-msgid"] == str(msgid)
    assert bob_phone.expect_msg("PRIVMSG", lambda m: "(edit)" in m.params[1]).tags == {}

    # Refusals. Not yours: only the author deletes in a private conversation.
    bob.send(f"REDACT alice {msgid}")
    assert bob.expect_msg("FAIL").params[:4] == ["REDACT", "REDACT_FORBIDDEN", "alice", str(msgid)]
    # A third person naming the message is told it does not exist, whatever they try.
    for request in (
        {"type": "react", "msgid": msgid, "reaction": "👀"},
        {"type": "delete", "msgid": msgid},
        {"type": "edit", "msgid": msgid, "text": "mine"},
        {"type": "msg", "to": "alice", "text": "hm", "reply_to": msgid},
    ):
        carol.send_json(**request, ref="x")
        assert carol.expect_event("error", ref="x")["code"] == "unknown_message", request
    # Not in that conversation: alice names it in her conversation with carol.
    alice.send_json(type="msg", to="carol", text="hm", reply_to=msgid, ref="c")
    assert alice.expect_event("error", ref="c")["code"] == "not_in_room"
    alice.send_json(type="react", msgid=msgid, reaction="👀", to="carol", ref="c2")
    assert alice.expect_event("error", ref="c2")["code"] == "not_in_room"
    alice.send_json(type="react", msgid=msgid, reaction="👀", room="lobby", ref="c3")
    assert alice.expect_event("error", ref="c3")["code"] == "not_in_room"
    # Too long; unknown id.
    alice.send_json(type="react", msgid=msgid, reaction="x" * 40, ref="l")
    assert alice.expect_event("error", ref="l")["code"] == "too_long"
    many = "\n".join(["x"] * (live.MULTILINE_MAX_LINES + 1))
    alice.send_json(type="edit", msgid=msgid, text=many, ref="l2")
    assert alice.expect_event("error", ref="l2")["code"] == "too_long"
    bob.send("@+draft/reply=123456789;+draft/react=👍 TAGMSG alice")
    assert bob.expect_msg("FAIL").params[:2] == ["TAGMSG", "UNKNOWN_MSGID"]

    # The author deletes by REDACT; the other side sees it, a client without the
    # capability as a notice.
    bob.send(f"REDACT alice {answer}")
    gone = alice.expect_event("delete", msgid=answer)
    assert (gone["by"], gone["from"], gone["to"]) == ("bob", "bob", "alice")
    notice = bob_phone.expect_msg("NOTICE", lambda m: "deleted" in m.params[1])
    assert notice.params[0] == "alice" and str(answer) in notice.params[1]
    alice.send_json(type="react", msgid=answer, reaction="👍", ref="gone")
    assert alice.expect_event("error", ref="gone")["code"] == "unknown_message"

    # History of the conversation replays all of it: JSON...
    alice.send_json(type="history", **{"with": "bob"}, ref="h")
    page = {m["msgid"]: m for m in alice.expect_event("history", ref="h")["messages"]}
    assert (page[msgid]["text"], page[msgid]["edited"]) == ("lunch at one?", True)
    assert page[msgid]["reactions"] == [{"reaction": "👍", "from": ["bob"], "count": 1}]
    assert page[answer]["deleted"] is True and page[answer]["text"] == ""
    # ... and IRC's chathistory with a nick target: the edited text, the reaction as the
    # TAGMSG that made it, a REDACT in the deleted message's place, the reply's tag.
    batch = _history_batch(bob, "alice")
    shown = [(m.command, m.source.split("!")[0], m.params) for m in batch[1:-1]]
    assert shown == [
        ("PRIVMSG", "alice", ["bob", "lunch at one?"]),
        ("TAGMSG", "bob", ["alice"]),
        ("REDACT", "bob", ["alice", str(answer)]),
        ("PRIVMSG", "alice", ["bob", "great"]),
    ]
    assert batch[2].tags["+draft/react"] == "👍" and batch[4].tags["+draft/reply"] == str(answer)
    # Each person's copy of the conversation changed: bob's reply quotes the edited text.
    bob.send(f"@+draft/reply={msgid} PRIVMSG alice :one is fine")
    assert alice.expect_event("private", text="one is fine")["reply"]["text"] == "lunch at one?"
    for client in (alice, bob, bob_phone, carol):
        client.close()


def test_typing_in_a_private_conversation(people: Server) -> None:
    server = people
    alice = _json(server, "alice")
    bob = _irc(server, "bob", FULL_CAPS)
    carol = _json(server, "carol")
    alice.send_json(type="typing", to="bob", state="active", ref=1)
    alice.expect_event("ok", ref=1)
    typing = bob.expect_msg("TAGMSG")
    assert typing.params == ["bob"] and typing.tags["+typing"] == "active"
    assert typing.source.startswith("alice!")
    # Rate-limited per conversation as in a room: a second notice within 3 s is refused, a
    # `done` passes once; another conversation has its own limit.
    alice.send_json(type="typing", to="bob", state="active", ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "too_often"
    alice.send_json(type="typing", to="bob", state="done", ref=3)
    alice.expect_event("ok", ref=3)
    assert bob.expect_msg("TAGMSG").tags["+typing"] == "done"
    alice.send_json(type="typing", to="carol", state="active", ref=4)
    alice.expect_event("ok", ref=4)
    got = carol.expect_event("typing")
    assert (got["from"], got["to"], got["state"]) == ("alice", "carol", "active")
    # IRC's +typing to a nick goes through the same rule.
    bob.send("@+typing=active TAGMSG alice")
    got = alice.expect_event("typing", **{"from": "bob"})
    assert (got["to"], got["state"]) == ("alice", "active") and "room" not in got
    bob.send("@+typing=paused TAGMSG alice")
    assert bob.expect_msg("FAIL").params[:2] == ["TAGMSG", "RATE_LIMITED"]
    bob.send("@+typing=active TAGMSG nobody")
    assert bob.expect_msg("401").params[1] == "nobody"
    # Only the other person is told: nobody else, and never stored.
    assert [e for e in map(json.loads, carol.quiet(0.3)) if e["type"] == "typing"] == []
    alice.send_json(type="history", **{"with": "bob"}, ref="h")
    assert alice.expect_event("history", ref="h")["messages"] == []
    for client in (alice, bob, carol):
        client.close()


def test_text_and_udp_users_in_private_conversations(people: Server) -> None:
    server = people
    alice = _json(server, "alice")
    carol = _text(server, "carol")
    assert server.udp is not None
    dave = UdpClient(server.udp.port, "dave")  # a guest
    dave.expect_event("who", room="lobby")

    # Text mode shows a private message's reference, and names it by that.
    alice.send_json(type="msg", to="carol", text="are you coming tonight?", ref="m")
    alice.expect_event("ok", ref="m")
    line = carol.expect("[private] alice: are you")
    ref = _ref_of(line)
    carol.send(f"/reply {ref} on my way")
    reply = alice.expect_event("private", text="on my way")
    assert reply["reply_to"] & 0xFFF == int(ref[1:], 16) and reply["reply"]["from"] == "alice"
    carol.send(f"/react {ref} 👍")
    got = alice.expect_event("react")
    assert (got["from"], got["reaction"]) == ("carol", "👍")
    assert carol.expect("reacted") == f"[private] --- carol reacted 👍 to {ref}"
    mine = live.full_ref(reply["msgid"])
    carol.send(f"/edit {mine} on my way, ten minutes")
    assert alice.expect_event("edit")["text"] == "on my way, ten minutes"
    carol.send(f"/delete {ref}")
    assert carol.expect("!!!") == f"!!! {live.full_ref(reply['reply_to'])} is not yours to delete"
    alice.send_json(type="delete", msgid=reply["reply_to"], ref="d")
    alice.expect_event("ok", ref="d")
    assert carol.expect("deleted") == f"[private] --- alice deleted their message {ref}"
    alice.send_json(type="typing", to="carol", ref="t")
    alice.expect_event("ok", ref="t")

    # A UDP guest: replies, reacts, types, and is refused what is not theirs.
    alice.send_json(type="msg", to="dave", text="hello dave", ref="d1")
    alice.expect_event("ok", ref="d1")
    hello = dave.expect_event("private", text="hello dave")["msgid"]
    dave.send(type="msg", to="alice", text="hi!", reply_to=hello, ref="u1")
    dave.expect_event("ok", ref="u1")
    assert alice.expect_event("private", text="hi!")["reply_to"] == hello
    dave.send(type="react", msgid=hello, reaction="🙂", ref="u2")
    dave.expect_event("ok", ref="u2")
    assert alice.expect_event("react", msgid=hello)["from"] == "dave"
    dave.send(type="typing", to="alice", ref="u3")
    dave.expect_event("ok", ref="u3")
    assert alice.expect_event("typing", **{"from": "dave"})["to"] == "alice"
    dave.send(type="edit", msgid=hello, text="mine", ref="u4")
    assert dave.expect_event("error", ref="u4")["code"] == "not_yours"
    # Nobody else's conversation is known to dave.
    dave.send(type="delete", msgid=reply["msgid"], ref="u5")
    assert dave.expect_event("error", ref="u5")["code"] == "unknown_message"
    alice.send_json(type="delete", msgid=hello, ref="d2")
    alice.expect_event("ok", ref="d2")
    assert dave.expect_event("delete", msgid=hello)["to"] == "dave"
    alice.close()
    carol.close()
    dave.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_private_deletion_and_edit_outlive_a_restart(
    make_server: Callable[..., Server], tmp_path: Path, kind: str
) -> None:
    with backend_of(kind, tmp_path) as where:
        store: dict[str, Any] = (
            {"database_url": where.url}
            if isinstance(where, PostgresBackend)
            else {"data_dir": where.location}
        )
        _private_changes_outlive_a_restart(make_server, store)


def _private_changes_outlive_a_restart(
    make_server: Callable[..., Server], store: dict[str, Any]
) -> None:
    first = make_server(**store)
    for name in ("alice", "bob"):
        register_account(first, name)
    alice, bob = _json(first, "alice"), _json(first, "bob")
    ids = {}
    for text in ("keep me", "delete me", "edit me"):
        alice.send_json(type="msg", to="bob", text=text, ref=text)
        alice.expect_event("ok", ref=text)
        ids[text] = bob.expect_event("private", text=text)["msgid"]
    bob.send_json(type="msg", to="alice", text="answer", reply_to=ids["keep me"], ref="a")
    bob.expect_event("ok", ref="a")
    bob.send_json(type="react", msgid=ids["keep me"], reaction="👍", ref="r")
    bob.expect_event("ok", ref="r")
    alice.send_json(type="delete", msgid=ids["delete me"], ref="d")
    alice.expect_event("ok", ref="d")
    alice.send_json(type="edit", msgid=ids["edit me"], text="edited\non two lines", ref="e")
    alice.expect_event("ok", ref="e")
    alice.close()
    bob.close()
    first.stop()

    second = make_server(**store)
    bob = _json(second, "bob")
    bob.send_json(type="history", **{"with": "alice"}, ref="h")
    page = {m["msgid"]: m for m in bob.expect_event("history", ref="h")["messages"]}
    assert page[ids["keep me"]]["reactions"] == [{"reaction": "👍", "from": ["bob"], "count": 1}]
    tombstone = page[ids["delete me"]]
    assert (tombstone["deleted"], tombstone["text"]) == (True, "")
    assert (page[ids["edit me"]]["text"], page[ids["edit me"]]["edited"]) == (
        "edited\non two lines",
        True,
    )
    answer = next(m for m in page.values() if m["text"] == "answer")
    assert answer["reply_to"] == ids["keep me"]
    assert answer["reply"] == {"from": "alice", "text": "keep me"}
    # Text mode's history of the conversation, and IRC's.
    text_user = _text(second, "alice")
    text_user.send("/history @bob 10")
    assert text_user.expect("(deleted)").endswith(
        f"[private] alice -> bob: (deleted)  {live.short_ref(ids['delete me'])}"
    )
    assert text_user.expect("(edited)").endswith(f"{live.short_ref(ids['edit me'])} (edited)")
    assert text_user.read_line() == "  | on two lines"
    irc_bob = _irc(second, "bob", HISTORY_CAPS)
    batch = _history_batch(irc_bob, "alice")
    assert ["REDACT", "alice", str(ids["delete me"])] in [
        [m.command, m.source.split("!")[0], m.params[1]] for m in batch if m.command == "REDACT"
    ]
    # Deleted stays deleted; the edited message is found by its new words.
    bob.send_json(type="react", msgid=ids["delete me"], reaction="👍", ref="x")
    assert bob.expect_event("error", ref="x")["code"] == "unknown_message"
    alice = _json(second, "alice")
    alice.send_json(type="edit", msgid=ids["edit me"], text="again", ref="again")
    alice.expect_event("ok", ref="again")
    assert bob.expect_event("edit", msgid=ids["edit me"])["text"] == "again"
    for client in (alice, bob, text_user, irc_bob):
        client.close()
