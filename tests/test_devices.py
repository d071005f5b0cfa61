"""One account on several devices (issue 15): several connections at once under one nick.

Real servers on loopback, real clients: two IRC clients and a JSON client logged in to one
account, and a guest watching from outside.
"""

import queue
from collections.abc import Callable
from pathlib import Path

from conftest import IrcClient, JsonClient, LineClient
from test_irc_accounts import PASSWORD, register_account, sasl_plain

from threadchat.app.server import Server
from threadchat.client.udp import UdpTransport
from threadchat.core.hub import GUEST_MARKERS_MAX
from threadchat.protocols.irc.wire import parse


def irc_device(server: Server, nick: str = "alice") -> IrcClient:
    client = IrcClient(server.listener("irc").port)
    client.send(f"PASS {PASSWORD}", f"NICK {nick}", f"USER {nick} 0 * :Alice")
    client.expect_msg("001")
    client.expect(lambda line: parse(line).command in ("376", "422"))
    return client


class JsonDevice(JsonClient):
    """A JSON client logged in at hello; `greeting` holds what it was sent up to the ok."""

    greeting: list[dict]


def json_device(server: Server, name: str = "alice") -> JsonDevice:
    client = JsonDevice(server.listener("line").port)
    client.send_json(type="hello", name=name, password=PASSWORD, ref="hi")
    client.greeting = []
    while not client.greeting or client.greeting[-1].get("ref") != "hi":
        client.greeting.append(client.read_event())
    return client


def guest(server: Server, name: str) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name)
    client.expect_event("who", room="lobby")
    return client


def privmsg(text: str) -> Callable[[str], bool]:
    return lambda line: parse(line).command == "PRIVMSG" and parse(line).params[-1] == text


def test_two_irc_clients_and_a_json_client_on_one_account(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    register_account(server, "alice")
    bob = guest(server, "bob")
    laptop = irc_device(server)
    laptop.send("JOIN #lobby")
    laptop.expect_msg("366")
    bob.expect_event("join", name="alice")

    # A second IRC client and a JSON client attach to the same person: each is shown the
    # rooms the person is in, and nobody else sees anything.
    phone = irc_device(server)
    joined = phone.expect_msg("JOIN")
    assert joined.params[0] == "#lobby" and (joined.source or "").startswith("alice!")
    phone.expect_msg("366")
    web = json_device(server)
    shown = [(e["type"], e.get("room"), e.get("members")) for e in web.greeting]
    assert ("join", "lobby", None) in shown and ("who", "lobby", ["bob", "alice"]) in shown
    person = server.hub.find_user("alice")
    assert person is not None and len(person.connections) == 3
    assert bob.quiet() == []

    # What the account receives reaches all three.
    bob.send_json(type="say", room="lobby", text="hello alice")
    for device in (laptop, phone):
        assert (parse(device.expect(privmsg("hello alice"))).source or "").startswith("bob!")
    assert "own" not in web.expect_event("message", text="hello alice")
    bob.send_json(type="msg", to="alice", text="psst")
    laptop.expect(privmsg("psst"))
    phone.expect(privmsg("psst"))
    web.expect_event("private", text="psst")

    # Each sees what the others send: on IRC as messages from itself (no echo-message
    # asked for), in JSON marked as its own; the sender does not get its own back.
    laptop.send("PRIVMSG #lobby :from the laptop")
    seen = parse(phone.expect(privmsg("from the laptop")))
    assert (seen.source or "").startswith("alice!") and seen.params[0] == "#lobby"
    assert web.expect_event("message", text="from the laptop")["own"] is True
    assert bob.expect_event("message", text="from the laptop").get("own") is None
    web.send_json(type="say", room="lobby", text="from the browser")
    laptop.expect(privmsg("from the browser"))
    phone.expect(privmsg("from the browser"))
    phone.send("PRIVMSG bob :phone to bob")
    to_bob = parse(laptop.expect(privmsg("phone to bob")))
    assert (to_bob.source or "").startswith("alice!") and to_bob.params[0] == "bob"
    mine = web.expect_event("private", text="phone to bob")
    assert mine["own"] is True and mine["to"] == "bob"
    bob.expect_event("private", text="phone to bob")
    assert not [line for line in laptop.quiet() if "from the laptop" in line]

    # One quits: nobody sees a quit, the person stays in the room.
    laptop.send("QUIT :closing the lid")
    laptop.read_until_closed()
    phone.send("QUIT :bye")
    phone.read_until_closed()
    assert [e for e in map(_json, bob.quiet()) if e["type"] in ("quit", "leave")] == []
    bob.send_json(type="who", room="lobby", ref="w")
    assert "alice" in bob.expect_event("who", room="lobby")["members"]
    # The last one goes: everyone sees the quit.
    web.send_json(type="quit", reason="all gone")
    web.read_until_closed()
    assert bob.expect_event("quit", name="alice")["reason"] == "all gone"
    assert server.hub.find_user("alice") is None


def test_guests_keep_one_connection_per_nick(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    carol = guest(server, "carol")
    second = JsonClient(server.listener("line").port)
    second.send_json(type="hello", name="carol", ref=1)
    assert second.expect_event("error", ref=1)["code"] == "name_in_use"
    # A logged-in account cannot attach to a guest, nor another account to alice.
    first = json_device(server)
    register_account(server, "dave")
    intruder = JsonClient(server.listener("line").port)
    intruder.send_json(type="hello", name="alice", password="wrong", ref=2)
    assert intruder.expect_event("error", ref=2)["code"] in ("bad_login", "auth_failed")
    person = server.hub.find_user("alice")
    assert person is not None and len(person.connections) == 1
    first.close()
    carol.close()


def test_multiclient_off_refuses_a_second_connection(make_server: Callable[..., Server]) -> None:
    server = make_server(multiclient=False)
    register_account(server, "alice")
    first = irc_device(server)
    second = IrcClient(server.listener("irc").port)
    second.send(f"PASS {PASSWORD}", "NICK alice", "USER alice 0 * :Alice")
    second.expect_msg("433")
    first.close()


def _json(line: str) -> dict:
    import json

    return json.loads(line)


def irc_marker_device(server: Server) -> IrcClient:
    client = IrcClient(server.listener("irc").port)
    client.send("CAP LS 302", "CAP REQ :draft/read-marker server-time batch")
    client.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    client.send(f"PASS {PASSWORD}", "NICK alice", "USER alice 0 * :Alice", "CAP END")
    client.expect_msg("001")
    return client


def test_a_read_marker_set_on_one_device_shows_on_the_others(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    register_account(server, "alice")
    laptop = irc_marker_device(server)
    laptop.send("JOIN #lobby")
    # After the JOIN, before the end of the names: no marker yet.
    marker = laptop.expect_msg("MARKREAD")
    assert marker.params == ["#lobby", "*"]
    laptop.expect_msg("366")
    web = json_device(server)
    bob = guest(server, "bob")
    bob.send_json(type="say", room="lobby", text="read me", ref=1)
    bob.expect_event("ok", ref=1)
    said = laptop.expect(privmsg("read me"))
    stamp = parse(said).tags["time"]

    # The laptop reads it: the server answers it, and the browser is told.
    laptop.send(f"MARKREAD #lobby timestamp={stamp}")
    assert laptop.expect_msg("MARKREAD").params == ["#lobby", f"timestamp={stamp}"]
    assert web.expect_event("read", target="lobby")["read"] == stamp
    # A marker never moves back: an older one gets the stored one.
    laptop.send("MARKREAD #lobby timestamp=2000-01-01T00:00:00.000Z")
    assert laptop.expect_msg("MARKREAD").params == ["#lobby", f"timestamp={stamp}"]

    # Set in the browser (JSON `read`), seen on IRC; asked for, answered.
    later = "2030-01-01T00:00:00.000Z"  # clamped to now: a marker cannot be in the future
    web.send_json(type="read", target="lobby", read=later, ref="r")
    moved = web.expect_event("read", target="lobby")
    assert stamp <= moved["read"] < later
    assert laptop.expect_msg("MARKREAD").params == ["#lobby", f"timestamp={moved['read']}"]
    web.send_json(type="read", target="lobby", ref="ask")
    assert web.expect_event("read", ref="ask")["read"] == moved["read"]

    # A device that connects later is given the account's markers; after a restart too.
    phone = json_device(server)
    assert {"type": "read", "target": "lobby", "room": True, "read": moved["read"]} in [
        {k: v for k, v in e.items() if k not in ("id", "ts")} for e in phone.greeting
    ]
    laptop.send("MARKREAD bob")
    assert laptop.expect_msg("MARKREAD").params == ["bob", "*"]
    laptop.send("MARKREAD #lobby notatime")
    assert laptop.expect_msg("FAIL").params[:2] == ["MARKREAD", "INVALID_PARAMS"]
    laptop.send("MARKREAD")
    assert laptop.expect_msg("FAIL").params[:2] == ["MARKREAD", "NEED_MORE_PARAMS"]
    # A guest's markers are kept too (in memory, while connected), apart from the account's.
    bob.send_json(type="read", target="lobby", read=later, ref="g")
    kept = bob.expect_event("read", ref="g")["read"]
    assert stamp <= kept < later
    bob.send_json(type="read", target="lobby", ref="ga")
    assert bob.expect_event("read", ref="ga")["read"] == kept


def test_a_guest_on_irc_keeps_read_markers_while_connected(
    make_server: Callable[..., Server],
) -> None:
    """draft/read-marker gives markers to every client: a guest's live in memory, for as
    long as its connection (an account's are stored)."""
    server = make_server()

    def irc_guest() -> IrcClient:
        client = IrcClient(server.listener("irc").port)
        client.send("CAP LS 302", "CAP REQ :draft/read-marker", "NICK wanda")
        client.send("USER wanda 0 * :Wanda", "CAP END")
        client.expect_msg("001")
        return client

    wanda = irc_guest()
    wanda.send("JOIN #den")
    assert wanda.expect_msg("MARKREAD").params == ["#den", "*"]
    wanda.expect_msg("366")
    stamp = "2019-01-04T14:33:26.123Z"
    wanda.send(f"MARKREAD #den timestamp={stamp}")
    assert wanda.expect_msg("MARKREAD").params == ["#den", f"timestamp={stamp}"]
    # Never backwards: an older time gets the kept one.
    wanda.send("MARKREAD #den timestamp=2010-01-01T00:00:00.000Z")
    assert wanda.expect_msg("MARKREAD").params == ["#den", f"timestamp={stamp}"]
    wanda.send("MARKREAD #den")
    assert wanda.expect_msg("MARKREAD").params == ["#den", f"timestamp={stamp}"]
    # A private conversation's, and a channel that does not exist: asked, answered.
    wanda.send("MARKREAD bob timestamp=2020-02-02T00:00:00.000Z")
    assert wanda.expect_msg("MARKREAD").params == ["bob", "timestamp=2020-02-02T00:00:00.000Z"]
    wanda.send("MARKREAD #nosuchchannel")
    assert wanda.expect_msg("MARKREAD").params == ["#nosuchchannel", "*"]
    # Marking one is for members only.
    wanda.send(f"MARKREAD #nosuchchannel timestamp={stamp}")
    assert wanda.expect_msg("FAIL").params[:3] == ["MARKREAD", "INVALID_PARAMS", "#nosuchchannel"]
    # Rejoining shows the kept marker before the end of the names.
    wanda.send("PART #den", "JOIN #den")
    assert wanda.expect_msg("MARKREAD").params == ["#den", f"timestamp={stamp}"]
    wanda.expect_msg("366")
    # A guest's markers are bounded: past GUEST_MARKERS_MAX the oldest set goes.
    many = [f"peer{n}" for n in range(GUEST_MARKERS_MAX)]
    wanda.send(*(f"MARKREAD {nick} timestamp={stamp}" for nick in many))
    for _ in many:
        wanda.expect_msg("MARKREAD")
    wanda.send("MARKREAD #den", f"MARKREAD {many[-1]}")
    assert wanda.expect_msg("MARKREAD").params == ["#den", "*"]  # the oldest: gone
    assert wanda.expect_msg("MARKREAD").params == [many[-1], f"timestamp={stamp}"]
    # Gone with the connection: the next guest of that nick starts with none.
    wanda.send("QUIT")
    wanda.read_until_closed()
    again = irc_guest()
    again.send("JOIN #den")
    assert again.expect_msg("MARKREAD").params == ["#den", "*"]


def test_text_mode_moves_the_marker_as_you_read(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    web = json_device(server)
    text = LineClient(server.listener("line").port)
    text.send(f"alice {PASSWORD}")
    text.expect("--- in lobby:")
    text.send("typing here means I read the room")
    moved = web.expect_event("read", target="lobby")
    assert moved["read"] is not None
    text.send("/read")
    text.expect("--- read up to")


def test_always_on_survives_a_restart_and_catches_up_exactly_what_was_missed(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first = make_server(data_dir=str(tmp_path))
    register_account(first, "alice")
    register_account(first, "bob")
    alice = json_device(first)
    alice.send_json(type="join", room="den", ref="j")
    alice.expect_event("ok", ref="j")
    alice.send_json(type="always_on", on=True, ref="on")
    alice.expect_event("notice")
    bob = json_device(first, "bob")
    bob.send_json(type="join", room="den", ref="j")
    bob.expect_event("ok", ref="j")
    bob.send_json(type="say", room="den", text="seen live", ref=0)
    alice.expect_event("message", text="seen live")

    # Alice's only device goes: she stays in her rooms, away; nobody sees a quit.
    alice.send_json(type="quit", reason="lid closed")
    alice.read_until_closed()
    away = bob.expect_event("away", name="alice")
    assert away["away"] == "always-on: no device connected"
    missed = ["missed one", "missed two"]
    bob.send_json(type="say", room="den", text=missed[0], ref=1)
    bob.expect_event("ok", ref=1)
    bob.send_json(type="msg", to="alice", text="a private one", ref=2)
    bob.expect_event("ok", ref=2)
    first.stop()

    # After a restart she is still in her rooms, and her return catches up exactly what
    # she missed, across the restart.
    second = make_server(data_dir=str(tmp_path))
    person = second.hub.find_user("alice")
    assert person is not None and person.connections == () and person.always_on
    assert sorted(person.rooms) == ["den", "lobby"]
    bob = json_device(second, "bob")
    bob.send_json(type="join", room="den", ref="j")
    bob.expect_event("ok", ref="j")
    bob.send_json(type="say", room="den", text=missed[1], ref=3)
    bob.expect_event("ok", ref=3)
    phone = irc_device(second)
    seen = [parse(line) for line in phone.quiet(1.0)]
    caught = [m.params[-1] for m in seen if m.command == "PRIVMSG"]
    assert sorted(caught) == sorted([*missed, "a private one"])
    assert "seen live" not in caught
    # Back: no longer away, and live messages flow again.
    assert person.away is None and person.gone_ms is None
    bob.expect_event("away", name="alice")
    bob.send_json(type="say", room="den", text="live again", ref=4)
    phone.expect(privmsg("live again"))


def test_always_on_needs_an_account_and_ends_after_the_expiry(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    register_account(server, "alice")
    carol = guest(server, "carol")
    carol.send_json(type="always_on", on=True, ref=1)
    assert carol.expect_event("error", ref=1)["code"] == "not_logged_in"
    watcher = guest(server, "watcher")
    irc = irc_device(server)
    irc.send("PRIVMSG NickServ :SET ALWAYS-ON ON")
    assert "on" in irc.expect_msg("NOTICE", lambda m: "lways-on" in m.params[-1]).params[-1]
    irc.send("JOIN #lobby")
    irc.expect_msg("366")
    irc.send("QUIT :gone")
    irc.read_until_closed()
    watcher.expect_event("away", name="alice")
    person = server.hub.find_user("alice")
    assert person is not None and person.gone_ms is not None
    # Not yet expired; then past --always-on-expiry: a quit.
    assert server.hub.expire_always_on(person.gone_ms + 1000) == []
    late = person.gone_ms + int(server.hub.always_on_expiry * 1000) + 1
    assert server.hub.expire_always_on(late) == ["alice"]
    assert watcher.expect_event("quit", name="alice")["reason"] == "always-on expired"
    assert server.hub.find_user("alice") is None


def test_a_login_after_registering_continues_as_the_accounts_person(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    register_account(server, "alice")
    laptop = json_device(server)
    bob = guest(server, "bob")
    # A JSON guest logs in to alice: the connection continues as alice (the guest quits).
    phone = guest(server, "phone")
    bob.expect_event("join", name="phone")
    phone.send_json(type="login", name="alice", password=PASSWORD, ref="in")
    renamed = phone.expect_event("nick")
    assert (renamed["old"], renamed["new"]) == ("phone", "alice")
    assert phone.expect_event("logged_in", ref="in")["account"] == "alice"
    assert bob.expect_event("quit", name="phone")["reason"].startswith("continued as alice")
    person = server.hub.find_user("alice")
    assert person is not None and len(person.connections) == 2
    # An IRC guest identifies with NickServ: the same.
    irc = IrcClient(server.listener("irc").port)
    irc.send("NICK tablet", "USER t 0 * :T")
    irc.expect_msg("001")
    irc.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    nick = irc.expect_msg("NICK")
    assert nick.params == ["alice"] and (nick.source or "").startswith("tablet!")
    assert irc.expect_msg("JOIN").params[0] == "#lobby"
    assert len(person.connections) == 3
    laptop.send_json(type="say", room="lobby", text="from the laptop")
    phone.expect_event("message", text="from the laptop")
    irc.expect(privmsg("from the laptop"))


def test_a_udp_client_logged_in_at_hello_attaches_too(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    laptop = json_device(server)
    assert server.udp is not None
    received: queue.Queue[dict] = queue.Queue()
    udp = UdpTransport("127.0.0.1", server.udp.port)
    udp.start(received.put, lambda reason: None)
    try:
        # The handshake's hello carries a name only: alice's is taken (and registered), so
        # the client logs in with a second hello, as an ordinary request.
        assert udp.send({"type": "hello", "name": "alice", "ref": "first"})
        while received.get(timeout=5).get("ref") != "first":
            pass
        assert udp.send({"type": "hello", "name": "alice", "password": PASSWORD, "ref": "u"})
        kinds = []
        while "ok" not in kinds:
            kinds.append(received.get(timeout=5)["type"])
        assert "join" in kinds and "who" in kinds
        person = server.hub.find_user("alice")
        assert person is not None and len(person.connections) == 2
        laptop.send_json(type="say", room="lobby", text="to my udp self")
        while True:
            event = received.get(timeout=5)
            if event.get("text") == "to my udp self":
                assert event["own"] is True
                break
    finally:
        udp.close()


def test_a_sasl_client_sending_nick_first_attaches(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    first = irc_device(server)
    # The order real clients use: NICK and USER during CAP negotiation, then AUTHENTICATE.
    second = IrcClient(server.listener("irc").port)
    second.send("CAP LS 302", "NICK alice", "USER alice 0 * :Alice", "CAP REQ :sasl")
    second.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    second.send("AUTHENTICATE PLAIN")
    second.expect_msg("AUTHENTICATE")
    second.send(f"AUTHENTICATE {sasl_plain('alice', PASSWORD)}", "CAP END")
    second.expect_msg("903")
    assert second.expect_msg("001").params[0] == "alice"
    person = server.hub.find_user("alice")
    assert person is not None and len(person.connections) == 2
    # Without the login, the nick stays refused.
    guest_client = IrcClient(server.listener("irc").port)
    guest_client.send("CAP LS 302", "NICK alice", "USER x 0 * :X", "CAP END")
    guest_client.expect_msg("433")
    first.close()
