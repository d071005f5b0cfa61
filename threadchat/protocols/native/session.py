"""One native user's session: carries out native requests against the hub.

Protocol-neutral on purpose: TCP (text and JSON mode), UDP and WebSocket transports all feed
`requests.Request` objects in and give a `reply` callable for direct answers. The session is
owned by its connection's reader thread, so it needs no lock of its own.
"""

import logging
import time
from collections.abc import Callable

from threadchat.core import events, names
from threadchat.core.events import Event
from threadchat.core.hub import (
    DEFAULT_ROOM,
    Arrival,
    Connection,
    Hub,
    HubError,
    User,
    check_message,
    check_text,
)
from threadchat.core.modes import MemberStatus
from threadchat.protocols.native import commands, requests

log = logging.getLogger(__name__)

# Text mode moves a room's read marker at most this often (seconds; see `_read_as_shown`).
MARK_READ_EVERY = 5.0
# Requests whose message a pipelined read queues with the others (see `Hub.pipeline`).
_PIPELINED = (requests.Say, requests.SendPrivate)


class SessionEnded(Exception):
    """The user asked to quit; `reason` is what the others see."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NativeSession:
    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        reply: Callable[[Event], None],
        *,
        label: str,
        host: str | None = None,
        on_registered: Callable[[], None] = lambda: None,
    ) -> None:
        self.hub = hub
        self.conn = conn
        self.reply = reply
        # `label` ("ip:port") names the connection in logs; `host` (the IP alone) is the
        # user's host in the hub, which bans like *!*@1.2.3.4 are matched against.
        self.label = label
        self.host = host if host is not None else label
        self.on_registered = on_registered
        self.user: User | None = None
        # Text mode's "where plain lines go": the room joined last that the user is still in.
        self.current_room: str | None = None
        # Where `/history more` continues: (room, peer, oldest message id shown, page size).
        self.history_cursor: tuple[str | None, str | None, int, int] | None = None
        # Text mode: every line is shown as it arrives, so what the person types in a room
        # moves its read marker (JSON clients say what they have read themselves).
        self.reads_as_shown = False
        self._marked_at: dict[str, float] = {}

    def release(self) -> None:
        """The connection has ended and nothing more will be read from it: let go of it.
        Session and connection hold each other; without this the pair (with the socket,
        outbox, thread object and buffers) waits for the rarely run garbage collector (see
        docs/architecture.md, "Garbage collection") instead of being freed at once."""
        del self.conn, self.reply, self.on_registered

    @property
    def several_rooms(self) -> bool:
        return self.user is not None and len(self.user.rooms) > 1

    def handle(self, request: requests.Request) -> None:
        """Carry out one request; problems become error replies. Raises SessionEnded on quit."""
        ref = getattr(request, "ref", None)
        try:
            if isinstance(request, requests.Invalid):
                self._refuse(request.code, request.message, ref)
                return
            if self.user is None:
                self._handle_unregistered(request)
                return
            handler = _HANDLERS.get(type(request))
            if handler is None:
                self._refuse("bad_request", "you are already registered", ref)
                return
            answered = handler(self, request)
            if ref is not None and not answered:
                self.reply(events.Ok(ref=ref))
        except HubError as problem:
            self._refuse(problem.code, problem.message, ref)

    def handle_pipelined(self, request: requests.Request) -> None:
        """`handle` for one request of a read (`hub.pipeline.reading`): a room or private message
        is queued with the read's others; anything else first completes what is queued, as
        nothing may overtake it (a leave after a line, a history request that should see it,
        a reply). Raises SessionEnded on quit."""
        if not isinstance(request, _PIPELINED):
            self.hub.pipeline.complete()
        self.handle(request)

    def _refuse(self, code: str, message: str, ref: object = None) -> None:
        # A refusal may quote what was refused (a type, a name): made sendable, so that the
        # error reaches its client even when what it quotes could not (a lone surrogate).
        message = names.sendable(message)
        log.info("%s: refused (%s): %s", self.label, code, message)
        self.reply(events.Error(code=code, message=message, ref=ref))

    def _handle_unregistered(self, request: requests.Request) -> None:
        if isinstance(request, requests.QuitRequest):
            raise SessionEnded(_quit_reason(request.reason))
        if isinstance(request, requests.ClientPing):
            self.reply(events.Pong(token=request.token))
            return
        if not isinstance(request, requests.Hello):
            self._refuse("not_registered", "say who you are first (your name, or a hello)")
            return
        accounts_service = self.hub.accounts
        if (
            request.first_line is not None
            and accounts_service is not None
            and not accounts_service.is_registered(request.name)
        ):
            # "john smith" as a first line is a name with a space, not a login attempt.
            request = requests.Hello(name=request.first_line, ref=request.ref)
        try:
            identity = {"host": self.host}
            if request.password is not None:
                identity["account"] = commands.login_on_hello(self, request)
            signed = self.hub.sign_on(self.conn, request.name, **identity)
        except HubError as problem:
            self._refuse(problem.code, problem.message, request.ref)
            if problem.code == "name_in_use":
                self.reply(events.Notice(text="choose another name"))
            elif problem.code == "bad_login":
                text = "a name alone joins as a guest; NAME PASSWORD logs in to an account"
                self.reply(events.Notice(text=text))
            return
        self.user = signed.user
        self.on_registered()
        self.reply(events.Welcome(nick=self.user.nick, server=self.hub.server_name))
        if signed.attached:
            self.show_person(signed.missed_since)
            if request.ref is not None:
                self.reply(events.Ok(ref=request.ref))
            return
        if self.user.account is not None and self.hub.accounts is not None:
            self.hub.accounts.logged_in(self.hub, self.user, self.user.account)
            self.reply(events.LoggedIn(account=self.user.account))
        commands.grace_notice(self)
        self._join(DEFAULT_ROOM)
        self._show_read_markers()
        if request.ref is not None:
            self.reply(events.Ok(ref=request.ref))

    def show_person(self, missed_since: tuple[int, int] | None, ref: object = None) -> None:
        """A connection attached to a person already here (another device of the account,
        or an always-on account with no device left): it is shown the person's rooms as if
        it had just joined each, what it missed while no device was connected, and the
        account's read markers."""
        assert self.user is not None and self.user.account is not None
        self.reply(events.LoggedIn(account=self.user.account, ref=ref))
        self.current_room = None
        for arrival in self.hub.arrivals(self.user):
            self.reply(events.Joined(room=arrival.room, nick=self.user.nick))
            self._show_arrival(arrival)
            self.current_room = arrival.room
        if missed_since is not None:
            for event in self.hub.missed(self.user, missed_since):
                self.reply(event)
        self._show_read_markers()

    def _show_read_markers(self) -> None:
        try:
            markers = self.hub.read_markers(self.user) if self.user is not None else []
        except HubError as problem:
            log.info("%s: read markers not shown: %s", self.label, problem.message)
            return
        for marker in markers:
            self.reply(marker)

    # Handlers return True when they already answered a request that carried a ref.

    def _join(self, room_name: str) -> None:
        assert self.user is not None
        room = self.hub.join(self.user, room_name)
        self.current_room = room.name
        self._show_arrival(self.hub.arrival(self.user, room.name))
        commands.replay_on_join(self, room.name)

    def _show_arrival(self, arrival: Arrival) -> None:
        if arrival.topic.topic:
            self.reply(arrival.topic)
        if arrival.members is None:
            # A quiet room (see Hub.arrival): thousands of names help nobody; /who gives them.
            text = f"{arrival.room} has {arrival.count} members; /who lists them"
            self.reply(events.Notice(text=text))
        else:
            nicks = tuple(user.nick for user, _ in arrival.members)
            self.reply(events.WhoList(room=arrival.room, members=nicks))

    def _on_join(self, request: requests.JoinRoom) -> bool:
        self._join(request.room)
        return False

    def _room_or_current(self, room: str | None) -> str:
        if room:
            return room
        if self.current_room is None:
            raise HubError("no_room", "you are in no room; /join ROOM first")
        assert self.user is not None
        if names.fold(self.current_room) not in self.user.rooms:
            # Renamed since (Hub.rename_room): the current room follows its new name.
            for joined in list(self.user.rooms.values()):
                if joined.renamed_from and names.fold(joined.renamed_from) == names.fold(
                    self.current_room
                ):
                    self.current_room = joined.name
        return self.current_room

    def _on_leave(self, request: requests.LeaveRoom) -> bool:
        assert self.user is not None
        room = self._room_or_current(request.room)
        check_text(request.reason, strict=True)
        self.hub.leave(self.user, room, request.reason)
        if self.current_room is None or names.fold(self.current_room) == names.fold(room):
            remaining = list(self.user.rooms.values())
            self.current_room = remaining[-1].name if remaining else None
        return False

    def _on_say(self, request: requests.Say) -> bool:
        assert self.user is not None
        check_message(request.text, strict=True)
        if not request.text:
            raise HubError("bad_request", "empty message")
        room = request.room or self._room_or_current(None)
        kind = events.ACTION if request.action else events.TEXT
        if request.status is not None:
            if request.reply_to is not None:
                raise HubError("bad_request", "a message to a status is not stored: no reply_to")
            # Not stored (see Hub.say_to_status): answered once relayed.
            status = MemberStatus(request.status)
            self.hub.say_to_status(self.user, room, request.text, status, kind, origin=self.conn)
            return False
        reply_to = None
        if request.reply_to is not None:
            reply_to = self._msgid(request.reply_to)
            if request.room is None and isinstance(request.reply_to, str):
                # Text mode's `/reply #a3f`: the answer goes where the message is, a room
                # or a private conversation.
                self.hub.reply(self.user, reply_to, request.text, kind, origin=self.conn)
                return False
        if request.ref is None:  # the usual message: nothing to answer, no context to enter
            self._say(room, request.text, kind, reply_to)
            if self.reads_as_shown:
                self._read_as_shown(room)
            return False
        # An `ok` means stored: it waits for the commit, and a message that was not stored
        # gets an error with its ref instead.
        with self.hub.pipeline.acknowledged(request.ref, self.reply):
            self._say(room, request.text, kind, reply_to)
        if self.reads_as_shown:
            self._read_as_shown(room)
        return True

    def _say(self, room: str, text: str, kind: str, reply_to: int | None) -> None:
        assert self.user is not None
        if reply_to is None:
            self.hub.say(self.user, room, text, kind, origin=self.conn)
        else:
            self.hub.say(self.user, room, text, kind, origin=self.conn, reply_to=reply_to)

    def _read_as_shown(self, room: str) -> None:
        """Text mode shows every line as it comes, so a person typing in a room has read it:
        the marker moves to now, at most once per MARK_READ_EVERY seconds per room (it is a
        store write)."""
        now = time.monotonic()
        key = names.fold(room)
        if now - self._marked_at.get(key, float("-inf")) < MARK_READ_EVERY:
            return
        self._marked_at[key] = now
        commands.mark_read_now(self, room)

    def _msgid(self, message: "int | str") -> int:
        """The id a request names a message by: a msgid, or a text-mode reference."""
        assert self.user is not None
        if isinstance(message, int):
            return message
        if not message:  # text mode's `/edit text`, `/delete`: your last message here
            return self.hub.last_message_of(self.user, self._room_or_current(None))
        return self.hub.find_ref(self.user, message)

    def _on_react(self, request: requests.React) -> bool:
        assert self.user is not None
        msgid = self._msgid(request.message)
        self.hub.react(
            self.user, msgid, request.reaction, on=request.on, room=request.room, to=request.to
        )
        return False

    def _on_delete(self, request: requests.DeleteMessage) -> bool:
        assert self.user is not None
        check_text(request.reason, strict=True)
        msgid = self._msgid(request.message)
        self.hub.delete_message(self.user, msgid, request.reason, room=request.room, to=request.to)
        return False

    def _on_edit(self, request: requests.EditMessage) -> bool:
        assert self.user is not None
        check_message(request.text, strict=True)
        msgid = self._msgid(request.message)
        self.hub.edit_message(self.user, msgid, request.text, room=request.room, to=request.to)
        return False

    def _on_typing(self, request: requests.TypingNotice) -> bool:
        assert self.user is not None
        if request.to is not None and request.room is None:
            self.hub.typing(self.user, None, request.state, to=request.to)
        else:
            self.hub.typing(self.user, self._room_or_current(request.room), request.state)
        return False

    def _on_private(self, request: requests.SendPrivate) -> bool:
        assert self.user is not None
        check_message(request.text, strict=True)
        kind = events.ACTION if request.action else events.TEXT
        reply_to = None if request.reply_to is None else self._msgid(request.reply_to)
        with self.hub.pipeline.acknowledged(request.ref, self.reply):
            recipient = self.hub.send_private(
                self.user, request.target, request.text, kind, origin=self.conn, reply_to=reply_to
            )
        if recipient.away:
            self.reply(events.Notice(text=f"{recipient.nick} is away: {recipient.away}"))
        return request.ref is not None

    def _on_nick(self, request: requests.ChangeNick) -> bool:
        assert self.user is not None
        self.hub.change_nick(self.user, request.name)
        commands.grace_notice(self)
        return False

    def _on_topic(self, request: requests.Topic) -> bool:
        assert self.user is not None
        room = self._room_or_current(request.room)
        if request.topic is None:
            self.reply(self.hub.topic(room))
            return False
        check_text(request.topic, strict=True)
        self.hub.set_topic(self.user, room, request.topic)
        return False

    def _on_rooms(self, request: requests.ListRooms) -> bool:
        self.reply(events.RoomList(rooms=self.hub.room_list(self.user)))
        return False

    def _on_who(self, request: requests.Who) -> bool:
        name, members = self.hub.members(self._room_or_current(request.room), self.user)
        self.reply(events.WhoList(room=name, members=members))
        return False

    def _on_invite(self, request: requests.Invite) -> bool:
        assert self.user is not None
        room = self._room_or_current(request.room)
        invited = self.hub.invite(self.user, request.target, room)
        self.reply(events.Notice(text=f"you invited {invited.nick} to {room}"))
        if invited.away:
            self.reply(events.Notice(text=f"{invited.nick} is away: {invited.away}"))
        return False

    def _on_away(self, request: requests.Away) -> bool:
        assert self.user is not None
        if request.message is not None:
            check_text(request.message, strict=True)
        self.hub.set_away(self.user, request.message or None)
        text = "you are marked as away" if request.message else "you are no longer away"
        self.reply(events.Notice(text=text))
        return False

    def _on_realname(self, request: requests.SetRealname) -> bool:
        assert self.user is not None
        self.hub.set_realname(self.user, request.realname)
        self.reply(events.Notice(text=f"your real name is now {request.realname}"))
        return False

    def _on_whois(self, request: requests.Whois) -> bool:
        self.reply(self.hub.user_info(request.target, ref=request.ref, viewer=self.user))
        return True

    def _on_help(self, request: requests.Help) -> bool:
        from threadchat.protocols.native.line import HELP_LINES

        self.reply(events.HelpText(lines=HELP_LINES))
        return False

    def _on_ping(self, request: requests.ClientPing) -> bool:
        self.reply(events.Pong(token=request.token))
        return False

    def _on_pong(self, request: requests.ClientPong) -> bool:
        return True  # liveness is tracked by the transport; a pong needs no answer

    def _on_quit(self, request: requests.QuitRequest) -> bool:
        raise SessionEnded(_quit_reason(request.reason))

    def _on_hello(self, request: requests.Hello) -> bool:
        raise HubError("bad_request", "you are already registered; /nick changes your name")


def _quit_reason(reason: str) -> str:
    # A quit is never refused, so what the others would see is mended rather than refused.
    return names.strip_controls(reason) if reason else "quit"


_HANDLERS: dict[type, Callable[[NativeSession, requests.Request], bool]] = {
    requests.JoinRoom: NativeSession._on_join,
    requests.LeaveRoom: NativeSession._on_leave,
    requests.Say: NativeSession._on_say,
    requests.React: NativeSession._on_react,
    requests.DeleteMessage: NativeSession._on_delete,
    requests.EditMessage: NativeSession._on_edit,
    requests.TypingNotice: NativeSession._on_typing,
    requests.SendPrivate: NativeSession._on_private,
    requests.ChangeNick: NativeSession._on_nick,
    requests.Topic: NativeSession._on_topic,
    requests.ListRooms: NativeSession._on_rooms,
    requests.Who: NativeSession._on_who,
    requests.Help: NativeSession._on_help,
    requests.Invite: NativeSession._on_invite,
    requests.Away: NativeSession._on_away,
    requests.Whois: NativeSession._on_whois,
    requests.SetRealname: NativeSession._on_realname,
    requests.ClientPing: NativeSession._on_ping,
    requests.ClientPong: NativeSession._on_pong,
    requests.QuitRequest: NativeSession._on_quit,
    requests.Hello: NativeSession._on_hello,
}  # type: ignore[dict-item]

# History, accounts and moderation live in their own modules.
_HANDLERS.update(
    {
        requests.HistoryRequest: commands.handle_history,
        requests.Register: commands.handle_register,
        requests.Login: commands.handle_login,
        requests.ChangePassword: commands.handle_password,
        requests.Moderate: commands.handle_moderate,
        requests.TopicLock: commands.handle_topic_lock,
        requests.Search: commands.handle_search,
        requests.MarkRead: commands.handle_mark_read,
        requests.AlwaysOn: commands.handle_always_on,
        requests.MetadataRequest: commands.handle_metadata,
    }  # type: ignore[dict-item]
)
