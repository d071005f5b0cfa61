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
Say(text='hello', room=None, action=False, ref=None)
JoinRoom(room='dev', ref=None)
Say(text='/slash', room=None, action=False, ref=None)
"""

from collections.abc import Callable, Hashable, Iterator

from threadchat import events, requests
from threadchat.events import Event
from threadchat.names import strip_controls
from threadchat.protocols import jsonlines

# Long enough for any chat line a person types, short enough that one connection cannot make
# the server buffer much.
DEFAULT_MAX_LINE = 4096
# A peer that sends this much without a single newline is not speaking a line protocol.
MAX_UNTERMINATED = 64 * 1024

TEXT_MODE = "text"
JSON_MODE = "json"


class LineFramer:
    """Splits a byte stream into lines (LF or CRLF) and enforces the length limits.

    `feed` returns complete lines (without terminator) and `None` for each over-long line,
    which is dropped; `fatal` is set once the peer has sent MAX_UNTERMINATED bytes with no LF.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.fatal = False
        self._buffer = b""
        # While discarding the rest of an over-long line: how many bytes were dropped so far.
        self._discarded: int | None = None

    def feed(self, data: bytes) -> list[bytes | None]:
        if self.fatal:
            return []
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
            if part.endswith(b"\r"):
                part = part[:-1]
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
    "help": (lambda _: requests.Help(), "/help - this list"),
}
ALIASES = {"part": "leave", "list": "rooms", "names": "who", "query": "msg", "exit": "quit"}

HELP_LINES = (
    "plain text goes to your current room; //text sends a line starting with /",
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


def render_text(event: Event, several_rooms: bool) -> str | None:
    """How a text-mode user sees `event` (one or more lines, no terminator), or None."""
    match event:
        case events.RoomMessage():
            where = f"[{event.room}] " if several_rooms else ""
            if event.kind == events.ACTION:
                return f"{where}* {event.sender} {event.text}"
            if event.kind == events.NOTICE:
                return f"{where}-{event.sender}- {event.text}"
            return f"{where}{event.sender}: {event.text}"
        case events.PrivateMessage():
            if event.kind == events.ACTION:
                return f"[private] * {event.sender} {event.text}"
            return f"[private] {event.sender}: {event.text}"
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
            args = " ".join(event.args)
            where = f" on {event.room}" if event.room is not None else ""
            return f"--- {event.by} sets mode {event.changes} {args}".rstrip() + where
        case events.Invited():
            return f"--- {event.by} invites you to {event.room} (/join {event.room})"
        case events.Wallops():
            return f"--- wallops from {event.sender}: {event.text}"
        case events.Killed():
            return f"!!! {event.by} disconnected you: {event.reason}"
    return None


class LineProtocol:
    """Per-connection state of the native protocol: framing, mode, and both directions.

    The owner sets `registered` once the hub has accepted the user's name: before that a
    text-mode line is a name; after it, chat text or a command.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._framer = LineFramer(max_line)
        self.mode: str | None = None
        self.registered = False

    @property
    def fatal(self) -> bool:
        """The peer broke framing beyond repair; the connection must be closed."""
        return self._framer.fatal

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
                yield parse_text_command(line)
            else:
                yield requests.Hello(name=line.strip())

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
