"""The IRCv3 additions over real sockets, each with its capability negotiated and not:
labeled-response, standard replies, MONITOR and extended-monitor, WHOX, account-notify,
setname, invite-notify, bot mode, UTF8ONLY, no-implicit-names and account registration."""

from collections.abc import Callable

from conftest import LineClient
from test_irc import IrcClient

from threadchat.protocols.irc.wire import Message, parse

SERVER = "threadchat"


def isupport(client: IrcClient) -> dict[str, str]:
    """The ISUPPORT tokens of a registration burst (read up to the end of the MOTD)."""
    tokens: dict[str, str] = {}
    while True:
        message = parse(client.read_line())
        if message.command == "005":
            for token in message.params[1:-1]:
                name, _, value = token.partition("=")
                tokens[name] = value
        if message.command in ("376", "422"):
            return tokens


def offered_caps(client: IrcClient) -> dict[str, str]:
    client.send("CAP LS 302")
    caps: dict[str, str] = {}
    while True:
        message = client.expect_msg("CAP", lambda m: m.params[1] == "LS")
        for word in message.params[-1].split():
            name, _, value = word.partition("=")
            caps[name] = value
        if message.params[2] != "*":
            return caps


def joined(client: IrcClient, channel: str) -> None:
    client.send(f"JOIN {channel}")
    client.expect_msg("366")


def read_batch(client: IrcClient) -> tuple[Message, list[Message]]:
    """The next batch: its opening line and the lines in it."""
    start = client.expect_msg("BATCH")
    ref = start.params[0][1:]
    assert start.params[0].startswith("+")
    lines: list[Message] = []
    while True:
        message = parse(client.read_line())
        if message.command == "BATCH" and message.params == ["-" + ref]:
            return start, lines
        assert message.tags.get("batch") == ref, message
        lines.append(message)


# -- labeled-response and standard replies ---------------------------------------------------


def test_labeled_response_one_line_none_and_several(irc: Callable[..., IrcClient]) -> None:
    caps = ("labeled-response", "batch")
    alice = irc("alice", caps)
    irc("bob")
    alice.send("@label=p1 PING hello")
    assert alice.read_line() == f"@label=p1 :{SERVER} PONG {SERVER} hello"
    alice.send("@label=e2 PONG x")  # no reply at all: an ACK
    assert alice.read_line() == f"@label=e2 :{SERVER} ACK"
    alice.send("@label=w3 WHOIS bob")
    start, lines = read_batch(alice)
    assert start.tags == {"label": "w3"} and start.params[1] == "labeled-response"
    assert lines[0].command == "311" and lines[-1].command == "318"
    # A line that is no command at all still gets its error labeled.
    alice.send("@label=u4 NO_SUCH_COMMAND")
    assert alice.read_line() == f"@label=u4 :{SERVER} 421 alice NO_SUCH_COMMAND :Unknown command"
    # A label with characters that need escaping comes back escaped.
    alice.send("@label=a\\sb PING x")
    assert parse(alice.read_line()).tags == {"label": "a b"}


def test_labeled_join_and_echo_are_in_the_response(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", ("labeled-response", "batch", "echo-message"))
    bob = irc("bob")
    joined(bob, "#room")
    alice.send("@label=j1 JOIN #room")
    start, lines = read_batch(alice)
    assert start.tags["label"] == "j1"
    assert [m.command for m in lines][:1] == ["JOIN"] and lines[-1].command == "366"
    alice.send("@label=m1 PRIVMSG #room :hi")
    echo = alice.expect_msg("PRIVMSG")
    assert echo.tags.get("label") == "m1" and echo.params == ["#room", "hi"]
    # What others send meanwhile is not part of anyone's response, and bob gets no label.
    assert "label" not in bob.expect_msg("PRIVMSG").tags


def test_without_the_capability_labels_are_ignored(irc: Callable[..., IrcClient]) -> None:
    plain = irc("plain")
    plain.send("@label=p1 PING x")
    assert plain.read_line() == f":{SERVER} PONG {SERVER} x"
    # labeled-response without batch: a single line is labeled, several come bare.
    nobatch = irc("nobatch", ("labeled-response",))
    nobatch.send("@label=p2 PING y", "@label=w2 WHOIS plain")
    assert parse(nobatch.read_line()).tags == {"label": "p2"}
    whois = parse(nobatch.read_line())
    assert whois.command == "311" and whois.tags == {}


def test_non_utf8_is_refused_with_fail(irc: Callable[..., IrcClient]) -> None:
    alice, bob = irc("alice"), irc("bob")
    assert "UTF8ONLY" in isupport_of(irc, "carol")
    for client in (alice, bob):
        joined(client, "#u")
    alice.expect_msg("JOIN", lambda m: m.source.startswith("bob!"))
    alice.send_raw(b"PRIVMSG #u :caf\xe9\r\n")
    assert alice.read_line() == f":{SERVER} FAIL PRIVMSG INVALID_UTF8 :Message rejected: not UTF-8"
    alice.send("PRIVMSG #u :café")
    assert bob.expect_msg("PRIVMSG").params == ["#u", "café"]


def isupport_of(irc: Callable[..., IrcClient], nick: str) -> dict[str, str]:
    client = irc()
    client.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
    return isupport(client)


# -- MONITOR and extended-monitor -------------------------------------------------------------


def test_monitor_online_offline_and_nick_changes(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    watcher = irc("watcher")
    watcher.send("MONITOR + bob,Native")
    assert watcher.read_line() == f":{SERVER} 731 watcher bob,Native"
    bob = irc("bob")
    assert watcher.read_line() == f":{SERVER} 730 watcher bob!~bob@127.0.0.1"
    connect("native")  # a native user is watched like anyone (nicks fold alike)
    assert watcher.read_line() == f":{SERVER} 730 watcher native!native@127.0.0.1"
    bob.send("NICK robert")
    assert watcher.read_line() == f":{SERVER} 731 watcher bob"
    bob.send("NICK bob")
    assert watcher.read_line() == f":{SERVER} 730 watcher bob!~bob@127.0.0.1"
    watcher.send("MONITOR L")
    assert watcher.read_line() == f":{SERVER} 732 watcher bob,Native"
    assert watcher.read_line() == f":{SERVER} 733 watcher :End of MONITOR list"
    watcher.send("MONITOR S")
    assert parse(watcher.read_line()).params[1] == "bob!~bob@127.0.0.1,native!native@127.0.0.1"
    bob.send("QUIT")
    assert watcher.read_line() == f":{SERVER} 731 watcher bob"
    watcher.send("MONITOR - bob", "MONITOR L")
    assert parse(watcher.read_line()).params[1] == "Native"
    watcher.expect_msg("733")
    watcher.send("MONITOR C", "MONITOR L")
    assert parse(watcher.read_line()).command == "733"
    irc("bob")
    assert watcher.quiet() == []


def test_monitor_list_is_limited(irc: Callable[..., IrcClient]) -> None:
    watcher = irc("watcher")
    assert isupport_of(irc, "other")["MONITOR"] == "100"
    watcher.send("MONITOR + " + ",".join(f"n{i}" for i in range(100)))
    watcher.expect_msg("731")
    watcher.send("MONITOR + n100,n101")
    full = watcher.expect_msg("734")
    assert full.params[1:] == ["100", "n100,n101", "Monitor list is full."]
    watcher.send("MONITOR X")
    assert watcher.expect_msg("FAIL").params[:2] == ["MONITOR", "INVALID_PARAMS"]


def test_extended_monitor_brings_away_of_the_watched(irc: Callable[..., IrcClient]) -> None:
    extended = irc("extended", ("extended-monitor", "away-notify"))
    plain = irc("plain", ("away-notify",))
    for client in (extended, plain):
        client.send("MONITOR + bob")
        client.expect_msg("731")
    bob = irc("bob")
    for client in (extended, plain):
        client.expect_msg("730")
    bob.send("AWAY :lunch")
    away = extended.expect_msg("AWAY")
    assert away.source == "bob!~bob@127.0.0.1" and away.params == ["lunch"]
    assert plain.quiet() == []  # shares no channel with bob and did not ask for details


# -- WHOX -------------------------------------------------------------------------------------


def test_whox_fields_in_reply_order_with_token(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice")
    assert "WHOX" in isupport_of(irc, "other")
    joined(alice, "#w")
    alice.send("WHO #w %nuhtacf,42")
    assert alice.read_line() == f":{SERVER} 354 alice 42 #w ~alice 127.0.0.1 alice H@ 0"
    alice.expect_msg("315")
    alice.send("WHO alice %tcuihsnfdlaor,1234")  # a token of more than 3 digits is refused
    reply = alice.expect_msg("354")
    assert reply.params[1:] == [
        "0", "*", "~alice", "127.0.0.1", "127.0.0.1", SERVER, "alice", "H", "0",
        reply.params[10], "0", "n/a", "Real alice",
    ]  # fmt: skip
    alice.send("WHO #w")  # without %: the classic 352
    assert alice.expect_msg("352").params[-1] == "0 Real alice"


# -- account-notify, setname, invite-notify ---------------------------------------------------


def test_account_notify(irc: Callable[..., IrcClient]) -> None:
    notified = irc("notified", ("account-notify",))
    plain = irc("plain")
    alice = irc("alice")
    for client in (notified, plain, alice):
        joined(client, "#a")
    alice.send("REGISTER * * correct-horse")
    alice.expect_msg("REGISTER")
    account = notified.expect_msg("ACCOUNT")
    assert account.source == "alice!~alice@127.0.0.1" and account.params == ["alice"]
    assert all("ACCOUNT" not in line for line in plain.quiet())


def test_setname(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", ("setname",))
    watcher = irc("watcher", ("setname",))
    plain = irc("plain")
    for client in (alice, watcher, plain):
        joined(client, "#s")
    alice.send("SETNAME :Alice Liddell")
    assert alice.expect_msg("SETNAME").params == ["Alice Liddell"]
    assert watcher.expect(" SETNAME ") == ":alice!~alice@127.0.0.1 SETNAME :Alice Liddell"
    assert plain.quiet() == []
    plain.send("WHOIS alice")
    assert plain.expect_msg("311").params[-1] == "Alice Liddell"
    alice.send("SETNAME :")
    assert alice.expect_msg("FAIL").params[:2] == ["SETNAME", "INVALID_REALNAME"]
    alice.send("SETNAME :" + "x" * 101)
    assert alice.expect_msg("FAIL").params[:2] == ["SETNAME", "INVALID_REALNAME"]


def test_invite_notify(irc: Callable[..., IrcClient]) -> None:
    op = irc("op")
    notified = irc("notified", ("invite-notify",))
    plain = irc("plain")
    irc("guest")
    for client in (op, notified, plain):
        joined(client, "#i")
    op.send("INVITE guest #i")
    op.expect_msg("341")
    assert notified.expect(" INVITE ") == ":op!~op@127.0.0.1 INVITE guest #i"
    assert plain.quiet() == []
    # In an invite-only room only those who may invite are told.
    op.send("MODE #i +i")
    notified.expect_msg("MODE")
    irc("guest2")
    op.send("INVITE guest2 #i")
    op.expect_msg("341")
    assert all("INVITE" not in line for line in notified.quiet())


# -- bot mode, no-implicit-names --------------------------------------------------------------


def test_bot_mode(irc: Callable[..., IrcClient]) -> None:
    bot = irc("bot")
    tagged = irc("tagged", ("message-tags",))
    plain = irc("plain")
    assert isupport_of(irc, "other")["BOT"] == "B"
    bot.send("MODE bot +B")
    assert bot.expect_msg("MODE").params == ["bot", "+B"]
    for client in (bot, tagged, plain):
        joined(client, "#b")
    bot.send("PRIVMSG #b :beep")
    assert tagged.expect_msg("PRIVMSG").tags.keys() == {"bot", "msgid"}
    assert plain.read_line() == ":bot!~bot@127.0.0.1 PRIVMSG #b beep"
    plain.send("WHOIS bot")
    assert plain.expect_msg("335").params[1:] == ["bot", "is a bot"]
    plain.send("WHO #b")
    assert plain.expect_msg("352", lambda m: m.params[5] == "bot").params[6] == "HB@"


def test_no_implicit_names(irc: Callable[..., IrcClient]) -> None:
    quiet = irc("quiet", ("no-implicit-names",))
    quiet.send("JOIN #n", "PING done")
    lines = [quiet.read_line(), quiet.read_line()]
    assert parse(lines[0]).command == "JOIN" and parse(lines[1]).command == "PONG"
    plain = irc("plain")
    plain.send("JOIN #n")
    plain.expect_msg("353")
    plain.expect_msg("366")


# -- draft/account-registration ---------------------------------------------------------------


def test_register_before_and_after_connecting(irc: Callable[..., IrcClient]) -> None:
    early = irc()
    caps = offered_caps(early)
    assert caps["draft/account-registration"] == "before-connect"
    early.send("CAP REQ :draft/account-registration", "NICK early", "USER e 0 * :Early")
    early.expect_msg("CAP")
    early.send("REGISTER * * correct-horse")
    assert early.read_line() == (
        f":{SERVER} REGISTER SUCCESS early :Account created (no email verification on this server)"
    )
    # Before registration the username is not settled: `*` stands for it in the mask.
    assert early.expect_msg("900").params[:3] == ["early", "early!*@127.0.0.1", "early"]
    early.send("CAP END")
    early.expect_msg("001")
    early.send("WHOIS early")
    assert early.expect_msg("330").params[2] == "early"
    late = irc("late")
    late.send("REGISTER other * correct-horse")
    assert late.expect_msg("FAIL").params[:3] == ["REGISTER", "ACCOUNT_NAME_MUST_BE_NICK", "other"]
    late.send("REGISTER late * short")
    assert late.expect_msg("FAIL").params[:3] == ["REGISTER", "WEAK_PASSWORD", "late"]
    late.send("REGISTER late you@example.org correct-horse")
    late.expect_msg("REGISTER")
    # Once registered, the mask is the one the others see (with the username's `~`).
    assert late.read_line() == (
        f":{SERVER} 900 late late!~late@127.0.0.1 late :You are now logged in as late"
    )
    late.send("REGISTER late * correct-horse")
    assert late.expect_msg("FAIL").params[:2] == ["REGISTER", "ALREADY_AUTHENTICATED"]
    late.send("VERIFY late 123")
    assert late.expect_msg("FAIL").params[:2] == ["VERIFY", "ALREADY_AUTHENTICATED"]
    late.send("QUIT")
    late.read_until_closed()
    taken = irc()
    taken.send("CAP LS 302", "NICK late", "REGISTER * * correct-horse")
    assert taken.expect_msg("FAIL").params[:3] == ["REGISTER", "ACCOUNT_EXISTS", "late"]


def test_a_native_realname_change_reaches_irc(
    irc: Callable[..., IrcClient], connect: Callable[..., LineClient]
) -> None:
    watcher = irc("watcher", ("setname",))
    joined(watcher, "#lobby")
    native = connect("nat")
    watcher.expect_msg("JOIN")
    native.send("/realname Nat Native")
    native.expect("your real name is now Nat Native")
    assert watcher.expect(" SETNAME ") == ":nat!nat@127.0.0.1 SETNAME :Nat Native"
    watcher.send("WHOIS nat")
    assert watcher.expect_msg("311").params[-1] == "Nat Native"
