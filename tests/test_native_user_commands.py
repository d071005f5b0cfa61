"""Invite, away and whois for native users (text and JSON), over real sockets: each rule is
the hub's (`Hub.invite`, `set_away`, `user_info`), the same one IRC's INVITE, AWAY and WHOIS
use, so native and IRC users see each other's."""

from collections.abc import Callable

from conftest import JsonClient, LineClient
from test_irc import IrcClient

from threadchat.app.server import Server
from threadchat.protocols.irc.wire import parse


def json_user(server: Server, name: str) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name)
    client.expect_event("who", room="lobby")
    return client


def text_user(server: Server, name: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    return client


def irc_user(server: Server, nick: str) -> IrcClient:
    client = IrcClient(server.listener("irc").port)
    client.register(nick)
    return client


def test_an_invitation_lets_a_native_user_into_an_invite_only_room(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    owner = irc_user(server, "owner")
    owner.send("JOIN #club", "MODE #club +i")
    owner.expect_msg("MODE", lambda m: m.params[1] == "+i")
    guest = json_user(server, "guest")
    guest.send_json(type="join", room="club", ref=1)
    assert guest.expect_event("error", ref=1)["code"] == "invite_only"

    # A member who is no operator may not invite to an invite-only room, from either side.
    owner.send("INVITE guest #club")
    owner.expect_msg("341")
    guest.expect_event("invite", room="club", by="owner")
    guest.send_json(type="join", room="club")
    guest.expect_event("who", room="club")
    guest.send_json(type="invite", name="owner", room="club", ref=2)
    assert guest.expect_event("error", ref=2)["code"] == "user_in_room"
    late = text_user(server, "late")
    guest.send_json(type="invite", name="late", room="club", ref=3)
    assert guest.expect_event("error", ref=3)["code"] == "not_operator"

    # An operator's invitation, sent in text mode, is the one that works.
    owner.send("MODE #club +o guest")
    guest.expect_event("mode", room="club")
    guest.send_json(type="invite", name="late", room="club", ref=4)
    guest.expect_event("notice", text="you invited late to club")
    guest.expect_event("ok", ref=4)
    late.expect("--- guest invites you to club (/join club)")
    late.send("/join club")
    late.expect("--- in club:")
    # Text mode invites too, to the current room by default, and IRC users receive it.
    visitor = irc_user(server, "visitor")
    late.send("/invite visitor")
    late.expect("!!! only operators invite to club")
    owner.send("MODE #club +o late")
    late.expect("--- owner made late an operator in club")
    late.send("/invite visitor #club")
    late.expect("--- you invited visitor to club")
    invite = visitor.expect_msg("INVITE")
    assert invite.source.startswith("late!") and invite.params == ["visitor", "#club"]
    late.send("/invite")
    late.expect("usage: /invite NICK [#ROOM]")


def test_away_is_one_state_shown_to_native_and_irc_users(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice = json_user(server, "alice")
    bob = text_user(server, "bob")
    carol = irc_user(server, "carol")
    alice.send_json(type="away", message="at lunch", ref=1)
    alice.expect_event("notice", text="you are marked as away")
    alice.expect_event("ok", ref=1)
    bob.send("/msg alice hi")
    bob.expect("--- alice is away: at lunch")
    carol.send("PRIVMSG alice :hi")
    assert carol.expect_msg("301").params[1:] == ["alice", "at lunch"]

    bob.send("/away on the phone")
    bob.expect("--- you are marked as away")
    carol.send("WHOIS bob")
    assert carol.expect_msg("301").params[1:] == ["bob", "on the phone"]
    bob.send("/away")
    bob.expect("--- you are no longer away")
    carol.send("WHOIS bob", "PING end")
    replies = []
    while (line := parse(carol.read_line())).command != "PONG":
        replies.append(line.command)
    assert "318" in replies and "301" not in replies

    # The same limits for every protocol: IRC's AWAYLEN is the hub's.
    alice.send_json(type="away", message="x" * 201, ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "too_long"
    alice.send_json(type="away", message="bell\x07", ref=3)
    assert alice.expect_event("error", ref=3)["code"] == "control_chars"


def test_whois_looks_up_anyone_from_native_clients(make_server: Callable[..., Server]) -> None:
    server = make_server()
    carol = irc_user(server, "carol")
    carol.send("JOIN #dev", "AWAY :back soon")
    carol.expect_msg("306")
    alice = json_user(server, "alice")
    alice.send_json(type="whois", name="CAROL", ref=1)
    info = alice.expect_event("whois", ref=1)
    assert info["name"] == "carol" and info["account"] is None
    assert info["realname"] == "Real carol" and info["away"] == "back soon"
    assert info["rooms"] == [{"name": "dev", "status": ["operator"]}]  # IRC users start in no room
    assert info["operator"] is False and info["idle"] >= 0 and info["signon"].endswith("Z")
    alice.send_json(type="whois", name="nobody", ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "no_such_nick"

    bob = text_user(server, "bob")
    bob.send("/whois carol")
    bob.expect("--- carol: a guest")
    bob.expect("--- carol is Real carol")
    bob.expect("--- carol is in dev (operator)")
    bob.expect("--- carol is away: back soon")
    bob.expect("--- carol has been idle")
    bob.send("/whois")
    bob.expect("usage: /whois NICK")
