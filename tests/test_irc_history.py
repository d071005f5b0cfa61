"""IRC and history over real sockets: draft/chathistory, replay on JOIN, pipelined commits,
and the QUIT-mask and IP-ban fixes for native users seen from IRC."""

from collections.abc import Callable, Iterator

import pytest
from conftest import JsonClient
from test_irc import IrcClient
from test_irc_accounts import PASSWORD, register_account

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import Message, parse
from threadchat.protocols.utctime import parse_millis

HISTORY_CAPS = ("batch", "server-time", "message-tags", "echo-message")


@pytest.fixture
def irc(make_server: Callable[..., Server]) -> Iterator[Callable[..., IrcClient]]:
    """Open IRC clients on a server (a history-keeping default one unless `on` is given)."""
    clients: list[IrcClient] = []
    default: list[Server] = []

    def open_client(
        nick: str | None = None,
        caps: tuple[str, ...] = (),
        on: Server | None = None,
        password: str | None = None,
    ) -> IrcClient:
        if on is None:
            if not default:
                default.append(make_server())
            on = default[0]
        client = IrcClient(on.listener("irc").port)
        clients.append(client)
        if password is not None:
            client.send(f"PASS {password}")
        if nick is not None:
            client.register(nick, caps)
        return client

    yield open_client
    for client in clients:
        client.close()


def join(client: IrcClient, channel: str) -> None:
    client.send(f"JOIN {channel}")
    client.expect_msg("366")


def say_all(client: IrcClient, target: str, texts: list[str]) -> list[Message]:
    """Send the lines in one write (one recv: pipelined) and return their echoes."""
    client.send(*(f"PRIVMSG {target} :{text}" for text in texts))
    echoes = [client.expect_msg("PRIVMSG", lambda m, t=t: m.params[1] == t) for t in texts]
    for echo in echoes:
        assert echo.tags.keys() >= {"msgid", "time"}
    return echoes


def read_batch(client: IrcClient, target: str) -> list[Message]:
    """Read one chathistory batch for `target`; its messages with the batch tag removed."""
    start = client.expect_msg("BATCH")
    assert start.source == "threadchat"
    ref = start.params[0][1:]
    assert start.params == [f"+{ref}", "chathistory", target]
    messages = []
    while True:
        message = parse(client.read_line())
        if message.command == "BATCH":
            assert message.params == [f"-{ref}"]
            return messages
        assert message.tags.pop("batch") == ref
        messages.append(message)


def history(client: IrcClient, request: str, target: str) -> list[str]:
    client.send(f"CHATHISTORY {request}")
    return [m.params[1] for m in read_batch(client, target)]


def fail(client: IrcClient, request: str) -> list[str]:
    client.send(f"CHATHISTORY {request}")
    message = client.expect_msg("FAIL")
    assert message.source == "threadchat"
    return message.params


# -- announcement -----------------------------------------------------------------------------


def test_announced_only_with_history(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    for server, announced in ((make_server(), True), (make_server(history=False), False)):
        client = irc(on=server)
        client.send("CAP LS 302")
        offered = client.expect_msg("CAP", lambda m: m.params[1] == "LS").params[-1].split()
        assert ("draft/chathistory" in offered) is announced
        client.send("NICK n", "USER n 0 * :N", "CAP END")
        tokens = []
        while (line := parse(client.read_line())).command not in ("376", "422"):
            if line.command == "005":
                tokens += line.params[1:-1]
        assert ("CHATHISTORY=500" in tokens) is announced
        assert ("MSGREFTYPES=msgid,timestamp" in tokens) is announced
        if not announced:
            client.send("CHATHISTORY LATEST #x * 10")
            assert client.expect_msg("421").params[1] == "CHATHISTORY"


# -- subcommands and references ---------------------------------------------------------------


def test_each_subcommand_with_msgid_refs(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#h")
    echoes = say_all(alice, "#h", [f"m{i}" for i in range(6)])
    ids = [e.tags["msgid"] for e in echoes]
    assert ids == sorted(ids, key=int) and len(set(ids)) == 6

    alice.send("CHATHISTORY LATEST #h * 10")
    batch = read_batch(alice, "#h")
    # Exactly what was echoed live: same source, text, msgid and time.
    assert batch == echoes

    assert history(alice, "LATEST #h * 3", "#h") == ["m3", "m4", "m5"]
    assert history(alice, f"LATEST #h msgid={ids[3]} 10", "#h") == ["m4", "m5"]
    assert history(alice, f"BEFORE #h msgid={ids[3]} 2", "#h") == ["m1", "m2"]
    assert history(alice, f"AFTER #h msgid={ids[1]} 2", "#h") == ["m2", "m3"]
    assert history(alice, f"AROUND #h msgid={ids[3]} 4", "#h") == ["m1", "m2", "m3", "m4"]
    between = f"BETWEEN #h msgid={ids[0]} msgid={ids[5]}"
    assert history(alice, f"{between} 10", "#h") == ["m1", "m2", "m3", "m4"]
    assert history(alice, f"{between} 2", "#h") == ["m1", "m2"]
    backwards = f"BETWEEN #h msgid={ids[5]} msgid={ids[0]} 2"
    assert history(alice, backwards, "#h") == ["m3", "m4"]
    assert history(alice, "latest #H * 0", "#h") == []  # case-insensitive, limit 0


def test_timestamp_refs(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#t")
    echoes = say_all(alice, "#t", ["a", "b", "c"])
    first = echoes[0].tags["time"]
    assert first is not None and parse_millis(first) > 0
    past, future = "2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00+00:00"
    assert history(alice, f"AFTER #t timestamp={past} 2", "#t") == ["a", "b"]
    assert history(alice, f"BEFORE #t timestamp={future} 1", "#t") == ["c"]
    assert history(alice, f"BEFORE #t timestamp={first} 10", "#t") == []
    assert history(alice, f"BETWEEN #t timestamp={past} timestamp={future} 10", "#t") == [
        "a",
        "b",
        "c",
    ]
    assert history(alice, f"LATEST #t timestamp={future} 10", "#t") == []


def test_invalid_requests_fail(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#e")
    assert fail(alice, "TARGETS a b 10")[:3] == ["CHATHISTORY", "INVALID_PARAMS", "TARGETS"]
    assert fail(alice, "LATEST #e *") == [
        "CHATHISTORY",
        "INVALID_PARAMS",
        "LATEST",
        "Missing parameters",
    ]
    assert fail(alice, "BEFORE #e * 10") == [
        "CHATHISTORY",
        "INVALID_PARAMS",
        "BEFORE",
        "*",
        "Invalid message reference",
    ]
    refs = ("msgid=abc", "timestamp=yesterday", "id=5", "msgid=" + "9" * 80)
    # Past SQLite's 64-bit integers, and before the epoch: refused, not an OverflowError.
    out_of_range = ("msgid=99999999999999999999999", "timestamp=1900-01-01T00:00:00Z")
    for ref in (*refs, *out_of_range):
        assert fail(alice, f"AFTER #e {ref} 10")[1:4] == ["INVALID_PARAMS", "AFTER", ref]
    assert fail(alice, "LATEST #e * -1")[1:4] == ["INVALID_PARAMS", "LATEST", "-1"]
    assert fail(alice, "LATEST #e * many")[1:4] == ["INVALID_PARAMS", "LATEST", "many"]
    alice.send("CHATHISTORY")
    assert alice.expect_msg("461").params[1] == "CHATHISTORY"
    # A huge limit is clamped to the announced maximum, not refused.
    assert history(alice, "LATEST #e * 999999999", "#e") == []
    # The asker is still connected after all of that.
    alice.send("PING :still-here")
    assert alice.expect_msg("PONG").params[-1] == "still-here"


def test_non_members_and_unknown_channels_are_refused(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#secret")
    say_all(alice, "#secret", ["hidden"])
    eve = irc("eve", HISTORY_CAPS)
    for target in ("#secret", "#nowhere", "#bad,name"):
        assert fail(eve, f"LATEST {target} * 10") == [
            "CHATHISTORY",
            "INVALID_TARGET",
            "LATEST",
            target,
            "Messages could not be retrieved",
        ]
    join(eve, "#secret")  # members read the history, whenever they joined
    eve.send("CHATHISTORY LATEST #secret * 10")
    assert [m.params[1] for m in read_batch(eve, "#secret")] == ["hidden"]


def test_without_batch_the_lines_come_bare(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#b")
    say_all(alice, "#b", ["one"])
    plain = irc("plain")
    join(plain, "#b")
    plain.send("CHATHISTORY LATEST #b * 10", "PING done")
    lines = [plain.read_line(), plain.read_line()]
    assert lines[0] == ":alice!~alice@127.0.0.1 PRIVMSG #b one"
    assert parse(lines[1]).command == "PONG"


# -- private conversations --------------------------------------------------------------------


def test_private_history_is_only_for_the_two_accounts(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    server = make_server()
    for name in ("alice", "bob", "carol"):
        register_account(server, name)
    alice = irc("alice", HISTORY_CAPS, on=server, password=PASSWORD)
    carol = irc("carol", HISTORY_CAPS, on=server, password=PASSWORD)
    bob = JsonClient(server.listener("line").port)
    bob.send_json(type="hello", name="bob", password=PASSWORD)
    bob.expect_event("logged_in")
    say_all(alice, "bob", ["hello bob"])
    bob.expect_event("private", text="hello bob")
    bob.send_json(type="msg", to="alice", text="hi alice")
    alice.expect_msg("PRIVMSG", lambda m: m.params == ["alice", "hi alice"])
    say_all(carol, "bob", ["carol here"])
    bob.expect_event("private", text="carol here")

    alice.send("CHATHISTORY LATEST bob * 10")
    batch = read_batch(alice, "bob")
    assert [(m.source.split("!")[0], m.params) for m in batch if m.source] == [
        ("alice", ["bob", "hello bob"]),
        ("bob", ["alice", "hi alice"]),
    ]
    assert batch[1].source == "bob!bob@127.0.0.1"
    assert batch[1].tags.get("account") is None  # account-tag was not asked for
    # Carol sees her own conversation with bob, never alice's.
    assert history(carol, "LATEST bob * 10", "bob") == ["carol here"]
    assert history(carol, "LATEST alice * 10", "alice") == []
    # A guest has no private history at all.
    guest = irc("guest", HISTORY_CAPS, on=server)
    assert fail(guest, "LATEST bob * 10")[1:4] == ["INVALID_TARGET", "LATEST", "bob"]
    bob.close()


# -- across protocols -------------------------------------------------------------------------


def test_native_messages_in_irc_history_and_back(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    server = make_server()
    native = JsonClient(server.listener("line").port)
    native.send_json(type="hello", name="nat")
    native.expect_event("who", room="lobby")
    native.send_json(type="join", room="mix")
    native.expect_event("who", room="mix")
    alice = irc("alice", HISTORY_CAPS, on=server)
    join(alice, "#mix")
    native.send_json(type="say", room="mix", text="from native", ref=1)
    native.expect_event("ok", ref=1)
    live = alice.expect_msg("PRIVMSG", lambda m: m.params[1] == "from native")
    say_all(alice, "#mix", ["from irc"])
    native.expect_event("message", text="from irc")

    alice.send("CHATHISTORY LATEST #mix * 10")
    batch = read_batch(alice, "#mix")
    assert [m.params for m in batch] == [["#mix", "from native"], ["#mix", "from irc"]]
    assert batch[0] == live  # the live line had the stored msgid and time already
    assert batch[0].source == "nat!nat@127.0.0.1"

    native.send_json(type="history", room="mix", limit=10, ref=2)
    page = native.expect_event("history", ref=2)
    assert [(m["from"], m["text"]) for m in page["messages"]] == [
        ("nat", "from native"),
        ("alice", "from irc"),
    ]
    assert page["messages"][1]["id"] == int(batch[1].tags["msgid"] or 0)
    native.close()


# -- replay on join ---------------------------------------------------------------------------


def test_replay_on_join_only_for_batch_and_server_time(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    join(alice, "#r")
    echoes = say_all(alice, "#r", ["old one", "old two"])

    modern = irc("modern", ("batch", "server-time"))
    modern.send("JOIN #r")
    modern.expect_msg("366")
    batch = read_batch(modern, "#r")
    # server-time without message-tags: the time tag, no msgid.
    assert batch == [
        Message("PRIVMSG", e.params, e.source, {"time": e.tags["time"]}) for e in echoes
    ]

    for caps in ((), ("server-time",), ("batch", "server-time", "draft/chathistory")):
        other = irc(f"c{len(caps)}", caps)
        other.send("JOIN #r", "PING end")
        lines = []
        while (line := parse(other.read_line())).command != "PONG":
            lines.append(line.command)
        assert "PRIVMSG" not in lines and "BATCH" not in lines and "366" in lines

    # Live messages keep coming after the replay, unbatched.
    alice.send("PRIVMSG #r :new")
    live = modern.expect_msg("PRIVMSG")
    assert live.params == ["#r", "new"] and "batch" not in live.tags


# -- pipelining -------------------------------------------------------------------------------


def test_a_burst_of_privmsgs_keeps_its_order(irc: Callable[..., IrcClient]) -> None:
    alice = irc("alice", HISTORY_CAPS)
    bob = irc("bob", ("message-tags",))
    join(alice, "#p")
    join(bob, "#p")
    texts = [f"line {i}" for i in range(200)]
    # PRIVMSGs, a NOTICE and a PRIVMSG to a nick interleaved in one write: relayed in order.
    burst = [f"PRIVMSG #p :{t}" for t in texts[:100]] + ["NOTICE #p :note"]
    burst += [f"PRIVMSG #p :{t}" for t in texts[100:]] + ["PRIVMSG bob :direct"]
    alice.send(*burst)
    got = []
    while len(got) < 202:
        message = parse(bob.read_line())
        if message.command in ("PRIVMSG", "NOTICE"):
            got.append(message.params[1])
    assert got == [*texts[:100], "note", *texts[100:], "direct"]
    alice.send("CHATHISTORY LATEST #p * 500")
    batch = read_batch(alice, "#p")
    assert [m.params[1] for m in batch] == texts  # the NOTICE is not stored
    ids = [int(m.tags["msgid"] or 0) for m in batch]
    assert ids == sorted(ids)


# -- masks of native users as IRC sees them ---------------------------------------------------


def test_native_quit_shows_the_real_mask(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    server = make_server()
    watcher = irc("watcher", on=server)
    join(watcher, "#q")
    native = JsonClient(server.listener("line").port)
    native.send_json(type="hello", name="nat")
    native.expect_event("who", room="lobby")
    native.send_json(type="join", room="q")
    watcher.expect_msg("JOIN")
    native.send_json(type="quit", reason="bye")
    native.read_until_closed()
    assert watcher.expect(lambda line: "QUIT" in line) == ":nat!nat@127.0.0.1 QUIT bye"
    native.close()
    ircer = irc("ircer", on=server)
    join(ircer, "#q")
    ircer.send("QUIT :later")
    assert watcher.expect(lambda line: "QUIT" in line) == (
        ":ircer!~ircer@127.0.0.1 QUIT :Quit: later"
    )


def test_ip_ban_hits_native_users(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    server = make_server()
    op = irc("op", on=server)
    join(op, "#banned")
    op.send("MODE #banned +b *!*@127.0.0.1")
    op.expect_msg("MODE")
    native = JsonClient(server.listener("line").port)
    native.send_json(type="hello", name="nat")
    native.expect_event("who", room="lobby")
    user = server.hub.find_user("nat")
    assert user is not None and user.host == "127.0.0.1"
    native.send_json(type="join", room="banned", ref=1)
    assert native.expect_event("error", ref=1)["code"] == "banned"
    op.send("WHOIS nat")
    assert op.expect_msg("311").params[1:4] == ["nat", "nat", "127.0.0.1"]
    native.close()


def test_targets_lists_channels_and_private_conversations(
    make_server: Callable[..., Server], irc: Callable[..., IrcClient]
) -> None:
    server = make_server()
    for name in ("alice", "bob"):
        register_account(server, name)
    alice = irc("alice", HISTORY_CAPS, on=server, password=PASSWORD)
    bob = irc("bob", HISTORY_CAPS, on=server, password=PASSWORD)
    join(alice, "#quiet")  # no messages: not listed
    join(alice, "#busy")
    [room_echo] = say_all(alice, "#busy", ["in the room"])
    [private_echo] = say_all(bob, "alice", ["psst"])
    span = "timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z"
    alice.send(f"CHATHISTORY TARGETS {span} 10")
    start = alice.expect_msg("BATCH")
    assert start.params[1:] == ["draft/chathistory-targets"]
    lines = [parse(alice.read_line()) for _ in range(3)]
    assert [m.params for m in lines[:2]] == [
        ["TARGETS", "#busy", room_echo.tags["time"]],
        ["TARGETS", "bob", private_echo.tags["time"]],
    ]
    assert all(m.tags["batch"] == start.params[0][1:] for m in lines[:2])
    assert lines[2].command == "BATCH"
    # The limit keeps the least recently active; the bounds may come in either order.
    alice.send(f"CHATHISTORY TARGETS {' '.join(reversed(span.split()))} 1")
    alice.expect_msg("BATCH")
    assert parse(alice.read_line()).params[1] == "#busy"
    # Without batch the lines come bare; a guest sees only the channels they are in.
    plain = irc("plain", on=server)
    join(plain, "#busy")
    plain.send(f"CHATHISTORY TARGETS {span} 10", "PING done")
    assert parse(plain.read_line()).params[:2] == ["TARGETS", "#busy"]
    assert parse(plain.read_line()).command == "PONG"
    assert fail(plain, "TARGETS msgid=1 msgid=2 10")[1:3] == ["INVALID_PARAMS", "TARGETS"]
