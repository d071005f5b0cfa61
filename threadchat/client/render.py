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

from threadchat.core import names

Fragment = tuple[str, str]
Line = list[Fragment]

TIME = "time"
INFO = "info"
NOTICE = "notice"
ERROR = "error"
NICK_PREFIX = "nick:"
# Marks a fragment of a stored (history) message: shown dimmed, in whatever colour it has.
HISTORY_PREFIX = "history:"

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


def _local(ts: object, now: datetime) -> datetime:
    when = now
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(ts)
    return when.astimezone() if when.tzinfo is not None else when


def clock(ts: object, now: datetime) -> str:
    """Local time HH:MM of an RFC 3339 timestamp; `now` when the timestamp is missing or bad."""
    return _local(ts, now).strftime("%H:%M")


def history_clock(ts: object, now: datetime) -> str:
    """Local HH:MM of a stored message, preceded by its date unless that is today's."""
    when = _local(ts, now)
    today = now.astimezone().date() if now.tzinfo is not None else now.date()
    return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")


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


def _history_message(
    event: dict[str, Any], me: str | None, current_room: str | None, now: datetime
) -> Line:
    """A stored message: its own date and time, "(history)", the message, all dimmed."""
    if event.get("type") not in ("message", "private"):
        return []
    body = _message(event, me, current_room)[0]
    stamp = history_clock(event.get("ts"), now)
    line = [(TIME, f"{stamp} "), (INFO, "(history) "), *body]
    return [(HISTORY_PREFIX + style, text) for style, text in line]


def _history_page(
    event: dict[str, Any], me: str | None, current_room: str | None, now: datetime
) -> list[Line]:
    peer = wire(event.get("with"))
    where = f"your conversation with {peer}" if peer else wire(event.get("room"))
    messages = event.get("messages")
    stored = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    if all(isinstance(m.get("id"), int) for m in stored):
        # The server sends pages oldest first; sorting costs nothing and keeps that promise.
        stored.sort(key=lambda m: m["id"])
    shown = [line for m in stored if (line := _history_message(m, me, None, now))]
    if not shown:
        return [_info(f"--- no (more) history in {where}")]
    lines = [_info(f"--- history of {where}:"), *shown]
    if event.get("more") is True:
        lines.append(_info("--- /history more shows older messages"))
    return lines


# Room mode letters the native commands set, as words: (when added, when removed).
_MODE_WORDS = {
    "o": ("made {arg} an operator", "took operator status from {arg}"),
    "v": ("gave {arg} voice", "took voice from {arg}"),
    "b": ("banned {arg}", "unbanned {arg}"),
    "t": ("locked the topic", "unlocked the topic"),
}


def _mode(event: dict[str, Any]) -> Line:
    by, changes = wire(event.get("by")), wire(event.get("changes"))
    raw_args = event.get("args")
    args = [wire(a) for a in raw_args] if isinstance(raw_args, list) else []
    room = event.get("room")
    if not isinstance(room, str):
        target = wire(event.get("name"))
        return _info(
            "--- ", _nick(by), f" sets mode {changes} {' '.join(args)}".rstrip() + f" on {target}"
        )
    phrases: list[str] = []
    sign = "+"
    pending = list(args)
    for letter in changes:
        if letter in "+-":
            sign = letter
            continue
        words = _MODE_WORDS.get(letter)
        if words is None or (letter != "t" and not pending):
            # A mode this client has no words for: say it as IRC would.
            phrases = []
            break
        template = words[0] if sign == "+" else words[1]
        phrases.append(template.format(arg=pending.pop(0) if letter != "t" else ""))
    if not phrases:
        detail = f" sets mode {changes} {' '.join(args)}".rstrip()
        return _info("--- ", _nick(by), f"{detail} on {wire(room)}")
    return _info("--- ", _nick(by), f" {', '.join(phrases)} in {wire(room)}")


def _room_with_status(room: dict[str, Any]) -> str:
    status = room.get("status")
    words = [wire(s) for s in status] if isinstance(status, list) else []
    return wire(room.get("name")) + (f" ({', '.join(words)})" if words else "")


def _whois(event: dict[str, Any]) -> list[Line]:
    name, account = wire(event.get("name")), event.get("account")
    who = f" is logged in as {wire(account)}" if isinstance(account, str) else " is a guest"
    oper = ", server operator" if event.get("operator") is True else ""
    lines = [_info("--- ", _nick(name), who + oper)]
    rooms = event.get("rooms")
    rooms = [r for r in rooms if isinstance(r, dict)] if isinstance(rooms, list) else []
    if rooms:
        listed = ", ".join(_room_with_status(r) for r in rooms)
        lines.append(_info("--- ", _nick(name), f" is in {listed}"))
    away = event.get("away")
    if isinstance(away, str):
        lines.append(_info("--- ", _nick(name), f" is away: {wire(away)}"))
    lines.append(_info("--- ", _nick(name), f" has been idle {wire(event.get('idle'))} s"))
    return lines


def _body(
    event: dict[str, Any], me: str | None, current_room: str | None, now: datetime
) -> list[Line]:
    kind = event.get("type")
    match kind:
        case "message" | "private" if event.get("history") is True:
            return [_history_message(event, me, current_room, now)]
        case "message" | "private":
            return _message(event, me, current_room)
        case "history":
            return _history_page(event, me, current_room, now)
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
        case "logged_in":
            return [_info("--- you are logged in as ", _nick(wire(event.get("account"))))]
        case "mode":
            return [_mode(event)]
        case "moderation":
            by, action = wire(event.get("by")), wire(event.get("action"))
            target, room = wire(event.get("target")), wire(event.get("room"))
            verb = {"mute": "muted", "unmute": "unmuted"}.get(action, action)
            return [_info("--- ", _nick(by), f" {verb} {target} in {room}")]
        case "away":
            name, away = wire(event.get("name")), event.get("away")
            if isinstance(away, str):
                return [_info("--- ", _nick(name), f" is away: {wire(away)}")]
            return [_info("--- ", _nick(name), " is back")]
        case "invite":
            room, by = wire(event.get("room")), wire(event.get("by"))
            return [_info("--- ", _nick(by), f" invites you to {room} (/join {room})")]
        case "whois":
            return _whois(event)
        case "wallops":
            text = wire(event.get("text"))
            return [
                [
                    (NOTICE, "--- wallops from "),
                    _nick(wire(event.get("from"))),
                    (NOTICE, f": {text}"),
                ]
            ]
    return []  # ok, ping, pong and types this client does not know: nothing to show


def render_event(
    event: dict[str, Any], *, me: str | None, current_room: str | None, now: datetime
) -> list[Line]:
    """The lines to show for `event` (possibly none), each starting with the local time.

    `me` is this user's name (own private messages read "[private to NAME]"), `current_room`
    the room plain lines go to (messages there carry no "[room]" prefix), `now` the time shown
    when the event has no usable "ts". Stored messages (`"history": true`, and the messages
    of a `history` page) show their own date and time, marked "(history)" and dimmed.
    """
    lines = _body(event, me, current_room, now)
    stamp = (TIME, clock(event.get("ts"), now) + " ")
    # Stored messages carry their own (dated) stamp.
    return [line if _is_history(line) else [stamp, *line] for line in lines]


def _is_history(line: Line) -> bool:
    return bool(line) and line[0][0].startswith(HISTORY_PREFIX)


def to_plain(line: Sequence[Fragment]) -> str:
    return "".join(text for _, text in line)


def _sgr(style: str) -> str | None:
    if style.startswith(HISTORY_PREFIX):
        inner = _sgr(style[len(HISTORY_PREFIX) :])
        return "2" + (f";{inner}" if inner and inner != "2" else "")
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
