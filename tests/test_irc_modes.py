"""IRC's mode letters (protocols/irc/modes.py): the one table, read and written both ways."""

from threadchat.core.modes import (
    MemberStatus,
    ModeChange,
    RoomFlag,
    RoomList,
    RoomSetting,
    UserFlag,
)
from threadchat.protocols.irc import modes


def parse(text: str, *args: str) -> modes.ParsedModes:
    return modes.parse_channel_modes(
        text, list(args), max_with_parameter=3, key_max=5, mask_max=20, bad_word=lambda w: " " in w
    )


def test_advertised_letters_come_from_the_table() -> None:
    assert modes.CHANMODES == "Ibe,k,l,Cimnpst"
    assert modes.PREFIX == "(ov)@+"
    assert (modes.USER_MODES, modes.CHANNEL_MODES) == ("Biow", "CIbeiklmnopstv")
    assert modes.CHANNEL_MODES_WITH_PARAMETER == "Ibeklov"
    assert (modes.EXCEPTS, modes.INVEX) == ("e", "I")


def test_channel_mode_arguments_become_changes() -> None:
    parsed = parse("+mt-n+ov", "bob", "tom")
    assert parsed.changes == [
        ModeChange(True, RoomFlag.MODERATED),
        ModeChange(True, RoomFlag.TOPIC_LOCKED),
        ModeChange(False, RoomFlag.MEMBERS_ONLY),
        ModeChange(True, MemberStatus.OPERATOR, "bob"),
        ModeChange(True, MemberStatus.VOICE, "tom"),
    ]
    assert not parsed.list_bans and parsed.unknown == []


def test_parameters_limits_and_unknown_letters() -> None:
    parsed = parse("+kxl-l+b", "toolongkey", "10")
    # The too-long key is dropped but still used its parameter; -l takes none.
    assert parsed.changes == [
        ModeChange(True, RoomSetting.LIMIT, "10"),
        ModeChange(False, RoomSetting.LIMIT),
    ]
    assert parsed.unknown == ["x"] and parsed.list_bans
    assert parse("+eI").lists == [RoomList.BAN_EXCEPTION, RoomList.INVITE_EXCEPTION]
    assert parse("+e", "a!*@*").changes == [ModeChange(True, RoomList.BAN_EXCEPTION, "a!*@*")]
    # No more than max_with_parameter changes with a parameter are read.
    assert len(parse("+bbbb", "a", "b", "c", "d").changes) == 3
    assert parse("-k").changes == [ModeChange(False, RoomSetting.KEY)]


def test_changes_format_as_irc_shows_them() -> None:
    changes = [
        ModeChange(True, MemberStatus.OPERATOR, "bob"),
        ModeChange(False, MemberStatus.VOICE, "tom"),
        ModeChange(False, RoomSetting.KEY),
        ModeChange(True, RoomList.BAN, "x!*@*"),
    ]
    assert modes.format_changes(changes) == ["+o-vk+b", "bob", "tom", "*", "x!*@*"]
    assert modes.format_changes([ModeChange(True, UserFlag.SERVER_OPERATOR)]) == ["+o"]


def test_replies_of_channel_and_user_modes() -> None:
    flags = {RoomFlag.TOPIC_LOCKED, RoomFlag.MEMBERS_ONLY, RoomFlag.INVITE_ONLY}
    assert modes.channel_mode_is(flags, "key", 5, show_key=True) == ["+intkl", "key", "5"]
    assert modes.channel_mode_is(flags, "key", None, show_key=False) == ["+intk", "*"]
    assert modes.user_mode_is({UserFlag.WALLOPS, UserFlag.INVISIBLE}) == "+iw"
    both = (MemberStatus.VOICE, MemberStatus.OPERATOR)
    assert modes.status_prefix(both, multi=True) == "@+"
    assert modes.status_prefix(both, multi=False) == "@"
    assert modes.status_prefix((), multi=True) == ""


def test_user_mode_letters() -> None:
    changes, unknown = modes.parse_user_modes("+iw-oz")
    assert changes == [
        ModeChange(True, UserFlag.INVISIBLE),
        ModeChange(True, UserFlag.WALLOPS),
        ModeChange(False, UserFlag.SERVER_OPERATOR),
    ]
    assert unknown
