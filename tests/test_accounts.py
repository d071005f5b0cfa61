"""Accounts: registration, login, password change, registered names, rate limits, privacy."""

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import JsonClient, LineClient
from store_backends import (
    Backend,
)

from threadchat.app.server import Server
from threadchat.services import accounts

PASSWORD = "correct-horse"


def json_client(
    server: Server, name: str, *, source: str | None = None, **hello: object
) -> JsonClient:
    client = JsonClient(server.listener("line").port, source=source)
    client.send_json(type="hello", name=name, **hello)
    client.expect_event("who", room="lobby")
    return client


def registered(server: Server, name: str, password: str = PASSWORD) -> JsonClient:
    client = json_client(server, name)
    client.send_json(type="register", password=password, ref="reg")
    assert client.expect_event("logged_in", ref="reg")["account"] == name
    return client


def test_register_then_log_in_after_a_restart(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first = make_server(data_dir=str(tmp_path))
    registered(first, "alice").close()
    first.stop()
    # Without --multiclient: with it, the second login would continue as the first
    # connection's person (tests/test_devices.py).
    second = make_server(data_dir=str(tmp_path), multiclient=False)
    port = second.listener("line").port
    text = LineClient(port)
    text.send(f"alice {PASSWORD}")
    text.expect("--- you are logged in as alice")
    text.expect("--- in lobby:")
    other = JsonClient(port)
    other.send_json(type="hello", name="alice2")
    other.expect_event("who")
    other.send_json(type="login", name="ALICE", password=PASSWORD, ref=1)
    assert other.expect_event("logged_in", ref=1)["account"] == "ALICE"
    # Its nick is taken by the first connection, so it keeps its own.
    other.expect_event("notice")


def test_strict_mode_refuses_a_guest_and_keeps_the_connection(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    registered(server, "alice").close()
    guest = LineClient(server.listener("line").port)
    guest.send("alice")
    refusal = guest.expect("!!!")
    assert "registered" in refusal and "/login alice PASSWORD" in refusal
    guest.send("alicia")  # the connection stayed open: another name works
    guest.expect("--- welcome to threadchat, alicia")
    guest.send("/nick Alice")
    assert "registered" in guest.expect("!!!")
    json_guest = JsonClient(server.listener("line").port)
    json_guest.send_json(type="hello", name="alice", ref=1)
    assert json_guest.expect_event("error", ref=1)["code"] == "name_registered"
    json_guest.send_json(type="hello", name="alice", password="wrong password", ref=2)
    assert json_guest.expect_event("error", ref=2)["code"] == "bad_login"
    json_guest.send_json(type="hello", name="alice", password=PASSWORD, ref=3)
    json_guest.expect_event("welcome", name="alice")
    json_guest.expect_event("logged_in", account="alice")


def test_logged_in_users_cannot_take_other_accounts_names(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice = registered(server, "alice")
    registered(server, "bob").send_json(type="quit")
    alice.send_json(type="nick", name="bob", ref=1)
    assert alice.expect_event("error", ref=1)["code"] == "name_registered"
    alice.send_json(type="register", password="another password", ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "bad_request"  # already logged in


def test_registering_a_taken_account_or_weak_password_fails(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice = json_client(server, "alice")
    alice.send_json(type="register", password="short", ref=1)
    assert alice.expect_event("error", ref=1)["code"] == "weak_password"
    alice.send_json(type="register", password="x" * 1500, ref=2)
    assert alice.expect_event("error", ref=2)["code"] == "bad_request"


def test_wrong_password_and_unknown_account_look_the_same(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    registered(server, "alice").close()
    guest = json_client(server, "guest")
    guest.send_json(type="login", name="alice", password="not it at all", ref=1)
    wrong = guest.expect_event("error", ref=1)
    guest.send_json(type="login", name="nobody", password="not it at all", ref=2)
    unknown = guest.expect_event("error", ref=2)
    assert (wrong["code"], wrong["message"]) == (unknown["code"], unknown["message"])
    assert wrong["code"] == "bad_login"


def test_failed_logins_are_rate_limited_per_account_and_address(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    registered(server, "alice").close()
    attacker = json_client(server, "mallory")
    for i in range(accounts.MAX_FAILS_PER_ACCOUNT):
        attacker.send_json(type="login", name="alice", password=f"guess {i:04}", ref=i)
        assert attacker.expect_event("error", ref=i)["code"] == "bad_login"
    # Now even the right password is refused for a while from the attacker's address...
    attacker.send_json(type="login", name="alice", password=PASSWORD, ref="right")
    limited = attacker.expect_event("error", ref="right")
    assert limited["code"] == "rate_limited" and "try again" in limited["message"]
    # ...but the owner, from their own address, is not locked out of their account.
    owner = json_client(server, "alice_phone", source="127.0.0.2")
    owner.send_json(type="login", name="alice", password=PASSWORD, ref="owner")
    assert owner.expect_event("logged_in", ref="owner")["account"] == "alice"
    owner.close()
    # The same holds for a name nobody registered: the limit does not reveal existence.
    for i in range(accounts.MAX_FAILS_PER_ACCOUNT):
        attacker.send_json(type="login", name="nobody", password=f"guess {i:04}", ref=i)
        attacker.expect_event("error", ref=i)
    attacker.send_json(type="login", name="nobody", password="guess", ref="last")
    assert attacker.expect_event("error", ref="last")["code"] == "rate_limited"


def test_failed_logins_are_rate_limited_per_address(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "MAX_FAILS_PER_ADDRESS", 6)
    server = make_server()
    registered(server, "victim").close()
    attacker = json_client(server, "mallory")
    for i in range(6):
        attacker.send_json(type="login", name=f"user{i}", password="guess 1234", ref=i)
        assert attacker.expect_event("error", ref=i)["code"] == "bad_login"
    attacker.send_json(type="login", name="victim", password=PASSWORD, ref="x")
    assert attacker.expect_event("error", ref="x")["code"] == "rate_limited"


def test_service_rate_limit_expires_with_the_window(backend: Backend) -> None:
    store = backend.open()
    try:
        store.create_account("alice", PASSWORD)
        now = [1000.0]
        service = accounts.AccountService(store, clock=lambda: now[0])
        for _ in range(accounts.MAX_FAILS_PER_ACCOUNT):
            with pytest.raises(accounts.AuthError):
                service.authenticate("alice", "wrong pass", "10.0.0.1")
        with pytest.raises(accounts.AuthError, match="too many"):
            service.authenticate("alice", PASSWORD, "10.0.0.1")
        # Another address was never limited: the owner is not locked out.
        assert service.authenticate("alice", PASSWORD, "10.0.0.2") == "alice"
        # An IPv6 client's whole /64 is one host: a fresh address does not reset the count.
        for _ in range(accounts.MAX_FAILS_PER_ACCOUNT):
            with pytest.raises(accounts.AuthError, match="invalid"):
                service.authenticate("alice", "wrong pass", "2001:db8::1")
        with pytest.raises(accounts.AuthError, match="too many"):
            service.authenticate("alice", PASSWORD, "2001:db8::2")
        now[0] += accounts.FAIL_WINDOW + 1
        assert service.authenticate("alice", PASSWORD, "10.0.0.1") == "alice"
    finally:
        store.close()


def test_password_change(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice = registered(server, "alice")
    alice.send_json(type="password", old="wrong password", new="new password 1", ref=1)
    assert alice.expect_event("error", ref=1)["code"] == "bad_login"
    alice.send_json(type="password", old=PASSWORD, new="new password 1", ref=2)
    alice.expect_event("notice")
    alice.expect_event("ok", ref=2)
    alice.send_json(type="quit")
    alice.read_until_closed()
    again = JsonClient(server.listener("line").port)
    again.send_json(type="hello", name="alice", password=PASSWORD, ref=3)
    assert again.expect_event("error", ref=3)["code"] == "bad_login"
    again.send_json(type="hello", name="alice", password="new password 1", ref=4)
    again.expect_event("logged_in", account="alice")
    guest = json_client(server, "guest")
    guest.send_json(type="password", old="a", new="new password 2", ref=5)
    assert guest.expect_event("error", ref=5)["code"] == "not_logged_in"


def test_text_mode_account_commands(make_server: Callable[..., Server]) -> None:
    server = make_server()
    port = server.listener("line").port
    alice = LineClient(port)
    alice.send("alice")
    alice.expect("--- in lobby:")
    alice.send(f"/register {PASSWORD.replace(' ', '-')}")
    alice.expect("--- you are logged in as alice")
    alice.send("/password wrong-password-x new-password-1")
    alice.expect("!!! invalid account name or password")
    alice.send(f"/password {PASSWORD.replace(' ', '-')} new-password-1")
    alice.expect("your password has been changed")
    alice.send("/quit")
    alice.read_until_closed()
    bob = LineClient(port)
    bob.send("/login alice new-password-1")  # as a first line: logs in with that name
    bob.expect("--- you are logged in as alice")
    bob.send("/login alice")
    bob.expect("usage: /login NAME PASSWORD")


def test_passwords_are_never_logged_or_echoed(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3rSecretPassw0rd"
    server = make_server()
    port = server.listener("line").port
    alice = LineClient(port)
    alice.send("alice")
    alice.expect("--- in lobby:")
    seen = []
    alice.send(f"/register {secret}")
    seen.append(alice.expect("logged in"))
    alice.send(f"/login alice {secret}x", f"/password {secret}x other-password", "/login alice")
    seen += alice.quiet(0.5)
    mallory = LineClient(port)
    mallory.send(f"alice {secret}x")
    seen += mallory.quiet(0.5)
    json_guest = JsonClient(port)
    json_guest.send_json(type="hello", name="alice", password=f"{secret}y", ref=1)
    seen += json_guest.quiet(0.5)
    assert seen and not any(secret in line for line in seen)
    assert not any(secret in record.getMessage() for record in caplog.records)


def test_a_password_typed_as_the_name_is_never_logged(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Shaped like a nick on purpose: looking like a name must not be enough to be logged.
    secret = "Sup3rSecretPassw0rd"
    server = make_server()
    registered(server, "alice").close()
    guest = json_client(server, "guest")
    guest.send_json(type="login", name=secret, password="alice", ref=1)
    assert guest.expect_event("error", ref=1)["code"] == "bad_login"
    text = LineClient(server.listener("line").port)
    text.send(f"{secret} alice-password")
    text.expect("!!! ")
    text.close()
    guest.send_json(type="login", name="alice", password="wrong password", ref=2)
    assert guest.expect_event("error", ref=2)["code"] == "bad_login"
    logged = [record.getMessage() for record in caplog.records]
    assert not any(secret in line for line in logged)
    # A failure for a real account still names it, for the operator.
    assert any("failed login for account alice" in line for line in logged)


def test_grace_mode_renames_a_guest_who_does_not_log_in(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "GRACE_PERIOD", 0.5)
    server = make_server(nick_enforcement="grace")
    first = registered(server, "alice")
    first.send_json(type="quit")
    # The server frees the name before it closes the socket: once closed, "alice" is free
    # (otherwise the guest below could be told the name is in use).
    first.read_until_closed()
    guest = LineClient(server.listener("line").port)
    guest.send("alice")
    guest.expect("the name alice is registered: /login alice PASSWORD")
    renamed = guest.expect("--- alice is now known as Guest", timeout=5)
    assert renamed
    # Somebody who logs in within the period keeps the name.
    owner = LineClient(server.listener("line").port)
    owner.send("alice")
    owner.expect("is registered")
    owner.send(f"/login alice {PASSWORD}")
    owner.expect("logged in as alice")
    time.sleep(1.5)  # two housekeeping rounds; nothing may happen (asserting an absence)
    assert not [line for line in owner.quiet(0.3) if "now known as" in line]
    assert server.hub.find_user("alice") is not None


def test_admins_are_server_operators(make_server: Callable[..., Server]) -> None:
    server = make_server(admins=["boss"])
    owner = registered(server, "owner")
    owner.send_json(type="join", room="club")
    owner.expect_event("who", room="club")
    boss = registered(server, "boss")
    boss.send_json(type="join", room="club")
    boss.expect_event("who", room="club")
    boss.send_json(type="kick", room="club", name="owner", ref=1)
    boss.expect_event("leave", room="club", name="owner")
    boss.expect_event("ok", ref=1)


def test_private_history_is_only_for_the_two_accounts(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice, bob = registered(server, "alice"), registered(server, "bob")
    carol = registered(server, "carol")
    guest = json_client(server, "guest")
    alice.send_json(type="msg", to="bob", text="for bob only", ref=1)
    alice.expect_event("ok", ref=1)
    bob.expect_event("private", text="for bob only")
    bob.send_json(type="msg", to="alice", text="and back", ref=2)
    bob.expect_event("ok", ref=2)
    guest.send_json(type="msg", to="alice", text="from a guest", ref=3)
    guest.expect_event("ok", ref=3)
    alice.send_json(type="history", ref="a", **{"with": "bob"})
    page = alice.expect_event("history", ref="a")
    assert [m["text"] for m in page["messages"]] == ["for bob only", "and back"]
    assert page["with"] == "bob" and all(m["type"] == "private" for m in page["messages"])
    bob.send_json(type="history", ref="b", **{"with": "ALICE"})
    assert len(bob.expect_event("history", ref="b")["messages"]) == 2
    for peer in ("alice", "bob"):
        carol.send_json(type="history", ref=peer, **{"with": peer})
        assert carol.expect_event("history", ref=peer)["messages"] == []
    guest.send_json(type="history", ref="g", **{"with": "alice"})
    assert guest.expect_event("error", ref="g")["code"] == "not_logged_in"
    guest.send_json(type="history", ref="sql", **{"with": "x' OR '1'='1"})
    assert guest.expect_event("error", ref="sql")["code"] in ("not_logged_in", "invalid_name")
    carol.send_json(type="history", ref="sql2", **{"with": "x' OR '1'='1"})
    assert carol.expect_event("error", ref="sql2")["code"] == "invalid_name"
