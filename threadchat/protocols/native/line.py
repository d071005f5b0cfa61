"""The native line protocol, sans-I/O: bytes in, requests out; events in, bytes out.

A connection's first line decides its mode: a JSON object selects JSON mode (one JSON object
per line both ways, see `jsonlines.py`); anything else is text mode, where that first line is
the user's name (the classic exercise) and later lines are chat text or /commands.

>>> p = LineProtocol()
>>> list(p.receive_data(b"alice\\r\\nhel"))
[Hello(name='alice', ref=None)]
>>> p.registered = True
>>> for request in p.receive_data(b"lo\\n/join dev\\n//slash\\n"):
...     print(request)
Say(text='hello', room=None, action=False, ref=None, status=None, reply_to=None)
JoinRoom(room='dev', ref=None)
Say(text='/slash', room=None, action=False, ref=None, status=None, reply_to=None)
"""

import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import replace

from threadchat.core import events, live
from threadchat.core.events import Event
from threadchat.core.modes import MemberStatus, Mode, RoomFlag, RoomList, RoomSetting, UserFlag
from threadchat.core.names import strip_controls
from threadchat.core.search import parse_filters
from threadchat.protocols import utctime
from threadchat.protocols.lineends import LineEnds
from threadchat.protocols.native import jsonlines, requests

# Long enough for any chat line a person types, short enough that one connection cannot make
# the server buffer much.
DEFAULT_MAX_LINE = 4096
# A peer that sends this much without a single newline is not speaking a line protocol.
MAX_UNTERMINATED = 64 * 1024

TEXT_MODE = "text"
JSON_MODE = "json"


class LineFramer:
    """Splits a byte stream into lines and enforces the length limits.

    A line ends at CR LF, LF or a lone CR (see `lineends`). `feed` returns complete lines
    (without terminator) and `None` for each over-long line, which is dropped; `fatal` is set
    once the peer has sent MAX_UNTERMINATED bytes with no line end.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.fatal = False
        self._buffer = b""
        self._ends = LineEnds()
        # While discarding the rest of an over-long line: how many bytes were dropped so far.
        self._discarded: int | None = None

    @property
    def pending(self) -> int:
        """Bytes received since the last line end (discarded ones of an over-long line too)."""
        return (self._discarded or 0) + len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | None]:
        if self.fatal:
            return []
        data = self._ends.normalize(data)
        lines: list[bytes | None] = []
        if self._discarded is not None:
            end = data.find(b"\n")
            if end < 0:
                self._discarded += len(data)
                self.fatal = self._discarded > MAX_UNTERMINATED
                return lines
            data = data[end + 1 :]
            self._discarded = None
        buffer = self._buffer + data if self._buffer else data
        parts = buffer.split(b"\n")
        rest = parts.pop()
        for part in parts:
            lines.append(part if len(part) <= self.max_line else None)
        if len(rest) > self.max_line:
            lines.append(None)
            self._discarded = len(rest)
            self.fatal = self._discarded > MAX_UNTERMINATED
            rest = b""
        self._buffer = rest
        return lines


def _usage(text: str) -> requests.Invalid:
    return requests.Invalid("bad_request", f"usage: {text}")


def _split(args: str) -> tuple[str, str]:
    head, _, tail = args.strip().partition(" ")
    return head, tail.strip()


def _room_arg(word: str) -> str:
    # People coming from IRC type "#dev"; rooms are named without the '#'.
    return word[1:] if word.startswith("#") else word


def _cmd_join(args: str) -> requests.Request:
    room, _ = _split(args)
    return requests.JoinRoom(room=_room_arg(room)) if room else _usage("/join ROOM")


def _cmd_leave(args: str) -> requests.Request:
    room, reason = _split(args)
    return requests.LeaveRoom(room=_room_arg(room) if room else None, reason=reason)


def _cmd_who(args: str) -> requests.Request:
    room, _ = _split(args)
    return requests.Who(room=_room_arg(room) if room else None)


def _cmd_msg(args: str) -> requests.Request:
    target, text = _split(args)
    if not target or not text:
        return _usage("/msg NICK text")
    return requests.SendPrivate(target=target, text=text)


def _cmd_me(args: str) -> requests.Request:
    return requests.Say(text=args.strip(), action=True) if args.strip() else _usage("/me action")


def _cmd_nick(args: str) -> requests.Request:
    name, _ = _split(args)
    return requests.ChangeNick(name=name) if name else _usage("/nick NEW")


def _cmd_topic(args: str) -> requests.Request:
    args = args.strip()
    room: str | None = None
    if args.startswith("#"):
        word, args = _split(args)
        room = _room_arg(word)
    return requests.Topic(room=room, topic=args or None)


# Largest N that /history accepts (the store clamps further); bounds one reply's size.
HISTORY_MAX = 500
HISTORY_DEFAULT = 50


def _cmd_history(args: str) -> requests.Request:
    usage = "/history [#ROOM|@ACCOUNT] [N] or /history more"
    room: str | None = None
    peer: str | None = None
    limit: int | None = None
    for word in args.split():
        if word.lower() == "more" and room is None and peer is None and limit is None:
            return requests.HistoryRequest(more=True)
        if word.startswith("#") and room is None and peer is None:
            room = word[1:]
        elif word.startswith("@") and room is None and peer is None:
            peer = word[1:]
        elif word.isdigit() and limit is None and len(word) < 10:
            limit = min(int(word), HISTORY_MAX)
        else:
            return _usage(usage)
    return requests.HistoryRequest(room=room or None, peer=peer or None, limit=limit)


def _cmd_search(args: str) -> requests.Request:
    usage = '/search words ["a phrase"] [prefix*] [from:NICK] [in:ROOM] [before:DATE] [after:DATE]'
    words, filters = parse_filters(args)
    if not words.strip():
        return _usage(usage)
    times: dict[str, int] = {}
    for bound in ("before", "after"):
        if bound in filters:
            try:
                times[bound] = utctime.parse_millis(filters[bound])
            except ValueError:
                return requests.Invalid("bad_request", f"{bound}: a date such as 2026-11-25")
    room = filters.get("in")
    return requests.Search(
        text=words,
        sender=filters.get("from"),
        room=room.lstrip("#") if room else None,
        before_ms=times.get("before"),
        after_ms=times.get("after"),
    )


def _cmd_read(args: str) -> requests.Request:
    target, extra = _split(args)
    if extra:
        return _usage("/read [#ROOM|NICK] - mark it read up to now")
    target = target[1:] if target.startswith("#") else target
    return requests.MarkRead(target=target or None, read_ms=time.time_ns() // 1_000_000)


def _cmd_always_on(args: str) -> requests.Request:
    word = args.strip().lower()
    if word not in ("", "on", "off"):
        return _usage("/always-on [on|off]")
    return requests.AlwaysOn(on=None if not word else word == "on")


def _cmd_invite(args: str) -> requests.Request:
    target, rest = _split(args)
    room, extra = _split(rest)
    if not target or extra:
        return _usage("/invite NICK [#ROOM]")
    return requests.Invite(target=target, room=_room_arg(room) if room else None)


def _cmd_whois(args: str) -> requests.Request:
    target, extra = _split(args)
    return requests.Whois(target=target) if target and not extra else _usage("/whois NICK")


def _cmd_register(args: str) -> requests.Request:
    password = args.strip()
    if not password or " " in password:
        return _usage("/register PASSWORD (one word)")
    return requests.Register(password=password)


def _cmd_login(args: str) -> requests.Request:
    parts = args.split()
    if len(parts) != 2:
        return _usage("/login NAME PASSWORD")
    return requests.Login(name=parts[0], password=parts[1])


def _cmd_password(args: str) -> requests.Request:
    parts = args.split()
    if len(parts) != 2:
        return _usage("/password OLD NEW")
    return requests.ChangePassword(old=parts[0], new=parts[1])


def _moderation(action: str) -> Callable[[str], requests.Request]:
    def parse(args: str) -> requests.Request:
        room: str | None = None
        args = args.strip()
        if args.startswith("#"):
            word, args = _split(args)
            room = _room_arg(word)
        target, reason = _split(args)
        if not target:
            return _usage(f"/{action} [#ROOM] {'MASK|NAME' if 'ban' in action else 'NICK'}")
        return requests.Moderate(action=action, target=target, room=room, reason=reason)

    return parse


def _message_ref(args: str, usage: str) -> tuple[str, str] | requests.Invalid:
    """The message reference (`#a3f`) a command starts with, and the rest of its line."""
    ref, rest = _split(args)
    if not ref.startswith("#") or live.parse_ref(ref) is None:
        return _usage(usage)
    return ref, rest


def _cmd_react(args: str, on: bool = True) -> requests.Request:
    usage = "/react #REF REACTION" if on else "/unreact #REF REACTION"
    parsed = _message_ref(args, usage)
    if isinstance(parsed, requests.Invalid):
        return parsed
    ref, reaction = parsed
    if not reaction or " " in reaction:
        return _usage(usage)
    return requests.React(message=ref, reaction=reaction, on=on)


def _cmd_reply(args: str) -> requests.Request:
    parsed = _message_ref(args, "/reply #REF text")
    if isinstance(parsed, requests.Invalid):
        return parsed
    ref, text = parsed
    if not text:
        return _usage("/reply #REF text")
    return requests.Say(text=text, reply_to=ref)


def _cmd_edit(args: str) -> requests.Request:
    # Without a reference: your last message in the current room (you never see the
    # reference of your own messages: text mode does not echo them).
    if not args.strip().startswith("#"):
        if not args.strip():
            return _usage("/edit [#REF] new text")
        return requests.EditMessage(message="", text=args.strip())
    parsed = _message_ref(args, "/edit [#REF] new text")
    if isinstance(parsed, requests.Invalid):
        return parsed
    ref, text = parsed
    if not text:
        return _usage("/edit [#REF] new text")
    return requests.EditMessage(message=ref, text=text)


def _cmd_delete(args: str) -> requests.Request:
    if not args.strip():
        return requests.DeleteMessage(message="")
    parsed = _message_ref(args, "/delete [#REF] [reason]")
    if isinstance(parsed, requests.Invalid):
        return parsed
    ref, reason = parsed
    return requests.DeleteMessage(message=ref, reason=reason)


def _cmd_topiclock(args: str) -> requests.Request:
    room: str | None = None
    args = args.strip()
    if args.startswith("#"):
        word, args = _split(args)
        room = _room_arg(word)
    switch = args.strip().lower()
    if switch not in ("on", "off"):
        return _usage("/topiclock [#ROOM] on|off")
    return requests.TopicLock(locked=switch == "on", room=room)


COMMANDS: dict[str, tuple[Callable[[str], requests.Request], str]] = {
    "join": (_cmd_join, "/join ROOM - join a room (created if new) and make it current"),
    "leave": (_cmd_leave, "/leave [ROOM] [reason] - leave the current or named room"),
    "rooms": (lambda _: requests.ListRooms(), "/rooms - list rooms with member counts"),
    "who": (_cmd_who, "/who [ROOM] - list the members of a room"),
    "msg": (_cmd_msg, "/msg NICK text - send a private message"),
    "me": (_cmd_me, "/me action - describe an action"),
    "nick": (_cmd_nick, "/nick NEW - change your name"),
    "topic": (_cmd_topic, "/topic [#ROOM] [text] - show or set the topic"),
    "quit": (lambda a: requests.QuitRequest(reason=a.strip()), "/quit [reason] - leave the chat"),
    "history": (
        _cmd_history,
        "/history [#ROOM|@ACCOUNT] [N] - last N messages; /history more - older ones",
    ),
    "search": (
        _cmd_search,
        "/search words [from:NICK] [in:ROOM] [before:DATE] [after:DATE] - search what you may"
        ' read ("a phrase", prefix*)',
    ),
    "read": (_cmd_read, "/read [#ROOM|NICK] - mark a room or conversation read up to now"),
    "always-on": (
        _cmd_always_on,
        "/always-on [on|off] - stay in your rooms while no device is connected",
    ),
    "register": (_cmd_register, "/register PASSWORD - register your current name"),
    "login": (_cmd_login, "/login NAME PASSWORD - log in to your account"),
    "password": (_cmd_password, "/password OLD NEW - change your password"),
    "op": (_moderation("op"), "/op [#ROOM] NICK - make NICK an operator of the room"),
    "deop": (_moderation("deop"), "/deop [#ROOM] NICK - take operator status away"),
    "kick": (_moderation("kick"), "/kick [#ROOM] NICK [reason] - put NICK out of the room"),
    "ban": (_moderation("ban"), "/ban [#ROOM] MASK|NAME - ban a nick!user@host mask or account"),
    "unban": (_moderation("unban"), "/unban [#ROOM] MASK|NAME - lift a ban"),
    "mute": (_moderation("mute"), "/mute [#ROOM] NICK - NICK can no longer speak in the room"),
    "unmute": (_moderation("unmute"), "/unmute [#ROOM] NICK - lift a mute"),
    "topiclock": (_cmd_topiclock, "/topiclock [#ROOM] on|off - only operators set the topic"),
    "invite": (_cmd_invite, "/invite NICK [#ROOM] - invite NICK to the current or named room"),
    "away": (
        lambda a: requests.Away(message=a.strip() or None),
        "/away [message] - mark yourself away; /away alone: back",
    ),
    "realname": (
        lambda a: requests.SetRealname(realname=a.strip()),
        "/realname NAME - change the real name others see in whois",
    ),
    "whois": (_cmd_whois, "/whois NICK - who NICK is: account, rooms, away, idle time"),
    "reply": (_cmd_reply, "/reply #REF text - answer the message #REF (shown after each one)"),
    "react": (_cmd_react, "/react #REF REACTION - react to a message, e.g. /react #a3f +1"),
    "unreact": (
        lambda a: _cmd_react(a, on=False),
        "/unreact #REF REACTION - take a reaction back",
    ),
    "edit": (_cmd_edit, "/edit [#REF] new text - change your message (no #REF: your last)"),
    "delete": (
        _cmd_delete,
        "/delete [#REF] [reason] - delete a message of yours (operators: any); no #REF: your last",
    ),
    "help": (lambda _: requests.Help(), "/help - this list"),
}
ALIASES = {"part": "leave", "list": "rooms", "names": "who", "query": "msg", "exit": "quit"}

HELP_LINES = (
    "plain text goes to your current room; //text sends a line starting with /",
    "end a line with \\ to go on with the same message on the next line",
    *(usage for _, usage in COMMANDS.values()),
)


def parse_text_command(line: str) -> requests.Request:
    """Parse one line of a registered text-mode user."""
    if line.startswith("//"):
        return requests.Say(text=line[1:])
    if not line.startswith("/"):
        return requests.Say(text=line)
    name, _, args = line[1:].partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    entry = COMMANDS.get(name)
    if entry is None:
        return requests.Invalid("unknown_command", f"unknown command /{name}; try /help")
    return entry[0](args)


def parse_first_line(line: str) -> requests.Request:
    """A text-mode user's first line: `name`, `name password`, or `/login name password`."""
    words = line.split()
    if len(words) == 3 and words[0].lower() == "/login":
        # Said outright, so a login attempt whatever the name (and counted if it fails).
        return requests.Hello(name=words[1], password=words[2])
    if len(words) == 2:
        return requests.Hello(name=words[0], password=words[1], first_line=line.strip())
    return requests.Hello(name=line.strip())


def history_time(ts: float, now: float | None = None) -> str:
    """`12:01` for a message of the last 20 hours, else `2026-11-24 12:01` (UTC)."""
    now = time.time() if now is None else now
    pattern = "%H:%M" if now - ts < 20 * 3600 else "%Y-%m-%d %H:%M"
    return time.strftime(pattern, time.gmtime(ts))


def _continued(text: str) -> str:
    """A message's text with each line after the first marked as its continuation."""
    return text.replace("\n", CONTINUATION)


# How text mode shows the lines of a multiline message after its first.
CONTINUATION = "\n  | "


def _room_message_text(event: events.RoomMessage, several_rooms: bool) -> str:
    """`[dev] alice: text  #a3f`, with the message it replies to on a line above it."""
    where = f"[{event.room}] " if several_rooms else ""
    if event.status is not None:
        where += f"(to {event.status}s) "
    if event.kind == events.NOTICE:
        return f"{where}-{event.sender}- {_continued(event.text)}"
    # A message to a status is not stored (Hub.say_to_status): nothing to name.
    ref = "" if event.status is not None else "  " + live.short_ref(event.id)
    return _message_text(where, event.sender, event, ref)


def _private_text(event: events.PrivateMessage, both: bool) -> str:
    """`[private] alice: text  #a3f`; `alice -> bob:` when `both` (one's own message from
    another device, and history, where either may have sent it)."""
    who = f"{event.sender} -> {event.target}" if both else event.sender
    # A notice is not stored (and never named).
    ref = "" if event.kind == events.NOTICE else "  " + live.short_ref(event.id)
    return _message_text("[private] ", who, event, ref)


def _message_text(
    where: str, who: str, event: events.RoomMessage | events.PrivateMessage, ref: str
) -> str:
    """A message's lines: the message it replies to above it, its text (continuation lines
    marked) with its reference and whether it was edited, or that it was deleted, and its
    reactions below."""
    extra = event.extra
    head = ""
    if extra is not None and extra.reply_to is not None:
        quoted = f"{extra.reply_sender}: {extra.reply_excerpt}" if extra.reply_sender else "…"
        head = f"{where}↪ {quoted}\n"
    if extra is not None and extra.deleted:
        return f"{head}{where}{who}: (deleted){ref}"
    edited = " (edited)" if extra is not None and extra.edited else ""
    if event.kind == events.ACTION:
        body = f"{where}* {event.sender} {event.text}"
    else:
        body = f"{where}{who}: {event.text}"
    first, newline, rest = body.partition("\n")
    line = f"{head}{first}{ref}{edited}"
    if newline:
        line += CONTINUATION + _continued(rest)
    if extra is not None and extra.reactions:
        line += "\n    " + "  ".join(
            f"{reaction} {', '.join(people)}" for reaction, people in extra.reactions
        )
    return line


def _live_where(
    event: events.Reaction | events.MessageDeleted | events.MessageEdited, several_rooms: bool
) -> str:
    """Where a reaction, deletion or edit happened, as a message there shows it."""
    if event.room is None:
        return "[private] "
    return f"[{event.room}] " if several_rooms else ""


def _render_history(event: Event, several_rooms: bool) -> str | None:
    """A stored message: `(history) [12:01] alice: text`."""
    if isinstance(event, events.RoomMessage | events.PrivateMessage):
        event = replace(event, history=False)
    match event:
        case events.RoomMessage():
            line = _room_message_text(event, several_rooms)
        case events.PrivateMessage():
            line = _private_text(event, True)
        case _:
            return None
    return f"(history) [{history_time(event.ts)}] {line}"


def render_text(event: Event, several_rooms: bool) -> str | None:
    """How a text-mode user sees `event` (one or more lines, no terminator), or None."""
    if getattr(event, "history", False):
        return _render_history(event, several_rooms)
    match event:
        case events.RoomMessage():
            return _room_message_text(event, several_rooms)
        case events.PrivateMessage():
            return _private_text(event, event.own)  # own: sent from another of your devices
        case events.Reaction():
            where = _live_where(event, several_rooms)
            ref = live.short_ref(event.msgid)
            if event.on:
                return f"{where}--- {event.sender} reacted {event.reaction} to {ref}"
            return f"{where}--- {event.sender} took back {event.reaction} from {ref}"
        case events.MessageDeleted():
            where = _live_where(event, several_rooms)
            ref = live.short_ref(event.msgid)
            whose = "their" if event.by == event.sender else f"{event.sender}'s"
            reason = f" ({event.reason})" if event.reason else ""
            return f"{where}--- {event.by} deleted {whose} message {ref}{reason}"
        case events.MessageEdited():
            where = _live_where(event, several_rooms)
            ref = live.short_ref(event.msgid)
            return f"{where}--- {event.sender} edited {ref}: {_continued(event.text)}"
        case events.RoomRenamed():
            why = f" ({event.reason})" if event.reason else ""
            return f"--- {event.by} renamed {event.old} to {event.new}{why}"
        case events.Joined():
            return f"--> {event.nick} joined {event.room}"
        case events.Left():
            reason = f" ({event.reason})" if event.reason else ""
            return f"<-- {event.nick} left {event.room}{reason}"
        case events.Kicked():
            reason = f" ({event.reason})" if event.reason else ""
            return f"<-- {event.nick} was kicked from {event.room} by {event.by}{reason}"
        case events.Quit():
            return f"<-- {event.nick} quit ({event.reason})"
        case events.NickChanged():
            return f"--- {event.old} is now known as {event.new}"
        case events.TopicChanged():
            return f"--- {event.by} set the topic of {event.room}: {event.topic}"
        case events.TopicInfo():
            if not event.topic:
                return f"--- {event.room} has no topic"
            return f"--- topic of {event.room}: {event.topic} (set by {event.by})"
        case events.ServerNotice() | events.Notice():
            return "\n".join(f"--- {line}" for line in event.text.split("\n"))
        case events.Welcome():
            return f"--- welcome to {event.server}, {event.nick}! /help lists the commands"
        case events.RoomList():
            if not event.rooms:
                return "--- there are no rooms; /join ROOM creates one"
            return "\n".join(
                f"--- {r.name} ({r.members} member{'s' if r.members != 1 else ''})"
                + (f": {r.topic}" if r.topic else "")
                for r in event.rooms
            )
        case events.WhoList():
            return f"--- in {event.room}: {', '.join(event.members)}"
        case events.HelpText():
            return "\n".join(f"--- {line}" for line in event.lines)
        case events.Error():
            return f"!!! {event.message}"
        case events.ModeChanged():
            return _render_mode(event)
        case events.Invited(notify=True):
            return f"--- {event.by} invited {event.nick} to {event.room}"
        case events.Invited():
            return f"--- {event.by} invites you to {event.room} (/join {event.room})"
        case events.Wallops():
            return f"--- wallops from {event.sender}: {event.text}"
        case events.Killed():
            return f"!!! {event.by} disconnected you: {event.reason}"
        case events.UserInfo():
            return _render_user(event)
        case events.HistoryPage():
            return _render_page(event)
        case events.SearchResults():
            return _render_results(event)
        case events.ReadMarker(asked=False):
            return None  # another device's: a terminal shows every line, read or not
        case events.ReadMarker():
            where = event.target if event.room else f"your conversation with {event.target}"
            if not event.read_ms:
                return f"--- nothing read yet in {where}"
            return f"--- read up to {history_time(event.read_ms / 1000)} in {where}"
        case events.LoggedIn():
            return f"--- you are logged in as {event.account}"
        case events.Moderated():
            template = _MODERATION_TEXT.get(event.action, "--- {by}: {action} {target} in {room}")
            return template.format(
                by=event.by, action=event.action, target=event.target, room=event.room
            )
    return None


def _render_mode(event: events.ModeChanged) -> str:
    """A mode change in words: `--- alice made bob an operator, locked the topic in dev`, or
    for the user's own flags `--- you are now invisible`."""
    phrases = []
    for change in event.changes:
        # A mode the table does not name yet is still shown, by its core name, never dropped.
        on, off = _MODE_TEXT.get(change.mode) or _unnamed_mode_text(change.mode)
        phrases.append((on if change.add else off).format(arg=change.arg))
    if event.room is None:
        return "--- " + ", ".join(phrases)
    return f"--- {event.by} {', '.join(phrases)} in {event.room}"


# How text mode says each change: (when turned on, when turned off). {arg}: the change's
# argument (a nick, a ban entry, the key, the limit).
_MODE_TEXT: dict[Mode, tuple[str, str]] = {
    MemberStatus.OPERATOR: ("made {arg} an operator", "took operator status from {arg}"),
    MemberStatus.VOICE: ("gave {arg} voice", "took voice from {arg}"),
    RoomList.BAN: ("banned {arg}", "unbanned {arg}"),
    RoomList.BAN_EXCEPTION: ("let {arg} in despite bans", "removed the ban exception {arg}"),
    RoomList.INVITE_EXCEPTION: (
        "let {arg} in without an invitation",
        "removed the invitation exception {arg}",
    ),
    RoomFlag.SECRET: ("made the room secret", "made the room public"),
    RoomFlag.PRIVATE: ("made the room private", "made the room public"),
    RoomFlag.TOPIC_LOCKED: ("locked the topic", "unlocked the topic"),
    RoomFlag.NO_CTCP: ("blocked CTCP requests", "allowed CTCP requests"),
    RoomFlag.MODERATED: (
        "let only operators and voiced members speak",
        "let every member speak",
    ),
    RoomFlag.INVITE_ONLY: ("made the room invite-only", "opened the room to everyone"),
    RoomFlag.MEMBERS_ONLY: (
        "let only members send messages",
        "let non-members send messages",
    ),
    RoomSetting.KEY: ("set the room key to {arg}", "removed the room key"),
    RoomSetting.LIMIT: ("limited the room to {arg} members", "removed the member limit"),
    UserFlag.SERVER_OPERATOR: (
        "you are now a server operator",
        "you are no longer a server operator",
    ),
    UserFlag.INVISIBLE: ("you are now invisible", "you are no longer invisible"),
    UserFlag.WALLOPS: ("you now receive wallops", "you no longer receive wallops"),
    UserFlag.BOT: ("you are now marked as a bot", "you are no longer marked as a bot"),
}


def _unnamed_mode_text(mode: Mode) -> tuple[str, str]:
    name = mode.value.replace("_", " ")
    return (f"set {name} {{arg}}", f"unset {name} {{arg}}")


_MODERATION_TEXT = {
    "mute": "--- {by} muted {target} in {room}",
    "unmute": "--- {by} unmuted {target} in {room}",
}


def _render_user(info: events.UserInfo) -> str:
    account = f"logged in as {info.account}" if info.account else "a guest"
    lines = [f"--- {info.nick}: {account}" + (", server operator" if info.operator else "")]
    if info.realname:
        lines.append(f"--- {info.nick} is {info.realname}")
    if info.rooms:
        rooms = ", ".join(r + (f" ({', '.join(s)})" if s else "") for r, s in info.rooms)
        lines.append(f"--- {info.nick} is in {rooms}")
    if info.away:
        lines.append(f"--- {info.nick} is away: {info.away}")
    lines.append(f"--- {info.nick} has been idle {info.idle} s")
    return "\n".join(lines)


def _render_page(page: events.HistoryPage) -> str:
    where = page.room if page.room is not None else f"your conversation with {page.peer}"
    if not page.messages:
        return f"--- no (more) history in {where}"
    lines = [f"--- history of {where}:"]
    lines += [line for m in page.messages if (line := _render_history(m, True)) is not None]
    if page.more:
        lines.append("--- /history more shows older messages")
    return "\n".join(lines)


def _render_results(results: events.SearchResults) -> str:
    if not results.messages:
        return f"--- nothing found for {results.query}"
    lines = [f"--- found for {results.query}, newest first:"]
    lines += [line for m in results.messages if (line := _render_history(m, True)) is not None]
    return "\n".join(lines)


class LineProtocol:
    """Per-connection state of the native protocol: framing, mode, and both directions.

    The owner sets `registered` once the hub has accepted the user's name: before that a
    text-mode line is a name; after it, chat text or a command.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._framer = LineFramer(max_line)
        self.mode: str | None = None
        self.registered = False
        # Text mode: the lines of a message that goes on (each ended with `\`), or None.
        self._continued: list[str] | None = None

    @property
    def fatal(self) -> bool:
        """The peer broke framing beyond repair; the connection must be closed."""
        return self._framer.fatal

    @property
    def pending(self) -> int:
        """Bytes received of a line not yet ended (for the transport's line timeout)."""
        return self._framer.pending

    def receive_data(self, data: bytes) -> Iterator[requests.Request]:
        """Requests for the complete lines in `data`, parsed lazily one at a time.

        Lazily, so that when the caller registers the user on the first line, the next line
        of the same read is already parsed as a registered user's line.
        """
        for raw in self._framer.feed(data):
            if raw is None:
                limit = self._framer.max_line
                yield requests.Invalid("line_too_long", f"line dropped: over {limit} bytes")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield requests.Invalid("bad_encoding", "line dropped: it is not valid UTF-8")
                continue
            if not line.strip():
                continue
            if self.mode is None:
                self.mode = JSON_MODE if line.lstrip().startswith("{") else TEXT_MODE
            if self.mode == JSON_MODE:
                yield jsonlines.parse_line(line)
            elif self.registered:
                request = self._text_line(line)
                if request is not None:
                    yield request
            else:
                yield parse_first_line(line)

    def _text_line(self, line: str) -> requests.Request | None:
        """A registered text-mode line: a line ending in `\\` goes on to the next (one
        message, with line breaks), the line after a `\\` is text even if it starts with /."""
        going_on = line.endswith("\\") and not line.endswith("\\\\")
        if self._continued is None:
            if not going_on or (line.startswith("/") and not line.startswith("//")):
                return parse_text_command(line)
            first = line[1:] if line.startswith("//") else line
            self._continued = [first[:-1]]
            return None
        self._continued.append(line[:-1] if going_on else line)
        if len(self._continued) > live.MULTILINE_MAX_LINES:
            self._continued = None
            return requests.Invalid(
                "too_long", f"message dropped: over {live.MULTILINE_MAX_LINES} lines"
            )
        if going_on:
            return None
        text, self._continued = "\n".join(self._continued), None
        return requests.Say(text=text)

    # Until the first line shows the mode, speak text: a person behind nc reads it, and
    # JSON clients send their hello at once.

    def codec_key(self, several_rooms: bool) -> Hashable:
        if self.mode != JSON_MODE:
            return (TEXT_MODE, several_rooms)
        return JSON_MODE

    def encode(self, event: Event, several_rooms: bool = False) -> bytes | None:
        if self.mode != JSON_MODE:
            text = render_text(event, several_rooms)
            if text is None:
                return None
            # Whatever another protocol let through, a terminal behind nc must stay safe.
            lines = [strip_controls(line) for line in text.split("\n")]
            return ("\n".join(lines) + "\n").encode()
        return jsonlines.encode_event(event)
