"""One account on several devices (issue 15): several connections at once under one nick.

Real servers on loopback, real clients: two IRC clients and a JSON client logged in to one
account, and a guest watching from outside.
"""

from collections.abc import Callable

from conftest import IrcClient, JsonClient
from test_irc_accounts import PASSWORD, register_account

from threadchat.app.server import Server
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
