"""The native JSON event schema: requests from dicts, events to dicts.

Shared by every transport that carries JSON (TCP JSON mode, UDP datagrams, WebSocket frames);
`docs/protocol.md` is the reference. Pure functions, no I/O.
"""

import json
from datetime import UTC, datetime
from typing import Any

from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.history import MAX_REF, Ref
from threadchat.core.live import MessageExtra
from threadchat.core.modes import (
    MemberStatus,
    Mode,
    ModeChange,
    RoomFlag,
    RoomList,
    RoomSetting,
    UserFlag,
)
from threadchat.protocols import utctime
from threadchat.protocols.mode_letters import letters_and_args
from threadchat.protocols.native import requests


def timestamp(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-25T12:00:00.123Z."""
    text = utctime.millis(ts)
    return _timestamp_general(ts) if text is None else text


def _timestamp_general(ts: float) -> str:
    # The reference for `utctime.millis`; still formats times before 1970 or after 9999.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _kind_fields(kind: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"action": kind == events.ACTION}
    if kind == events.NOTICE:
        fields["notice"] = True
    return fields


def event_to_dict(event: Event) -> dict[str, Any] | None:
    """The JSON object for `event`, or None for events this schema does not carry."""
    body: dict[str, Any]
    match event:
        case events.RoomMessage():
            body = {"type": "message", "room": event.room, "from": event.sender}
            body["text"] = event.text
            body.update(_kind_fields(event.kind))
            if event.history:
                body["history"] = True
            if event.own:
                body["own"] = True
            if event.status is not None:
                body["status"] = str(event.status)
            if event.extra is not None:
                body.update(_extra_fields(event.extra))
            body["msgid"] = event.id
        case events.PrivateMessage():
            body = {"type": "private", "from": event.sender, "to": event.target}
            body["text"] = event.text
            body.update(_kind_fields(event.kind))
            if event.history:
                body["history"] = True
            if event.own:
                body["own"] = True
            if event.extra is not None:
                body.update(_extra_fields(event.extra))
            body["msgid"] = event.id
        case events.Reaction():
            body = {"type": "react", **_conversation(event), "from": event.sender}
            body.update(msgid=event.msgid, reaction=event.reaction, on=event.on)
        case events.MessageDeleted():
            body = {"type": "delete", **_conversation(event), "msgid": event.msgid}
            body["by"] = event.by
            body["from"] = event.sender
            body["reason"] = event.reason
        case events.MessageEdited():
            body = {"type": "edit", **_conversation(event), "msgid": event.msgid}
            body["from"] = event.sender
            body["text"] = event.text
        case events.Typing():
            body = {"type": "typing", **_conversation(event), "from": event.sender}
            body["state"] = event.state
        case events.HistoryPage():
            body = _history_page(event)
        case events.SearchResults():
            body = {"type": "search", "query": event.query}
            body["messages"] = [m for m in map(event_to_dict, event.messages) if m is not None]
            if event.ref is not None:
                body["ref"] = event.ref
        case events.ReadMarker():
            body = {"type": "read", "target": event.target, "room": event.room}
            body["read"] = timestamp(event.read_ms / 1000) if event.read_ms else None
            if event.ref is not None:
                body["ref"] = event.ref
        case events.LoggedIn():
            body = {"type": "logged_in", "account": event.account}
            if event.ref is not None:
                body["ref"] = event.ref
        case events.Moderated():
            body = {"type": "moderation", "room": event.room, "by": event.by}
            body["action"] = event.action
            body["target"] = event.target
        case events.Joined():
            body = {"type": "join", "room": event.room, "name": event.nick}
        case events.Left():
            body = {"type": "leave", "room": event.room, "name": event.nick}
            body["reason"] = event.reason
        case events.Kicked():
            body = {"type": "leave", "room": event.room, "name": event.nick}
            body["reason"] = f"kicked by {event.by}" + (f": {event.reason}" if event.reason else "")
        case events.Quit():
            body = {"type": "quit", "name": event.nick, "reason": event.reason}
        case events.NickChanged():
            body = {"type": "nick", "old": event.old, "new": event.new}
        case events.TopicChanged():
            body = {"type": "topic", "room": event.room, "topic": event.topic, "by": event.by}
        case events.TopicInfo():
            body = {"type": "topic", "room": event.room, "topic": event.topic, "by": event.by}
        case events.ServerNotice() | events.Notice():
            body = {"type": "notice", "text": event.text}
        case events.Welcome():
            body = {"type": "welcome", "name": event.nick, "server": event.server}
        case events.RoomList():
            rooms = [{"name": r.name, "members": r.members, "topic": r.topic} for r in event.rooms]
            body = {"type": "rooms", "rooms": rooms}
        case events.WhoList():
            body = {"type": "who", "room": event.room, "members": list(event.members)}
        case events.HelpText():
            body = {"type": "notice", "text": "\n".join(event.lines)}
        case events.Ok():
            body = {"type": "ok", "ref": event.ref}
            if event.msgid is not None:
                body["msgid"] = event.msgid
        case events.Error():
            body = {"type": "error", "code": event.code, "message": event.message}
            if event.ref is not None:
                body["ref"] = event.ref
        case events.Ping():
            body = {"type": "ping", "token": event.token}
        case events.Pong():
            body = {"type": "pong", "token": event.token}
        case events.ModeChanged():
            letters, args = legacy_mode_letters(event.changes)
            body = {"type": "mode", "by": event.by, "changes": letters, "args": args}
            body.update({"room": event.room} if event.room is not None else {"name": event.target})
            body["modes"] = [mode_to_dict(change) for change in event.changes]
        case events.AwayChanged():
            body = {"type": "away", "name": event.nick, "away": event.away}
        case events.Invited():
            body = {"type": "invite", "room": event.room, "name": event.nick, "by": event.by}
            if event.notify:  # told to the room's members, not to the invitee
                body["notify"] = True
        case events.Wallops():
            body = {"type": "wallops", "from": event.sender, "text": event.text}
        case events.Killed():
            body = {"type": "notice", "text": f"{event.by} disconnected you: {event.reason}"}
        case events.UserInfo():
            body = _user_info(event)
        case events.MetadataValues():
            body = {"type": "metadata", **_holder(event.room, event.nick)}
            body["values"] = dict(event.values)
            body["subscriptions"] = list(event.subscriptions)
            if event.ref is not None:
                body["ref"] = event.ref
        case events.RoomRenamed():
            body = {"type": "rename", "room": event.old, "new": event.new, "by": event.by}
            body["reason"] = event.reason
        case events.MetadataChanged():
            body = {"type": "metadata_changed", **_holder(event.room, event.nick)}
            body.update(key=event.key, value=event.value)
        case _:
            return None
    body["id"] = event.id
    body["ts"] = timestamp(event.ts)
    return body


def _holder(room: str | None, nick: str) -> dict[str, str]:
    return {"room": room} if room is not None else {"name": nick}


def _conversation(
    event: events.Reaction | events.MessageDeleted | events.MessageEdited | events.Typing,
) -> dict[str, str]:
    """Where a reaction, deletion, edit or typing notice happened: `room`, or in a private
    conversation `to`, the other person than the one who acted (as a private message's
    `from` and `to`)."""
    return {"room": event.room} if event.room is not None else {"to": event.target}


def _extra_fields(extra: MessageExtra) -> dict[str, Any]:
    """A message's reply, edit and deletion marks and reactions (only those it has)."""
    fields: dict[str, Any] = {}
    if extra.reply_to is not None:
        fields["reply_to"] = extra.reply_to
        if extra.reply_sender:
            fields["reply"] = {"from": extra.reply_sender, "text": extra.reply_excerpt}
    if extra.edited:
        fields["edited"] = True
    if extra.deleted:
        fields["deleted"] = True
    if extra.reactions:
        fields["reactions"] = [
            {"reaction": reaction, "from": list(people), "count": len(people)}
            for reaction, people in extra.reactions
        ]
    return fields


def _user_info(event: events.UserInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "whois", "name": event.nick, "account": event.account}
    body["realname"] = event.realname
    body["rooms"] = [{"name": room, "status": list(statuses)} for room, statuses in event.rooms]
    body["away"] = event.away
    body["operator"] = event.operator
    body["idle"] = event.idle
    body["signon"] = timestamp(event.signon)
    if event.ref is not None:
        body["ref"] = event.ref
    return body


def mode_to_dict(change: ModeChange) -> dict[str, Any]:
    """One change of a `mode` event: `{"mode": "operator", "on": true, "arg": "bob"}`; the
    mode names are the core's (`core/modes.py`), `arg` only when the change has one."""
    item: dict[str, Any] = {"mode": change.mode.value, "on": change.add}
    if change.arg is not None:
        item["arg"] = change.arg
    return item


# The `changes` and `args` fields of a `mode` event, written before `modes` existed, spell
# the changes in IRC's letters; they stay, unchanged, for the clients that read them. This
# is the JSON schema's own copy of those letters (a protocol imports no other protocol).
_LEGACY_LETTERS: dict[Mode, str] = {
    RoomFlag.INVITE_ONLY: "i",
    RoomFlag.MODERATED: "m",
    RoomFlag.MEMBERS_ONLY: "n",
    RoomFlag.TOPIC_LOCKED: "t",
    RoomSetting.KEY: "k",
    RoomSetting.LIMIT: "l",
    RoomList.BAN: "b",
    RoomList.BAN_EXCEPTION: "e",
    RoomList.INVITE_EXCEPTION: "I",
    RoomFlag.SECRET: "s",
    RoomFlag.PRIVATE: "p",
    RoomFlag.NO_CTCP: "C",
    MemberStatus.OPERATOR: "o",
    MemberStatus.VOICE: "v",
    UserFlag.INVISIBLE: "i",
    UserFlag.SERVER_OPERATOR: "o",
    UserFlag.WALLOPS: "w",
}


def legacy_mode_letters(changes: tuple[ModeChange, ...]) -> tuple[str, list[str]]:
    """The `changes` ("+o-v") and `args` (["bob", "tom"]) fields of a `mode` event; a removed
    key has the argument "*", as these fields always showed it."""
    return letters_and_args(changes, _LEGACY_LETTERS)


def _history_page(event: events.HistoryPage) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "history"}
    if event.room is not None:
        body["room"] = event.room
    if event.peer is not None:
        body["with"] = event.peer
    body["messages"] = [m for m in map(event_to_dict, event.messages) if m is not None]
    body["more"] = event.more
    if event.ref is not None:
        body["ref"] = event.ref
    return body


def encode_event(event: Event) -> bytes | None:
    """One JSON line (compact, UTF-8, LF-terminated) for `event`."""
    cls = type(event)
    if cls is events.RoomMessage or cls is events.PrivateMessage:
        try:
            line = _chat_line(event)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            # Not the usual shape (a field of another type, a lone surrogate, ...): the general
            # path produces, or raises, whatever it always did.
            line = None
        if line is not None:
            return line
    return _encode_event_general(event)


def _encode_event_general(event: Event) -> bytes | None:
    # Every event, and the reference that `_chat_line` must match byte for byte.
    body = event_to_dict(event)
    if body is None:
        return None
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# What json.dumps(ensure_ascii=False) quotes every string with (the C version when built).
_quote = json.encoder.encode_basestring
# The message kind's fields as `_kind_fields` gives them, already in JSON.
_KIND_JSON = {
    events.ACTION: ',"action":true',
    events.NOTICE: ',"action":false,"notice":true',
}


def _chat_line(event: events.RoomMessage | events.PrivateMessage) -> bytes | None:
    """The line `_encode_event_general` gives a chat message, built without a dict or dumps.

    Messages are what fan-out encodes most. None when the shortcut cannot promise the same
    bytes; TypeError when a text field is not a string (the caller falls back on both).
    """
    if type(event.id) is not int or type(event.kind) is not str:
        return None  # e.g. a bool id would be "true" in JSON, "True" in an f-string
    if event.extra is not None or (type(event) is events.RoomMessage and event.status is not None):
        # A reply, history's marks and reactions, or a message to a status: the general
        # path adds them.
        return None
    ts = utctime.millis(event.ts)
    if ts is None:
        return None
    if type(event) is events.RoomMessage:
        head = (
            f'{{"type":"message","room":{_quote(event.room)},"from":{_quote(event.sender)},'
            f'"text":{_quote(event.text)}'
        )
    else:
        head = (
            f'{{"type":"private","from":{_quote(event.sender)},"to":{_quote(event.target)},'
            f'"text":{_quote(event.text)}'
        )
    kind = _KIND_JSON.get(event.kind, ',"action":false')
    history = ',"history":true' if event.history else ""
    if event.own:
        history += ',"own":true'
    # A formatted time has only digits, '-', ':', 'T', '.' and 'Z': nothing to escape.
    return f'{head}{kind}{history},"msgid":{event.id},"id":{event.id},"ts":"{ts}"}}\n'.encode()


class _BadRequest(Exception):
    pass


def _text(obj: dict[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise _BadRequest(f'"{key}" is required')
        return default
    if not isinstance(value, str):
        raise _BadRequest(f'"{key}" must be a string')
    return value


def _encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8: JSON's escapes can spell a lone surrogate."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _echoed_text(obj: dict[str, Any], key: str) -> str:
    """An optional string the server sends straight back (a ping's token): the hub checks no
    such field, so a lone surrogate, which could not be sent back, is refused here."""
    value = _text(obj, key, required=False)
    if not _encodable(value):
        raise _BadRequest(f'"{key}" must be valid Unicode')
    return value


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    return _text(obj, key) if obj.get(key) is not None else None


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise _BadRequest(f'"{key}" must be true or false')
    return value


def _history_ref(obj: dict[str, Any], key: str) -> Ref | None:
    """A history bound: an integer is a message id, a string an RFC 3339 time."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Ref.msgid(value)
        except ValueError:
            raise _BadRequest(f'"{key}" is out of range') from None
    if isinstance(value, str):
        try:
            return Ref.at(utctime.parse_millis(value))
        except ValueError:
            raise _BadRequest(f'"{key}" must be a message id or an RFC 3339 time') from None
    raise _BadRequest(f'"{key}" must be a message id or an RFC 3339 time')


def _time_ms(obj: dict[str, Any], key: str) -> int | None:
    """An RFC 3339 time, as ms since the epoch (None when absent)."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRequest(f'"{key}" must be an RFC 3339 time')
    try:
        ms = utctime.parse_millis(value)
    except ValueError:
        raise _BadRequest(f'"{key}" must be an RFC 3339 time') from None
    if not 0 <= ms <= MAX_REF:
        raise _BadRequest(f'"{key}" is out of range')
    return ms


def _limit(obj: dict[str, Any]) -> int | None:
    value = obj.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadRequest('"limit" must be a non-negative integer')
    return value


def _metadata_request(obj: dict[str, Any], ref: object) -> requests.MetadataRequest:
    operation = _text(obj, "op", required=False) or "get"
    if operation not in requests.METADATA_OPERATIONS:
        raise _BadRequest(f'"op" must be one of {", ".join(requests.METADATA_OPERATIONS)}')
    keys = obj.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _BadRequest('"keys" must be a list of strings')
    return requests.MetadataRequest(
        operation=operation,
        room=_optional_text(obj, "room"),
        name=_optional_text(obj, "name"),
        key=_text(obj, "key", required=operation == "set"),
        value=_optional_text(obj, "value"),
        keys=tuple(keys),
        ref=ref,
    )


def _msgid(obj: dict[str, Any], key: str, *, required: bool = True) -> int | None:
    """A message id field: a positive integer."""
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 2**62:
        raise _BadRequest(f'"{key}" must be a message id (a positive integer)')
    return value


def _build_live(kind: str, obj: dict[str, Any], ref: object) -> requests.Request | None:
    """Requests about messages already sent (reactions, deletions, edits) and typing."""
    match kind:
        case "react":
            msgid = _msgid(obj, "msgid")
            assert msgid is not None
            return requests.React(
                message=msgid,
                reaction=_text(obj, "reaction"),
                on=_flag_default(obj, "on", True),
                room=_optional_text(obj, "room"),
                ref=ref,
                to=_optional_text(obj, "to"),
            )
        case "delete":
            msgid = _msgid(obj, "msgid")
            assert msgid is not None
            return requests.DeleteMessage(
                message=msgid,
                reason=_text(obj, "reason", required=False),
                room=_optional_text(obj, "room"),
                ref=ref,
                to=_optional_text(obj, "to"),
            )
        case "edit":
            msgid = _msgid(obj, "msgid")
            assert msgid is not None
            return requests.EditMessage(
                message=msgid,
                text=_text(obj, "text"),
                room=_optional_text(obj, "room"),
                ref=ref,
                to=_optional_text(obj, "to"),
            )
        case "typing":
            return requests.TypingNotice(
                state=_text(obj, "state", required=False, default="active"),
                room=_optional_text(obj, "room"),
                ref=ref,
                to=_optional_text(obj, "to"),
            )
    return None


def _flag_default(obj: dict[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise _BadRequest(f'"{key}" must be true or false')
    return value


def _build_extra(kind: str, obj: dict[str, Any], ref: object) -> requests.Request | None:
    """Requests of history, accounts, moderation and messages already sent."""
    live_request = _build_live(kind, obj, ref)
    if live_request is not None:
        return live_request
    match kind:
        case "history":
            return requests.HistoryRequest(
                room=_optional_text(obj, "room"),
                peer=_optional_text(obj, "with"),
                before=_history_ref(obj, "before"),
                after=_history_ref(obj, "after"),
                limit=_limit(obj),
                ref=ref,
                around=_history_ref(obj, "around"),
            )
        case "register":
            return requests.Register(password=_text(obj, "password"), ref=ref)
        case "login":
            return requests.Login(name=_text(obj, "name"), password=_text(obj, "password"), ref=ref)
        case "password":
            return requests.ChangePassword(old=_text(obj, "old"), new=_text(obj, "new"), ref=ref)
        case "search":
            return requests.Search(
                text=_text(obj, "text"),
                sender=_optional_text(obj, "from"),
                room=_optional_text(obj, "room"),
                before_ms=_time_ms(obj, "before"),
                after_ms=_time_ms(obj, "after"),
                limit=_limit(obj),
                ref=ref,
            )
        case "read":
            return requests.MarkRead(
                target=_optional_text(obj, "target"), read_ms=_time_ms(obj, "read"), ref=ref
            )
        case "always_on":
            on = obj.get("on")
            if on is not None and not isinstance(on, bool):
                raise _BadRequest('"on" must be true or false')
            return requests.AlwaysOn(on=on, ref=ref)
        case "metadata":
            return _metadata_request(obj, ref)
        case "topiclock":
            on = obj.get("on", True)
            if not isinstance(on, bool):
                raise _BadRequest('"on" must be true or false')
            return requests.TopicLock(locked=on, room=_optional_text(obj, "room"), ref=ref)
    if kind in requests.MODERATION_ACTIONS:
        return requests.Moderate(
            action=kind,
            target=_text(obj, "name"),
            room=_optional_text(obj, "room"),
            reason=_text(obj, "reason", required=False),
            ref=ref,
        )
    return None


def _build(kind: str, obj: dict[str, Any], ref: object) -> requests.Request | None:
    match kind:
        case "hello":
            return requests.Hello(
                name=_text(obj, "name"), ref=ref, password=_optional_text(obj, "password")
            )
        case "say":
            status = _optional_text(obj, "status")
            if status is not None and status not in ("operator", "voice"):
                raise _BadRequest('"status" must be "operator" or "voice"')
            return requests.Say(
                text=_text(obj, "text"),
                room=_optional_text(obj, "room"),
                action=_flag(obj, "action"),
                ref=ref,
                status=status,
                reply_to=_msgid(obj, "reply_to", required=False),
            )
        case "msg":
            return requests.SendPrivate(
                target=_text(obj, "to"),
                text=_text(obj, "text"),
                action=_flag(obj, "action"),
                ref=ref,
                reply_to=_msgid(obj, "reply_to", required=False),
            )
        case "join":
            return requests.JoinRoom(room=_text(obj, "room"), ref=ref)
        case "leave":
            return requests.LeaveRoom(
                room=_optional_text(obj, "room"),
                reason=_text(obj, "reason", required=False),
                ref=ref,
            )
        case "nick":
            return requests.ChangeNick(name=_text(obj, "name"), ref=ref)
        case "topic":
            return requests.Topic(
                room=_optional_text(obj, "room"), topic=_optional_text(obj, "topic"), ref=ref
            )
        case "rooms":
            return requests.ListRooms(ref=ref)
        case "who":
            return requests.Who(room=_optional_text(obj, "room"), ref=ref)
        case "help":
            return requests.Help(ref=ref)
        case "ping":
            return requests.ClientPing(token=_echoed_text(obj, "token"), ref=ref)
        case "pong":
            return requests.ClientPong(token=_text(obj, "token", required=False), ref=ref)
        case "quit":
            return requests.QuitRequest(reason=_text(obj, "reason", required=False), ref=ref)
        case "invite":
            return requests.Invite(
                target=_text(obj, "name"), room=_optional_text(obj, "room"), ref=ref
            )
        case "away":
            return requests.Away(message=_optional_text(obj, "message"), ref=ref)
        case "whois":
            return requests.Whois(target=_text(obj, "name"), ref=ref)
        case "realname":
            return requests.SetRealname(realname=_text(obj, "realname"), ref=ref)
    return _build_extra(kind, obj, ref)


def parse_request(obj: object) -> requests.Request:
    """Turn one decoded JSON value into a request; problems become `requests.Invalid`."""
    if not isinstance(obj, dict):
        return requests.Invalid("bad_request", "each line must be a JSON object")
    ref = obj.get("ref")
    if (ref is not None and not isinstance(ref, str | int)) or isinstance(ref, bool):
        return requests.Invalid("bad_request", '"ref" must be a string or an integer')
    if isinstance(ref, str) and not _encodable(ref):
        # Every reply echoes the ref, and a lone surrogate (\ud800) cannot be written as
        # UTF-8: the answer would be lost, not sent. Answered without it, then.
        return requests.Invalid("bad_request", '"ref" must be valid Unicode')
    kind = obj.get("type")
    if not isinstance(kind, str):
        return requests.Invalid("bad_request", 'every object needs a "type" string', ref)
    try:
        request = _build(kind, obj, ref)
    except _BadRequest as problem:
        return requests.Invalid("bad_request", f"{kind}: {problem}", ref)
    if request is None:
        return requests.Invalid("unknown_type", f'unknown type "{kind}"', ref)
    return request


def parse_line(line: str) -> requests.Request:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return requests.Invalid("bad_json", "that line is not valid JSON")
    return parse_request(obj)


def request_to_dict(request: requests.Request) -> dict[str, Any] | None:
    """The JSON object a client sends for `request` (the inverse of `parse_request`).

    Optional fields that hold their default are left out. None for `requests.Invalid` and for
    text mode's `/history more` (`HistoryRequest(more=True)`), which JSON has no field for.
    """
    body: dict[str, Any]
    match request:
        case requests.Hello():
            body = {"type": "hello", "name": request.name}
            if request.password is not None:
                body["password"] = request.password
        case requests.Say():
            body = {"type": "say", "text": request.text, "action": request.action}
            if request.status is not None:
                body["status"] = request.status
            if request.room is not None:
                body["room"] = request.room
            if isinstance(request.reply_to, int):
                body["reply_to"] = request.reply_to
        case requests.SendPrivate():
            body = {"type": "msg", "to": request.target, "text": request.text}
            body["action"] = request.action
            if isinstance(request.reply_to, int):
                body["reply_to"] = request.reply_to
        case requests.JoinRoom():
            body = {"type": "join", "room": request.room}
        case requests.LeaveRoom():
            body = {"type": "leave", "reason": request.reason}
            if request.room is not None:
                body["room"] = request.room
        case requests.ChangeNick():
            body = {"type": "nick", "name": request.name}
        case requests.Topic():
            body = {"type": "topic"}
            if request.room is not None:
                body["room"] = request.room
            if request.topic is not None:
                body["topic"] = request.topic
        case requests.ListRooms():
            body = {"type": "rooms"}
        case requests.Who():
            body = {"type": "who"}
            if request.room is not None:
                body["room"] = request.room
        case requests.Help():
            body = {"type": "help"}
        case requests.ClientPing():
            body = {"type": "ping", "token": request.token}
        case requests.ClientPong():
            body = {"type": "pong", "token": request.token}
        case requests.QuitRequest():
            body = {"type": "quit", "reason": request.reason}
        case requests.Invite():
            body = {"type": "invite", "name": request.target}
            if request.room is not None:
                body["room"] = request.room
        case requests.Away():
            body = {"type": "away"}
            if request.message is not None:
                body["message"] = request.message
        case requests.Whois():
            body = {"type": "whois", "name": request.target}
        case requests.SetRealname():
            body = {"type": "realname", "realname": request.realname}
        case _:
            extra = _extra_to_dict(request)
            if extra is None:
                return None
            body = extra
    ref = getattr(request, "ref", None)
    if ref is not None:
        body["ref"] = ref
    return body


def _ref_to_json(ref: Ref) -> int | str:
    if ref.kind == "id":
        return ref.value
    # Integer arithmetic: milliseconds must survive the trip through the text form exactly.
    seconds, millis = divmod(ref.value, 1000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def _extra_to_dict(request: requests.Request) -> dict[str, Any] | None:
    """History, accounts and moderation requests (see `request_to_dict`)."""
    body: dict[str, Any]
    match request:
        case requests.Search():
            body = {"type": "search", "text": request.text}
            optional = {"from": request.sender, "room": request.room, "limit": request.limit}
            body.update({key: value for key, value in optional.items() if value is not None})
            if request.before_ms is not None:
                body["before"] = _ref_to_json(Ref.at(request.before_ms))
            if request.after_ms is not None:
                body["after"] = _ref_to_json(Ref.at(request.after_ms))
        case requests.MarkRead():
            body = {"type": "read"}
            if request.target is not None:
                body["target"] = request.target
            if request.read_ms is not None:
                body["read"] = _ref_to_json(Ref.at(request.read_ms))
        case requests.AlwaysOn():
            body = {"type": "always_on"}
            if request.on is not None:
                body["on"] = request.on
        case requests.HistoryRequest(more=False):
            body = {"type": "history"}
            if request.room is not None:
                body["room"] = request.room
            if request.peer is not None:
                body["with"] = request.peer
            if request.before is not None:
                body["before"] = _ref_to_json(request.before)
            if request.after is not None:
                body["after"] = _ref_to_json(request.after)
            if request.around is not None:
                body["around"] = _ref_to_json(request.around)
            if request.limit is not None:
                body["limit"] = request.limit
        case requests.Register():
            body = {"type": "register", "password": request.password}
        case requests.Login():
            body = {"type": "login", "name": request.name, "password": request.password}
        case requests.ChangePassword():
            body = {"type": "password", "old": request.old, "new": request.new}
        case requests.Moderate():
            body = {"type": request.action, "name": request.target}
            if request.room is not None:
                body["room"] = request.room
            if request.reason:
                body["reason"] = request.reason
        case requests.TopicLock():
            body = {"type": "topiclock", "on": request.locked}
            if request.room is not None:
                body["room"] = request.room
        case requests.MetadataRequest():
            body = {"type": "metadata", "op": request.operation}
            optional = {"room": request.room, "name": request.name, "value": request.value}
            body.update({k: v for k, v in optional.items() if v is not None})
            if request.key:
                body["key"] = request.key
            if request.keys:
                body["keys"] = list(request.keys)
        case requests.React(message=int()):
            body = {"type": "react", "msgid": request.message, "reaction": request.reaction}
            body["on"] = request.on
            if request.room is not None:
                body["room"] = request.room
            if request.to is not None:
                body["to"] = request.to
        case requests.DeleteMessage(message=int()):
            body = {"type": "delete", "msgid": request.message}
            if request.reason:
                body["reason"] = request.reason
            if request.room is not None:
                body["room"] = request.room
            if request.to is not None:
                body["to"] = request.to
        case requests.EditMessage(message=int()):
            body = {"type": "edit", "msgid": request.message, "text": request.text}
            if request.room is not None:
                body["room"] = request.room
            if request.to is not None:
                body["to"] = request.to
        case requests.TypingNotice():
            body = {"type": "typing", "state": request.state}
            if request.room is not None:
                body["room"] = request.room
            if request.to is not None:
                body["to"] = request.to
        case _:
            # Includes `/history more`: the JSON schema has no cursor; a client continues a
            # page itself with "before" set to the oldest id it was shown.
            return None
    return body
