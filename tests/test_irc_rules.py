"""IRC behaviours of RFC 1459/2812 and Modern IRC, over real sockets: long lines and tag
limits, WHOWAS, LUSERS, secret and private channels, invisible users, USER checks,
away-notify on join, client tags and TAGMSG, ban and invite exceptions, LIST filters, HELP."""

from collections.abc import Callable

from conftest import JsonClient, LineClient
from test_irc import IrcClient

from threadchat.protocols.irc.wire import Message, parse


def join(client: IrcClient, channel: str) -> None:
    client.send(f"JOIN {channel}")
    client.expect_msg("366")


def until_end(client: IrcClient, end: str) -> list[Message]:
    """Every message up to and including the first `end` numeric."""
    seen: list[Message] = []
    while not seen or seen[-1].command != end:
        seen.append(parse(client.read_line()))
    return seen


def synced(client: IrcClient) -> None:
    """Wait until everything `client` was sent before this call has arrived."""
    client.send("PING sync")
    client.expect_msg("PONG", lambda m: m.params[-1] == "sync")


# -- long lines ---------------------------------------------------------------------------------


def test_a_privmsg_past_512_bytes_with_the_prefix_arrives_whole(
    irc: Callable[..., IrcClient],
) -> None:
    alice, bob = irc("alice"), irc("bob")
    join(alice, "#long")
    join(bob, "#long")
    head = "PRIVMSG #long :"
    # Exactly 512 bytes from the client, CR LF included, ending in a 4-byte character.
    text = "é" * 100 + "x" * (512 - 2 - len(head) - 200 - 4) + "😀"
    assert len((head + text).encode()) + 2 == 512
    alice.send_raw((head + text + "\r\n").encode())
    line = bob.read_line()
    # Relayed intact as one line, never split: more than 512 bytes once the prefix is on.
    assert line == f":alice!~alice@127.0.0.1 PRIVMSG #long {text}"
    assert len(line.encode()) + 2 > 512
    assert [m for m in map(parse, bob.quiet()) if m.command == "PRIVMSG"] == []


def test_a_long_native_message_reaches_irc_as_one_line(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    alice = irc("alice")
    join(alice, "#lobby")
    native = connect("nat")
    alice.expect_msg("JOIN")
    text = "é" * 1500
    native.send(text)
    message = alice.expect_msg("PRIVMSG")
    assert message.params == ["#lobby", text]
    assert [line for line in alice.quiet() if "PRIVMSG" in line] == []


def test_client_lines_past_the_limits_get_417_and_reach_nobody(
    irc: Callable[..., IrcClient],
) -> None:
    alice, bob = irc("alice", ("message-tags",)), irc("bob", ("message-tags",))
    join(alice, "#lim")
    join(bob, "#lim")
    head = "PRIVMSG #lim :"
    alice.send_raw((head + "x" * (513 - 2 - len(head)) + "\r\n").encode())
    assert alice.expect_msg("417").to_line() == ":threadchat 417 alice :Input line was too long"
    # Tags: 4094 bytes of tag data at most ('@' and the space not counted), then 417.
    at_limit = "@+k=" + "a" * (4094 - 3) + " "
    assert len(at_limit) == 4096
    alice.send_raw((at_limit + head + "at the limit\r\n").encode())
    relayed = bob.expect_msg("PRIVMSG")
    assert relayed.params[1] == "at the limit" and relayed.tags["+k"] == "a" * 4091
    over = "@+k=" + "a" * (4094 - 2) + " "
    alice.send_raw((over + head + "over\r\n").encode())
    assert alice.read_line() == ":threadchat 417 alice :Input line was too long"
    alice.send_raw(over.encode() + b"TAGMSG #lim\r\n")
    assert alice.read_line() == ":threadchat 417 alice :Input line was too long"
    synced(alice)
    assert bob.quiet() == []


def test_line_ends_a_lone_lf_works_and_a_lone_cr_never_reaches_others(
    irc: Callable[..., IrcClient],
) -> None:
    alice, bob = irc("alice"), irc("bob")
    join(alice, "#ends")
    join(bob, "#ends")
    alice.send_raw(b"PRIVMSG #ends :lf only\n")
    assert bob.read_line() == ":alice!~alice@127.0.0.1 PRIVMSG #ends :lf only"
    alice.send_raw(b"PRIVMSG #ends :one\rPRIVMSG #ends :two\r\n")
    assert bob.read_line() == ":alice!~alice@127.0.0.1 PRIVMSG #ends one"
    assert bob.read_line() == ":alice!~alice@127.0.0.1 PRIVMSG #ends two"
    alice.send_raw(b"PRIVMSG #ends :a\rb\r\n")
    assert bob.read_line() == ":alice!~alice@127.0.0.1 PRIVMSG #ends a"
    assert alice.expect_msg("421").params[1] == "B"
    synced(alice)
    assert bob.quiet() == []


# -- WHOWAS -------------------------------------------------------------------------------------


def test_whowas_after_quit_and_nick_change_newest_first(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    asker = irc("asker")
    first = irc()
    first.register("gone")
    first.send("QUIT :bye")
    first.read_until_closed()
    second = irc()
    second.send("NICK gone", "USER second 0 * :Second One")
    second.expect_msg("001")
    second.send("NICK renamed")
    second.expect_msg("NICK")
    asker.send("WHOWAS gone")
    lines = [m for m in until_end(asker, "369")]
    assert [m.command for m in lines] == ["314", "312", "314", "312", "369"]
    assert lines[0].params == ["asker", "gone", "~second", "127.0.0.1", "*", "Second One"]
    assert lines[1].params[:3] == ["asker", "gone", "threadchat"]
    assert lines[2].params == ["asker", "gone", "~gone", "127.0.0.1", "*", "Real gone"]
    assert lines[4].to_line() == ":threadchat 369 asker gone :End of WHOWAS"
    for count, entries in (("1", 1), ("2", 2), ("5", 2), ("0", 2), ("-1", 2)):
        asker.send(f"WHOWAS gone {count}")
        assert [m.command for m in until_end(asker, "369")].count("314") == entries
    asker.send("WHOWAS nobody")
    assert asker.read_line() == ":threadchat 406 asker nobody :There was no such nickname"
    assert asker.read_line() == ":threadchat 369 asker nobody :End of WHOWAS"
    asker.send("WHOWAS")
    assert asker.read_line() == ":threadchat 461 asker WHOWAS :Not enough parameters"
    # A native user who left is remembered too, as IRC shows them.
    native = connect("nat")
    native.send("/quit")
    native.read_until_closed()
    asker.send("WHOWAS nat")
    assert asker.expect_msg("314").params[1:] == [
        "nat",
        "nat",
        "127.0.0.1",
        "*",
        "threadchat native user",
    ]


# -- LUSERS -------------------------------------------------------------------------------------


def test_lusers_counts_invisible_users_and_the_peak(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    bob = irc("bob")
    bob.send("MODE bob +i")
    bob.expect_msg("MODE")
    alice.send("LUSERS")
    lines = [m.to_line() for m in until_end(alice, "266")]
    assert lines.pop(3).startswith(":threadchat 254 alice ")  # channels: the lobby may exist
    assert lines == [
        ":threadchat 251 alice :There are 1 users and 1 invisible on 1 servers",
        ":threadchat 252 alice 0 :operator(s) online",
        ":threadchat 253 alice 0 :unknown connection(s)",
        ":threadchat 255 alice :I have 2 clients and 0 servers",
        ":threadchat 265 alice 2 2 :Current local users 2, max 2",
        ":threadchat 266 alice 2 2 :Current global users 2, max 2",
    ]
    bob.send("QUIT")
    bob.read_until_closed()  # the server lets go of a name before it closes the link
    alice.send("LUSERS")
    lines = [m.to_line() for m in until_end(alice, "266")]
    assert lines[0] == ":threadchat 251 alice :There are 1 users and 0 invisible on 1 servers"
    assert lines[-2:] == [
        ":threadchat 265 alice 1 2 :Current local users 1, max 2",
        ":threadchat 266 alice 1 2 :Current global users 1, max 2",
    ]


# -- secret and private channels, invisible users -----------------------------------------------


def test_secret_and_private_channels_are_hidden_from_non_members(
    irc: Callable[..., IrcClient], connect_json: Callable[..., JsonClient]
) -> None:
    owner, outsider = irc("owner"), irc("outsider")
    join(owner, "#hush")
    join(owner, "#priv")
    join(owner, "#open")
    owner.send("MODE #hush +s", "MODE #priv +p")
    owner.expect_msg("MODE", lambda m: m.params[:2] == ["#hush", "+s"])
    owner.expect_msg("MODE", lambda m: m.params[:2] == ["#priv", "+p"])
    owner.send("NAMES #hush", "NAMES #priv", "NAMES #open")
    assert owner.read_line() == ":threadchat 353 owner @ #hush @owner"
    owner.expect_msg("366")
    assert owner.read_line() == ":threadchat 353 owner * #priv @owner"
    owner.expect_msg("366")
    assert owner.read_line() == ":threadchat 353 owner = #open @owner"
    owner.expect_msg("366")
    owner.send("LIST")
    listed = {m.params[1] for m in until_end(owner, "323") if m.command == "322"}
    assert listed - {"#lobby"} == {"#hush", "#priv", "#open"}

    outsider.send("LIST")
    listed = {m.params[1] for m in until_end(outsider, "323") if m.command == "322"}
    assert listed - {"#lobby"} == {"#open"}
    outsider.send("NAMES #hush", "WHO #priv", "WHOIS owner")
    assert outsider.read_line() == ":threadchat 366 outsider #hush :End of /NAMES list"
    assert outsider.read_line() == ":threadchat 315 outsider #priv :End of WHO list"
    assert outsider.expect_msg("319").params[-1] == "@#open"
    # The native room list hides them too.
    jane = connect_json("jane")
    jane.send_json(type="rooms")
    rooms = {room["name"] for room in jane.expect_event("rooms")["rooms"]}
    assert {"open", "lobby"} <= rooms and not {"hush", "priv"} & rooms
    # A member sees it everywhere.
    join(outsider, "#hush")
    outsider.send("LIST #hush")
    assert [m.params[1] for m in until_end(outsider, "323") if m.command == "322"] == ["#hush"]


def test_who_shows_invisible_users_only_to_who_shares_a_channel(
    irc: Callable[..., IrcClient],
) -> None:
    ghost, stranger, friend = irc("ghost"), irc("stranger"), irc("friend")
    ghost.send("MODE ghost +i")
    ghost.expect_msg("MODE")
    join(ghost, "#haunt")
    join(friend, "#haunt")
    stranger.send("WHO gho*", "WHO *", "WHO #haunt", "NAMES #haunt")
    seen = until_end(stranger, "315") + until_end(stranger, "315") + until_end(stranger, "315")
    assert "ghost" not in {m.params[5] for m in seen if m.command == "352"}
    assert "friend" in {m.params[5] for m in seen if m.command == "352"}
    names = stranger.expect_msg("353")
    assert names.params[-1] == "friend"
    # A plain nick is not a search: it names the one person, invisible or not.
    stranger.send("WHO ghost")
    assert stranger.expect_msg("352").params[5] == "ghost"
    friend.send("WHO gho*")
    assert friend.expect_msg("352").params[5] == "ghost"
    ghost.send("WHO gho*")
    assert ghost.expect_msg("352").params[5] == "ghost"


# -- registration -------------------------------------------------------------------------------


def test_user_with_an_empty_realname_is_refused(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("NICK empty", "USER u 0 * :")
    assert client.read_line() == ":threadchat 461 * USER :Not enough parameters"
    synced(client)
    assert client.quiet() == []
    client.send("USER u 0 * :Now Named")
    client.expect_msg("001")


# -- away-notify ---------------------------------------------------------------------------------


def test_an_away_user_joining_is_shown_away_to_away_notify_members(
    irc: Callable[..., IrcClient],
) -> None:
    notified, plain = irc("notified", ("away-notify",)), irc("plain")
    join(notified, "#cafe")
    join(plain, "#cafe")
    walker = irc("walker")
    walker.send("AWAY :out for lunch")
    walker.expect_msg("306")
    walker.send("JOIN #cafe")
    joined = notified.expect_msg("JOIN", lambda m: m.source.startswith("walker!"))
    assert joined.to_line() == ":walker!~walker@127.0.0.1 JOIN #cafe"
    assert notified.read_line() == ":walker!~walker@127.0.0.1 AWAY :out for lunch"
    assert plain.read_line() == ":walker!~walker@127.0.0.1 JOIN #cafe"
    synced(plain)
    assert [line for line in plain.quiet() if "AWAY" in line] == []


def test_an_away_joiner_is_not_told_it_is_away(irc: Callable[..., IrcClient]) -> None:
    member = irc("member", ("away-notify",))
    join(member, "#cafe")
    walker = irc("walker", ("away-notify",))
    walker.send("AWAY :out for lunch")
    walker.expect_msg("306")
    walker.send("JOIN #cafe")
    assert walker.read_line() == ":walker!~walker@127.0.0.1 JOIN #cafe"
    burst = [walker.read_line()]
    while " 366 " not in burst[-1]:
        burst.append(walker.read_line())
    synced(walker)
    assert [line for line in burst + walker.quiet() if " AWAY " in line] == []
    member.expect_msg("JOIN", lambda m: m.source.startswith("walker!"))
    assert member.read_line() == ":walker!~walker@127.0.0.1 AWAY :out for lunch"


# -- client tags and TAGMSG ----------------------------------------------------------------------


def test_client_tags_reach_message_tags_clients_only(irc: Callable[..., IrcClient]) -> None:
    sender = irc("sender", ("message-tags",))
    tagged, plain = irc("tagged", ("message-tags",)), irc("plain")
    for client in (sender, tagged, plain):
        join(client, "#tags")
    sender.send("@+draft/reply=42;+example.com/x=a\\sb;label=no PRIVMSG #tags hi")
    message = tagged.expect_msg("PRIVMSG")
    assert message.tags["+draft/reply"] == "42" and message.tags["+example.com/x"] == "a b"
    assert "label" not in message.tags and "msgid" in message.tags
    assert plain.read_line() == ":sender!~sender@127.0.0.1 PRIVMSG #tags hi"
    sender.send("@+typing=active PRIVMSG plain :psst", "@+typing=active PRIVMSG tagged :psst")
    assert plain.read_line() == ":sender!~sender@127.0.0.1 PRIVMSG plain psst"
    assert tagged.expect_msg("PRIVMSG").tags["+typing"] == "active"

    sender.send("@+typing=active TAGMSG #tags", "@+draft/react=👍 TAGMSG tagged")
    relayed = tagged.expect_msg("TAGMSG")
    assert relayed.params == ["#tags"] and relayed.tags["+typing"] == "active"
    assert relayed.source == "sender!~sender@127.0.0.1"
    assert tagged.expect_msg("TAGMSG").tags["+draft/react"] == "👍"
    synced(plain)
    assert [line for line in plain.quiet() if "TAGMSG" in line] == []
    # Without message-tags TAGMSG is not a command one may send.
    plain.send("@+typing=active TAGMSG #tags")
    assert plain.read_line() == ":threadchat 421 plain TAGMSG :Unknown command"
    outsider = irc("outsider", ("message-tags",))
    outsider.send("@+typing=active TAGMSG #tags", "TAGMSG nobody")
    assert outsider.expect_msg("404").params[1] == "#tags"
    assert outsider.expect_msg("401").params[1] == "nobody"


def test_tagmsg_echo_carries_the_same_msgid(irc: Callable[..., IrcClient]) -> None:
    sender = irc("sender", ("message-tags", "echo-message"))
    tagged = irc("tagged", ("message-tags",))
    join(sender, "#echo")
    join(tagged, "#echo")
    sender.send("@+typing=paused TAGMSG #echo")
    echo, relayed = sender.expect_msg("TAGMSG"), tagged.expect_msg("TAGMSG")
    assert echo.tags["+typing"] == relayed.tags["+typing"] == "paused"
    assert echo.tags["msgid"] == relayed.tags["msgid"]


# -- channel modes: exceptions, LIST filters, HELP ----------------------------------------------


def test_ban_and_invite_exceptions(irc: Callable[..., IrcClient]) -> None:
    op = irc("op")
    op.send("VERSION", "PING sync")
    isupport = [m for m in until_end(op, "PONG") if m.command == "005"]
    tokens = " ".join(" ".join(m.params[1:-1]) for m in isupport)
    for token in ("EXCEPTS=e", "INVEX=I", "CHANMODES=Ibe,k,l,imnpst", "ELIST=CMNTU"):
        assert token in tokens
    join(op, "#club")
    op.send("MODE #club +b bar*!*@*")
    op.expect_msg("MODE")
    barry = irc("barry")
    barry.send("JOIN #club")
    assert barry.expect_msg("474").params[1] == "#club"
    op.send("MODE #club +e barry!*@*")
    assert op.read_line() == ":op!~op@127.0.0.1 MODE #club +e barry!*@*"
    join(barry, "#club")
    op.expect_msg("JOIN")
    op.send("MODE #club e", "MODE #club +i", "MODE #club +I carol!*@*")
    assert op.read_line() == ":threadchat 348 op #club barry!*@*"
    assert op.read_line() == ":threadchat 349 op #club :End of channel exception list"
    op.expect_msg("MODE", lambda m: m.params[1] == "+i")
    assert op.read_line() == ":op!~op@127.0.0.1 MODE #club +I carol!*@*"
    carol, dave = irc("carol"), irc("dave")
    join(carol, "#club")
    dave.send("JOIN #club")
    assert dave.expect_msg("473").params[1] == "#club"
    op.expect_msg("JOIN")
    op.send("MODE #club I")
    assert op.read_line() == ":threadchat 346 op #club carol!*@*"
    assert op.read_line() == ":threadchat 347 op #club :End of channel invite exception list"


def test_list_filters(irc: Callable[..., IrcClient]) -> None:
    foo, bar, baz = irc("foo"), irc("bar"), irc("baz")
    join(foo, "#chan1")
    join(foo, "#chan2")
    join(bar, "#chan2")

    def listed(query: str) -> set[str]:
        baz.send(f"LIST {query}")
        return {m.params[1] for m in until_end(baz, "323") if m.command == "322"}

    assert listed(">0") == {"#chan1", "#chan2"}
    assert listed(">1") == {"#chan2"}
    assert listed("<2") == {"#chan1"}
    assert listed("*an1") == {"#chan1"}
    assert listed("!*an1") == {"#chan2"}
    assert listed("#ch*,>1") == {"#chan2"}
    assert listed("C<10") == {"#chan1", "#chan2"}
    assert listed("C>10") == set()
    assert listed("T>0") == set()  # no topics set
    assert listed("#CHAN1") == {"#chan1"}


def test_help_with_topics(irc: Callable[..., IrcClient]) -> None:
    client = irc("nick")
    client.send("HELP PRIVMSG")
    lines = until_end(client, "706")
    assert lines[0].command == "704" and lines[0].params[1] == "PRIVMSG"
    assert all(m.command == "705" and m.params[1] == "PRIVMSG" for m in lines[1:-1])
    assert lines[-1].to_line() == ":threadchat 706 nick PRIVMSG :End of /HELP"
    client.send("HELPOP", "HELP nosuchthing")
    assert until_end(client, "706")[0].command == "704"
    assert client.read_line() == (
        ":threadchat 524 nick nosuchthing :No help available on this topic"
    )


def test_every_command_has_a_help_topic() -> None:
    from threadchat.protocols.irc.commands import COMMANDS
    from threadchat.protocols.irc.help_topics import HELP_TOPICS

    assert set(COMMANDS) <= set(HELP_TOPICS)


def test_native_users_do_not_see_a_secret_room_they_are_not_in(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    owner = irc("owner")
    join(owner, "#hush")
    owner.send("MODE #hush +s")
    owner.expect_msg("MODE")
    tom = connect("tom")
    tom.send("/rooms", "/who hush")
    assert tom.expect("---") == "--- lobby (1 member)"
    assert tom.expect("!!!") == "!!! there is no room hush"
    tom.send("/join hush", "/who hush")
    tom.expect("--> tom joined hush")
    assert tom.expect("--- in hush") == "--- in hush: owner, tom"
