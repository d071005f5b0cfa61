"""IRC clients and accounts: SASL PLAIN, PASS, NickServ IDENTIFY, registered nicks."""

import base64
from collections.abc import Callable

from conftest import JsonClient
from test_irc import IrcClient

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import parse

PASSWORD = "correct-horse"


def register_account(server: Server, name: str) -> None:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name)
    client.expect_event("who")
    client.send_json(type="register", password=PASSWORD, ref=1)
    client.expect_event("logged_in", ref=1)
    client.send_json(type="quit")
    client.read_until_closed()
    client.close()


def sasl_plain(name: str, password: str) -> str:
    return base64.b64encode(f"{name}\0{name}\0{password}".encode()).decode()


def test_sasl_plain_logs_in_before_registration(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    client = IrcClient(server.listener("irc").port)
    client.send("CAP LS 302")
    caps = client.expect_msg("CAP", lambda m: m.params[1] == "LS")
    assert "sasl=PLAIN" in caps.params[-1]
    client.send("CAP REQ :sasl", "NICK alice", "USER alice 0 * :Alice")
    client.expect_msg("CAP", lambda m: m.params[1] == "ACK")
    client.send("AUTHENTICATE PLAIN")
    client.expect_msg("AUTHENTICATE", lambda m: m.params == ["+"])
    client.send(f"AUTHENTICATE {sasl_plain('alice', 'wrong-password')}")
    client.expect_msg("904")
    client.send("AUTHENTICATE PLAIN")
    client.expect_msg("AUTHENTICATE")
    client.send(f"AUTHENTICATE {sasl_plain('alice', PASSWORD)}")
    assert client.expect_msg("900").params[2] == "alice"
    client.expect_msg("903")
    client.send("CAP END")
    client.expect_msg("001")
    user = server.hub.find_user("alice")
    assert user is not None and user.account == "alice"


def test_a_registered_nick_needs_a_login_on_irc(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    guest = IrcClient(server.listener("irc").port)
    guest.send("NICK alice", "USER x 0 * :X")
    notice = guest.expect_msg("NOTICE", lambda m: "registered" in m.params[-1])
    assert "SASL" in notice.params[-1]
    guest.expect_msg("433")
    guest.send("NICK alicia")
    guest.expect_msg("001")
    # PASS (the server has no connection password) logs in to the nick's account.
    owner = IrcClient(server.listener("irc").port)
    owner.send(f"PASS {PASSWORD}", "NICK alice", "USER a 0 * :A")
    owner.expect_msg("001")
    user = server.hub.find_user("alice")
    assert user is not None and user.account == "alice"


def test_wrong_pass_leaves_a_guest(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    client = IrcClient(server.listener("irc").port)
    client.send("PASS not-the-password", "NICK alice", "USER a 0 * :A")
    client.expect_msg("NOTICE", lambda m: "did not log you in" in m.params[-1])
    client.expect_msg("433")


def test_nickserv_identify(make_server: Callable[..., Server]) -> None:
    server = make_server()
    register_account(server, "alice")
    client = IrcClient(server.listener("irc").port)
    client.register("someone")
    client.send("PRIVMSG NickServ :IDENTIFY alice nope-nope-nope")
    line = client.expect(lambda line: parse(line).source.startswith("NickServ"))
    assert "invalid account name or password" in line
    client.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    line = client.expect(lambda line: parse(line).source.startswith("NickServ"))
    assert "identified for alice" in line
    user = server.hub.find_user("someone")
    assert user is not None and user.account == "alice"
    client.send("NICK alice")
    client.expect_msg("NICK")
    client.send("PRIVMSG NickServ :HELLO")
    assert "Usage" in client.expect(lambda line: parse(line).source.startswith("NickServ"))
