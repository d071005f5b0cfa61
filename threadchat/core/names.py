"""Validation and case folding of nicknames, room names and message text.

Nicknames are one namespace across every protocol, so they follow the strictest of them (IRC):
ASCII, starting with a letter or one of IRC's special characters, compared case-insensitively
with ASCII case mapping (announced to IRC clients as CASEMAPPING=ascii).
"""

import functools
import re
import string

# IRC's NICKLEN: long enough for real names, short enough for every IRC client's layout.
NICK_MAX = 30
# IRC's CHANNELLEN minus the leading '#'.
ROOM_MAX = 49
# A topic longer than this does not fit one IRC line next to the other parameters.
TOPIC_MAX = 390
# IRC's AWAYLEN: an away message fits a WHOIS reply line.
AWAY_MAX = 200
# A real name (IRC's USER and SETNAME): fits a WHOIS reply line.
REALNAME_MAX = 100

_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*")
_ROOM_RE = re.compile(r"[A-Za-z0-9_.-]+")
# C0 controls, DEL and C1 controls: none of them belongs in chat text; ESC would let one user
# drive another user's terminal. TAB is the one control people type on purpose.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_ANY_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What no free-text field may hold in any protocol: CR, LF and NUL break every line framing
# (a reason with a newline showed as a forged line of its own on text screens), and a lone
# surrogate (legal in JSON's \ud800 escapes) cannot be encoded as UTF-8, so it would fail the
# encoder of every recipient instead of the one request that carried it.
_UNSENDABLE_RE = re.compile("[\r\n\0\ud800-\udfff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


# What IRC's ISUPPORT announces: the one case mapping of every protocol and of the store's keys.
CASEMAPPING = "ascii"
# IRC's "ascii" casemapping: only A-Z fold. str.lower would fold other letters too, some onto
# ASCII ones (KELVIN SIGN lowers to "k"), so a name nobody can register would reach the holder
# of an ASCII one. The store has always keyed rooms and accounts this way, so existing
# databases keep matching.
_ASCII_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """Case-fold a nickname, room or account name for comparison (ascii casemapping)."""
    if name.isascii():
        return name.lower()  # the same result for ASCII, several times cheaper than translate
    return name.translate(_ASCII_FOLD)


def nick_error(nick: str) -> str | None:
    """Say why `nick` is not a valid nickname, or return None when it is valid."""
    if not nick:
        return "a name cannot be empty"
    if len(nick) > NICK_MAX:
        return f"a name is at most {NICK_MAX} characters"
    if _ANY_CONTROL_RE.search(nick):
        return "a name cannot contain control characters"
    if not _NICK_RE.fullmatch(nick):
        return (
            "a name starts with a letter or one of []\\`_^{|} and holds only ASCII letters, "
            "digits and []\\`_^{|}-"
        )
    return None


def room_error(room: str) -> str | None:
    """Say why `room` is not a valid room name, or return None when it is valid."""
    if not room:
        return "a room name cannot be empty"
    if len(room) > ROOM_MAX:
        return f"a room name is at most {ROOM_MAX} characters"
    if not _ROOM_RE.fullmatch(room):
        return "a room name holds only ASCII letters, digits and _ . -"
    return None


def text_error(text: str) -> str | None:
    """Say why `text` cannot be sent by a native user, or return None when it can.

    Stricter than `unsendable_error`: the native protocols refuse every control character,
    since their text is shown on terminals as it is.
    """
    # isascii() first: it is a flag check for most messages, and only non-ASCII text can
    # hold a surrogate (this runs for every message; the regex alone was measurable).
    if not text.isascii() and _SURROGATE_RE.search(text):
        return SURROGATE_PROBLEM
    if _CONTROL_RE.search(text):
        return "messages cannot contain control characters (such as NUL or ESC)"
    return None


SURROGATE_PROBLEM = "text cannot contain lone surrogates (it must be valid Unicode)"


def unsendable_error(text: str) -> str | None:
    """Say why `text` cannot travel in any protocol, or return None when it can.

    The one check every free-text field passes in the hub (messages, topics, reasons, away
    messages, real names, mode arguments), whatever protocol it came from. IRC formatting
    codes pass: only what would break framing or UTF-8 is refused.
    """
    # Three C-speed scans and a flag check: this runs for every message of every protocol,
    # and a regex search here cost more than all three.
    if "\n" in text or "\r" in text or "\0" in text:
        return "text cannot contain CR, LF or NUL"
    if not text.isascii() and _SURROGATE_RE.search(text):
        return SURROGATE_PROBLEM
    return None


def sendable(text: str) -> str:
    """`text` with what `unsendable_error` refuses replaced, for what cannot be refused
    (a quit reason: the user is gone either way)."""
    return _UNSENDABLE_RE.sub("\N{REPLACEMENT CHARACTER}", text)


def strip_controls(text: str) -> str:
    """Replace control characters (and lone surrogates, which no terminal can be sent) so
    that text from the wire is safe to print on a terminal."""
    return _UNPRINTABLE_RE.sub("\N{REPLACEMENT CHARACTER}", text)


@functools.lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def glob_match(pattern: str, text: str) -> bool:
    """IRC's wildcard match: `*` is any run of characters, `?` any one; nothing else is
    special (fnmatch would read `[bot]` as a character class, and nicks have brackets).
    Compare folded names: this matches case-sensitively.

    >>> glob_match("[bot]!*@*", "[bot]!~b@h"), glob_match("[bot]!*@*", "b!~b@h")
    (True, False)
    >>> glob_match("*an?", "#chan1"), glob_match("*an?", "#chan12")
    (True, False)
    """
    return _glob_regex(pattern).fullmatch(text) is not None
