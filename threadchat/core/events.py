"""Protocol-neutral events: what the hub fans out and what a connection is told.

Every protocol module turns these into its own bytes (`protocols/line.py`, `protocols/irc.py`,
...). They are immutable so one event object can be shared by every recipient's encoder.
"""

import itertools
import time
from dataclasses import dataclass, field

from threadchat.core.live import MessageExtra
from threadchat.core.modes import MemberStatus, ModeChange

_ids = itertools.count(1)

# Client tags: what a client attached to a message for the other clients (a reply's parent,
# a reaction, a typing notice), as (name, value) pairs. The names are spelled as IRCv3
# message-tags spells them (`+draft/reply`), the one vocabulary clients share for them; a
# protocol that has no way to show them leaves them out (the JSON protocol, for now).
ClientTags = tuple[tuple[str, str | None], ...]


def next_id() -> int:
    """A server-wide increasing event id (itertools.count is atomic under the GIL)."""
    return next(_ids)


@dataclass(frozen=True, slots=True)
class Event:
    id: int = field(default_factory=next_id, kw_only=True)
    ts: float = field(default_factory=time.time, kw_only=True)


# Message kinds. An action is /me; a notice is IRC's NOTICE (never auto-answered).
TEXT = "text"
ACTION = "action"
NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class RoomMessage(Event):
    room: str
    sender: str
    text: str
    kind: str = TEXT
    account: str | None = None
    # True when replayed from stored history (id and ts are then the stored ones).
    history: bool = False
    # Not stored: a message replayed from history has none.
    tags: ClientTags = ()
    # True in the copy one of the sender's other connections gets (one account on several
    # devices): a protocol marks it as the reader's own message.
    own: bool = False
    # Set when only the members holding this status (or a higher one) get it (IRC's
    # STATUSMSG, `PRIVMSG @#room`); such a message is not stored.
    status: MemberStatus | None = None
    # The message it replies to, and (from history) whether it was edited or deleted and its
    # reactions (see core/live.py); None for the plain message, so encoders test one field.
    extra: MessageExtra | None = None

    @property
    def reply_to(self) -> int | None:
        return self.extra.reply_to if self.extra is not None else None


@dataclass(frozen=True, slots=True)
class PrivateMessage(Event):
    sender: str
    target: str
    text: str
    kind: str = TEXT
    account: str | None = None
    history: bool = False
    tags: ClientTags = ()
    own: bool = False
    # As a room message's (core/live.py): the message it replies to, and from history its
    # edited and deleted marks and reactions; None for the plain message.
    extra: MessageExtra | None = None
    # The recipient's account when they had one: with `account`, who the two people of the
    # conversation are (only they act on its messages, see `Hub.react`).
    target_account: str | None = None

    @property
    def reply_to(self) -> int | None:
        return self.extra.reply_to if self.extra is not None else None


@dataclass(frozen=True, slots=True)
class ReadMarker(Event):
    """How far the account has read a conversation (`Hub.mark_read`), told to each of its
    connections: a room (`room` True, `target` its name) or a private conversation (`target`
    the peer's nick); `read_ms` the time (ms since the epoch) of the last message read, 0
    when none is known."""

    target: str
    room: bool
    read_ms: int
    ref: object = None
    # True in the answer to the connection that set or asked for it (text mode shows only
    # those: the markers a browser moves as it scrolls would flood a terminal).
    asked: bool = False


@dataclass(frozen=True, slots=True)
class SearchResults(Event):
    """The answer to a search (`Hub.search`): matching messages, newest first, each marked
    `history`."""

    query: str
    messages: tuple[Event, ...]
    ref: object = None


@dataclass(frozen=True, slots=True)
class TagMessage(Event):
    """Client tags alone, without text (IRC's TAGMSG: typing notices, reactions), to a room
    (`room` set) or to one user (`target`); relayed, never stored."""

    sender: str
    tags: ClientTags
    room: str | None = None
    target: str = ""
    account: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction(Event):
    """`sender` added (`on`) or took back a reaction to the message `msgid`: of the room
    `room`, or of `sender`'s private conversation with `target` (`room` None)."""

    room: str | None = None
    target: str = ""
    sender: str
    msgid: int
    reaction: str
    on: bool = True
    account: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDeleted(Event):
    """`by` deleted the message `msgid` of `sender` (its author, or as an operator): in the
    room `room`, or in the private conversation of `by` with `target` (`room` None; there
    only the author deletes)."""

    room: str | None = None
    target: str = ""
    msgid: int
    by: str
    sender: str
    reason: str = ""
    account: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEdited(Event):
    """`sender` changed the text of their message `msgid` to `text`: in the room `room`, or
    in their private conversation with `target` (`room` None)."""

    room: str | None = None
    target: str = ""
    msgid: int
    sender: str
    text: str
    account: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing(Event):
    """`sender` is typing (`state`: active, paused or done) in `room`, or to `target` in a
    private conversation (`room` None); never stored."""

    room: str | None = None
    target: str = ""
    sender: str
    state: str
    account: str | None = None


@dataclass(frozen=True, slots=True)
class Joined(Event):
    room: str
    nick: str
    account: str | None = None
    realname: str = ""
    # The joiner's away message, when they are away (IRC's away-notify shows it on joining).
    away: str | None = None


@dataclass(frozen=True, slots=True)
class Left(Event):
    room: str
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Kicked(Event):
    room: str
    nick: str
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    nick: str
    reason: str
    # nick!user@host of the user as the hub knew it: the user is gone from the hub by the time
    # the event is encoded, so encoders cannot look the mask up any more.
    mask: str = ""


@dataclass(frozen=True, slots=True)
class NickChanged(Event):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class TopicChanged(Event):
    room: str
    topic: str
    by: str


@dataclass(frozen=True, slots=True)
class ServerNotice(Event):
    """Text from the server itself, e.g. that it is shutting down."""

    text: str


# Direct replies: sent to one connection only, never fanned out.


@dataclass(frozen=True, slots=True)
class PastUser:
    """Who had a nickname before quitting or changing it (see `Hub.whowas`)."""

    nick: str
    username: str
    host: str
    realname: str
    account: str | None
    left_at: float


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    nick: str
    server: str


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    members: int
    topic: str


@dataclass(frozen=True, slots=True)
class RoomList(Event):
    rooms: tuple[RoomInfo, ...]


@dataclass(frozen=True, slots=True)
class WhoList(Event):
    room: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopicInfo(Event):
    room: str
    topic: str
    by: str
    set_at: float


@dataclass(frozen=True, slots=True)
class Ok(Event):
    ref: object = None
    # The stored message a `say` or `msg` with a ref was answered for: its msgid, so the
    # sender (who is not sent its own message back) can edit, delete or react to it.
    msgid: int | None = None


@dataclass(frozen=True, slots=True)
class Error(Event):
    code: str
    message: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Notice(Event):
    text: str


@dataclass(frozen=True, slots=True)
class HelpText(Event):
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping(Event):
    token: str


@dataclass(frozen=True, slots=True)
class Pong(Event):
    token: str


# -- moderation and IRC-facing events (fanned out like the ones above) ----------------------


@dataclass(frozen=True, slots=True)
class ModeChanged(Event):
    """Modes changed: a room's (`room` set) or a user's own (`room` None, `target` the user).

    `changes` are the applied changes in order, as data (`modes.ModeChange`); each protocol
    shows them in its own way (IRC as `+o-v bob tom`, the native protocol in words and JSON).
    """

    by: str
    changes: tuple[ModeChange, ...]
    room: str | None = None
    target: str = ""


@dataclass(frozen=True, slots=True)
class AwayChanged(Event):
    """`nick` went away with the message `away`, or came back (`away` None)."""

    nick: str
    away: str | None


@dataclass(frozen=True, slots=True)
class Invited(Event):
    """`by` invites `nick` to `room`. Told to `nick`, and with `notify` set to the room's
    members, for clients that show invitations to the room (IRCv3 invite-notify)."""

    room: str
    nick: str
    by: str
    notify: bool = False


@dataclass(frozen=True, slots=True)
class Presence(Event):
    """Told to one `watcher` who watches the nick: `nick` came online (`mask` its
    nick!user@host) or went offline. A nick change is the old nick going offline and the
    new one coming online."""

    watcher: str
    nick: str
    online: bool
    mask: str = ""


@dataclass(frozen=True, slots=True)
class RealnameChanged(Event):
    """`nick` changed their real name (IRC SETNAME; native `/realname`)."""

    nick: str
    realname: str


@dataclass(frozen=True, slots=True)
class AccountChanged(Event):
    """`nick` logged in to `account` (None: logged out), seen by their peers."""

    nick: str
    account: str | None


@dataclass(frozen=True, slots=True)
class RoomRenamed(Event):
    """`by` renamed the room `old` to `new`: told to each member, `member` naming them (an
    IRC client without channel-rename is shown its own PART and JOIN, so the lines differ
    per member). `topic` and `members` are the room as a joiner would be shown it."""

    old: str
    new: str
    by: str
    reason: str
    member: str
    topic: "TopicInfo"
    members: tuple[tuple[str, tuple[MemberStatus, ...]], ...] = ()
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MetadataChanged(Event):
    """The metadata `key` of the room `room` (when set) or of the user `nick` is now `value`
    (None: unset). Told to the members sharing the room or a room with the user who
    subscribed to the key (see `core/metadata.py`), never to the connection that set it."""

    key: str
    value: str | None
    room: str | None = None
    nick: str = ""


@dataclass(frozen=True, slots=True)
class MetadataValues(Event):
    """A direct reply: the metadata of the room `room` or the user `nick`, and the keys the
    asker subscribes to (native JSON `metadata`)."""

    values: tuple[tuple[str, str], ...]
    subscriptions: tuple[str, ...]
    room: str | None = None
    nick: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class Wallops(Event):
    """A message from a server operator to every user who asked for wallops (UserFlag.WALLOPS)."""

    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class Killed(Event):
    """Told only to the user `nick` whom server operator `by` disconnects."""

    nick: str
    by: str
    reason: str


# Storage, accounts and moderation (history.py, accounts.py, moderation.py).


@dataclass(frozen=True, slots=True)
class HistoryPage(Event):
    """Stored messages answering one history request, oldest first (a direct reply).

    `room` is set for a room's history, `peer` for a private conversation; `messages` are
    RoomMessage / PrivateMessage events with history=True. `more` is True when the page is full,
    so older (or newer) messages may exist.
    """

    room: str | None
    peer: str | None
    messages: tuple[Event, ...]
    more: bool = False
    ref: object = None


@dataclass(frozen=True, slots=True)
class LoggedIn(Event):
    """This connection is now logged in to `account` (a direct reply)."""

    account: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Moderated(Event):
    """A room moderation change, seen by the room's members.

    `action` is mute or unmute (changes of a room setting or status are ModeChanged events).
    """

    room: str
    by: str
    action: str
    target: str = ""


@dataclass(frozen=True, slots=True)
class UserInfo(Event):
    """What anyone may look up about a connected user (a direct reply, see `Hub.user_info`).

    `rooms` pairs each room the user is in with their statuses there, highest first.
    """

    nick: str
    account: str | None
    realname: str
    rooms: tuple[tuple[str, tuple[MemberStatus, ...]], ...]
    away: str | None
    operator: bool
    idle: int
    signon: float
    ref: object = None
