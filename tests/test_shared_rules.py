"""Rules every protocol shares (issue 11): kick, ban targets, joins in quiet rooms, client
times, history replay and history queries each decided once in the hub, seen the same from
native (text, JSON, UDP) and IRC."""

import json
from collections.abc import Callable

import pytest
from conftest import JsonClient, LineClient
from test_irc import IrcClient
from test_irc_accounts import sasl_plain
from test_irc_history import HISTORY_CAPS, history, read_batch, say_all
from test_moderation import PASSWORD, act, client, join, registered
from test_udp import UdpClient, udp_clients  # noqa: F401  (a fixture)

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import parse


def irc_user(server: Server, nick: str, account: str | None = None) -> IrcClient:
    """An IRC client registered as `nick`, logged in to `account` with SASL if given."""
    irc = IrcClient(server.listener("irc").port)
    if account is None:
        irc.register(nick)
        return irc
    irc.send("CAP LS 302", "CAP REQ :sasl", f"NICK {nick}", f"USER {nick} 0 * :{nick}")
    irc.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect_msg("AUTHENTICATE")
    irc.send(f"AUTHENTICATE {sasl_plain(account, PASSWORD)}")
    irc.expect_msg("903")
    irc.send("CAP END")
    irc.expect_msg("001")
    return irc


def irc_join(irc: IrcClient, channel: str) -> list[str]:
    """JOIN `channel`; the nicks of its NAMES reply, without status prefixes."""
    irc.send(f"JOIN {channel}")
    nicks: list[str] = []
    while True:
        message = parse(irc.expect(lambda line: parse(line).command in ("353", "366")))
        if message.command == "366":
            return nicks
        nicks += [word.lstrip("@+") for word in message.params[-1].split()]


# -- kick ---------------------------------------------------------------------------------------


def test_kicks_cross_protocols_under_one_rule(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice = registered(server, "alice")  # owns "den"
    join(alice, "den")
    bob = irc_user(server, "bob")
    irc_join(bob, "#den")
    # A native room operator kicks an IRC user.
    assert act(alice, "kick", 1, room="den", name="bob", reason="out")["type"] == "ok"
    kick = bob.expect_msg("KICK")
    assert kick.source.startswith("alice!") and kick.params == ["#den", "bob", "out"]

    # An IRC channel operator kicks a native user.
    carol = irc_user(server, "carol")
    irc_join(carol, "#pit")
    dave = client(server, "dave")
    join(dave, "pit")
    carol.send("KICK #pit dave :bye")
    left = dave.expect_event("leave", room="pit", name="dave")
    assert "kicked by carol: bye" in left["reason"]

    # The target must be in the room: the same refusal from both.
    assert act(alice, "kick", 2, room="den", name="carol")["code"] == "user_not_in_room"
    carol.send("KICK #pit alice")
    assert carol.expect_msg("441").params[1:3] == ["alice", "#pit"]

    # The owner account may kick without operator status, from IRC as from native.
    owner = irc_user(server, "alicia", account="alice")
    irc_join(owner, "#den")
    assert act(alice, "deop", 3, room="den", name="alicia")["type"] == "ok"
    owner.expect_msg("MODE", lambda m: m.params[1:] == ["-o", "alicia"])
    irc_join(bob, "#den")
    owner.send("KICK #den bob :owner says")
    assert bob.expect_msg("KICK").params == ["#den", "bob", "owner says"]


# -- ban targets --------------------------------------------------------------------------------


@pytest.mark.parametrize("bob_registered", [True, False], ids=["registered", "guest"])
@pytest.mark.parametrize("banned_from", ["native", "irc"])
def test_a_bare_name_bans_the_same_people_from_either_protocol(
    make_server: Callable[..., Server], bob_registered: bool, banned_from: str
) -> None:
    server = make_server()
    if bob_registered:
        bob = registered(server, "bob")
        bob.send_json(type="quit")
        bob.read_until_closed()
    op = irc_user(server, "op")
    irc_join(op, "#den")
    mod = client(server, "mod")
    join(mod, "den")
    op.send("MODE #den +o mod")
    op.expect_msg("MODE")
    if banned_from == "native":
        assert act(mod, "ban", 1, room="den", name="bob")["type"] == "ok"
    else:
        op.send("MODE #den +b bob")
    entry = "~a:bob" if bob_registered else "bob!*@*"
    assert op.expect_msg("MODE").params == ["#den", "+b", entry]
    assert server.hub.room_state("den").bans == (entry,)

    # bob comes back over the native protocol, then over IRC (under another nick when the
    # ban is on his account, which follows him whatever he is called).
    native_bob = client(server, "bob", PASSWORD if bob_registered else None)
    assert act(native_bob, "join", 2, room="den")["code"] == "banned"
    native_bob.send_json(type="quit")
    native_bob.read_until_closed()
    if bob_registered:
        irc_bob = irc_user(server, "robert", account="bob")
    else:
        irc_bob = irc_user(server, "bob")
    irc_bob.send("JOIN #den")
    assert irc_bob.expect_msg("474").params[1] == "#den"
    # Nobody else is kept out by it.
    assert irc_join(irc_user(server, "carol"), "#den")


# -- joins, members, topic and modes ------------------------------------------------------------


def test_udp_and_irc_users_see_the_same_members_topic_and_modes(
    make_server: Callable[..., Server],
    udp_clients: Callable[..., UdpClient],  # noqa: F811
) -> None:
    server = make_server(quiet_room_size=2)
    op = irc_user(server, "op")
    irc_join(op, "#hall")
    op.send("TOPIC #hall :welcome all")
    op.expect_msg("TOPIC")
    udp = udp_clients(server, "udpy")
    udp.expect_event("who", room="lobby")
    udp.send(type="join", room="hall", ref=1)
    assert udp.expect_event("topic", room="hall")["topic"] == "welcome all"
    assert set(udp.expect_event("who", room="hall")["members"]) == {"op", "udpy"}
    op.expect_msg("JOIN", lambda m: m.source.startswith("udpy!"))

    # Past the quiet size: native members are not told of arrivals and departures, but IRC
    # members are, or their clients' nick lists would go wrong.
    ian = irc_user(server, "ian")
    assert set(irc_join(ian, "#hall")) == {"op", "udpy", "ian"}
    ian.send("TOPIC #hall")
    assert ian.expect_msg("332").params[-1] == "welcome all"
    op.expect_msg("JOIN", lambda m: m.source.startswith("ian!"))
    late = client(server, "late")
    late.send_json(type="join", room="hall")
    assert "4 members" in late.expect_event("notice")["text"]
    for irc in (op, ian):
        irc.expect_msg("JOIN", lambda m: m.source.startswith("late!"))
    late.send_json(type="leave", room="hall")
    for irc in (op, ian):
        irc.expect_msg("PART", lambda m: m.source.startswith("late!"))

    op.send("MODE #hall +mv udpy")
    irc_mode = ian.expect_msg("MODE")
    udp_mode = udp.expect_event("mode", room="hall")
    assert irc_mode.params == ["#hall", udp_mode["changes"], *udp_mode["args"]]
    assert udp_mode["changes"] == "+mv" and udp_mode["args"] == ["udpy"]
    udp.send(type="who", room="hall")
    udp_members = udp.expect_event("who", room="hall")["members"]
    assert set(udp_members) == set(irc_join(irc_user(server, "last"), "#hall")) - {"last"}
    assert set(udp_members) == {"op", "udpy", "ian"}
    assert not [e for e in udp.quiet() if e["type"] in ("join", "leave")]


def test_quiet_room_announces_to_irc_members_across_nick_changes_until_they_part(
    make_server: Callable[..., Server],
) -> None:
    # A quiet room keeps the members who keep member lists beside its members (issue 19: no
    # scan of every member per arrival); a renamed IRC member stays among them, one who
    # parted is not told any more, and native members are never told.
    server = make_server(quiet_room_size=1)

    def native_user(name: str) -> JsonClient:
        # The lobby is quiet too at this size: the arrival notice instead of `who`.
        native = JsonClient(server.listener("line").port)
        native.send_json(type="hello", name=name)
        native.expect_event("welcome")
        return native

    ian = irc_user(server, "ian")
    irc_join(ian, "#q")
    native = native_user("nat")
    native.send_json(type="join", room="q")
    ian.expect_msg("JOIN", lambda m: m.source.startswith("nat!"))
    ian.send("NICK ian2")
    ian.expect_msg("NICK")
    first = native_user("first")
    first.send_json(type="join", room="q")
    ian.expect_msg("JOIN", lambda m: m.source.startswith("first!"))
    ian.send("PART #q")
    ian.expect_msg("PART")
    second = native_user("second")
    second.send_json(type="join", room="q")
    assert "3 members" in second.expect_event("notice")["text"]
    assert not [line for line in ian.quiet() if "second" in line]
    for member, name in ((native, "nat"), (first, "first")):
        events = map(json.loads, member.quiet())
        assert not [e for e in events if e["type"] == "join" and e["name"] != name]


# -- mode changes ------------------------------------------------------------------------------


def test_a_mode_change_from_irc_shows_to_json_and_text_users(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    op = irc_user(server, "op")
    irc_join(op, "#stage")
    jane = client(server, "jane")
    join(jane, "stage")
    tom = LineClient(server.listener("line").port)
    tom.send("tom", "/join stage")
    tom.expect("--- in stage:")
    op.expect_msg("JOIN", lambda m: m.source.startswith("tom!"))

    op.send("MODE #stage +mvk-t tom sesame")
    sent = op.expect_msg("MODE")
    assert sent.params == ["#stage", "+mvk-t", "tom", "sesame"]
    event = jane.expect_event("mode", room="stage")
    assert event["by"] == "op" and event["modes"] == [
        {"mode": "moderated", "on": True},
        {"mode": "voice", "on": True, "arg": "tom"},
        {"mode": "key", "on": True, "arg": "sesame"},
        {"mode": "topic_locked", "on": False},
    ]
    # The fields JSON clients read before `modes` existed are unchanged.
    assert (event["changes"], event["args"]) == ("+mvk-t", ["tom", "sesame"])
    line = tom.expect("--- op ")
    assert line == (
        "--- op let only operators and voiced members speak, gave tom voice,"
        " set the room key to sesame, unlocked the topic in stage"
    )

    op.send("MODE #stage -k+b sesame x", "MODE #stage +b")
    assert op.expect_msg("MODE").params == ["#stage", "-k+b", "*", "x!*@*"]
    assert op.expect_msg("367").params[1:3] == ["#stage", "x!*@*"]
    event = jane.expect_event("mode", room="stage")
    assert event["modes"] == [
        {"mode": "key", "on": False},
        {"mode": "ban", "on": True, "arg": "x!*@*"},
    ]
    assert (event["changes"], event["args"]) == ("-k+b", ["*", "x!*@*"])
    assert tom.expect("--- op ") == "--- op removed the room key, banned x!*@* in stage"


def test_a_native_mode_change_shows_on_irc(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice = registered(server, "alice")  # owns "yard"
    join(alice, "yard")
    ian = irc_user(server, "ian")
    irc_join(ian, "#yard")
    text = LineClient(server.listener("line").port)
    text.send("tina", "/join yard")
    text.expect("--- in yard:")
    alice.expect_event("join", room="yard", name="tina")

    assert act(alice, "op", 1, room="yard", name="ian")["type"] == "ok"
    mode = ian.expect_msg("MODE")
    assert mode.source.startswith("alice!") and mode.params == ["#yard", "+o", "ian"]
    ian.send("NAMES #yard")
    names_line = ian.expect_msg("353")
    assert "@ian" in names_line.params[-1].split()

    # Text mode's commands: the same changes, the same IRC lines.
    text.send("/topiclock off")
    text.expect("!!! ")  # tina is no operator
    assert act(alice, "topiclock", 2, room="yard", on=False)["type"] == "ok"
    assert ian.expect_msg("MODE").params == ["#yard", "-t"]
    assert act(alice, "ban", 3, room="yard", name="tina")["type"] == "ok"
    assert ian.expect_msg("MODE").params == ["#yard", "+b", "tina!*@*"]
    ian.send("MODE #yard")
    assert ian.expect_msg("324").params[1:] == ["#yard", "+n"]


# -- client times -------------------------------------------------------------------------------


def test_a_time_without_offset_is_utc_in_json_and_irc_history(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    irc = IrcClient(server.listener("irc").port)
    irc.register("alice", HISTORY_CAPS)
    irc_join(irc, "#t")
    first, _ = say_all(irc, "#t", ["one", "two"])
    stamp = first.tags["time"]
    assert stamp is not None and stamp.endswith("Z")
    # The same instant three ways: with Z, with +00:00, and with no offset at all. (Both
    # messages may share a millisecond, so the answer is compared, not predicted.)
    spellings = (stamp, stamp[:-1] + "+00:00", stamp[:-1])
    reader = client(server, "reader")
    join(reader, "t")
    expected = history(irc, f"AFTER #t timestamp={stamp} 10", "#t")
    for when in (*spellings, "2000-01-01T00:00:00"):
        wanted = ["one", "two"] if when.startswith("2000") else expected
        assert history(irc, f"AFTER #t timestamp={when} 10", "#t") == wanted
        reader.send_json(type="history", room="t", after=when, ref=when)
        page = reader.expect_event("history", ref=when)
        assert [m["text"] for m in page["messages"]] == wanted


# -- history: one replay, one query builder --------------------------------------------------


def test_a_join_replays_the_same_messages_to_every_protocol(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(history_on_join=3)
    alice = client(server, "alice")
    join(alice, "r")
    for index in range(5):
        alice.send_json(type="say", room="r", text=f"old {index}")
    alice.send_json(type="say", room="r", text="old 5", ref=1)
    alice.expect_event("ok", ref=1)
    wanted = ["old 3", "old 4", "old 5"]

    native = client(server, "nat")
    native.send_json(type="join", room="r")
    native.expect_event("who", room="r")
    replayed = [native.read_event() for _ in wanted]
    assert [(e["text"], e["history"]) for e in replayed] == [(t, True) for t in wanted]

    modern = IrcClient(server.listener("irc").port)
    modern.register("modern", ("batch", "server-time", "message-tags"))
    irc_join(modern, "#r")
    batch = read_batch(modern, "#r")
    assert [m.params[1] for m in batch] == wanted
    assert [int(m.tags["msgid"] or 0) for m in batch] == [e["id"] for e in replayed]
    # A client that could not tell old lines from new ones gets none, as one that asks.
    for caps in ((), ("batch", "server-time", "draft/chathistory")):
        plain = IrcClient(server.listener("irc").port)
        plain.register(f"plain{len(caps)}", caps)
        plain.send("JOIN #r", "PING end")
        commands = []
        while (line := parse(plain.read_line())).command != "PONG":
            commands.append(line.command)
        assert "366" in commands and "PRIVMSG" not in commands and "BATCH" not in commands


def test_native_history_and_chathistory_build_the_same_queries(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(history_on_join=0)
    irc = IrcClient(server.listener("irc").port)
    irc.register("alice", HISTORY_CAPS)
    irc_join(irc, "#q")
    echoes = say_all(irc, "#q", [f"m{index}" for index in range(8)])
    ids = [int(echo.tags["msgid"] or 0) for echo in echoes]
    reader = client(server, "reader")
    join(reader, "q")

    def native(ref: int, **bounds: object) -> list[str]:
        reader.send_json(type="history", room="q", ref=ref, **bounds)
        return [m["text"] for m in reader.expect_event("history", ref=ref)["messages"]]

    def chathistory(request: str) -> list[str]:
        return history(irc, request, "#q")

    assert native(1, limit=3) == chathistory("LATEST #q * 3") == ["m5", "m6", "m7"]
    before = native(2, before=ids[4], limit=2)
    assert before == chathistory(f"BEFORE #q msgid={ids[4]} 2") == ["m2", "m3"]
    after = native(3, after=ids[4], limit=2)
    assert after == chathistory(f"AFTER #q msgid={ids[4]} 2") == ["m5", "m6"]
    between = native(4, after=ids[1], before=ids[6], limit=3)
    assert between == chathistory(f"BETWEEN #q msgid={ids[1]} msgid={ids[6]} 3")
    assert between == ["m2", "m3", "m4"]
    # Limits past the largest page are clamped the same way: everything there is.
    assert (
        native(5, limit=10**6)
        == chathistory("LATEST #q * 999999")
        == [f"m{index}" for index in range(8)]
    )
