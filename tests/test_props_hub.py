"""No CR, LF or NUL reaches another user, whatever one user sends, over whichever protocol.

A real hub with real sessions and no sockets (tests/memory_hub.py): mallory registers over
text mode, JSON mode, IRC or UDP's JSON objects, makes a room of her own and sends what
hypothesis chooses, then quits with a reason it chooses too; three observers, one per
protocol, sit in her room and the lobby. Every event each observer is given and every byte
it receives must be free of line ends and NUL in every field: the hub's `check_text` and the
codecs behind it are the gate.
"""

import contextlib
import json
import re

import pytest
from hostile_input import (
    hostile_bytes,
    hostile_text,
    json_request_objects,
    json_requests,
    sendable_text,
)
from hypothesis import given
from hypothesis import strategies as st
from memory_hub import attack, check_everyone_is_safe, open_room

from threadchat.core import events
from threadchat.core.hub import HubError, check_text
from threadchat.protocols.irc import wire
from threadchat.protocols.native import jsonlines, requests

# What the attacker sends, by protocol. Every strategy mixes structure that reaches deep into
# the session (known commands and fields, the observers' names) with hostile text and bytes.
TARGETS = ["den", "#den", "lobby", "#lobby", "olivia", "oscar", "irene", "mallory"]
TEXT_COMMANDS = [
    "/join", "/leave", "/msg", "/me", "/nick", "/topic", "/quit", "/invite", "/away", "/whois",
    "/kick", "/ban", "/mute", "/op", "/topiclock", "/history", "/rooms", "/who", "/login",
]  # fmt: skip
text_lines = st.one_of(
    hostile_text,
    st.builds(
        lambda command, words: " ".join([command, *words]),
        st.sampled_from(TEXT_COMMANDS),
        st.lists(st.sampled_from(TARGETS) | hostile_text, max_size=3),
    ),
).map(lambda line: line.encode("utf-8", "surrogatepass") + b"\n")

# Every native request with every text field either one of the names that matter here or
# hostile text; and, more often, the requests that put text in front of others, aimed at the
# observers and holding one of the forbidden characters at least.
field_text = st.one_of(st.sampled_from([t.lstrip("#") for t in TARGETS]), hostile_text)
poison = st.builds(
    lambda head, bad, tail: head + bad + tail,
    sendable_text,
    st.sampled_from(["\n", "\r", "\r\n", "\0", "\ud800", "\udfff"]),
    sendable_text,
)
rooms = st.sampled_from([None, "den", "lobby"])
observers = st.sampled_from(["olivia", "oscar", "irene"])
chat_requests = st.one_of(
    st.builds(requests.Say, text=poison, room=rooms, action=st.booleans()),
    st.builds(requests.SendPrivate, target=observers, text=poison, action=st.booleans()),
    st.builds(requests.Topic, room=rooms, topic=poison),
    st.builds(requests.LeaveRoom, room=rooms, reason=poison),
    st.builds(requests.Away, message=poison),
    st.builds(
        requests.Moderate, action=st.just("kick"), target=observers, room=rooms, reason=poison
    ),
    st.builds(requests.QuitRequest, reason=poison),
)
json_objects = st.one_of(
    json_requests(field_text).map(jsonlines.request_to_dict), json_request_objects
)
json_lines = json_objects.map(lambda obj: json.dumps(obj).encode() + b"\n")
chat_lines = chat_requests.map(lambda r: json.dumps(jsonlines.request_to_dict(r)).encode() + b"\n")

IRC_COMMANDS = [
    "PRIVMSG", "NOTICE", "TOPIC", "PART", "KICK", "AWAY", "NICK", "MODE", "JOIN", "INVITE",
    "TAGMSG", "QUIT", "WHOIS", "SETNAME", "CHATHISTORY", "CAP", "PING", "NAMES", "WHO", "LIST",
]  # fmt: skip
irc_tags = st.dictionaries(
    st.sampled_from(["+draft/reply", "+typing", "label", "msgid", "time", "account"]),
    hostile_text.map(lambda value: value.translate({ord(" "): None, ord(";"): None})),
    max_size=2,
).map(
    lambda tags: (
        "@" + ";".join(f"{k}={wire.escape_tag_value(v)}" for k, v in tags.items()) + " "
        if tags
        else ""
    )
)
irc_lines = st.builds(
    lambda tags, command, middle, trailing: (
        f"{tags}{command} {' '.join(middle)} :{trailing}".encode("utf-8", "surrogatepass") + b"\r\n"
    ),
    irc_tags,
    st.sampled_from(IRC_COMMANDS),
    st.lists(
        st.sampled_from(TARGETS) | st.sampled_from(["+o", "-o", "+b", "+k", "+l", "*"]), max_size=3
    ),
    hostile_text,
)


def attacks(protocol: str) -> st.SearchStrategy[list[bytes]]:
    if protocol in ("json", "udp"):
        # Only JSON strings can hold a line end or NUL: most lines try to pass one on.
        line = st.one_of(chat_lines, json_lines, hostile_bytes)
    else:
        line = st.one_of({"text": text_lines, "irc": irc_lines}[protocol], hostile_bytes)
    return st.lists(line, min_size=1, max_size=12)


@given(st.sampled_from(["text", "json", "irc", "udp"]), st.data())
def test_nothing_one_user_sends_puts_a_line_end_or_nul_in_front_of_another(
    protocol: str, data: st.DataObject
) -> None:
    room = open_room("json" if protocol == "udp" else protocol)
    sent = data.draw(attacks(protocol), label="sent")
    quit_reason = data.draw(hostile_text, label="quit reason")
    closing = {
        "text": f"/quit {quit_reason}\n",
        "irc": f"QUIT :{quit_reason}\r\n",
    }.get(protocol, json.dumps({"type": "quit", "reason": quit_reason}) + "\n")
    attack(room, protocol, [*sent, closing.encode("utf-8", "surrogatepass")])
    check_everyone_is_safe(room)
    assert room.hub.find_user("mallory") is None


def test_the_observers_do_see_what_mallory_says() -> None:
    # The property above would pass if nothing reached the observers at all.
    room = open_room("json")
    attack(room, "json", [b'{"type":"say","room":"den","text":"hi all"}\n'])
    for observer in (room.text, room.json, room.irc):
        messages = [e for e in observer.events if isinstance(e, events.RoomMessage)]
        assert [(m.sender, m.text) for m in messages] == [("mallory", "hi all")]
    assert b"mallory: hi all" in room.text.sent or b"[den] mallory: hi all" in room.text.sent
    assert b"PRIVMSG #den :hi all\r\n" in room.irc.sent
    check_everyone_is_safe(room)


@given(hostile_text)
def test_check_text_refuses_exactly_what_no_protocol_can_carry(text: str) -> None:
    # The one gate for free text: lenient for every protocol (CR, LF, NUL, lone surrogates),
    # strict for the native ones (every control but TAB, and lone surrogates).
    unsendable = re.search("[\r\n\0\ud800-\udfff]", text) is not None
    with contextlib.nullcontext() if not unsendable else pytest.raises(HubError):
        check_text(text)
    unprintable = re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]", text) is not None
    with contextlib.nullcontext() if not unprintable else pytest.raises(HubError):
        check_text(text, strict=True)
