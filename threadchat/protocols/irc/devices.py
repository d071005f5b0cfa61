"""One account on several devices, for IRC clients: read markers, search and catch-up.

Glue between the IRC session and the hub, like `chathistory.py`; the rules (who may search
what, where a marker may move, what an always-on account missed) are the hub's.

- `draft/read-marker`: `MARKREAD <target> [timestamp=...]` sets or asks the read marker of
  a channel or a nick (an account's is stored, a guest's kept while connected); the server
  answers `MARKREAD <target> timestamp=...` (or `*` when none is known) and tells every
  connection of the account that has the capability when a marker moves; after a JOIN
  (and for the channels a new connection of an account is shown), before RPL_ENDOFNAMES.
- `soju.im/search`: `SEARCH text=...;in=...;from=...;after=...;before=...;limit=...`;
  results in a `soju.im/search` batch (plain lines without `batch`), oldest first. `after`
  and `before` are inclusive there; the words are read as everywhere (`core/search.py`).
- Catch-up: a connection returning to an always-on account gets what it missed, one
  `chathistory` batch per conversation (as CHATHISTORY answers).
- NickServ `SET ALWAYS-ON ON|OFF` (ergo's style) turns always-on on or off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from threadchat.core.events import Event, PrivateMessage, ReadMarker, RoomMessage
from threadchat.core.hub import HubError
from threadchat.core.search import SearchQuery, build_search
from threadchat.protocols import utctime
from threadchat.protocols.irc import channels as irc_channels
from threadchat.protocols.irc import chathistory as irc_history
from threadchat.protocols.irc.wire import Message, channel_to_room

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)

READ_MARKER = "draft/read-marker"
SEARCH = "soju.im/search"
# Lines per catch-up batch at most: a long catch-up goes out batch by batch.
CATCH_UP_BATCH = 500
_SEARCH_KEYS = frozenset({"text", "in", "from", "after", "before", "limit"})


def offered(has_history: bool) -> dict[str, str | None]:
    """The capabilities this module adds when the server keeps history."""
    return {READ_MARKER: None, SEARCH: None} if has_history else {}


def marker_line(session: IrcSession, marker: ReadMarker) -> Message | None:
    """The MARKREAD line for `marker` (as the codec makes it), None for a client without
    the capability."""
    lines = session.event_messages(marker)
    return lines[0] if lines else None


def send_marker(session: IrcSession, room: str) -> None:
    """After a JOIN (before RPL_ENDOFNAMES): the read marker of the channel (a guest's
    too: the hub keeps those in memory)."""
    user = session.user
    if READ_MARKER not in session.caps or user is None:
        return
    try:
        marker = session.hub.read_marker(user, room)
    except HubError as problem:
        log.info("%s: no read marker for %s: %s", session.label, room, problem.message)
        return
    line = marker_line(session, marker)
    if line is not None:
        session.send(line)


def on_markread(session: IrcSession, message: Message) -> None:
    user = session.user
    assert user is not None
    if not message.params or not message.params[0]:
        session.fail("MARKREAD", "NEED_MORE_PARAMS", "Missing parameters")
        return
    target = message.params[0]
    if target.startswith("#") and channel_to_room(target) is None:
        session.fail("MARKREAD", "INVALID_PARAMS", target, "Invalid parameters")
        return
    try:
        if len(message.params) < 2:
            marker = session.hub.read_marker(user, target)
            line = marker_line(session, marker)
            if line is not None:
                session.send(line)
            return
        when = message.params[1]
        if not when.startswith("timestamp="):
            session.fail("MARKREAD", "INVALID_PARAMS", when, "Invalid parameters")
            return
        try:
            read_ms = utctime.parse_millis(when.removeprefix("timestamp="))
        except ValueError:
            session.fail("MARKREAD", "INVALID_PARAMS", when, "Invalid parameters")
            return
        # The account's other connections are told; this one gets the answer.
        marker = session.hub.mark_read(user, target, read_ms, origin=session.transport)
        line = marker_line(session, marker)
        if line is not None:
            session.send(line)
    except HubError as problem:
        if problem.code in ("not_in_room", "invalid_name"):
            session.fail("MARKREAD", "INVALID_PARAMS", target, problem.message)
        else:
            session.fail("MARKREAD", "INTERNAL_ERROR", target, problem.message)


def on_search(session: IrcSession, message: Message) -> None:
    user = session.user
    assert user is not None
    if SEARCH not in session.caps:
        session.fail("SEARCH", "INVALID_PARAMS", "Negotiate soju.im/search first")
        return
    attributes: dict[str, str] = {}
    for pair in message.params[0].split(";") if message.params else []:
        key, _, value = pair.partition("=")
        if key not in _SEARCH_KEYS:
            session.fail("SEARCH", "INVALID_PARAMS", key or "*", "Invalid parameters")
            return
        attributes[key] = value
    try:
        query = _query(attributes)
        if "in" in attributes and not attributes["in"].startswith("#"):
            found = session.hub.search(user, query, peer=attributes["in"])
        else:
            found = session.hub.search(user, query)
    except ValueError as problem:
        session.fail("SEARCH", "INVALID_PARAMS", str(problem))
        return
    except HubError as problem:
        code = "INVALID_PARAMS" if problem.code != "history_failed" else "INTERNAL_ERROR"
        session.fail("SEARCH", code, problem.message)
        return
    _send_results(session, list(reversed(found)))


def _query(attributes: dict[str, str]) -> SearchQuery:
    """The soju attributes as the one search query; ValueError saying what is wrong."""
    room = attributes.get("in")
    if room is not None and room.startswith("#"):
        name = channel_to_room(room)
        if name is None:
            raise ValueError(f"{room} is not a channel")
        room = name
    else:
        room = None
    # soju's bounds are inclusive; the query's are exclusive.
    after = attributes.get("after")
    before = attributes.get("before")
    limit = attributes.get("limit")
    if limit is not None and not limit.isdigit():
        raise ValueError("limit must be a number")
    return build_search(
        attributes.get("text", ""),
        limit=int(limit) if limit else None,
        sender=attributes.get("from") or None,
        room=room,
        after_ts=utctime.parse_millis(after) - 1 if after else None,
        before_ts=utctime.parse_millis(before) + 1 if before else None,
    )


def _send_results(session: IrcSession, found: list[Event]) -> None:
    irc_history.send_batch(session, None, found, batch_type=SEARCH)


def catch_up(session: IrcSession, missed: Iterable[Event]) -> None:
    """What an always-on account missed while no device was connected: one `chathistory`
    batch per conversation, in the order the hub gives them."""
    user = session.user
    assert user is not None
    target: str | None = None
    run: list[Event] = []
    for event in missed:
        here = _conversation(event, user.nick)
        if run and (here != target or len(run) >= CATCH_UP_BATCH):
            irc_history.send_batch(session, target or "*", run)
            run = []
        target = here
        run.append(event)
    if run:
        irc_history.send_batch(session, target or "*", run)


def _conversation(event: Event, me: str) -> str:
    if isinstance(event, RoomMessage):
        return "#" + event.room
    if isinstance(event, PrivateMessage):
        return event.target if event.sender.lower() == me.lower() else event.sender
    return "*"


def continue_as_person(session: IrcSession, account: str) -> bool:
    """After a login once registered (NickServ IDENTIFY, AUTHENTICATE): when a person of the
    account is here, this connection continues as them (`Hub.join_person`): the client
    sees its nick change, its channels parted, and the person's channels joined. False
    when there is no such person (the caller logs in as usual)."""
    user = session.user
    assert user is not None
    old_mask = session.mask
    move = session.hub.join_person(user, session.transport, account)
    if move is None:
        return False
    person = move.person
    session.user = person
    session.reg.nick = person.nick
    session.send(Message("NICK", [person.nick], old_mask))
    mask = session.mask
    for room in move.old_rooms:
        session.send(Message("PART", ["#" + room, "continued on another device"], mask))
    irc_channels.show_rooms(session)
    if move.missed_since is not None:
        catch_up(session, session.hub.missed(person, move.missed_since))
    return True


def nickserv_set(session: IrcSession, words: list[str], reply: object) -> bool:
    """NickServ `SET ALWAYS-ON ON|OFF`; False when `words` are not that command."""
    if len(words) < 2 or words[0].upper() != "SET" or words[1].upper() != "ALWAYS-ON":
        return False
    user = session.user
    assert user is not None and callable(reply)
    if len(words) == 3 and words[2].upper() in ("ON", "OFF", "TRUE", "FALSE"):
        try:
            session.hub.set_always_on(user, words[2].upper() in ("ON", "TRUE"))
        except HubError as problem:
            reply(problem.message)
            return True
    elif len(words) != 2:
        reply("Usage: SET ALWAYS-ON ON|OFF")
        return True
    reply(f"Always-on is {'on' if user.always_on else 'off'}.")
    return True
