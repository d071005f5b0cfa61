"""Room settings, member status and user flags as data: what every protocol shows in its own way.

The core names each setting; no protocol's letters appear here. IRC's mode letters
(`+m`, `+o`, ...) are one way to show them and live in `protocols/irc/modes.py`; the native
protocol shows the same changes in words (text mode) and as JSON. The store keeps room flags
in its own encoding, translated by `services/moderation.py`.

The enum values are stable names: the native JSON protocol sends them (`"mode": "operator"`).
"""

from dataclasses import dataclass
from enum import StrEnum


class RoomFlag(StrEnum):
    """A room setting that is on or off."""

    # Only operators and voiced members may speak.
    MODERATED = "moderated"
    # Only invited users (and moderators) may join.
    INVITE_ONLY = "invite_only"
    # Only moderators may set the topic.
    TOPIC_LOCKED = "topic_locked"
    # Only members may send messages to the room.
    MEMBERS_ONLY = "members_only"
    # Hidden from non-members: absent from room lists, member lists and user lookups.
    SECRET = "secret"
    # Hidden like a secret room; IRC still tells the two apart in its member lists.
    PRIVATE = "private"
    # No CTCP requests (a message starting with \x01) but actions (`/me`) in the room.
    NO_CTCP = "no_ctcp"


class RoomSetting(StrEnum):
    """A room setting with a value: the key to join (a word), the member limit (a number)."""

    KEY = "key"
    LIMIT = "limit"


class RoomList(StrEnum):
    """A list a room keeps entries of (masks or `~a:ACCOUNT` entries): bans, the exceptions
    to its bans, and who may join while it is invite-only without an invitation."""

    BAN = "ban"
    BAN_EXCEPTION = "ban_exception"
    INVITE_EXCEPTION = "invite_exception"


class MemberStatus(StrEnum):
    """A member's status in a room, highest first (the order protocols list them in)."""

    OPERATOR = "operator"
    VOICE = "voice"


class UserFlag(StrEnum):
    """A user's own server-wide flag."""

    SERVER_OPERATOR = "server_operator"
    INVISIBLE = "invisible"
    # Receives the server operators' wallops messages.
    WALLOPS = "wallops"
    # An automated client (IRCv3 bot mode): others' clients mark what it says.
    BOT = "bot"


# What a mode change may change: a room's flag, setting, list or a member's status, or a
# user's own flag.
Mode = RoomFlag | RoomSetting | RoomList | MemberStatus | UserFlag

# Flags that hide a room from whoever is not in it (see `Hub.room_hidden`).
HIDDEN_ROOM_FLAGS = frozenset({RoomFlag.SECRET, RoomFlag.PRIVATE})
# Flags a new room starts with: only members speak in it, only operators set the topic.
DEFAULT_ROOM_FLAGS = frozenset({RoomFlag.MEMBERS_ONLY, RoomFlag.TOPIC_LOCKED})
# User flags a user may set or unset on themselves; SERVER_OPERATOR may only be dropped.
SELF_SET_USER_FLAGS = frozenset({UserFlag.INVISIBLE, UserFlag.WALLOPS, UserFlag.BOT})


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One setting being turned on (`add`) or off, with its argument if it takes one.

    The argument: a member's nickname (MemberStatus), the key (KEY, when set), the limit as
    a decimal number (LIMIT, when set), a ban entry (BAN); None otherwise."""

    add: bool
    mode: Mode
    arg: str | None = None


def member_status(is_operator: bool, is_voiced: bool) -> tuple[MemberStatus, ...]:
    """A member's statuses, highest first (one shared tuple per combination)."""
    return _STATUSES[is_operator, is_voiced]


_STATUSES: dict[tuple[bool, bool], tuple[MemberStatus, ...]] = {
    (False, False): (),
    (True, False): (MemberStatus.OPERATOR,),
    (False, True): (MemberStatus.VOICE,),
    (True, True): (MemberStatus.OPERATOR, MemberStatus.VOICE),
}
