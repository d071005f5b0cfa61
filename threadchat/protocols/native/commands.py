"""Native requests that the services carry out: accounts, history and moderation.

The session (`session.py`) dispatches these; each turns one request into calls on the
service the server plugged into the hub, and replies through the session. The services
themselves know no protocol.
"""

import logging
from typing import TYPE_CHECKING, cast

from threadchat.core import events, names
from threadchat.core.hub import HubError
from threadchat.protocols.native import requests
from threadchat.services.accounts import GRACE_PERIOD, AccountService
from threadchat.services.history import DEFAULT_PAGE, MessageLog, member_room, to_event
from threadchat.services.moderation import RoomKeeper
from threadchat.store.base import Ref, StoreError, clamp_limit

if TYPE_CHECKING:
    from threadchat.protocols.native.session import NativeSession

log = logging.getLogger(__name__)

# -- accounts ---------------------------------------------------------------------------------


def _service(session: "NativeSession") -> AccountService:
    service = session.hub.accounts
    if service is None:
        raise HubError("accounts_off", "this server has no accounts")
    # The hub knows only the interface it needs (core.ports); the wiring plugs in this one.
    return cast(AccountService, service)


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
            f"within {GRACE_PERIOD:g} s, or you will be renamed"
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
    """Send the room's last messages (marked as history) to a user who just joined it."""
    service = cast(MessageLog | None, session.hub.history)
    if service is None or service.on_join == 0:
        return
    try:
        messages = service.latest(room, service.on_join)
    except StoreError as problem:
        log.error("cannot read history of %s: %s", room, problem)
        return
    for event in messages:
        session.reply(event)
    if messages:
        session.history_cursor = (names.fold(room), None, messages[0].id, service.on_join)


def handle_history(session: "NativeSession", request: requests.HistoryRequest) -> bool:
    """Answer a history request with a HistoryPage; True (the reply carries the ref)."""
    user = session.user
    service = cast(MessageLog | None, session.hub.history)
    assert user is not None
    if service is None:
        raise HubError("history_off", "this server keeps no history")
    limit = clamp_limit(DEFAULT_PAGE if request.limit is None else request.limit)
    room, peer, before = request.room, request.peer, request.before
    if request.more:
        cursor = session.history_cursor
        if cursor is None:
            raise HubError("bad_request", "nothing to continue; /history first")
        room, peer, oldest, size = cursor
        before = Ref.msgid(oldest)
        if request.limit is None:
            limit = size
    if peer is not None:
        if user.account is None:
            raise HubError("not_logged_in", "log in to read your private conversations")
        if names.nick_error(peer):
            raise HubError("invalid_name", f"{peer} is not an account name")
        room_name = None
    else:
        room_name = room or session.current_room
        if room_name is None:
            raise HubError("no_room", "you are in no room; /join ROOM first")
        room_name = member_room(session.hub, user, room_name)
        if room_name is None:
            raise HubError(
                "not_in_room", f"join {room or session.current_room} to read its history"
            )
    try:
        stored = service.page(
            room=room_name,
            asker_account=user.account,
            peer=peer,
            before=before,
            after=request.after,
            limit=limit,
        )
    except StoreError as problem:
        log.error("history request failed: %s", problem)
        raise HubError("history_failed", "history cannot be read right now") from None
    if stored:
        session.history_cursor = (room_name, peer, stored[0].id, limit)
    page = events.HistoryPage(
        room=room_name,
        peer=peer,
        messages=tuple(to_event(m) for m in stored),
        more=limit > 0 and len(stored) == limit and request.after is None,
        ref=request.ref,
    )
    session.reply(page)
    return True


# -- moderation -------------------------------------------------------------------------------


def _keeper(session: "NativeSession") -> RoomKeeper:
    keeper = session.hub.moderation
    if keeper is None:
        raise HubError("moderation_off", "this server has no moderation")
    return cast(RoomKeeper, keeper)


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
