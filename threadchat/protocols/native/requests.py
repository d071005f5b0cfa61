"""What a native client asks for (text mode, JSON mode, UDP, WebSocket), parsed by protocol modules.

`ref` is the client's own correlation value, echoed in the direct reply (JSON mode).
"""

from dataclasses import dataclass, field

from threadchat.core.history import Ref


@dataclass(frozen=True, slots=True)
class Request:
    pass


@dataclass(frozen=True, slots=True)
class Hello(Request):
    name: str
    ref: object = None
    # Logs in to the account `name` while registering. Never shown in reprs (logs).
    password: str | None = field(default=None, repr=False)
    # Text mode: the whole first line when it was split into name and password. If `name` is
    # no account, the line was a (bad) name with a space, not a login. Holds the password.
    first_line: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Say(Request):
    """A room message; `room` None means the connection's current room (text mode)."""

    text: str
    room: str | None = None
    action: bool = False
    ref: object = None
    # Only the members holding this status or a higher one get it: "operator" or "voice".
    status: str | None = None
    # The message it answers: a msgid (JSON), or a reference as typed in text mode (`#a3f`).
    reply_to: "int | str | None" = None


# Requests about a message already sent name it as `message`: a msgid (JSON, UDP, web) or
# a reference as typed in text mode (`#a3f`, which the hub resolves: `Hub.find_ref`). `room`,
# when given, is the room the client believes it is in, `to` the person of the private
# conversation it believes it is in (refused if it is not); neither is needed.


@dataclass(frozen=True, slots=True)
class React(Request):
    message: "int | str"
    reaction: str
    on: bool = True
    room: str | None = None
    ref: object = None
    to: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteMessage(Request):
    message: "int | str"
    reason: str = ""
    room: str | None = None
    ref: object = None
    to: str | None = None


@dataclass(frozen=True, slots=True)
class EditMessage(Request):
    message: "int | str"
    text: str
    room: str | None = None
    ref: object = None
    to: str | None = None


@dataclass(frozen=True, slots=True)
class TypingNotice(Request):
    """Typing in `room` (None: the current room), or to the person `to` (a private
    conversation): active, paused or done."""

    state: str
    room: str | None = None
    ref: object = None
    to: str | None = None


@dataclass(frozen=True, slots=True)
class SendPrivate(Request):
    target: str
    text: str
    action: bool = False
    ref: object = None
    # The message of this conversation it answers, as for `Say`.
    reply_to: "int | str | None" = None


@dataclass(frozen=True, slots=True)
class JoinRoom(Request):
    room: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class LeaveRoom(Request):
    room: str | None = None
    reason: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class ChangeNick(Request):
    name: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Topic(Request):
    """Query the topic when `topic` is None, otherwise set it."""

    room: str | None = None
    topic: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class ListRooms(Request):
    ref: object = None


@dataclass(frozen=True, slots=True)
class Who(Request):
    room: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class Help(Request):
    ref: object = None


@dataclass(frozen=True, slots=True)
class ClientPing(Request):
    token: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class ClientPong(Request):
    token: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class QuitRequest(Request):
    reason: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class Invite(Request):
    """Invite `target` to `room` (None: the current room); they may then pass mode +i."""

    target: str
    room: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class Away(Request):
    """Mark yourself away with `message`, or back (None)."""

    message: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class SetRealname(Request):
    """Change your real name (what IRC shows in WHOIS and WHO)."""

    realname: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Whois(Request):
    """Look up a connected user (answered with a UserInfo event)."""

    target: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Invalid(Request):
    """Input that could not be understood; the connection answers with this error and goes on."""

    code: str
    message: str
    ref: object = None


# Storage, accounts and moderation. Password fields are kept out of reprs so that no log line
# can ever contain one.


@dataclass(frozen=True, slots=True)
class HistoryRequest(Request):
    """A page of history: of `room`, of the private conversation with account `peer`, or
    (neither given) of the current room. `before`/`after` bound the page (both: between);
    `around` centres it on a message (a search result's context), the bounds then unused;
    `more` (text mode) continues back from the oldest message the session last showed."""

    room: str | None = None
    peer: str | None = None
    before: Ref | None = None
    after: Ref | None = None
    limit: int | None = None
    more: bool = False
    ref: object = None
    around: Ref | None = None


@dataclass(frozen=True, slots=True)
class Register(Request):
    password: str = field(repr=False)
    ref: object = None


@dataclass(frozen=True, slots=True)
class Login(Request):
    name: str
    password: str = field(repr=False)
    ref: object = None


@dataclass(frozen=True, slots=True)
class ChangePassword(Request):
    old: str = field(repr=False)
    new: str = field(repr=False)
    ref: object = None


# Moderation actions taking a target (a nick, a mask, or an account).
MODERATION_ACTIONS = ("op", "deop", "kick", "ban", "unban", "mute", "unmute")


@dataclass(frozen=True, slots=True)
class Moderate(Request):
    """One of MODERATION_ACTIONS on `target` in `room` (None: the current room)."""

    action: str
    target: str
    room: str | None = None
    reason: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class TopicLock(Request):
    """Lock (only operators set the topic, mode t) or unlock the topic of a room."""

    locked: bool
    room: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class Search(Request):
    """Search the history one may read (`Hub.search`): `text` is the words (phrases in
    quotes, `word*` a prefix); the filters an author, a room and times (ms, exclusive)."""

    text: str
    sender: str | None = None
    room: str | None = None
    before_ms: int | None = None
    after_ms: int | None = None
    limit: int | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class MarkRead(Request):
    """Move the read marker of a room or private conversation (`target`) to `read_ms`, or
    (`read_ms` None) ask where it is; `target` None: the current room (text mode)."""

    target: str | None = None
    read_ms: int | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class AlwaysOn(Request):
    """Turn always-on on or off (`on`), or (None) ask whether it is on."""

    on: bool | None = None
    ref: object = None


# What a `metadata` request may do (see core/metadata.py).
METADATA_OPERATIONS = ("get", "set", "clear", "sub", "unsub")


@dataclass(frozen=True, slots=True)
class MetadataRequest(Request):
    """Read (`get`), set or unset (`set`, `value` None unsets), `clear` the metadata of the
    room `room` or the user `name` (yourself when neither), or subscribe to `keys`
    (`sub`, `unsub`)."""

    operation: str
    room: str | None = None
    name: str | None = None
    key: str = ""
    value: str | None = None
    keys: tuple[str, ...] = ()
    ref: object = None
