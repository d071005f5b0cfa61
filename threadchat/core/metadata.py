"""Metadata: key/value pairs a person sets on themselves and operators set on a room.

The rule of every protocol (IRCv3 draft/metadata-3 on IRC, `metadata_*` requests in JSON):
what a valid key and value are, and how many of each. The hub holds the values (`User.metadata`,
`Room.metadata`) and each user's subscriptions, and decides who may read, change and hear of
them (`Hub.metadata_*`).

Values live as long as their person's connection or their room: they are not stored with an
account (a person starts each session without metadata), as ergo keeps them only for its
always-on clients, which threadchat has not.
"""

import re

from threadchat.core.errors import HubError

# Keys one person or room may hold: enough for a display name, an avatar, a homepage, a
# status, a pronoun and a colour with room to spare, bounded so that a client cannot grow
# the hub's memory through them.
MAX_KEYS = 20
# Keys one user may subscribe to.
MAX_SUBS = 50
# A value's UTF-8 size: a key and its value must fit one IRC numeric line (761 carries the
# nick, the target, the key and the visibility besides), as ergo bounds key and value to 350.
MAX_VALUE_BYTES = 300
# A key's length: the longest registered keys are far shorter.
MAX_KEY_LENGTH = 64

# IRCv3: letters, digits and `_ . : / -`, not starting with a colon (it would start an IRC
# trailing parameter); keys are case-insensitive, so they are kept in lower case.
_KEY_RE = re.compile(r"[a-z0-9_./-][a-z0-9_.:/-]*")
# What no value may hold: CR, LF and NUL break every line framing, a lone surrogate cannot be
# encoded as UTF-8 (see `names`).
_UNSENDABLE_RE = re.compile("[\r\n\0\ud800-\udfff]")


def normal_key(key: str) -> str | None:
    """The key as kept (ASCII letters in lower case), or None when it is not a valid key."""
    if not key.isascii() or len(key) > MAX_KEY_LENGTH:
        return None
    lowered = key.lower()
    return lowered if _KEY_RE.fullmatch(lowered) else None


def check_key(key: str) -> str:
    """The key as kept; HubError `invalid_key` when it is not one."""
    normal = normal_key(key)
    if normal is None:
        raise HubError("invalid_key", f"{key!r} is not a valid metadata key")
    return normal


def check_value(value: str) -> None:
    """HubError `invalid_value` when `value` may not be kept (an empty value unsets a key,
    so it never reaches this)."""
    if _UNSENDABLE_RE.search(value):
        raise HubError("invalid_value", "a metadata value cannot hold CR, LF or NUL")
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise HubError("invalid_value", f"a metadata value is at most {MAX_VALUE_BYTES} bytes")
