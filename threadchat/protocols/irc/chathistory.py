"""History for IRC clients: IRCv3 `draft/chathistory` and history replay on JOIN.

Glue between the IRC session (`session.py`) and the hub, like `sasl.py` is for accounts. A
command translates to the one query builder (`core.history.build_query`) and is read by
`Hub.read_history`, with the native `/history`'s access rules; what a join replays is
`Hub.replay`'s rule, and this module only formats it.

- `CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN <target> <ref> [<ref>] <limit>`, refs `*`
  (LATEST only), `msgid=<id>`, `timestamp=<RFC 3339>`. A channel target needs membership; a
  nick target is the private conversation between the asker's account and that nick's
  account (both logged in), so nobody reads someone else's conversation.
- Replies are a `chathistory` batch when the client has `batch`; messages carry `time`
  (server-time) and `msgid` (message-tags) as the client's capabilities allow.
- On JOIN the room's last messages are replayed as such a batch, but only to clients with
  `batch` and `server-time`: a plain client would show old lines as if said just now.
  Clients that enabled `draft/chathistory` get no replay either: they ask for what they want.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from threadchat.core.events import Event
from threadchat.core.history import MAX_HISTORY_LIMIT, Ref, build_query
from threadchat.core.hub import HubError
from threadchat.protocols import utctime
from threadchat.protocols.irc.wire import (
    Formatter,
    Message,
    Numeric,
    channel_to_room,
    format_server_time,
    is_valid_nick,
)

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)

CAPABILITY = "draft/chathistory"
TARGETS_BATCH = "draft/chathistory-targets"
# What a replay on join needs: the batch marks the lines as history, server-time dates them.
REPLAY_CAPS = frozenset({"batch", "server-time"})
# Parameters after the subcommand: target, one or two refs, limit.
_ARITY = {"LATEST": 3, "BEFORE": 3, "AFTER": 3, "AROUND": 3, "BETWEEN": 4}
# Longest ref we parse: "timestamp=" and an RFC 3339 time with a fraction and offset fit in
# 64; a longer word is garbage and is refused before any parsing work.
MAX_REF_LEN = 64
# Batch references only need to be unique per connection; one counter serves all.
_batch_ids = itertools.count(1)


def isupport_tokens() -> dict[str, str | None]:
    """ISUPPORT tokens announced when the server keeps history."""
    return {"CHATHISTORY": str(MAX_HISTORY_LIMIT), "MSGREFTYPES": "msgid,timestamp"}


class _Refused(Exception):
    """A CHATHISTORY request answered with FAIL: code and the parameters after it."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def on_chathistory(conn: IrcSession, message: Message) -> None:
    """The CHATHISTORY command (registered users; at least one parameter)."""
    if conn.hub.history is None:
        conn.error(Numeric.ERR_UNKNOWNCOMMAND, "CHATHISTORY")
        return
    sub = message.params[0].upper()
    try:
        if sub == "TARGETS":
            _targets(conn, message.params[1:])
            return
        target, events = _answer(conn, sub, message.params[1:])
    except _Refused as refused:
        conn.send(Message("FAIL", ["CHATHISTORY", refused.code, *refused.params], conn.server_name))
        return
    send_batch(conn, target, events)


def _answer(conn: IrcSession, sub: str, params: Sequence[str]) -> tuple[str, list[Event]]:
    arity = _ARITY.get(sub)
    if arity is None:
        raise _Refused("INVALID_PARAMS", sub or "*", "Unknown subcommand")
    if len(params) < arity:
        raise _Refused("INVALID_PARAMS", sub, "Missing parameters")
    target = params[0]
    words = params[1 : arity - 1]
    refs = [_parse_ref(sub, word, star=sub == "LATEST") for word in words]
    limit = _parse_limit(sub, params[arity - 1])
    # LATEST's one reference (`*`: none) is what it starts after; BETWEEN has two.
    query = build_query(sub.lower(), limit, *refs)
    user = conn.user
    assert user is not None
    refused = _Refused("INVALID_TARGET", sub, target, "Messages could not be retrieved")
    shown, scope = _scope(conn, target, refused)
    try:
        room, events = conn.hub.read_history(user, query, **scope)
    except HubError as problem:
        if problem.code == "history_failed":
            failed = _Refused("MESSAGE_ERROR", sub, target, "Messages could not be retrieved")
            raise failed from None
        raise refused from None
    return ("#" + room if room is not None else shown), events


def _targets(conn: IrcSession, params: Sequence[str]) -> None:
    """`CHATHISTORY TARGETS <timestamp=> <timestamp=> <limit>`: the channels the user is in
    and the people their account talked with privately whose latest message falls between
    the two times, as a `draft/chathistory-targets` batch, the least recently active first."""
    if len(params) < 3:
        raise _Refused("INVALID_PARAMS", "TARGETS", "Missing parameters")
    bounds = [_parse_ref("TARGETS", word, star=False) for word in params[:2]]
    if any(ref is None or ref.kind != "ts" for ref in bounds):
        raise _Refused("INVALID_PARAMS", "TARGETS", params[0], "Only timestamps are accepted")
    limit = _parse_limit("TARGETS", params[2])
    assert conn.user is not None and bounds[0] is not None and bounds[1] is not None
    try:
        found = conn.hub.history_targets(conn.user, bounds[0].value, bounds[1].value, limit)
    except HubError:
        raise _Refused("MESSAGE_ERROR", "TARGETS", "Messages could not be retrieved") from None
    batched = "batch" in conn.caps
    ref = f"h{next(_batch_ids)}"
    if batched:
        conn.send(Message("BATCH", ["+" + ref, TARGETS_BATCH], conn.server_name))
    for name, is_room, latest in found:
        line = Message(
            "CHATHISTORY",
            ["TARGETS", "#" + name if is_room else name, format_server_time(latest / 1000)],
            conn.server_name,
        )
        if batched:
            line.tags["batch"] = ref
        conn.send(line)
    if batched:
        conn.send(Message("BATCH", ["-" + ref], conn.server_name))


def _scope(conn: IrcSession, target: str, refused: _Refused) -> tuple[str, dict[str, str]]:
    """The target as shown in the batch, and the `Hub.read_history` keywords selecting it."""
    user = conn.user
    assert user is not None
    if target.startswith("#"):
        room = channel_to_room(target)
        if room is None:
            raise refused
        return target, {"room": room}
    if not is_valid_nick(target) or user.account is None:
        raise refused
    peer = conn.hub.find_user(target)
    if peer is not None and peer.account is not None:
        return peer.nick, {"peer": peer.account}
    # Offline (or not logged in now): the nick is taken as the account name. The store only
    # ever returns the asker's own conversations, so a wrong guess shows nothing foreign.
    return target, {"peer": target}


def _parse_ref(sub: str, word: str, *, star: bool) -> Ref | None:
    if star and word == "*":
        return None
    kind, _, value = word.partition("=")
    if len(word) <= MAX_REF_LEN:
        with contextlib.suppress(ValueError):  # out of range: refused like any bad reference
            if kind == "msgid" and value.isascii() and value.isdigit():
                return Ref.msgid(int(value))
            if kind == "timestamp":
                return Ref.at(utctime.parse_millis(value))
    raise _Refused("INVALID_PARAMS", sub, word, "Invalid message reference")


def _parse_limit(sub: str, word: str) -> int:
    if not (word.isascii() and word.isdigit()) or len(word) > 9:
        raise _Refused("INVALID_PARAMS", sub, word, "Invalid limit")
    return int(word)  # clamped by the query builder


def send_batch(
    conn: IrcSession, target: str | None, events: Sequence[Event], batch_type: str = "chathistory"
) -> None:
    """Send stored messages as a `chathistory` batch (just the lines without `batch`), or
    as a batch of another type (`soju.im/search`, which names no target)."""
    caps = conn.caps
    batched = "batch" in caps
    ref = f"h{next(_batch_ids)}"
    if batched:
        params = ["+" + ref, batch_type] + ([target] if target is not None else [])
        conn.send(Message("BATCH", params, conn.server_name))
    for event in events:
        for line in conn.event_messages(event):
            if batched:
                line.tags["batch"] = ref
            try:
                conn.send_bytes(Formatter(line, time=event.ts).encode(caps))
            except ValueError:
                log.warning("%s: cannot send stored message %d", conn.label, event.id)
    if batched:
        conn.send(Message("BATCH", ["-" + ref], conn.server_name))


def replay_on_join(conn: IrcSession, room: str) -> None:
    """After a JOIN: the room's last messages (`Hub.replay`), for clients that can tell them
    from live ones, and not for those that ask for history themselves."""
    assert conn.user is not None
    caps = conn.caps
    replay = conn.hub.replay(
        conn.user, room, marks_history=caps >= REPLAY_CAPS, fetches_history=CAPABILITY in caps
    )
    if replay is not None:
        send_batch(conn, "#" + room, replay.messages)


__all__ = [
    "CAPABILITY",
    "isupport_tokens",
    "on_chathistory",
    "replay_on_join",
    "send_batch",
]
