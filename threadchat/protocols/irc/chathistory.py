"""History for IRC clients: IRCv3 `draft/chathistory` and history replay on JOIN.

Glue between the IRC session (`session.py`) and the history service (`history.py`), like
`sasl.py` is for accounts. Queries go through `MessageLog.query` with the store's
`HistoryQuery`/`Ref`; access rules are the native `/history`'s (`history.member_room`).

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
from threadchat.protocols import utctime
from threadchat.protocols.irc.wire import (
    Formatter,
    Message,
    Numeric,
    channel_to_room,
    is_valid_nick,
)
from threadchat.services import history
from threadchat.store.base import MAX_HISTORY_LIMIT, HistoryQuery, Ref, StoreError, clamp_limit

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)

CAPABILITY = "draft/chathistory"
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
    first = refs[0]
    match sub:
        case "LATEST":
            query = HistoryQuery.latest(limit, after=first)
        case "BEFORE":
            assert first is not None
            query = HistoryQuery.before(first, limit)
        case "AFTER":
            assert first is not None
            query = HistoryQuery.after(first, limit)
        case "AROUND":
            assert first is not None
            query = HistoryQuery.around(first, limit)
        case _:
            assert first is not None and refs[1] is not None
            query = HistoryQuery.between(first, refs[1], limit)
    shown, scope = _scope(conn, sub, target)
    service = conn.hub.history
    assert service is not None
    try:
        stored = service.query(query, **scope)
    except StoreError as problem:
        log.error("%s: CHATHISTORY failed: %s", conn.label, problem)
        raise _Refused("MESSAGE_ERROR", sub, target, "Messages could not be retrieved") from None
    return shown, [history.to_event(m) for m in stored]


def _scope(conn: IrcSession, sub: str, target: str) -> tuple[str, dict[str, str | None]]:
    """The target as shown in the batch, and the `MessageLog.query` keywords selecting it."""
    user = conn.user
    assert user is not None
    refused = _Refused("INVALID_TARGET", sub, target, "Messages could not be retrieved")
    if target.startswith("#"):
        room = channel_to_room(target)
        name = history.member_room(conn.hub, user, room) if room is not None else None
        if name is None:
            raise refused
        return "#" + name, {"room": name}
    if not is_valid_nick(target) or user.account is None:
        raise refused
    peer = conn.hub.find_user(target)
    if peer is not None and peer.account is not None:
        return peer.nick, {"asker_account": user.account, "peer": peer.account}
    # Offline (or not logged in now): the nick is taken as the account name. The store only
    # ever returns the asker's own conversations, so a wrong guess shows nothing foreign.
    return target, {"asker_account": user.account, "peer": target}


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
    return clamp_limit(int(word))


def send_batch(conn: IrcSession, target: str, events: Sequence[Event]) -> None:
    """Send stored messages as a `chathistory` batch (just the lines without `batch`)."""
    caps = conn.caps
    batched = "batch" in caps
    ref = f"h{next(_batch_ids)}"
    if batched:
        conn.send(Message("BATCH", ["+" + ref, "chathistory", target], conn.server_name))
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
    """After a JOIN: the room's last messages, for clients that can tell them from live ones."""
    service = conn.hub.history
    caps = conn.caps
    if service is None or service.on_join == 0 or not caps >= REPLAY_CAPS or CAPABILITY in caps:
        return
    try:
        events = service.latest(room, service.on_join)
    except StoreError as problem:
        log.error("cannot read history of %s: %s", room, problem)
        return
    if events:
        send_batch(conn, "#" + room, events)


__all__ = [
    "CAPABILITY",
    "isupport_tokens",
    "on_chathistory",
    "replay_on_join",
    "send_batch",
]
