"""KICK with several nicks, INVITE listing your invitations, an invitation past +l, channel
mode +C (no CTCP) and LINKS, over real sockets; +C reached from the native JSON side too."""

from collections.abc import Callable

from conftest import JsonClient, LineClient
from test_irc import IrcClient
from test_irc_ircv3 import isupport, joined

from threadchat.protocols.irc.wire import parse

SERVER = "threadchat"


def test_kick_several_nicks(irc: Callable[..., IrcClient]) -> None:
    op = irc()
    op.send("NICK op", "USER op 0 * :Op")
    assert "KICK:4" in isupport(op)["TARGMAX"].split(",")
    joined(op, "#k")
    bar, baz, watcher = irc("bar"), irc("baz"), irc("watcher")
    for client in (bar, baz, watcher):
        joined(client, "#k")
    watcher.quiet()
    op.send("KICK #k bar,baz :bye now")
    assert watcher.read_line() == ":op!~op@127.0.0.1 KICK #k bar :bye now"
    assert watcher.read_line() == ":op!~op@127.0.0.1 KICK #k baz :bye now"
    # Channels and nicks in pairs; a nick not there gets its own 441.
    joined(op, "#l")
    joined(bar, "#k")
    joined(bar, "#l")
    op.quiet()
    op.send("KICK #k,#l bar,nobody")
    assert op.expect_msg("KICK").params[:2] == ["#k", "bar"]
    assert op.expect_msg("401").params[1] == "nobody"
    op.send("KICK #k,#l,#m bar")
    assert op.expect_msg("461").params[1] == "KICK"


def test_invite_alone_lists_invitations(irc: Callable[..., IrcClient]) -> None:
    op, guest = irc("op"), irc("guest")
    joined(op, "#a")
    joined(op, "#b")
    guest.send("INVITE")
    assert guest.read_line() == f":{SERVER} 337 guest :End of /INVITE list"
    op.send("INVITE guest #a", "INVITE guest #b")
    op.expect_msg("341")
    op.expect_msg("341")
    guest.quiet()
    guest.send("INVITE")
    assert guest.read_line() == f":{SERVER} 336 guest #a"
    assert guest.read_line() == f":{SERVER} 336 guest #b"
    assert guest.read_line() == f":{SERVER} 337 guest :End of /INVITE list"
    joined(guest, "#a")  # an invitation is used up by joining
    guest.send("INVITE")
    assert guest.expect_msg("336").params == ["guest", "#b"]
    op.send("INVITE guest")
    assert op.expect_msg("461").params[1] == "INVITE"


def test_an_invitation_lets_one_in_past_the_limit(irc: Callable[..., IrcClient]) -> None:
    op, late = irc("op"), irc("late")
    joined(op, "#full")
    op.send("MODE #full +l 1")
    op.expect_msg("MODE")
    late.send("JOIN #full")
    assert late.expect_msg("471").params[1] == "#full"
    op.send("INVITE late #full")
    op.expect_msg("341")
    late.send("JOIN #full")
    assert late.expect_msg("JOIN").params == ["#full"]
    other = irc("other")
    other.send("JOIN #full")  # the limit still holds for the uninvited
    assert other.expect_msg("471").params[1] == "#full"


def test_no_ctcp_mode(
    irc: Callable[..., IrcClient], connect_json: Callable[..., JsonClient]
) -> None:
    op, user = irc("op"), irc("user")
    joined(op, "#c")
    joined(user, "#c")
    web = connect_json("web")
    web.send_json(type="join", room="c")
    web.expect_event("who", room="c")
    op.send("MODE #c +C")
    assert op.expect_msg("MODE").params == ["#c", "+C"]
    assert web.expect_event("mode", room="c")["modes"][0]["mode"] == "no_ctcp"
    op.quiet()
    user.send("PRIVMSG #c :\x01ACTION waves\x01", "PRIVMSG #c :\x01VERSION\x01")
    assert op.read_line() == ":user!~user@127.0.0.1 PRIVMSG #c :\x01ACTION waves\x01"
    refusal = user.expect_msg("404")
    assert refusal.params[:2] == ["user", "#c"]
    user.send("NOTICE #c :\x01PING 1\x01")  # refused too, silently: never answer a NOTICE
    assert op.quiet() == [] and user.quiet() == []
    # (Native clients never send CTCP: their text may hold no control character at all.)
    op.send("MODE #c", "MODE #c -C")
    assert "C" in op.expect_msg("324").params[2]
    op.expect_msg("MODE")
    user.send("PRIVMSG #c :\x01VERSION\x01")
    assert parse(op.expect(" PRIVMSG ")).params[1] == "\x01VERSION\x01"


def test_links_lists_the_one_server(irc: Callable[..., IrcClient]) -> None:
    client = irc("nick")
    client.send("LINKS")
    assert client.read_line() == f":{SERVER} 364 nick {SERVER} {SERVER} :0 a threadchat server"
    assert client.read_line() == f":{SERVER} 365 nick * :End of /LINKS list"


# -- draft/channel-rename ------------------------------------------------------------------------


def test_rename_keeps_the_room_and_tells_every_protocol(
    irc: Callable[..., IrcClient],
    connect_json: Callable[..., JsonClient],
    connect: Callable[..., LineClient],
) -> None:
    op = irc("op", ("draft/channel-rename",))
    legacy = irc("legacy")
    joined(op, "#old")
    joined(legacy, "#old")
    op.send("TOPIC #old :the topic", "MODE #old +v legacy", "PRIVMSG #old :said before")
    op.expect_msg("MODE")
    web = connect_json("web")
    web.send_json(type="join", room="old")
    web.expect_event("who", room="old")
    text = connect("texter")
    text.send("/join old")
    text.expect("--- in old")
    for client in (op, legacy, text):
        client.quiet()
    op.send("RENAME #old #new :a tidier name")
    assert op.read_line() == ":op!~op@127.0.0.1 RENAME #old #new :a tidier name"
    # Without the capability: a PART and a JOIN of its own, then what a join shows.
    assert legacy.read_line() == ":legacy!~legacy@127.0.0.1 PART #old :a tidier name"
    assert legacy.read_line() == ":legacy!~legacy@127.0.0.1 JOIN #new"
    assert legacy.read_line() == f":{SERVER} 332 legacy #new :the topic"
    assert parse(legacy.read_line()).command == "333"
    names = parse(legacy.read_line())
    assert names.params[:3] == ["legacy", "=", "#new"]
    assert sorted(names.params[3].split()) == ["+legacy", "@op", "texter", "web"]
    assert legacy.read_line() == f":{SERVER} 366 legacy #new :End of /NAMES list"
    event = web.expect_event("rename", room="old")
    assert (event["new"], event["by"], event["reason"]) == ("new", "op", "a tidier name")
    text.expect("--- op renamed old to new (a tidier name)")
    # The text user's current room followed the rename.
    text.send("still here")
    assert parse(legacy.expect(" PRIVMSG ")).params == ["#new", "still here"]
    # Modes, statuses and history came along; the old name is free.
    op.send("MODE #new")
    assert op.expect_msg("324").params[2] == "+nt"
    web.send_json(type="history", room="new", ref=1)
    texts = [m["text"] for m in web.expect_event("history", ref=1)["messages"]]
    assert texts[:1] == ["said before"]
    legacy.send("JOIN #old")
    assert legacy.expect_msg("JOIN").params == ["#old"]


def test_rename_refusals(irc: Callable[..., IrcClient]) -> None:
    op, other = irc("op", ("draft/channel-rename",)), irc("other")
    joined(op, "#a")
    joined(op, "#b")
    joined(other, "#a")
    other.send("RENAME #a #c")
    assert other.expect_msg("482").params[1] == "#a"
    op.quiet()
    op.send("RENAME #a #b")
    assert op.read_line() == (
        f":{SERVER} FAIL RENAME CHANNEL_NAME_IN_USE #a #b :Channel already exists"
    )
    op.send("RENAME #a bad")
    assert parse(op.read_line()).params[:4] == ["RENAME", "CANNOT_RENAME", "#a", "bad"]
    joined(op, "#lobby")
    op.send("RENAME #lobby #hall")
    assert parse(op.read_line()).params[:2] == ["RENAME", "CANNOT_RENAME"]
    other.quiet()
    op.send("RENAME #a #A")  # only the case: allowed, and no PART/JOIN for the others
    assert op.expect_msg("RENAME").params == ["#a", "#A", ""]
    assert other.quiet() == []
