"""How the terminal client shows server events: event dict in, styled lines out. Pure, no I/O.

A rendered line is a list of fragments `(style, text)`, where style is one of the tags below
(or "" for plain text). `to_plain` and `to_ansi` turn a line into the string to print.

Every string taken from an event passes `wire()`, which neutralises control characters, so no
other user (and no server) can move the cursor, retitle the window or otherwise drive the
reader's terminal; the ANSI codes in `to_ansi` are the only escape sequences that are printed.
"""

import contextlib
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from threadchat import names

Fragment = tuple[str, str]
Line = list[Fragment]

TIME = "time"
INFO = "info"
NOTICE = "notice"
ERROR = "error"
NICK_PREFIX = "nick:"

# Foreground colours a name may get: the 12 non-grey ANSI colours that read well on both dark
# and light backgrounds (black and white would vanish on one of them).
NICK_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
_SGR = {TIME: "2", INFO: "2", NOTICE: "33", ERROR: "1;31"}


def wire(value: object) -> str:
    """A value from the wire made safe to print: control characters replaced, non-text dropped."""
    if isinstance(value, str):
        return names.strip_controls(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def nick_style(name: str) -> str:
    """The style of `name`: the same for every spelling of the name, in every run."""
    # crc32 rather than hash(): str hashes are salted per process, colours must stay put.
    index = zlib.crc32(names.fold(name).encode()) % len(NICK_COLOURS)
    return f"{NICK_PREFIX}{index}"


def clock(ts: object, now: datetime) -> str:
    """Local time HH:MM of an RFC 3339 timestamp; `now` when the timestamp is missing or bad."""
    when = now
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(ts)
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%H:%M")


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and names.fold(a) == names.fold(b)


def _nick(name: str) -> Fragment:
    return (nick_style(name), name)


def _message(event: dict[str, Any], me: str | None, current_room: str | None) -> Line:
    sender = wire(event.get("from"))
    text = wire(event.get("text"))
    line: Line = []
    if event["type"] == "private":
        target = wire(event.get("to"))
        where = f"[private to {target}] " if _same(sender, me) else "[private] "
        line.append((INFO, where))
    else:
        room = wire(event.get("room"))
        if not _same(room, current_room):
            line.append((INFO, f"[{room}] "))
    if event.get("action") is True:
        line += [("", "* "), _nick(sender), ("", f" {text}")]
    elif event.get("notice") is True:
        line += [(NOTICE, "-"), _nick(sender), (NOTICE, "- "), ("", text)]
    else:
        line += [("", "<"), _nick(sender), ("", f"> {text}")]
    return [line]


def _info(*parts: Fragment | str) -> Line:
    return [(INFO, part) if isinstance(part, str) else part for part in parts]


def _body(event: dict[str, Any], me: str | None, current_room: str | None) -> list[Line]:
    kind = event.get("type")
    match kind:
        case "message" | "private":
            return _message(event, me, current_room)
        case "join":
            name = wire(event.get("name"))
            return [_info("--> ", _nick(name), f" joined {wire(event.get('room'))}")]
        case "leave":
            name, reason = wire(event.get("name")), wire(event.get("reason"))
            why = f" ({reason})" if reason else ""
            return [_info("<-- ", _nick(name), f" left {wire(event.get('room'))}{why}")]
        case "quit":
            name, reason = wire(event.get("name")), wire(event.get("reason"))
            return [_info("<-- ", _nick(name), " quit" + (f" ({reason})" if reason else ""))]
        case "nick":
            old, new = wire(event.get("old")), wire(event.get("new"))
            return [_info("--- ", _nick(old), " is now known as ", _nick(new))]
        case "topic":
            room, topic, by = (wire(event.get(k)) for k in ("room", "topic", "by"))
            if not topic:
                return [_info(f"--- {room} has no topic")]
            return [_info(f"--- topic of {room}: ", ("", topic), " (set by ", _nick(by), ")")]
        case "who":
            members = event.get("members")
            listed = [wire(m) for m in members] if isinstance(members, list) else []
            line = _info(f"--- in {wire(event.get('room'))}: ")
            for index, member in enumerate(listed):
                line += [(INFO, ", ")] if index else []
                line.append(_nick(member))
            return [line]
        case "rooms":
            rooms = event.get("rooms")
            rooms = [r for r in rooms if isinstance(r, dict)] if isinstance(rooms, list) else []
            if not rooms:
                return [_info("--- there are no rooms; /join ROOM creates one")]
            lines = []
            for room in rooms:
                count = wire(room.get("members"))
                topic = wire(room.get("topic"))
                text = f"--- {wire(room.get('name'))} ({count} member{'' if count == '1' else 's'})"
                lines.append(_info(text + (f": {topic}" if topic else "")))
            return lines
        case "welcome":
            name = wire(event.get("name"))
            server = wire(event.get("server"))
            return [_info(f"--- welcome to {server}, ", _nick(name), "! /help lists the commands")]
        case "notice":
            text = event.get("text")
            parts = text.split("\n") if isinstance(text, str) else []
            return [[(NOTICE, "--- " + wire(part))] for part in parts]
        case "error":
            return [[(ERROR, "!!! " + wire(event.get("message")))]]
    return []  # ok, ping, pong and types this client does not know: nothing to show


def render_event(
    event: dict[str, Any], *, me: str | None, current_room: str | None, now: datetime
) -> list[Line]:
    """The lines to show for `event` (possibly none), each starting with the local time.

    `me` is this user's name (own private messages read "[private to NAME]"), `current_room`
    the room plain lines go to (messages there carry no "[room]" prefix), `now` the time shown
    when the event has no usable "ts".
    """
    lines = _body(event, me, current_room)
    stamp = (TIME, clock(event.get("ts"), now) + " ")
    return [[stamp, *line] for line in lines]


def to_plain(line: Sequence[Fragment]) -> str:
    return "".join(text for _, text in line)


def _sgr(style: str) -> str | None:
    if style.startswith(NICK_PREFIX):
        return str(NICK_COLOURS[int(style[len(NICK_PREFIX) :])])
    return _SGR.get(style)


def to_ansi(line: Sequence[Fragment]) -> str:
    """The line with ANSI colours (SGR sequences), each reset at the end of its fragment."""
    out = []
    for style, text in line:
        code = _sgr(style)
        out.append(f"\x1b[{code}m{text}\x1b[0m" if code and text else text)
    return "".join(out)


def local_line(text: str, style: str = INFO, *, now: datetime) -> Line:
    """A line the client itself says (not from the wire), with the local time."""
    return [(TIME, now.strftime("%H:%M") + " "), (style, names.strip_controls(text))]
