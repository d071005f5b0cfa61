"""IRC's mode letters for the core's mode data: the one letter table, both directions.

The core knows room flags, settings, lists, member statuses and user flags by name
(`core/modes.py`); IRC shows them as letters (`MODE #dev +m`, `+o bob`, `@bob` in NAMES).
Everything IRC says about modes comes from the tables below: MODE arguments parsed to
`ModeChange`s, changes formatted as `+o-v bob tom`, RPL_CHANNELMODEIS and RPL_UMODEIS, the
NAMES/WHO/WHOIS prefixes, and the ISUPPORT CHANMODES and PREFIX tokens and RPL_MYINFO lists.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from threadchat.core.modes import (
    MemberStatus,
    Mode,
    ModeChange,
    RoomFlag,
    RoomList,
    RoomSetting,
    UserFlag,
)
from threadchat.protocols.mode_letters import letters_and_args

# Channel modes without a parameter (CHANMODES type D).
ROOM_FLAG_LETTERS: dict[RoomFlag, str] = {
    RoomFlag.INVITE_ONLY: "i",
    RoomFlag.MODERATED: "m",
    RoomFlag.MEMBERS_ONLY: "n",
    RoomFlag.TOPIC_LOCKED: "t",
    RoomFlag.SECRET: "s",
    RoomFlag.PRIVATE: "p",
    RoomFlag.NO_CTCP: "C",
}
# Channel lists (CHANMODES type A: a parameter both ways; none lists the entries).
ROOM_LIST_LETTERS: dict[RoomList, str] = {
    RoomList.BAN: "b",
    RoomList.BAN_EXCEPTION: "e",
    RoomList.INVITE_EXCEPTION: "I",
}
# Each list's entries (RPL_BANLIST and friends) and its end, as (entry, end) numerics.
ROOM_LIST_NUMERICS: dict[RoomList, tuple[str, str]] = {
    RoomList.BAN: ("367", "368"),
    RoomList.BAN_EXCEPTION: ("348", "349"),
    RoomList.INVITE_EXCEPTION: ("346", "347"),
}
ROOM_LIST_ENDS: dict[RoomList, str] = {
    RoomList.BAN: "End of channel ban list",
    RoomList.BAN_EXCEPTION: "End of channel exception list",
    RoomList.INVITE_EXCEPTION: "End of channel invite exception list",
}
# The key (type B: a parameter both ways) and the limit (type C: a parameter when set).
ROOM_SETTING_LETTERS: dict[RoomSetting, str] = {RoomSetting.KEY: "k", RoomSetting.LIMIT: "l"}
# Member statuses: the mode letter and the prefix shown before the nick, highest first.
STATUS_LETTERS: dict[MemberStatus, str] = {MemberStatus.OPERATOR: "o", MemberStatus.VOICE: "v"}
STATUS_PREFIXES: dict[MemberStatus, str] = {MemberStatus.OPERATOR: "@", MemberStatus.VOICE: "+"}
PREFIX_STATUSES: dict[str, MemberStatus] = {mark: s for s, mark in STATUS_PREFIXES.items()}
USER_FLAG_LETTERS: dict[UserFlag, str] = {
    UserFlag.INVISIBLE: "i",
    UserFlag.SERVER_OPERATOR: "o",
    UserFlag.WALLOPS: "w",
    UserFlag.BOT: "B",
}
# ISUPPORT BOT=: the user mode that marks a bot (IRCv3 bot mode).
BOT_LETTER = USER_FLAG_LETTERS[UserFlag.BOT]

_ROOM_MODE_OF: dict[str, Mode] = {
    letter: mode
    for table in (ROOM_FLAG_LETTERS, ROOM_LIST_LETTERS, ROOM_SETTING_LETTERS, STATUS_LETTERS)
    for mode, letter in table.items()
}
_USER_FLAG_OF = {letter: flag for flag, letter in USER_FLAG_LETTERS.items()}
_LETTER_OF: dict[Mode, str] = {
    **ROOM_FLAG_LETTERS,
    **ROOM_LIST_LETTERS,
    **ROOM_SETTING_LETTERS,
    **STATUS_LETTERS,
    **USER_FLAG_LETTERS,
}

# ISUPPORT: CHANMODES=lists,always-a-parameter,parameter-when-set,flags; PREFIX=(ov)@+;
# EXCEPTS and INVEX name the exception lists' letters.
LIST_LETTERS = tuple(ROOM_LIST_LETTERS.values())
EXCEPTS = ROOM_LIST_LETTERS[RoomList.BAN_EXCEPTION]
INVEX = ROOM_LIST_LETTERS[RoomList.INVITE_EXCEPTION]
CHANMODES = ",".join(
    (
        "".join(sorted(ROOM_LIST_LETTERS.values())),
        ROOM_SETTING_LETTERS[RoomSetting.KEY],
        ROOM_SETTING_LETTERS[RoomSetting.LIMIT],
        "".join(sorted(ROOM_FLAG_LETTERS.values())),
    )
)
PREFIX = f"({''.join(STATUS_LETTERS.values())}){''.join(STATUS_PREFIXES.values())}"
# RPL_MYINFO: user modes, channel modes, channel modes that take a parameter.
USER_MODES = "".join(sorted(USER_FLAG_LETTERS.values()))
CHANNEL_MODES = "".join(sorted(_ROOM_MODE_OF))
CHANNEL_MODES_WITH_PARAMETER = "".join(
    sorted([*ROOM_LIST_LETTERS.values(), *ROOM_SETTING_LETTERS.values(), *STATUS_LETTERS.values()])
)


@dataclass
class ParsedModes:
    """A channel MODE's letters read: the changes, the lists asked for (`+b` without a
    mask), and the letters no table knows (each an ERR_UNKNOWNMODE)."""

    changes: list[ModeChange] = field(default_factory=list)
    lists: list[RoomList] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def list_bans(self) -> bool:
        return RoomList.BAN in self.lists


def parse_channel_modes(
    text: str,
    args: Sequence[str],
    *,
    max_with_parameter: int,
    key_max: int,
    mask_max: int,
    bad_word: Callable[[str], bool],
) -> ParsedModes:
    """`MODE #channel TEXT ARGS...` as changes. At most `max_with_parameter` changes taking
    a parameter are read (ISUPPORT MODES); a key longer than `key_max`, a mask longer than
    `mask_max` or any `bad_word` parameter is dropped (it still counts)."""
    parsed = ParsedModes()
    add = True
    queue = list(args)
    with_parameter = 0
    for letter in text:
        if letter in "+-":
            add = letter == "+"
            continue
        mode = _ROOM_MODE_OF.get(letter)
        if mode is None:
            parsed.unknown.append(letter)
            continue
        if isinstance(mode, RoomFlag) or (mode is RoomSetting.LIMIT and not add):
            parsed.changes.append(ModeChange(add, mode))
            continue
        if not queue:
            if isinstance(mode, RoomList):
                if mode not in parsed.lists:
                    parsed.lists.append(mode)
            elif mode is RoomSetting.KEY and not add:
                parsed.changes.append(ModeChange(False, mode))
            continue
        arg = queue.pop(0)
        with_parameter += 1
        if with_parameter > max_with_parameter:
            break
        if mode is RoomSetting.KEY and (not arg or len(arg) > key_max or bad_word(arg)):
            continue
        if isinstance(mode, RoomList) and (len(arg) > mask_max or bad_word(arg)):
            continue
        parsed.changes.append(ModeChange(add, mode, arg))
    return parsed


def parse_user_modes(text: str) -> tuple[list[ModeChange], bool]:
    """`MODE nick TEXT` as changes of the user's flags, and whether a letter was unknown."""
    changes: list[ModeChange] = []
    unknown, add = False, True
    for letter in text:
        if letter in "+-":
            add = letter == "+"
        elif letter in _USER_FLAG_OF:
            changes.append(ModeChange(add, _USER_FLAG_OF[letter]))
        else:
            unknown = True
    return changes, unknown


def format_changes(changes: Iterable[ModeChange]) -> list[str]:
    """Applied changes as MODE parameters: `["+o-v", "bob", "tom"]`; a removed key shows
    `*` as its parameter, as IRC servers send it."""
    text, args = letters_and_args(changes, _LETTER_OF)
    return [text, *args]


def channel_mode_is(
    flags: Iterable[RoomFlag], key: str | None, limit: int | None, *, show_key: bool
) -> list[str]:
    """RPL_CHANNELMODEIS's mode parameters: `["+ntkl", KEY, LIMIT]`; the key itself only
    with `show_key` (to members), otherwise `*`."""
    letters = "".join(sorted(ROOM_FLAG_LETTERS[flag] for flag in flags))
    params: list[str] = []
    if key is not None:
        letters += ROOM_SETTING_LETTERS[RoomSetting.KEY]
        params.append(key if show_key else "*")
    if limit is not None:
        letters += ROOM_SETTING_LETTERS[RoomSetting.LIMIT]
        params.append(str(limit))
    return ["+" + letters, *params]


def user_mode_is(flags: Iterable[UserFlag]) -> str:
    """RPL_UMODEIS's parameter: `+iw`."""
    return "+" + "".join(sorted(USER_FLAG_LETTERS[flag] for flag in flags))


def status_prefix(statuses: tuple[MemberStatus, ...], multi: bool) -> str:
    """The prefix before a member's nick (`@`, `+`, or with multi-prefix `@+`).

    Looked up, not built: NAMES of a big room asks once per member."""
    try:
        return _PREFIXES[statuses, multi]
    except KeyError:
        held = set(statuses)
        prefixes = "".join(mark for status, mark in STATUS_PREFIXES.items() if status in held)
        prefix = _PREFIXES[statuses, multi] = prefixes if multi else prefixes[:1]
        return prefix


# status_prefix's answers so far: a handful of keys, as statuses come in few combinations.
_PREFIXES: dict[tuple[tuple[MemberStatus, ...], bool], str] = {}
