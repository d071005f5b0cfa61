"""Native requests that the services carry out: accounts, history and moderation.

The session (`session.py`) dispatches these; each turns one request into calls on the hub and
the services it reaches them by (the interfaces of `core/ports.py`, which the wiring plugs in),
and replies through the session. This module knows no service and no store.
"""

import dataclasses
import time
from typing import TYPE_CHECKING

from threadchat.core import events, names, ports
from threadchat.core.history import Ref, build_query
from threadchat.core.hub import HubError
from threadchat.core.search import build_search
from threadchat.protocols.native import requests

if TYPE_CHECKING:
    from threadchat.protocols.native.session import NativeSession

# -- accounts ---------------------------------------------------------------------------------


def _service(session: "NativeSession") -> ports.Accounts:
    service = session.hub.accounts
    if service is None:
        raise HubError("accounts_off", "this server has no accounts")
    return service


def login_on_hello(session: "NativeSession", request: requests.Hello) -> str:
    """Authenticate a hello that carries a password; the account to register the user with."""
    assert request.password is not None
    return _service(session).authenticate(request.name, request.password, session.host)


def grace_notice(session: "NativeSession") -> None:
    service = session.hub.accounts
    user = session.user
    if service and user and user.account is None and service.in_grace(user.nick):
        text = (
            f"the name {user.nick} is registered: /login {user.nick} PASSWORD "
            f"within {service.grace_period:g} s, or you will be renamed"
        )
        session.reply(events.Notice(text=text))


def handle_register(session: "NativeSession", request: requests.Register) -> bool:
    service, user = _service(session), session.user
    assert user is not None
    if user.account is not None:
        raise HubError("bad_request", f"you are already logged in as {user.account}")
    service.register(user.nick, request.password)
    service.logged_in(session.hub, user, user.nick)
    session.reply(events.LoggedIn(account=user.nick, ref=request.ref))
    return True


def handle_login(session: "NativeSession", request: requests.Login) -> bool:
    service, user = _service(session), session.user
    assert user is not None
    account = service.authenticate(request.name, request.password, session.host)
    move = session.hub.join_person(user, session.conn, account)
    if move is not None:
        # Another device of this account is here: this connection continues as that person.
        session.user = move.person
        session.reply(events.NickChanged(old=move.old_nick, new=move.person.nick))
        for room in move.old_rooms:
            session.reply(events.Left(room=room, nick=move.old_nick, reason="logged in"))
        session.show_person(move.missed_since, request.ref)
        return True
    service.logged_in(session.hub, user, account)
    session.reply(events.LoggedIn(account=account, ref=request.ref))
    if names.fold(user.nick) != names.fold(account):
        try:
            session.hub.change_nick(user, account)
        except HubError:
            session.reply(events.Notice(text=f"{account} is in use; you keep the name {user.nick}"))
    return True


def handle_password(session: "NativeSession", request: requests.ChangePassword) -> bool:
    service, user = _service(session), session.user
    assert user is not None
    if user.account is None:
        raise HubError("not_logged_in", "log in first (/login NAME PASSWORD)")
    service.change_password(user.account, request.old, request.new, session.host)
    session.reply(events.Notice(text="your password has been changed"))
    return False


# -- history ----------------------------------------------------------------------------------


def replay_on_join(session: "NativeSession", room: str) -> None:
    """Send the room's last messages (marked as history) to a user who just joined it; what
    is replayed, and whether, is the hub's rule (`Hub.replay`)."""
    assert session.user is not None
    replay = session.hub.replay(session.user, room)
    if replay is None:
        return
    for event in replay.messages:
        session.reply(event)
    session.history_cursor = (names.fold(room), None, replay.messages[0].id, replay.page)


def handle_history(session: "NativeSession", request: requests.HistoryRequest) -> bool:
    """Answer a history request with a HistoryPage; True (the reply carries the ref)."""
    user = session.user
    assert user is not None
    if session.hub.history is None:
        raise HubError("history_off", "this server keeps no history")
    limit = request.limit
    room, peer, before = request.room, request.peer, request.before
    if request.more:
        cursor = session.history_cursor
        if cursor is None:
            raise HubError("bad_request", "nothing to continue; /history first")
        room, peer, oldest, size = cursor
        before = Ref.msgid(oldest)
        if limit is None:
            limit = size
    if request.around is not None:
        mode, ref, end = "around", request.around, None
    else:
        mode, ref, end = _native_query(before, request.after)
    query = build_query(mode, limit, ref, end)
    if peer is None:
        room = room or session.current_room
        if room is None:
            raise HubError("no_room", "you are in no room; /join ROOM first")
    shown, messages = session.hub.read_history(user, query, room=room, peer=peer)
    if messages:
        session.history_cursor = (shown, peer, messages[0].id, query.limit)
    page = events.HistoryPage(
        room=shown,
        peer=peer,
        messages=tuple(messages),
        more=query.limit > 0
        and len(messages) == query.limit
        and request.after is None
        and request.around is None,
        ref=request.ref,
    )
    session.reply(page)
    return True


def _native_query(before: Ref | None, after: Ref | None) -> tuple[str, Ref | None, Ref | None]:
    """A native request's bounds as the query builder's mode and references: both bounds
    are the messages between them, one bound the page next to it, none the latest page."""
    if before is not None and after is not None:
        return "between", after, before
    if before is not None:
        return "before", before, None
    if after is not None:
        return "after", after, None
    return "latest", None, None


# -- search, read markers, always-on -----------------------------------------------------------


def handle_search(session: "NativeSession", request: requests.Search) -> bool:
    """Search what the user may read (`Hub.search`); the answer is one SearchResults."""
    assert session.user is not None
    try:
        query = build_search(
            request.text,
            limit=request.limit,
            sender=request.sender,
            room=request.room,
            before_ts=request.before_ms,
            after_ts=request.after_ms,
        )
    except ValueError as problem:
        raise HubError("bad_request", str(problem)) from None
    found = session.hub.search(session.user, query)
    session.reply(events.SearchResults(query=request.text, messages=tuple(found), ref=request.ref))
    return True


def handle_mark_read(session: "NativeSession", request: requests.MarkRead) -> bool:
    """Move a read marker (the account's other devices are told; this one gets the marker
    with the ref), or tell where it is."""
    assert session.user is not None
    target = request.target or session.current_room
    if target is None:
        raise HubError("no_room", "you are in no room; /join ROOM first")
    if request.read_ms is None:
        marker = session.hub.read_marker(session.user, target)
    else:
        marker = session.hub.mark_read(session.user, target, request.read_ms, origin=session.conn)
    session.reply(dataclasses.replace(marker, ref=request.ref, asked=True))
    return True


def mark_read_now(session: "NativeSession", room: str) -> None:
    """Text mode's "updated as you read": a person typing in a room has read it up to now."""
    user = session.user
    if user is None or session.hub.history is None:
        return
    try:
        session.hub.mark_read(user, room, time.time_ns() // 1_000_000, origin=session.conn)
    except HubError as problem:
        session.reply(events.Notice(text=f"read marker not kept: {problem.message}"))


def handle_always_on(session: "NativeSession", request: requests.AlwaysOn) -> bool:
    user = session.user
    assert user is not None
    if request.on is not None:
        session.hub.set_always_on(user, request.on)
    state = "on" if user.always_on else "off"
    text = f"always-on is {state}" + (
        ": you stay in your rooms while no device is connected" if user.always_on else ""
    )
    session.reply(events.Notice(text=text))
    return False


# -- moderation -------------------------------------------------------------------------------


def _keeper(session: "NativeSession") -> ports.Moderation:
    keeper = session.hub.moderation
    if keeper is None:
        raise HubError("moderation_off", "this server has no moderation")
    return keeper


def handle_moderate(session: "NativeSession", request: requests.Moderate) -> bool:
    assert session.user is not None
    room = request.room or session.current_room
    if room is None:
        raise HubError("no_room", "you are in no room; /join ROOM first")
    _keeper(session).moderate(session.user, room, request.action, request.target, request.reason)
    return False


def handle_topic_lock(session: "NativeSession", request: requests.TopicLock) -> bool:
    assert session.user is not None
    room = request.room or session.current_room
    if room is None:
        raise HubError("no_room", "you are in no room; /join ROOM first")
    _keeper(session).topic_lock(session.user, room, request.locked)
    return False


# -- metadata -------------------------------------------------------------------------------


def handle_metadata(session: "NativeSession", request: requests.MetadataRequest) -> bool:
    """The hub's metadata rule (core/metadata.py) in JSON: every operation answers with the
    holder's values and the asker's subscriptions as they are after it."""
    user = session.user
    assert user is not None
    hub = session.hub
    holder = {"room": request.room} if request.room else {"nick": request.name}
    match request.operation:
        case "set":
            hub.set_metadata(user, request.key, request.value, origin=session.conn, **holder)
        case "clear":
            hub.clear_metadata(user, origin=session.conn, **holder)
        case "sub":
            _, invalid, refused = hub.subscribe_metadata(user, request.keys)
            _refuse_keys(invalid, refused)
        case "unsub":
            _, invalid = hub.unsubscribe_metadata(user, request.keys)
            _refuse_keys(invalid, None)
    name, values = hub.metadata_of(user, **holder)
    shown = {"room": name} if request.room else {"nick": name}
    session.reply(
        events.MetadataValues(
            values=tuple(values.items()),
            subscriptions=tuple(sorted(user.metadata_subs)),
            ref=request.ref,
            **shown,
        )
    )
    return True


def _refuse_keys(invalid: list[str], refused: str | None) -> None:
    if invalid:
        raise HubError("invalid_key", f"not valid metadata keys: {', '.join(invalid)}")
    if refused is not None:
        raise HubError("limit_reached", f"too many subscriptions: {refused} and after refused")
