"""The IRC transport over real sockets: registration, channels, modes, caps, errors, and
IRC users sharing rooms with native users."""

import time
from collections.abc import Callable

import pytest
from conftest import WAIT, IrcClient, LineClient, ThreadLimit, unref

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import parse


def numerics(lines: list[str]) -> list[str]:
    return [parse(line).command for line in lines]


# -- registration -----------------------------------------------------------------------------


def test_registration_burst(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("NICK alice", "USER al 0 * :Alice Liddell")
    lines = []
    while not lines or parse(lines[-1]).command != "422":
        lines.append(client.read_line())
    codes = numerics(lines)
    assert codes[:4] == ["001", "002", "003", "004"]
    assert "005" in codes and {"251", "252", "253", "254", "255", "265", "266"} <= set(codes)
    welcome = parse(lines[0])
    assert welcome.source == "threadchat" and welcome.params[0] == "alice"
    assert welcome.params[1].endswith("alice!~al@127.0.0.1")
    assert parse(lines[3]).params[1] == "threadchat"
    tokens = " ".join(" ".join(parse(line).params) for line in lines if "005" in line)
    for token in (
        "CASEMAPPING=ascii",
        "CHANTYPES=#",
        "CHANMODES=Ibe,k,l,Cimnpst",
        "PREFIX=(ov)@+",
        "NICKLEN=30",
        "CHANNELLEN=50",
        "TOPICLEN=390",
        "NETWORK=threadchat",
    ):
        assert token in tokens


def test_motd_when_configured(make_server: Callable[..., Server]) -> None:
    server = make_server(motd="Be nice.\nHave fun.")
    client = IrcClient(server.listener("irc").port)
    try:
        client.send("NICK m", "USER m 0 * :m")
        assert client.expect_msg("375")
        assert client.expect_msg("372").params[1] == "- Be nice."
        assert client.expect_msg("372").params[1] == "- Have fun."
        client.expect_msg("376")
    finally:
        client.close()


def test_cap_negotiation_holds_registration_until_end(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("CAP LS 302", "NICK carol", "USER c 0 * :C")
    # The list may take several lines (CAP 302: every one but the last has `*` before it).
    ls = client.expect_msg("CAP")
    offered = set(ls.params[-1].split())
    while ls.params[2] == "*":
        ls = client.expect_msg("CAP")
        offered |= set(ls.params[-1].split())
    assert {
        "cap-notify",
        "multi-prefix",
        "server-time",
        "message-tags",
        "echo-message",
        "away-notify",
        "account-tag",
        "extended-join",
        "userhost-in-names",
        "batch",
    } <= offered
    # sasl needs accounts (off here); draft/chathistory comes with history (on by default).
    assert "sasl" not in offered and "draft/chathistory" in offered
    assert client.quiet() == []  # no 001 while negotiating
    client.send("CAP REQ :batch account-tag", "CAP REQ :no-such-cap")
    assert client.expect_msg("CAP").params[1:] == ["ACK", "batch account-tag"]
    assert client.expect_msg("CAP").params[1:] == ["NAK", "no-such-cap"]
    client.send("CAP END")
    client.expect_msg("001")
    client.send("CAP LIST")
    listed = client.expect_msg("CAP", lambda m: m.params[1] == "LIST").params[-1].split()
    assert sorted(listed) == ["account-tag", "batch", "cap-notify"]


def test_connection_password(make_server: Callable[..., Server]) -> None:
    server = make_server(irc_password="sesame")
    port = server.listener("irc").port
    wrong, right = IrcClient(port), IrcClient(port)
    try:
        wrong.send("PASS nope", "NICK w", "USER w 0 * :w")
        lines = wrong.read_until_closed()
        assert numerics(lines) == ["464", "ERROR"]
        right.send("PASS sesame", "NICK r", "USER r 0 * :r")
        right.expect_msg("001")
    finally:
        wrong.close()
        right.close()


def test_nick_errors(irc: Callable[..., IrcClient], connect: Callable[..., LineClient]) -> None:
    connect("bob")  # a native user holds "bob"
    client = irc()
    client.send("NICK", "NICK 1abc", "NICK Bob")
    assert client.expect_msg("431")
    assert client.expect_msg("432").params[1] == "1abc"
    assert client.expect_msg("433").params[1] == "Bob"
    client.send("NICK alice", "USER a 0 * :A")
    client.expect_msg("001")
    client.send("NICK BOB", "NICK b@d", "NICK", "USER x 0 * :x", "PASS x")
    assert client.expect_msg("433").params[:2] == ["alice", "BOB"]
    assert client.expect_msg("432").params[1] == "b@d"
    client.expect_msg("431")
    client.expect_msg("462")
    client.expect_msg("462")


def test_irc_and_native_names_fold_alike(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    irc_user = irc("Alice[Away]")
    native = connect()
    native.send("alice[away]")
    assert "alice[away]" in native.expect("taken")
    native.send("k")
    native.expect("--- in lobby:")
    irc_user.send("NICK K", "NICK \u212a")
    assert irc_user.expect_msg("433").params[1] == "K"
    assert irc_user.expect_msg("432").params[1] == "\u212a"
    # KELVIN SIGN is no name anybody can take, so it must not reach the "k" it lowercases to.
    irc_user.send("PRIVMSG \u212a :for k?", "PRIVMSG K :for k")
    assert irc_user.expect_msg("401").params[1] == "\u212a"
    assert unref(native.expect("Alice[Away]")) == "[private] Alice[Away]: for k"
    native.send("/msg \u212a for Alice?", "/msg ALICE[AWAY] for Alice")
    native.expect("nobody called \u212a")
    assert irc_user.expect_msg("PRIVMSG").params == ["Alice[Away]", "for Alice"]


def test_commands_before_registration_and_unknown(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("JOIN #dev", "PRIVMSG x :y", "FROB", "PING tok")
    assert numerics([client.read_line() for _ in range(3)]) == ["451", "451", "451"]
    assert client.expect_msg("PONG").params == ["threadchat", "tok"]
    client.register("alice")
    client.send("FROB a b", "JOIN", "KICK #x", "MODE", "OPER x")
    assert client.expect_msg("421").params[1] == "FROB"
    for command in ("JOIN", "KICK", "MODE", "OPER"):
        assert client.expect_msg("461").params[1] == command


def test_registration_timeout(make_server: Callable[..., Server]) -> None:
    server = make_server(name_timeout=0.5)
    client = IrcClient(server.listener("irc").port)
    try:
        client.send("NICK slow")
        lines = client.read_until_closed(timeout=WAIT)
        assert "Registration timeout" in lines[-1] and lines[-1].startswith("ERROR")
    finally:
        client.close()


def test_quit_before_and_after_registration(irc: Callable[..., IrcClient]) -> None:
    early = irc()
    early.send("QUIT :bye")
    assert early.read_until_closed()[-1].startswith("ERROR :Closing Link")
    alice, bob = irc("alice"), irc("bob")
    alice.send("JOIN #q")
    alice.expect_msg("366")
    bob.send("JOIN #q")
    bob.expect_msg("366")
    bob.send("QUIT :see you")
    assert bob.read_until_closed()[-1].startswith("ERROR")
    quit_msg = alice.expect_msg("QUIT")
    assert quit_msg.source == "bob!~bob@127.0.0.1"
    assert quit_msg.params == ["Quit: see you"]


# -- ping ---------------------------------------------------------------------------------------


def test_server_pings_idle_client_and_drops_it(make_server: Callable[..., Server]) -> None:
    server = make_server(ping_interval=0.5, ping_timeout=1.0)
    port = server.listener("irc").port
    idle, watcher = IrcClient(port), IrcClient(port)
    try:
        watcher.register("watcher")
        idle.register("idle")
        for client in (idle, watcher):
            client.send("JOIN #p")
            client.expect_msg("366")
        ping = idle.expect_msg("PING", timeout=WAIT)
        assert ping.params == ["threadchat"]
        # watcher answers its pings; idle does not.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = watcher.read_line()
            if parse(line).command == "PING":
                watcher.send("PONG :threadchat")
            if parse(line).command == "QUIT":
                assert parse(line).params[0].startswith("Ping timeout")
                break
        else:
            pytest.fail("no QUIT for the idle client")
        # The ERROR line may be lost if the close races a reset; the QUIT above is the contract.
        assert all("Ping timeout" in line for line in idle.read_until_closed() if "ERROR" in line)
    finally:
        idle.close()
        watcher.close()


# -- channels and messages --------------------------------------------------------------------


def test_join_names_topic_part(irc: Callable[..., IrcClient]) -> None:
    alice, bob = irc("alice"), irc("bob")
    alice.send("JOIN #dev")
    join = alice.expect_msg("JOIN")
    assert join.source == "alice!~alice@127.0.0.1" and join.params == ["#dev"]
    names = alice.expect_msg("353")
    assert names.params[1:] == ["=", "#dev", "@alice"]
    alice.expect_msg("366")
    alice.send("TOPIC #dev", "TOPIC #dev :Development talk")
    alice.expect_msg("331")
    assert alice.expect_msg("TOPIC").params == ["#dev", "Development talk"]
    bob.send("JOIN #dev")
    assert bob.expect_msg("332").params[1:] == ["#dev", "Development talk"]
    assert bob.expect_msg("333").params[1:3] == ["#dev", "alice"]
    assert bob.expect_msg("353").params[-1] == "@alice bob"
    assert alice.expect_msg("JOIN").source.startswith("bob!")
    bob.send("PART #dev :later")
    assert bob.expect_msg("PART").params == ["#dev", "later"]
    assert alice.expect_msg("PART").params == ["#dev", "later"]
    bob.send("PART #dev", "PART #nowhere", "PART #café")
    assert bob.expect_msg("442").params[1] == "#dev"
    assert bob.expect_msg("403").params[1] == "#nowhere"
    assert bob.expect_msg("403").params[1] == "#café"


def test_join_several_with_keys_and_join_zero(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    alice.send("JOIN #a,#b", "MODE #b +k sekrit")
    alice.expect_msg("MODE")
    bob = irc("bob")
    bob.send("JOIN #a,#b,nochan", "JOIN #b wrong", "JOIN #b sekrit")
    bob.expect_msg("JOIN", lambda m: m.params == ["#a"])
    assert bob.expect_msg("475").params[1] == "#b"
    assert bob.expect_msg("403").params[1] == "nochan"
    assert bob.expect_msg("475").params[1] == "#b"
    bob.expect_msg("JOIN", lambda m: m.params == ["#b"])
    bob.send("JOIN 0")
    parted = {bob.expect_msg("PART").params[0], bob.expect_msg("PART").params[0]}
    assert parted == {"#a", "#b"}


def test_privmsg_and_notice(irc: Callable[..., IrcClient]) -> None:
    alice, bob, carol = irc("alice"), irc("bob"), irc("carol")
    for client in (alice, bob):
        client.send("JOIN #dev")
        client.expect_msg("366")
    alice.send("PRIVMSG #dev :hello there", "NOTICE #dev :psst")
    msg = bob.expect_msg("PRIVMSG")
    assert (msg.source, msg.params) == ("alice!~alice@127.0.0.1", ["#dev", "hello there"])
    assert bob.expect_msg("NOTICE").params == ["#dev", "psst"]
    alice.send("PRIVMSG bob,carol :to you both", "PRIVMSG #dev :\x01ACTION waves\x01")
    assert bob.expect_msg("PRIVMSG").params == ["bob", "to you both"]
    assert carol.expect_msg("PRIVMSG").params == ["carol", "to you both"]
    assert bob.expect_msg("PRIVMSG").params == ["#dev", "\x01ACTION waves\x01"]
    alice.send("PRIVMSG nobody :x", "PRIVMSG #nope :x", "PRIVMSG", "PRIVMSG bob", "PRIVMSG bob :")
    assert alice.expect_msg("401").params[1] == "nobody"
    assert alice.expect_msg("403").params[1] == "#nope"
    alice.expect_msg("411")
    alice.expect_msg("412")
    alice.expect_msg("412")
    carol.send("PRIVMSG #dev :outsider")  # +n: members only
    assert carol.expect_msg("404").params[1] == "#dev"
    carol.send("NOTICE nobody :x", "PING done")  # NOTICE is never answered with an error
    assert numerics(carol.quiet(0.5)) == ["PONG"]
    assert alice.quiet() == [] and "outsider" not in " ".join(bob.quiet())


def test_formatting_codes_pass_through(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    alice, bob = irc("alice"), irc("bob")
    native = connect("nat")
    for client in (alice, bob):
        client.send("JOIN #lobby")
        client.expect_msg("366")
    alice.send("PRIVMSG #lobby :\x02bold\x02 \x0304red")
    assert bob.expect_msg("PRIVMSG").params[1] == "\x02bold\x02 \x0304red"
    assert unref(native.expect("alice:")) == "alice: \ufffdbold\ufffd \ufffd04red"


# -- modes and moderation -----------------------------------------------------------------------


def test_channel_modes(irc: Callable[..., IrcClient]) -> None:
    op, bob = irc("op"), irc("bob")
    op.send("JOIN #m")
    op.expect_msg("366")
    bob.send("JOIN #m")
    bob.expect_msg("366")
    op.expect_msg("JOIN")
    op.send("MODE #m")
    assert op.expect_msg("324").params[1:] == ["#m", "+nt"]
    op.expect_msg("329")
    bob.send("MODE #m +m", "TOPIC #m :mine")
    assert bob.expect_msg("482").params[1] == "#m"
    assert bob.expect_msg("482").params[1] == "#m"
    op.send("MODE #m +mv bob")
    change = bob.expect_msg("MODE")
    assert change.source.startswith("op!") and change.params == ["#m", "+mv", "bob"]
    bob.send("PRIVMSG #m :voiced")
    assert op.expect_msg("PRIVMSG").params == ["#m", "voiced"]
    op.send("MODE #m -v bob")
    bob.expect_msg("MODE")
    bob.send("PRIVMSG #m :muted")
    assert bob.expect_msg("404").params[1] == "#m"
    op.send("MODE #m +o nobody", "MODE #m +z", "MODE #m +l 1", "MODE #m +b evil", "MODE #m b")
    assert op.expect_msg("401").params[1] == "nobody"
    assert op.expect_msg("472").params[1] == "z"
    assert op.expect_msg("MODE").params == ["#m", "+l", "1"]
    assert op.expect_msg("MODE").params == ["#m", "+b", "evil!*@*"]
    assert op.expect_msg("367").params[1:3] == ["#m", "evil!*@*"]
    op.expect_msg("368")
    op.send("MODE #m")
    assert op.expect_msg("324").params[1:] == ["#m", "+mntl", "1"]


def test_mode_limits_bans_invites(irc: Callable[..., IrcClient]) -> None:
    op = irc("op")
    op.send("JOIN #x", "MODE #x +l 1")
    op.expect_msg("MODE")
    bob = irc("bob")
    bob.send("JOIN #x")
    assert bob.expect_msg("471").params[1] == "#x"
    op.send("MODE #x -l+i")
    op.expect_msg("MODE")
    bob.send("JOIN #x")
    assert bob.expect_msg("473").params[1] == "#x"
    op.send("INVITE bob #x")
    assert op.expect_msg("341").params[1:] == ["bob", "#x"]
    invite = bob.expect_msg("INVITE")
    assert invite.source.startswith("op!") and invite.params == ["bob", "#x"]
    bob.send("JOIN #x")
    bob.expect_msg("366")
    op.send("INVITE bob #x", "INVITE ghost #x", "INVITE bob #other")
    assert op.expect_msg("443").params[1:3] == ["bob", "#x"]
    assert op.expect_msg("401").params[1] == "ghost"
    assert op.expect_msg("403").params[1] == "#other"
    op.send("KICK #x bob :behave")
    kick = bob.expect_msg("KICK")
    assert kick.source.startswith("op!") and kick.params == ["#x", "bob", "behave"]
    op.send("MODE #x +b bob!*@*", "KICK #x bob", "KICK #x ghost")
    op.expect_msg("MODE")
    assert op.expect_msg("441").params[1:3] == ["bob", "#x"]
    assert op.expect_msg("401").params[1] == "ghost"
    op.send("INVITE bob #x")
    op.expect_msg("341")
    bob.send("JOIN #x", "KICK #x op", "INVITE op #x")
    assert bob.expect_msg("474").params[1] == "#x"
    assert bob.expect_msg("442").params[1] == "#x"
    assert bob.expect_msg("442").params[1] == "#x"


def test_user_modes(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    irc("bob")
    alice.send("MODE alice", "MODE alice +iw", "MODE alice +q", "MODE bob +i", "MODE alice +o")
    assert alice.expect_msg("221").params[1] == "+"
    assert alice.expect_msg("MODE").params == ["alice", "+iw"]
    alice.expect_msg("501")
    alice.expect_msg("502")
    alice.send("MODE alice")
    assert alice.expect_msg("221").params[1] == "+iw"  # +o only comes from OPER


def test_operator_commands(make_server: Callable[..., Server]) -> None:
    server = make_server(oper=["root:hunter2"])
    port = server.listener("irc").port
    admin, victim, other = IrcClient(port), IrcClient(port), IrcClient(port)
    try:
        for client, nick in ((admin, "admin"), (victim, "victim"), (other, "other")):
            client.register(nick)
            client.send("JOIN #k")
            client.expect_msg("366")
        other.send("MODE other +w")
        other.expect_msg("MODE")
        admin.send("KILL victim :spam", "WALLOPS :hi", "OPER nobody x", "OPER root wrong")
        admin.expect_msg("481")
        admin.expect_msg("481")
        admin.expect_msg("491")
        admin.expect_msg("464")
        admin.send("OPER root hunter2")
        admin.expect_msg("381")
        assert admin.expect_msg("MODE").params == ["admin", "+o"]
        admin.send("WHOIS admin")
        assert admin.expect_msg("313").params[1] == "admin"
        admin.send("WALLOPS :maintenance soon")
        wallops = other.expect_msg("WALLOPS")
        assert wallops.source.startswith("admin!") and wallops.params == ["maintenance soon"]
        admin.send("KILL victim :spam")
        assert "Killed (admin (spam))" in victim.read_until_closed()[-1]
        quit_msg = other.expect_msg("QUIT")
        assert quit_msg.params == ["Killed (admin (spam))"]
        admin.send("KILL ghost :x")
        assert admin.expect_msg("401").params[1] == "ghost"
    finally:
        for client in (admin, victim, other):
            client.close()


def test_operator_overrides_channel_modes(make_server: Callable[..., Server]) -> None:
    server = make_server(oper=["root:pw"])
    port = server.listener("irc").port
    owner, admin = IrcClient(port), IrcClient(port)
    try:
        owner.register("owner")
        admin.register("admin")
        owner.send("JOIN #priv", "MODE #priv +ik key")
        owner.expect_msg("MODE")
        admin.send("JOIN #priv")
        admin.expect_msg("473")
        admin.send("OPER root pw")
        admin.expect_msg("381")
        admin.send("JOIN #priv", "MODE #priv -i")
        admin.expect_msg("366")
        assert owner.expect_msg("MODE", lambda m: m.source.startswith("admin!")).params == [
            "#priv",
            "-i",
        ]
    finally:
        owner.close()
        admin.close()


# -- queries ----------------------------------------------------------------------------------


def test_who_whois_ison_userhost_list(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    connect("nat")  # a native user in the lobby
    alice = irc("alice")
    alice.send("JOIN #lobby")
    alice.expect_msg("366")
    alice.send("WHO #lobby")
    rows = {alice.expect_msg("352").params[5]: None for _ in range(2)}
    assert set(rows) == {"nat", "alice"}
    assert alice.expect_msg("315").params[1] == "#lobby"
    alice.send("WHO nat")
    row = alice.expect_msg("352")
    assert row.params[1:7] == ["*", "nat", "127.0.0.1", "threadchat", "nat", "H"]
    alice.expect_msg("315")
    alice.send("WHOIS nat")
    whois = alice.expect_msg("311")
    assert whois.params[1:] == ["nat", "nat", "127.0.0.1", "*", "threadchat native user"]
    assert alice.expect_msg("319").params[2] == "@#lobby"  # nat created the lobby
    assert "native" in alice.expect_msg("312").params[3]
    alice.expect_msg("317")
    alice.expect_msg("318")
    alice.send("WHOWAS ghost")
    assert alice.expect_msg("406").params[1] == "ghost"
    alice.expect_msg("369")
    alice.send("WHOIS ghost", "WHOIS")
    assert alice.expect_msg("401").params[1] == "ghost"
    alice.expect_msg("318")
    alice.expect_msg("431")
    alice.send("ISON nat ghost ALICE", "USERHOST nat alice")
    assert alice.expect_msg("303").params[1] == "nat alice"
    assert alice.expect_msg("302").params[1] == "nat=+nat@127.0.0.1 alice=+~alice@127.0.0.1"
    alice.send("LIST")
    alice.expect_msg("321")
    assert alice.expect_msg("322").params[1:3] == ["#lobby", "2"]
    alice.expect_msg("323")


def test_away(irc: Callable[..., IrcClient]) -> None:
    alice, bob, carol = irc("alice"), irc("bob", ("away-notify",)), irc("carol")
    for client in (alice, bob, carol):
        client.send("JOIN #a")
        client.expect_msg("366")
    alice.send("AWAY :lunch")
    alice.expect_msg("306")
    away = bob.expect_msg("AWAY")
    assert away.source.startswith("alice!") and away.params == ["lunch"]
    carol.send("PRIVMSG alice :there?", "WHOIS alice")
    assert carol.expect_msg("301").params[1:] == ["alice", "lunch"]
    assert carol.expect_msg("301").params[1:] == ["alice", "lunch"]
    alice.send("AWAY")
    alice.expect_msg("305")
    assert bob.expect_msg("AWAY").params == []
    assert "AWAY" not in " ".join(carol.quiet())  # carol has no away-notify


def test_info_commands(irc: Callable[..., IrcClient]) -> None:
    client = irc("alice")
    client.send("INFO", "VERSION", "TIME", "ADMIN", "HELP", "LUSERS", "MOTD")
    for code in (
        "371",
        "374",
        "351",
        "005",
        "391",
        "256",
        "257",
        "258",
        "259",
        "704",
        "706",
        "251",
        "255",
        "422",
    ):
        client.expect_msg(code)


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_gets_numerics_and_harms_nobody(irc: Callable[..., IrcClient]) -> None:
    alice, bob = irc("alice"), irc("bob")
    for client in (alice, bob):
        client.send("JOIN #safe")
        client.expect_msg("366")
    alice.send_raw(b"\xff\xfe\xfd\r\n")
    assert alice.expect_msg("421").params[1] == "\xff\xfe\xfd"  # latin-1 fallback
    alice.send_raw(b"PRIVMSG #safe :a\x00b\r\n")
    assert alice.expect_msg("400").params[-1].startswith("Malformed line")
    # A lone CR ends a line (RFC 1459): "two" is a line of its own, an unknown command.
    alice.send_raw(b"PRIVMSG #safe :one\rtwo\r\n")
    assert alice.expect_msg("421").params[1] == "TWO"
    alice.send_raw(b"PRIVMSG #safe :" + b"x" * 600 + b"\r\n")
    alice.expect_msg("417")
    alice.send_raw(b"@" + b"t" * 9000 + b" PRIVMSG #safe :tags\r\n")
    alice.expect_msg("417")
    alice.send("JOIN #b@d,#ok", "JOIN #" + "x" * 60, "NICK :")
    assert alice.expect_msg("403").params[1] == "#b@d"
    alice.expect_msg("JOIN", lambda m: m.params == ["#ok"])
    alice.expect_msg("403")
    alice.expect_msg("431")
    alice.send("PRIVMSG #safe :still fine")
    assert bob.expect_msg("PRIVMSG").params == ["#safe", "one"]
    assert bob.expect_msg("PRIVMSG").params == ["#safe", "still fine"]
    assert all("PRIVMSG" not in line for line in bob.quiet())


def test_a_lone_cr_ends_a_line(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send_raw(b"NICK alice\rUSER a 0 * :A\r")
    client.expect_msg("001")
    client.send_raw(b"\nPING first\rPING second\r")
    assert client.expect_msg("PONG").params[-1] == "first"
    assert client.expect_msg("PONG").params[-1] == "second"


def test_at_a_thread_limit_clients_get_error_then_are_served_again(server: Server) -> None:
    limit = ThreadLimit(server)
    port = server.listener("irc").port
    limit.reached.set()
    refused = IrcClient(port)
    try:
        assert refused.read_until_closed() == [
            "ERROR :Closing Link: 127.0.0.1 "
            "(the server cannot take more connections right now; try again later)"
        ]
    finally:
        refused.close()
    limit.reached.clear()
    client = IrcClient(port)
    try:
        client.register("alice")
    finally:
        client.close()


def test_no_newline_flood_closes_link(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    alice.send_raw(b"x" * 70000)
    assert "Input buffer exceeded" in alice.read_until_closed()[-1]


def test_flood_control_slows_down(make_server: Callable[..., Server]) -> None:
    server = make_server(flood_rate=20, flood_burst=3)
    client = IrcClient(server.listener("irc").port)
    try:
        client.register("fast")
        client.send(*[f"PING {i}" for i in range(8)])
        notice = client.expect_msg("NOTICE")
        assert "Flood control" in notice.params[1]
        assert client.expect_msg("PONG", lambda m: m.params[1] == "7")
    finally:
        client.close()


def test_sendq_exceeded(irc: Callable[..., IrcClient], server: Server) -> None:
    alice, bob = irc("alice"), irc("bob")
    for client in (alice, bob):
        client.send("JOIN #q")
        client.expect_msg("366")
    conn = next(
        c for c in server.connections() if getattr(c, "user", None) and c.user.nick == "bob"
    )
    conn.send_bytes(b"x" * (server.config.sendq + 1))
    assert alice.expect_msg("QUIT").params == ["SendQ exceeded"]


# -- IRCv3 capabilities -----------------------------------------------------------------------


def test_multi_prefix_and_userhost_in_names(irc: Callable[..., IrcClient]) -> None:
    op = irc("op", ("multi-prefix", "userhost-in-names"))
    op.send("JOIN #c", "MODE #c +v op", "NAMES #c")
    op.expect_msg("MODE")
    assert op.expect_msg("353").params[-1] == "@+op!~op@127.0.0.1"
    plain = irc("plain")
    plain.send("NAMES #c")
    assert plain.expect_msg("353").params[-1] == "@op"


def test_server_time_and_message_tags(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    tagged = irc("tagged", ("server-time", "message-tags"))
    for client in (alice, tagged):
        client.send("JOIN #t")
        client.expect_msg("366")
    alice.send("PRIVMSG #t :hi")
    message = tagged.expect_msg("PRIVMSG")
    assert message.tags["time"].endswith("Z") and len(message.tags["time"]) == 24
    tagged.send("@+typing=active TAGMSG #t", "PRIVMSG #t :back")
    back = alice.expect_msg("PRIVMSG")
    assert back.tags == {} and back.params == ["#t", "back"]
    alice.send("TAGMSG #t")
    assert alice.expect_msg("421").params[1] == "TAGMSG"


def test_echo_message(irc: Callable[..., IrcClient]) -> None:
    echo = irc("echo", ("echo-message",))
    irc("other")
    echo.send("JOIN #e")
    echo.expect_msg("366")
    echo.send("PRIVMSG #e :mirror", "PRIVMSG other :direct")
    assert echo.expect_msg("PRIVMSG").params == ["#e", "mirror"]
    direct = echo.expect_msg("PRIVMSG")
    assert direct.source.startswith("echo!") and direct.params == ["other", "direct"]


def test_extended_join_and_account_tag(irc: Callable[..., IrcClient]) -> None:
    ext = irc("ext", ("extended-join", "account-tag"))
    ext.send("JOIN #j")
    ext.expect_msg("366")
    plain = irc("plain")
    plain.send("JOIN #j")
    plain.expect_msg("366")
    assert ext.expect_msg("JOIN").params == ["#j", "*", "Real plain"]
    plain.send("PRIVMSG #j :no account yet")
    assert ext.expect_msg("PRIVMSG").tags == {}  # no accounts exist yet, so no account tag


def test_cap_notify_and_batch_are_accepted(irc: Callable[..., IrcClient]) -> None:
    client = irc()
    client.send("CAP LS", "CAP REQ :cap-notify batch")
    client.expect_msg("CAP", lambda m: m.params[1] == "LS")
    assert client.expect_msg("CAP").params[1:] == ["ACK", "cap-notify batch"]


# -- cross-protocol ---------------------------------------------------------------------------


def test_irc_and_native_share_a_room(
    irc: Callable[..., IrcClient],
    connect: Callable[..., LineClient],
    connect_json: Callable,
) -> None:
    alice = irc("alice")
    text_user = connect("tom")
    json_user = connect_json("jane")
    alice.send("JOIN #lobby")
    assert alice.expect_msg("353").params[-1] == "@tom jane alice"
    text_user.expect("--> alice joined lobby")
    json_user.expect_event("join", room="lobby", name="alice")

    alice.send("PRIVMSG #lobby :hi natives", "PRIVMSG #lobby :\x01ACTION waves\x01")
    assert unref(text_user.expect("alice: ")) == "alice: hi natives"
    assert unref(text_user.expect("* alice")) == "* alice waves"
    json_user.expect_event("message", room="lobby", text="hi natives", action=False)
    json_user.expect_event("message", room="lobby", text="waves", action=True)

    text_user.send("hello irc", "/me bows")
    message = alice.expect_msg("PRIVMSG")
    assert (message.source, message.params) == ("tom!tom@127.0.0.1", ["#lobby", "hello irc"])
    assert alice.expect_msg("PRIVMSG").params == ["#lobby", "\x01ACTION bows\x01"]

    alice.send("PRIVMSG jane :psst jane")
    json_user.expect_event("private", to="jane", text="psst jane")
    json_user.send_json(type="msg", to="alice", text="psst alice")
    private = alice.expect_msg("PRIVMSG")
    assert private.source.startswith("jane!") and private.params == ["alice", "psst alice"]

    text_user.send("/nick thomas")
    assert alice.expect_msg("NICK").source.startswith("tom!") is True
    alice.send("NICK alicia")
    text_user.expect("--- alice is now known as alicia")
    json_user.expect_event("nick", old="alice", new="alicia")

    alice.send("TOPIC #lobby :shared", "MODE #lobby +v thomas")  # tom created the lobby
    assert alice.expect_msg("482").params[1] == "#lobby"
    assert alice.expect_msg("482").params[1] == "#lobby"
    text_user.send("/topic shared")
    topic = alice.expect_msg("TOPIC")
    assert topic.source.startswith("thomas!") and topic.params == ["#lobby", "shared"]

    text_user.send("/leave lobby")
    assert alice.expect_msg("PART").source.startswith("thomas!")
    json_user.send_json(type="quit", reason="gone")
    assert alice.expect_msg("QUIT").params == ["gone"]
    alice.send("PART #lobby :bye all")
    assert alice.expect_msg("PART").params == ["#lobby", "bye all"]


def test_native_users_see_modes_and_kicks(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient], connect_json: Callable
) -> None:
    op = irc("op")
    op.send("JOIN #mod")
    op.expect_msg("366")
    tom = connect("tom")
    jane = connect_json("jane")
    tom.send("/join mod")
    jane.send_json(type="join", room="mod")
    op.expect_msg("JOIN")
    op.expect_msg("JOIN")
    op.send("MODE #mod +v tom", "KICK #mod jane :off topic")
    assert tom.expect("voice") == "--- op gave tom voice in mod"
    event = jane.expect_event("mode", room="mod")
    assert (event["changes"], event["args"]) == ("+v", ["tom"])
    jane.expect_event("leave", room="mod", name="jane")
    tom.expect("jane was kicked from mod by op (off topic)")
