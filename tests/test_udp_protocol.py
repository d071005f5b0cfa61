"""In-memory tests of the sans-I/O UDP protocol, including a seeded lossy link simulation."""

from __future__ import annotations

import heapq
import json
import random
from collections import defaultdict
from typing import Any

import pytest

from threadchat.core.flood import TokenBucket
from threadchat.protocols import udp
from threadchat.protocols.udp import (
    Action,
    ClientEndpoint,
    Connected,
    Deliver,
    Drop,
    ErrorReply,
    Paced,
    Registered,
    Rejected,
    ReliableChannel,
    Send,
    ServerEndpoint,
)

CLIENT = ("127.0.0.1", 40001)
OTHER = ("127.0.0.1", 40002)
SERVER = ("127.0.0.1", 7000)


def unlimited() -> udp.RateLimiter:
    return udp.RateLimiter(rate=1e9, burst=1e9)


def sends(actions: list[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def envelopes(actions: list[Action]) -> list[udp.Envelope]:
    return [udp.decode(a.data) for a in sends(actions)]


def cookie_hello(
    server: ServerEndpoint, name: str, nonce: str, addr: tuple[str, int], now: float = 0.0
) -> bytes:
    """A hello carrying the cookie the server's retry would give ``addr`` at ``now``."""
    return udp.encode_hello(name, nonce, cookie=server.cookies.issue(addr, now))


def handshake(
    server: ServerEndpoint, name: str = "alice", addr: tuple[str, int] = CLIENT, now: float = 0.0
) -> tuple[ClientEndpoint, list[Action]]:
    """Run a loss-free handshake; returns the client and the server's actions on validation."""
    client = ClientEndpoint(name, SERVER)
    (hello,) = sends(client.connect(now))
    (retry,) = sends(server.receive(hello.data, addr, now))
    (hello_with_cookie,) = sends(client.receive(retry.data, SERVER, now))
    (accept,) = sends(server.receive(hello_with_cookie.data, addr, now))
    client_actions = client.receive(accept.data, SERVER, now)
    assert any(isinstance(a, Connected) for a in client_actions)
    server_actions: list[Action] = []
    for send in sends(client_actions):
        server_actions += server.receive(send.data, addr, now)
    for send in sends(server_actions):
        client.receive(send.data, SERVER, now)
    return client, server_actions


# --- codec -----------------------------------------------------------------------------------


def test_hello_is_padded_to_exactly_the_minimum_size() -> None:
    data = udp.encode_hello("alice", udp.new_nonce())
    assert len(data) == udp.MIN_HELLO_SIZE
    env = udp.decode(data)
    assert env.kind == "hello"
    assert env.event == {"type": "hello", "name": "alice"}


def test_hello_with_a_huge_name_is_refused() -> None:
    with pytest.raises(udp.DatagramTooLarge):
        udp.encode_hello("x" * 2000, "nonce")
    with pytest.raises(udp.DatagramTooLarge):
        ClientEndpoint("x" * 2000, SERVER)


def test_data_roundtrip_is_compact_json() -> None:
    event = {"type": "say", "room": "lobby", "text": "héllo"}
    data = udp.encode_data("tok", 3, 2, event)
    assert b" " not in data.replace("héllo".encode(), b"")
    assert json.loads(data) == {"v": 1, "k": "data", "t": "tok", "s": 3, "a": 2, "e": event}
    env = udp.decode(data)
    assert (env.kind, env.token, env.seq, env.ack, env.events) == ("data", "tok", 3, 2, (event,))


def test_ack_roundtrip_with_selective_acks() -> None:
    env = udp.decode(udp.encode_ack("tok", 4, [6, 9]))
    assert (env.kind, env.ack, env.sacks) == ("ack", 4, (6, 9))


GOOD = {"v": 1, "k": "data", "t": "tok", "s": 1, "a": 0, "e": {"type": "say"}}
HELLO = {"v": 1, "k": "hello", "c": "n", "e": {"type": "hello", "name": "a"}}

BAD_DATAGRAMS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"hello there"),
    ("truncated", udp.encode_data("tok", 1, 0, {"type": "say", "text": "hi"})[:-3]),
    ("invalid utf-8", b'{"v":1,"k":"ack","t":"\xff","a":0}'),
    ("not an object", b"[1,2,3]"),
    ("NaN", b'{"v":1,"k":"ack","t":"tok","a":NaN}'),
    ("wrong version", json.dumps({**GOOD, "v": 2}).encode()),
    ("version as string", json.dumps({**GOOD, "v": "1"}).encode()),
    ("version missing", json.dumps({k: v for k, v in GOOD.items() if k != "v"}).encode()),
    ("unknown kind", json.dumps({**GOOD, "k": "shout"}).encode()),
    ("kind not a string", json.dumps({**GOOD, "k": 5}).encode()),
    ("seq as string", json.dumps({**GOOD, "s": "1"}).encode()),
    ("seq as bool", json.dumps({**GOOD, "s": True}).encode()),
    ("seq zero", json.dumps({**GOOD, "s": 0}).encode()),
    ("seq huge", json.dumps({**GOOD, "s": 2**64}).encode()),
    ("ack negative", json.dumps({**GOOD, "a": -1}).encode()),
    ("event not an object", json.dumps({**GOOD, "e": "say hi"}).encode()),
    ("token missing", json.dumps({k: v for k, v in GOOD.items() if k != "t"}).encode()),
    ("token empty", json.dumps({**GOOD, "t": ""}).encode()),
    ("sacks not a list", json.dumps({**GOOD, "sa": 5}).encode()),
    ("too many sacks", json.dumps({**GOOD, "sa": list(range(1, 40))}).encode()),
    ("hello without name", b'{"v":1,"k":"hello","c":"n","e":{"type":"hello"}}'),
    ("hello without nonce", b'{"v":1,"k":"hello","e":{"type":"hello","name":"a"}}'),
    ("hello cookie not a string", json.dumps({**HELLO, "ck": 5}).encode()),
    ("retry without cookie", b'{"v":1,"k":"retry","c":"n"}'),
    (
        "retry cookie too long",
        json.dumps({"v": 1, "k": "retry", "c": "n", "ck": "x" * 65}).encode(),
    ),
    ("deep nesting", b"[" * 1100),
    ("oversize", json.dumps({**GOOD, "e": {"type": "say", "text": "x" * 1300}}).encode()),
]


@pytest.mark.parametrize(("label", "data"), BAD_DATAGRAMS, ids=[b[0] for b in BAD_DATAGRAMS])
def test_decode_rejects_bad_datagrams(label: str, data: bytes) -> None:
    with pytest.raises(udp.MalformedDatagram):
        udp.decode(data)


# --- server: handshake, address validation, amplification ------------------------------------


def test_retry_and_accept_are_never_larger_than_the_hello() -> None:
    server = ServerEndpoint()
    nonce = "n" * udp.MAX_NONCE_LENGTH  # the longest nonce makes the largest replies
    hello = udp.encode_hello("alice", nonce)
    (retry,) = sends(server.receive(hello, CLIENT, 0.0))
    assert udp.amplification_ok(len(hello), len(retry.data))
    assert len(retry.data) < 150
    env = udp.decode(retry.data)
    assert env.kind == "retry" and env.nonce == nonce and env.cookie
    with_cookie = udp.encode_hello("alice", nonce, cookie=env.cookie)
    assert len(with_cookie) == udp.MIN_HELLO_SIZE
    (accept,) = sends(server.receive(with_cookie, CLIENT, 0.0))
    assert udp.amplification_ok(len(with_cookie), len(accept.data))
    assert len(accept.data) < 150
    env = udp.decode(accept.data)
    assert env.kind == "accept" and env.nonce == nonce and env.token


def test_amplification_check() -> None:
    assert udp.amplification_ok(1200, 1200)
    assert udp.amplification_ok(1200, 80)
    assert not udp.amplification_ok(80, 81)


def test_unpadded_hello_gets_no_reply() -> None:
    server = ServerEndpoint()
    short = b'{"v":1,"k":"hello","c":"n","e":{"type":"hello","name":"alice"}}'
    actions = server.receive(short, CLIENT, 0.0)
    assert sends(actions) == []
    assert server.stats["short_hello"] == 1


def test_user_is_registered_only_after_the_address_is_proven() -> None:
    server = ServerEndpoint()
    client = ClientEndpoint("alice", SERVER)
    (hello,) = sends(client.connect(0.0))
    (retry,) = sends(server.receive(hello.data, CLIENT, 0.0))
    (hello,) = sends(client.receive(retry.data, SERVER, 0.0))
    first = server.receive(hello.data, CLIENT, 0.0)
    assert not any(isinstance(a, Registered) for a in first)
    assert not server.has_session(CLIENT)
    # Retransmitted hello gets the same accept (same token), still no registration.
    again = server.receive(hello.data, CLIENT, 0.1)
    assert sends(again)[0].data == sends(first)[0].data
    client_actions = client.receive(sends(first)[0].data, SERVER, 0.1)
    assert [type(a) for a in client_actions][:1] == [Connected]
    proof = sends(client_actions)[0]
    actions = server.receive(proof.data, CLIENT, 0.2)
    assert actions[0] == Registered(CLIENT, "alice")
    assert actions[1] == Deliver(CLIENT, {"type": "hello", "name": "alice"})
    assert server.addresses() == [CLIENT]


def test_client_is_confirmed_even_if_the_answer_to_its_proof_is_lost() -> None:
    server = ServerEndpoint()
    client = ClientEndpoint("alice", SERVER)
    (hello,) = sends(client.connect(0.0))
    (retry,) = sends(server.receive(hello.data, CLIENT, 0.0))
    (hello,) = sends(client.receive(retry.data, SERVER, 0.0))
    (accept,) = sends(server.receive(hello.data, CLIENT, 0.0))
    (proof,) = sends(client.receive(accept.data, SERVER, 0.0))
    registered = server.receive(proof.data, CLIENT, 0.0)
    assert Registered(CLIENT, "alice") in registered  # its ack back is lost on the way
    deadline = client.next_deadline()
    assert deadline is not None and deadline < udp.GIVE_UP_AFTER
    (resent,) = sends(client.poll(deadline))
    (answer,) = sends(server.receive(resent.data, CLIENT, deadline))
    client.receive(answer.data, SERVER, deadline)
    assert client.poll(udp.GIVE_UP_AFTER) == []
    assert client.state == "connected"


def test_second_hello_for_a_busy_address_does_not_steal_it() -> None:
    server = ServerEndpoint()
    server.receive(cookie_hello(server, "alice", "n1", CLIENT), CLIENT, 0.0)
    actions = server.receive(cookie_hello(server, "mallory", "n2", CLIENT), CLIENT, 0.1)
    assert sends(actions) == [] and server.stats["forged"] == 1
    handshake_server = ServerEndpoint()
    handshake(handshake_server)
    for hello in (
        udp.encode_hello("mallory", "n3"),
        cookie_hello(handshake_server, "mallory", "n3", CLIENT, 1.0),
    ):
        actions = handshake_server.receive(hello, CLIENT, 1.0)
        assert sends(actions) == []
    assert handshake_server.stats["forged"] == 2


def test_pending_handshakes_expire_and_are_bounded() -> None:
    server = ServerEndpoint(max_pending=2, rate_limiter=unlimited())
    for port in range(3):
        addr = ("127.0.0.1", port)
        server.receive(cookie_hello(server, "a", f"n{port}", addr), addr, 0.0)
    assert server.stats["handshakes_full"] == 1
    assert server.next_deadline() == udp.HANDSHAKE_TIMEOUT
    server.poll(udp.HANDSHAKE_TIMEOUT)
    assert server.pending_handshakes() == 0
    # After expiry a stale token no longer registers anyone, and new handshakes fit again.
    addr = ("127.0.0.1", 9)
    (accept,) = envelopes(server.receive(cookie_hello(server, "a", "n9", addr, 11.0), addr, 11.0))
    assert accept.kind == "accept"


def test_hellos_without_a_valid_cookie_store_nothing() -> None:
    server = ServerEndpoint(rate_limiter=unlimited())
    hosts = [("127.0.0.1", port) for port in range(1000, 1040)]
    hosts += [("10.0.0.9", port) for port in range(2000, 2040)]
    for addr in hosts:
        hello = udp.encode_hello("flood", "n")
        (retry,) = envelopes(server.receive(hello, addr, 0.0))
        assert retry.kind == "retry"
    assert server.pending_handshakes() == 0 and server.addresses() == []
    assert server.next_deadline() is None  # not even a timer was started
    assert server.stats["retries"] == len(hosts)


def test_forged_and_expired_cookies_are_refused() -> None:
    server = ServerEndpoint()
    rotation = udp.COOKIE_ROTATION
    genuine = server.cookies.issue(CLIENT, 0.0)
    refused = [
        "A" * len(genuine),  # made up
        server.cookies.issue(OTHER, 0.0),  # another port's
        ServerEndpoint().cookies.issue(CLIENT, 0.0),  # another server's secret
        genuine + "A",  # tampered
        "é" * 5,  # not even base64
    ]
    for n, cookie in enumerate(refused):
        hello = udp.encode_hello("mallory", f"n{n}", cookie=cookie)
        (reply,) = envelopes(server.receive(hello, CLIENT, 1.0))
        assert reply.kind == "retry" and reply.cookie == genuine
    assert server.stats["bad_cookie"] == len(refused)
    assert server.pending_handshakes() == 0
    # Two rotations later the secret that made the cookie is gone: expired.
    late = udp.encode_hello("alice", "late", cookie=genuine)
    (reply,) = envelopes(server.receive(late, CLIENT, 2 * rotation))
    assert reply.kind == "retry" and reply.cookie != genuine
    assert server.pending_handshakes() == 0
    assert server.stats["bad_cookie"] == len(refused) + 1


def test_a_cookie_stays_valid_through_the_next_rotation() -> None:
    server = ServerEndpoint()
    cookie = server.cookies.issue(CLIENT, udp.COOKIE_ROTATION - 0.01)
    hello = udp.encode_hello("alice", "n", cookie=cookie)
    (reply,) = envelopes(server.receive(hello, CLIENT, 2 * udp.COOKIE_ROTATION - 0.01))
    assert reply.kind == "accept" and server.pending_handshakes() == 1


def test_hellos_are_rate_limited_per_host_whatever_the_port() -> None:
    server = ServerEndpoint(hello_limiter=udp.RateLimiter(rate=1, burst=3))
    for port in range(5):
        server.receive(udp.encode_hello("a", "n"), ("127.0.0.1", port), 0.0)
    assert server.stats["retries"] == 3 and server.stats["hello_rate_limited"] == 2
    # Another host has its own budget; so does the same host a little later.
    assert sends(server.receive(udp.encode_hello("a", "n"), ("127.0.0.2", 1), 0.0))
    assert sends(server.receive(udp.encode_hello("a", "n"), ("127.0.0.1", 9), 1.0))
    # An IPv6 host is its /64: another interface ID shares the budget.
    for suffix in range(1, 5):
        server.receive(udp.encode_hello("a", "n"), (f"2001:db8::{suffix}", 1, 0, 0), 0.0)
    assert server.stats["hello_rate_limited"] == 3


def test_pending_handshakes_are_bounded_per_host() -> None:
    server = ServerEndpoint(max_pending_per_host=2, rate_limiter=unlimited())
    addrs = [("127.0.0.1", port) for port in range(3)]
    replies = [
        envelopes(server.receive(cookie_hello(server, "a", f"n{n}", addr), addr, 0.0))
        for n, addr in enumerate(addrs)
    ]
    assert [[e.kind for e in r] for r in replies] == [["accept"], ["accept"], []]
    assert server.stats["host_handshakes_full"] == 1
    other = ("127.0.0.2", 1)
    (accept,) = envelopes(server.receive(cookie_hello(server, "b", "m", other), other, 0.0))
    assert accept.kind == "accept"
    # A finished handshake frees its host's slot.
    token = replies[0][0].token
    assert token is not None
    assert Registered(addrs[0], "a") in server.receive(udp.encode_ack(token, 0), addrs[0], 0.1)
    (accept,) = envelopes(server.receive(cookie_hello(server, "a", "n2", addrs[2]), addrs[2], 0.2))
    assert accept.kind == "accept"


def test_client_answers_each_retry_cookie_once() -> None:
    server = ServerEndpoint()
    client = ClientEndpoint("alice", SERVER)
    (hello,) = sends(client.connect(0.0))
    (retry,) = sends(server.receive(hello.data, CLIENT, 0.0))
    (answer,) = sends(client.receive(retry.data, SERVER, 0.0))
    assert udp.decode(answer.data).cookie == udp.decode(retry.data).cookie
    assert len(answer.data) == udp.MIN_HELLO_SIZE
    # A second copy of the same retry (two hellos crossed it) is not answered again...
    assert client.receive(retry.data, SERVER, 0.01) == []
    # ...nor is a retry for another handshake; the retransmitted hello carries the cookie.
    stranger = udp.encode_retry("not-our-nonce", "c" * 22)
    assert client.receive(stranger, SERVER, 0.02) == [Rejected(SERVER, "nonce mismatch")]
    deadline = client.next_deadline()
    assert deadline is not None
    (resent,) = sends(client.poll(deadline))
    assert resent.data == answer.data
    assert client.stats["retries"] == 1 and client.stats["duplicates"] == 1
    # A fresh cookie (the old one expired on the way) is answered at once.
    fresh = udp.encode_retry(client.nonce, "f" * 22)
    (again,) = sends(client.receive(fresh, SERVER, deadline))
    assert udp.decode(again.data).cookie == "f" * 22


def test_client_handles_a_server_without_retries() -> None:
    client = ClientEndpoint("alice", SERVER)
    client.connect(0.0)
    actions = client.receive(udp.encode_accept(client.nonce, "tok"), SERVER, 0.1)
    assert Connected(SERVER, "tok") in actions


def test_a_name_must_leave_room_for_the_longest_cookie() -> None:
    def accepted(length: int) -> bool:
        try:
            ClientEndpoint("x" * length, SERVER, nonce="n" * 16)
        except udp.DatagramTooLarge:
            return False
        return True

    longest = max(length for length in range(udp.MIN_HELLO_SIZE) if accepted(length))
    # The next name would fit a first hello, but not the hello answering a retry.
    udp.encode_hello("x" * (longest + 1), "n" * 16)
    client = ClientEndpoint("x" * longest, SERVER, nonce="n" * 16)
    client.connect(0.0)
    retry = udp.encode_retry(client.nonce, "c" * udp.MAX_COOKIE_LENGTH)
    (hello,) = sends(client.receive(retry, SERVER, 0.0))
    assert len(hello.data) == udp.MIN_HELLO_SIZE


def test_host_key_ignores_the_port_and_counts_an_ipv6_prefix() -> None:
    assert udp.host_key(("192.0.2.7", 1)) == udp.host_key(("192.0.2.7", 2)) == "192.0.2.7"
    assert udp.host_key(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    assert udp.host_key(("2001:db8::1", 1, 0, 0)) == udp.host_key(("2001:db8::ff:2", 5, 0, 0))
    assert udp.host_key(("2001:db8::1", 1, 0, 0)) != udp.host_key(("2001:db8:0:1::1", 1, 0, 0))
    assert udp.host_key(("fe80::1%eth0", 1, 0, 2)) == "fe80::/64"


# --- server: forged, replayed, oversize, malformed -------------------------------------------


def test_wrong_token_is_ignored_and_counted() -> None:
    server = ServerEndpoint()
    handshake(server)
    forged = udp.encode_data("not-the-token", 1, 0, {"type": "say", "room": "x", "text": "hi"})
    actions = server.receive(forged, CLIENT, 1.0)
    assert actions == [Rejected(CLIENT, "token mismatch")]
    assert server.stats["forged"] == 1


def test_valid_token_from_another_address_is_ignored() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    _, _ = handshake(server, "bob", OTHER)
    assert client.token is not None
    stolen = udp.encode_data(client.token, 1, 0, {"type": "say", "room": "x", "text": "hi"})
    actions = server.receive(stolen, OTHER, 1.0)
    assert not any(isinstance(a, Deliver) for a in actions)
    assert server.stats["forged"] == 1
    actions = server.receive(stolen, ("10.0.0.9", 1), 1.0)
    assert not any(isinstance(a, Deliver) for a in actions)
    assert server.stats["unknown_session"] == 1


def test_replayed_sequence_numbers_are_delivered_once_and_reacked() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    (datagram,) = sends(client.send({"type": "say", "room": "x", "text": "once"}, 1.0))
    first = server.receive(datagram.data, CLIENT, 1.0)
    replay = server.receive(datagram.data, CLIENT, 1.1)
    assert [a for a in first if isinstance(a, Deliver)] == [
        Deliver(CLIENT, {"type": "say", "room": "x", "text": "once"})
    ]
    assert not any(isinstance(a, Deliver) for a in replay)
    assert [e.kind for e in envelopes(replay)] == ["ack"]
    assert server.stats["duplicates"] == 1


def test_oversize_datagram_from_a_session_gets_an_error() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    assert client.token is not None
    big = udp.encode_data(client.token, 1, 0, {"type": "say", "text": "x" * 1500})
    (action,) = server.receive(big, CLIENT, 1.0)
    assert isinstance(action, ErrorReply)
    assert action.code == udp.ERROR_DATAGRAM_TOO_LARGE and action.addr == CLIENT
    forged_big = udp.encode_data("wrong", 1, 0, {"type": "say", "text": "x" * 1500})
    assert server.receive(forged_big, CLIENT, 1.0) == [Rejected(CLIENT, "datagram too large")]
    assert server.receive(big, OTHER, 1.0) == [Rejected(OTHER, "datagram too large")]
    assert server.stats["oversize"] == 3


@pytest.mark.parametrize(("label", "data"), BAD_DATAGRAMS, ids=[b[0] for b in BAD_DATAGRAMS])
def test_server_drops_and_counts_bad_datagrams(label: str, data: bytes) -> None:
    server = ServerEndpoint()
    handshake(server)
    actions = server.receive(data, CLIENT, 1.0)
    assert all(isinstance(a, Rejected | ErrorReply) for a in actions)
    stats = server.stats
    assert stats.get("malformed", 0) + stats.get("oversize", 0) == 1


def test_server_never_raises_on_random_bytes() -> None:
    rng = random.Random(7)
    server = ServerEndpoint(rate_limiter=unlimited())
    client, _ = handshake(server)
    valid = sends(client.send({"type": "say", "room": "x", "text": "hello"}, 1.0))[0].data
    for i in range(3000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
        else:
            # Mutate a valid datagram: flip, cut or insert bytes.
            buf = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                pos = rng.randrange(len(buf))
                buf[pos] = rng.randrange(256)
            data = bytes(buf[: rng.randrange(1, len(buf) + 1)])
        server.receive(data, CLIENT, 1.0)
    assert server.stats["malformed"] > 1000


def test_non_ascii_tokens_nonces_and_cookies_are_refused_not_raised() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    odd = "é" * 8
    for data in (
        udp.encode_ack(odd, 0),
        udp.encode_hello("mallory", odd),
        udp.encode_hello("mallory", "n", cookie=odd),
    ):
        assert sends(server.receive(data, CLIENT, 1.0)) == []
    pending_server = ServerEndpoint()
    pending_server.receive(cookie_hello(pending_server, "a", "n", OTHER), OTHER, 0.0)
    assert isinstance(pending_server.receive(udp.encode_ack(odd, 0), OTHER, 0.1)[0], Rejected)
    for data in (udp.encode_bye(odd), udp.encode_accept(odd, "t"), udp.encode_retry(odd, "c")):
        assert isinstance(client.receive(data, SERVER, 1.0)[0], Rejected)
    assert client.state == "connected" and server.has_session(CLIENT)


def test_datagrams_before_any_handshake_are_ignored() -> None:
    server = ServerEndpoint()
    actions = server.receive(udp.encode_ack("tok", 0), CLIENT, 0.0)
    assert actions == [Rejected(CLIENT, "no session for address")]
    accept = udp.encode_accept("n", "tok")
    assert isinstance(server.receive(accept, CLIENT, 0.0)[0], Rejected)
    assert server.stats == {"unknown_session": 1, "malformed": 1}


def test_rate_limit_per_address() -> None:
    server = ServerEndpoint(rate_limiter=udp.RateLimiter(rate=10, burst=5))
    for _ in range(5):
        server.receive(b"junk", CLIENT, 0.0)
    assert server.receive(b"junk", CLIENT, 0.0) == [Rejected(CLIENT, "rate limited")]
    assert server.stats["rate_limited"] == 1
    # Another address has its own bucket; time refills the first one.
    assert server.receive(b"junk", OTHER, 0.0) != [Rejected(OTHER, "rate limited")]
    assert server.receive(b"junk", CLIENT, 0.1) != [Rejected(CLIENT, "rate limited")]


def test_token_bucket_and_bounded_limiter() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=0.0)
    assert [bucket.allow(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.allow(0.5)
    assert not bucket.allow(0.4)  # clock going backwards grants nothing
    limiter = udp.RateLimiter(rate=1, burst=1, max_addresses=10)
    for port in range(100):
        limiter.allow(("h", port), float(port) / 100)
    assert len(limiter) <= 10


# --- sending limits ------------------------------------------------------------------------


def test_oversize_event_is_refused_on_send() -> None:
    big = {"type": "say", "room": "lobby", "text": "x" * 1200}
    channel = ReliableChannel("tok")
    with pytest.raises(udp.DatagramTooLarge):
        channel.send(big, 0.0)
    assert channel.unacked == 0
    server = ServerEndpoint()
    client, _ = handshake(server)
    with pytest.raises(udp.DatagramTooLarge):
        client.send(big, 1.0)
    with pytest.raises(udp.DatagramTooLarge):
        server.send_event(CLIENT, big, 1.0)
    assert udp.event_fits({"type": "say", "room": "lobby", "text": "x" * 1000})
    assert not udp.event_fits(big)


def test_send_window_is_bounded_and_refills_on_ack() -> None:
    sender = ReliableChannel("tok", send_window=4, max_queue=3)
    out = [d for i in range(7) for d in sender.send({"type": "n", "i": i}, 0.0)]
    assert len(out) == 4
    with pytest.raises(udp.SendQueueFull):
        sender.send({"type": "n", "i": 7}, 0.0)
    _, more = sender.receive(udp.decode(udp.encode_ack("tok", 2)), 0.1)
    assert [udp.decode(d).seq for d in more] == [5, 6]


def test_server_drops_a_peer_whose_queue_overflows() -> None:
    server = ServerEndpoint(channel_options={"send_window": 2, "max_queue": 2})
    handshake(server)
    results = [server.send_event(CLIENT, {"type": "notice", "text": str(i)}, 1.0) for i in range(5)]
    assert results[-1] == [Drop(CLIENT, "send queue full")]
    assert not server.has_session(CLIENT)
    assert server.send_event(CLIENT, {"type": "notice", "text": "late"}, 1.0) == []


def test_receive_window_drops_far_future_seqs() -> None:
    receiver = ReliableChannel("tok", recv_window=8)
    far = udp.decode(udp.encode_data("tok", 9, 0, {"type": "x"}))
    delivered, _ = receiver.receive(far, 0.0)
    assert delivered == [] and receiver.stats["out_of_window"] == 1
    near = udp.decode(udp.encode_data("tok", 8, 0, {"type": "y"}))
    _, out = receiver.receive(near, 0.0)
    assert udp.decode(out[0]).sacks == (8,)


def test_reordered_data_is_delivered_in_order() -> None:
    receiver = ReliableChannel("tok")
    got = []
    for seq in (3, 1, 4, 2, 2, 5):
        env = udp.decode(udp.encode_data("tok", seq, 0, {"type": "x", "n": seq}))
        delivered, _ = receiver.receive(env, 0.0)
        got += [e["n"] for e in delivered]
    assert got == [1, 2, 3, 4, 5]
    assert receiver.stats["duplicates"] == 1


def test_retransmission_backs_off_exponentially_then_gives_up() -> None:
    channel = ReliableChannel("tok")
    channel.send({"type": "x"}, 0.0)
    times = []
    now = 0.0
    while True:
        deadline = channel.next_deadline()
        if deadline is None:
            break
        now = deadline
        if channel.poll(now):
            times.append(round(now, 6))
    assert channel.failed
    gaps = [round(b - a, 6) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:5] == [0.2, 0.4, 0.8, 1.6, 2.0]
    assert all(g == udp.MAX_RTO for g in gaps[4:])
    assert now == pytest.approx(udp.GIVE_UP_AFTER)
    assert channel.stats["retransmits"] == len(times)
    assert channel.send({"type": "x"}, now) == []


def test_selective_ack_stops_retransmission_of_that_seq() -> None:
    channel = ReliableChannel("tok")
    for i in range(3):
        channel.send({"type": "x", "i": i}, 0.0)
    channel.receive(udp.decode(udp.encode_ack("tok", 0, [2])), 0.1)
    resent = [udp.decode(d).seq for d in channel.poll(0.2)]
    assert resent == [1, 3]


# --- packing and delayed acks ----------------------------------------------------------------


def test_client_and_server_agree_to_packing_and_either_can_decline() -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited())
    client, _ = handshake(server)
    assert client.channel is not None and client.channel.pack
    assert server._sessions[CLIENT].channel.pack
    # A client that predates packing offers nothing, and gets one event per datagram.
    old_client = ClientEndpoint("bob", SERVER, pack=False)
    (hello,) = sends(old_client.connect(0.0))
    assert "pk" not in json.loads(hello.data) and not udp.decode(hello.data).pack
    (retry,) = sends(server.receive(hello.data, OTHER, 0.0))
    (with_cookie,) = sends(old_client.receive(retry.data, SERVER, 0.0))
    (accept,) = sends(server.receive(with_cookie.data, OTHER, 0.0))
    assert not udp.decode(accept.data).pack
    # A server that predates packing never says "pk": the client then sends one per datagram.
    old_server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited(), pack=False)
    client, _ = handshake(old_server, addr=OTHER)
    assert client.channel is not None and not client.channel.pack
    assert not old_server._sessions[OTHER].channel.pack


def joined(n: int) -> dict[str, Any]:
    """A lobby arrival as the hub sends it (about 150 bytes)."""
    return {
        "type": "joined",
        "room": "lobby",
        "nick": f"soak-{n:05d}",
        "account": None,
        "realname": f"soak visitor {n}",
        "away": None,
        "id": 1000 + n,
        "ts": "2026-12-07T15:00:00.000Z",
    }


def test_events_queued_together_go_out_packed_in_order_and_within_the_size_limit() -> None:
    sender = ReliableChannel("tok", pack=True)
    events = [joined(n) for n in range(100)]
    datagrams = sender.send_many(events, 0.0)
    assert all(len(d) <= udp.MAX_DATAGRAM_SIZE for d in datagrams)
    decoded = [udp.decode(d) for d in datagrams]
    assert [env.seq for env in decoded] == list(range(1, len(datagrams) + 1))
    assert [e for env in decoded for e in env.events] == events
    # About seven arrivals fill a datagram: far fewer datagrams than events.
    assert len(datagrams) <= len(events) // 5
    assert sender.unacked == 100
    # Unpacked (the peer did not agree), one per datagram, as before.
    assert len(ReliableChannel("tok").send_many(events[:10], 0.0)) == 10


def test_packing_respects_the_event_bound_and_events_near_the_size_limit() -> None:
    sender = ReliableChannel("tok", pack=True)
    tiny = [{"n": n} for n in range(100)]
    counts = [len(udp.decode(d).events) for d in sender.send_many(tiny, 0.0)]
    assert counts[:3] == [udp.MAX_PACKED_EVENTS] * 3 and sum(counts) == 100
    big = {"type": "notice", "text": "x" * 950}
    assert udp.event_fits(big)
    datagrams = ReliableChannel("tok", pack=True).send_many([big, big, {"n": 1}], 0.0)
    assert [len(udp.decode(d).events) for d in datagrams] == [1, 2]
    assert all(len(d) <= udp.MAX_DATAGRAM_SIZE for d in datagrams)


def test_events_waiting_behind_a_full_window_go_out_packed_when_it_opens() -> None:
    sender = ReliableChannel("tok", pack=True, send_window=2)
    first = [d for n in range(20) for d in sender.send(joined(n), 0.0)]
    assert len(first) == 2  # one event each: the window had room for them
    _, more = sender.receive(udp.decode(udp.encode_ack("tok", 2)), 0.1)
    packed = [udp.decode(d) for d in more]
    assert [env.seq for env in packed] == [3, 4]
    assert [e["nick"] for env in packed for e in env.events][:2] == ["soak-00002", "soak-00003"]
    assert sum(len(env.events) for env in packed) > 2
    # A retransmission carries the same events again.
    again = [udp.decode(d) for d in sender.poll(1.0)]
    assert [env.events for env in again] == [env.events for env in packed]


def test_a_packed_envelope_is_handed_over_event_by_event_and_acked_once_all_are() -> None:
    receiver = ReliableChannel("tok", pace=TokenBucket(1.0, 2, 0.0))
    datagram = udp.encode_data_events("tok", 1, 0, [{"n": n} for n in range(4)])
    delivered, out = receiver.receive(udp.decode(datagram), 0.0)
    assert [e["n"] for e in delivered] == [0, 1]
    assert udp.decode(out[-1]).ack == 0 and receiver.holding  # partly handed over: not acked
    # A copy of it (the peer resends what we did not ack) delivers nothing twice.
    delivered, out = receiver.receive(udp.decode(datagram), 0.5)
    assert delivered == [] and receiver.stats["duplicates"] == 1
    delivered, out = receiver.release(1.0)
    assert [e["n"] for e in delivered] == [2] and udp.decode(out[0]).ack == 0
    delivered, out = receiver.release(2.0)
    assert [e["n"] for e in delivered] == [3] and udp.decode(out[0]).ack == 1
    assert not receiver.holding


def test_a_bye_hands_over_the_rest_of_a_partly_held_packed_envelope() -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), pace_rate=1.0, pace_burst=1)
    client, _ = handshake(server)
    assert client.channel is not None
    datagram = udp.encode_data_events(client.token or "", 1, 0, [{"n": n} for n in range(3)])
    actions = server.receive(datagram, CLIENT, 0.0)
    assert [a.event for a in actions if isinstance(a, Deliver)] == [{"n": 0}]
    (bye,) = sends(client.close("quit"))
    actions = server.receive(bye.data, CLIENT, 0.1)
    assert actions == [Deliver(CLIENT, {"n": 1}), Deliver(CLIENT, {"n": 2}), Drop(CLIENT, "quit")]


def test_delayed_acks_cover_several_datagrams_and_never_delay_a_gap() -> None:
    receiver = ReliableChannel("tok", ack_delay=0.025, ack_every=4)

    def arrive(seq: int, now: float) -> list[udp.Envelope]:
        _, out = receiver.receive(data(seq), now)
        return [udp.decode(d) for d in out]

    assert arrive(1, 0.0) == [] and receiver.next_deadline() == pytest.approx(0.025)
    assert arrive(2, 0.01) == [] and arrive(3, 0.01) == []
    assert receiver.next_deadline() == pytest.approx(0.025)  # from the first
    (ack,) = arrive(4, 0.02)  # the fourth: at once, one ack for four datagrams
    assert ack.ack == 4 and receiver.next_deadline() is None
    assert arrive(5, 0.03) == []
    assert receiver.poll(0.05) == []  # not due yet
    (due,) = [udp.decode(d) for d in receiver.poll(0.06)]
    assert due.ack == 5 and receiver.next_deadline() is None
    assert arrive(6, 0.06) == []
    assert [udp.decode(d).ack for d in receiver.flush_acks()] == [6]
    assert receiver.flush_acks() == []
    # Out of order and duplicates are acknowledged at once: the sender learns of a gap now.
    (gap,) = arrive(8, 0.07)
    assert (gap.ack, gap.sacks) == (6, (8,))
    (duplicate,) = arrive(8, 0.08)
    assert (duplicate.ack, duplicate.sacks) == (6, (8,))
    (filled,) = arrive(7, 0.09)
    assert filled.ack == 8
    # Data sent the other way carries the ack: no separate one afterwards.
    assert arrive(9, 0.1) == []
    (sent,) = receiver.send({"type": "say"}, 0.11)
    assert udp.decode(sent).ack == 9
    assert receiver.flush_acks() == []
    assert [udp.decode(d).kind for d in receiver.poll(1.0)] == ["data"]  # a resend, no ack


def test_the_client_delays_its_acks_and_the_server_does_not() -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited())
    client, _ = handshake(server)
    datagrams = [s.data for n in range(3) for s in sends(server.send_event(CLIENT, joined(n), 1.0))]
    assert len(datagrams) == 3  # the window had room: each went at once
    acks = [s for d in datagrams for s in sends(client.receive(d, SERVER, 1.0))]
    assert acks == []
    (flushed,) = sends(client.flush_acks(1.0))
    assert udp.decode(flushed.data).ack == 3
    assert server.receive(flushed.data, CLIENT, 1.0) == []
    assert server._sessions[CLIENT].channel.unacked == 0
    # The server acknowledges the client's data at once ("taken in").
    (request,) = sends(client.send({"type": "say", "text": "hi"}, 1.0))
    assert any(env.kind == "ack" for env in envelopes(server.receive(request.data, CLIENT, 1.0)))


def test_the_server_packs_what_it_is_given_together() -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited())
    client, _ = handshake(server)
    actions = server.send_events(CLIENT, [joined(n) for n in range(20)], 1.0)
    got: list[dict[str, Any]] = []
    for send in sends(actions):
        got += [a.event for a in client.receive(send.data, SERVER, 1.0) if isinstance(a, Deliver)]
    assert got == [joined(n) for n in range(20)]
    assert len(sends(actions)) <= 4


# --- pacing: a flood is held unacknowledged, never refused -----------------------------------


def data(seq: int, ack: int = 0) -> udp.Envelope:
    return udp.decode(udp.encode_data("tok", seq, ack, {"type": "say", "n": seq}))


def test_paced_channel_holds_events_unacknowledged_until_a_token_is_back() -> None:
    receiver = ReliableChannel("tok", pace=TokenBucket(2.0, 2, 0.0))
    got = []
    acks = []
    for seq in (1, 2, 3, 5, 4):
        delivered, out = receiver.receive(data(seq), 0.0)
        got += [e["n"] for e in delivered]
        acks.append(udp.decode(out[-1]))
    assert got == [1, 2]  # the burst
    # 3 and 4 are held: neither acknowledged nor selectively acknowledged; 5, beyond a gap
    # while it came, is selectively acknowledged as any out-of-order datagram.
    assert (acks[2].ack, acks[2].sacks) == (2, ())
    assert (acks[3].ack, acks[3].sacks) == (2, (5,))
    assert (acks[4].ack, acks[4].sacks) == (2, ())
    assert receiver.holding and receiver.release_at() == pytest.approx(0.5)
    assert receiver.release(0.4) == ([], [])
    delivered, out = receiver.release(0.5)
    assert [e["n"] for e in delivered] == [3]
    assert udp.decode(out[0]).ack == 3
    delivered, out = receiver.release(10.0)
    assert [e["n"] for e in delivered] == [4, 5]
    assert udp.decode(out[0]).ack == 5 and not receiver.holding
    assert receiver.release_at() is None


def test_a_paced_sender_waits_for_acks_and_loses_nothing() -> None:
    """A client floods 40 events through a server paced at 10 per second (burst 5): every
    event is handed over once, in order, at the pace, and the client never gives up."""
    server = ServerEndpoint(rate_limiter=unlimited(), pace_rate=10.0, pace_burst=5)
    client, _ = handshake(server)
    now = 0.0
    to_server = [
        s.data for e in range(40) for s in sends(client.send({"type": "say", "n": e}, now))
    ]
    got: list[int] = []
    paced = 0
    while len(got) < 40 and now < 30.0:
        to_client: list[bytes] = []
        for datagram in to_server:
            actions = server.receive(datagram, CLIENT, now)
            paced += sum(isinstance(a, Paced) for a in actions)
            got += [a.event["n"] for a in actions if isinstance(a, Deliver)]
            to_client += [a.data for a in sends(actions)]
        release = server.next_release()
        if release is not None and release <= now:
            actions = server.release(now)
            got += [a.event["n"] for a in actions if isinstance(a, Deliver)]
            to_client += [a.data for a in sends(actions)]
        to_server = []
        for datagram in to_client:
            to_server += [a.data for a in sends(client.receive(datagram, SERVER, now))]
        to_server += [a.data for a in sends(client.poll(now))]
        now = round(now + 0.01, 6)
    assert got == list(range(40))
    assert paced == 1 and server.stats["paced"] == 1
    assert now == pytest.approx((40 - 5) / 10.0, abs=0.1)
    assert client.state == "connected"


def test_an_advancing_cumulative_ack_restarts_the_retransmission_timers() -> None:
    channel = ReliableChannel("tok")
    for i in range(3):
        channel.send({"type": "x", "i": i}, 0.0)
    # The peer takes one at a time (it paces us): what waits is not sent again meanwhile.
    channel.receive(udp.decode(udp.encode_ack("tok", 1)), 0.15)
    assert channel.poll(0.2) == []
    assert [udp.decode(d).seq for d in channel.poll(0.35)] == [2, 3]
    # A selective ack alone says nothing of the datagrams below it: no restart.
    channel.receive(udp.decode(udp.encode_ack("tok", 1, [3])), 0.5)
    assert [udp.decode(d).seq for d in channel.poll(0.75)] == [2]


def test_events_held_for_the_pace_are_handed_over_before_a_bye() -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), pace_rate=1.0, pace_burst=1)
    client, _ = handshake(server)
    datagrams = [s.data for e in range(3) for s in sends(client.send({"type": "say", "n": e}, 0))]
    delivered = []
    for datagram in datagrams:
        delivered += [
            a.event["n"] for a in server.receive(datagram, CLIENT, 0.0) if isinstance(a, Deliver)
        ]
    assert delivered == [0]
    (bye,) = sends(client.close("quit"))
    actions = server.receive(bye.data, CLIENT, 0.1)
    assert actions == [
        Deliver(CLIENT, {"type": "say", "n": 1}),
        Deliver(CLIENT, {"type": "say", "n": 2}),
        Drop(CLIENT, "quit"),
    ]
    assert server.next_release() is None


def test_what_the_consumer_has_not_taken_is_held_unacknowledged() -> None:
    """With ``max_in_hand`` 3, an ack means "taken in": past 3 events in the consumer's
    hands the rest wait in the window, unacknowledged, until the consumer reports some done;
    no flood notice, since it is not the user's pace; a bye hands over everything."""
    server = ServerEndpoint(rate_limiter=unlimited(), max_in_hand=3)
    client, registered = handshake(server)
    assert [a.event["type"] for a in registered if isinstance(a, Deliver)] == ["hello"]
    datagrams = [s.data for e in range(6) for s in sends(client.send({"type": "say", "n": e}, 0))]
    delivered: list[int] = []
    acks: list[int] = []
    for datagram in datagrams:
        actions = server.receive(datagram, CLIENT, 0.0)
        assert not any(isinstance(a, Paced) for a in actions)
        delivered += [a.event["n"] for a in actions if isinstance(a, Deliver)]
        acks += [env.ack for env in envelopes(actions) if env.ack is not None]
    # The hello is in hand too: two more events go (seqs 1 and 2), the other four wait
    # unacknowledged.
    assert delivered == [0, 1] and max(acks) == 2 and server.next_release() is None
    actions = server.handled(CLIENT, 2, 0.1)
    assert [a.event["n"] for a in actions if isinstance(a, Deliver)] == [2, 3]
    assert [env.ack for env in envelopes(actions)] == [4]
    (bye,) = sends(client.close("quit"))
    actions = server.receive(bye.data, CLIENT, 0.2)
    assert [a.event["n"] for a in actions if isinstance(a, Deliver)] == [4, 5]
    assert isinstance(actions[-1], Drop)
    assert server.handled(CLIENT, 3, 0.3) == []  # the session is gone: nothing to do


def test_a_slow_consumer_slows_the_sender_and_nothing_is_lost() -> None:
    """A client sends 60 events to a paced server (burst 20, 10 a second) whose consumer
    takes one event per 0.2 s, below the pace, with at most 4 in hand: every event is
    handed over once, in order, never more than 4 in hand, and the client never gives up
    though the consumer, not the pace, sets the speed."""
    server = ServerEndpoint(rate_limiter=unlimited(), pace_rate=10.0, pace_burst=20, max_in_hand=4)
    client, registered = handshake(server)
    in_hand = [a.event for a in registered if isinstance(a, Deliver)]
    now = 0.0
    to_server = [
        s.data for e in range(60) for s in sends(client.send({"type": "say", "n": e}, now))
    ]
    got: list[int] = []
    most_in_hand = 0
    next_take = 0.0
    while len(got) < 60 and now < 30.0:
        to_client: list[bytes] = []
        for datagram in to_server:
            actions = server.receive(datagram, CLIENT, now)
            in_hand += [a.event for a in actions if isinstance(a, Deliver)]
            to_client += [a.data for a in sends(actions)]
        release = server.next_release()
        if release is not None and release <= now:
            actions = server.release(now)
            in_hand += [a.event for a in actions if isinstance(a, Deliver)]
            to_client += [a.data for a in sends(actions)]
        most_in_hand = max(most_in_hand, len(in_hand))
        if in_hand and now >= next_take:
            event = in_hand.pop(0)
            if event["type"] == "say":
                got.append(event["n"])
            next_take = now + 0.2
            actions = server.handled(CLIENT, 1, now)
            in_hand += [a.event for a in actions if isinstance(a, Deliver)]
            to_client += [a.data for a in sends(actions)]
        to_server = []
        for datagram in to_client:
            to_server += [a.data for a in sends(client.receive(datagram, SERVER, now))]
        to_server += [a.data for a in sends(client.poll(now))]
        now = round(now + 0.01, 6)
    assert got == list(range(60))
    assert most_in_hand == 4
    assert now == pytest.approx(61 * 0.2, abs=0.2)
    assert client.state == "connected"


# --- bye and liveness ------------------------------------------------------------------------


def test_client_bye_drops_the_session() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    (bye,) = sends(client.close("gone"))
    assert server.receive(bye.data, CLIENT, 2.0) == [Drop(CLIENT, "gone")]
    assert not server.has_session(CLIENT)
    assert client.poll(100.0) == []


def test_server_close_tells_the_client() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    (bye,) = sends(server.close(CLIENT, "kicked"))
    assert client.receive(bye.data, SERVER, 1.0) == [Drop(SERVER, "kicked")]
    assert client.state == "closed"
    assert server.close(CLIENT) == []


def test_client_ignores_datagrams_not_from_the_server() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    (bye,) = sends(server.close(CLIENT, "kicked"))
    assert client.receive(bye.data, OTHER, 1.0) == [Rejected(OTHER, "not from the server")]
    assert client.receive(udp.encode_bye("wrong"), SERVER, 1.0) == [
        Rejected(SERVER, "token mismatch")
    ]
    assert client.receive(udp.encode_accept("other-nonce", "t"), SERVER, 1.0)[0] == Rejected(
        SERVER, "nonce mismatch"
    )
    assert client.state == "connected"
    assert client.stats["wrong_source"] == 1 and client.stats["forged"] == 2


def test_silent_session_times_out_on_the_server() -> None:
    server = ServerEndpoint()
    handshake(server)
    assert server.next_deadline() == udp.SESSION_TIMEOUT
    assert server.poll(udp.SESSION_TIMEOUT - 0.01) == []
    actions = server.poll(udp.SESSION_TIMEOUT)
    assert Drop(CLIENT, "timed out") in actions
    assert udp.decode(sends(actions)[0].data).kind == "bye"
    assert not server.has_session(CLIENT)


def test_client_gives_up_on_an_absent_server() -> None:
    client = ClientEndpoint("alice", SERVER)
    client.connect(0.0)
    hellos = 1
    result: list[Action] = []
    while not result or not isinstance(result[-1], Drop):
        deadline = client.next_deadline()
        assert deadline is not None
        result = client.poll(deadline)
        hellos += len(sends(result))
    assert result[-1] == Drop(SERVER, "peer unreachable")
    assert client.next_deadline() is None
    assert 5 <= hellos <= 12  # exponential backoff, not a flood


# --- lossy link simulation -------------------------------------------------------------------


class LossyLink:
    """Seeded in-memory network: drops, duplicates and reorders (random delay) datagrams."""

    def __init__(
        self,
        seed: int,
        drop: float = 0.2,
        duplicate: float = 0.1,
        max_delay: float = 0.08,
        pack: bool = True,
    ) -> None:
        self.pack = pack
        self.rng = random.Random(seed)
        self.drop = drop
        self.duplicate = duplicate
        self.max_delay = max_delay
        self.now = 0.0
        self.up = True
        self._heap: list[tuple[float, int, Any, Any, bytes]] = []
        self._n = 0
        self.server = ServerEndpoint(rate_limiter=unlimited())
        self.clients: dict[Any, ClientEndpoint] = {}
        self.server_got: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.client_got: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.server_drops: list[tuple[float, Drop]] = []
        self.client_drops: dict[Any, tuple[float, Drop]] = {}
        self.registered: list[Registered] = []

    def transmit(self, src: Any, dst: Any, data: bytes) -> None:
        if not self.up or self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._n += 1
            delay = self.rng.uniform(0.001, self.max_delay)
            heapq.heappush(self._heap, (self.now + delay, self._n, src, dst, data))

    def add_client(self, addr: Any, name: str) -> ClientEndpoint:
        client = ClientEndpoint(name, SERVER, pack=self.pack)
        self.clients[addr] = client
        self.on_client(addr, client.connect(self.now))
        return client

    def on_server(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.transmit(SERVER, a.addr, a.data)
            elif isinstance(a, Deliver):
                self.server_got[a.addr].append(a.event)
            elif isinstance(a, Drop):
                self.server_drops.append((self.now, a))
            elif isinstance(a, Registered):
                self.registered.append(a)

    def on_client(self, addr: Any, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.transmit(addr, SERVER, a.data)
            elif isinstance(a, Deliver):
                self.client_got[addr].append(a.event)
            elif isinstance(a, Drop):
                self.client_drops[addr] = (self.now, a)

    def client_send(self, addr: Any, event: dict[str, Any]) -> None:
        self.on_client(addr, self.clients[addr].send(event, self.now))

    def server_send(self, addr: Any, event: dict[str, Any]) -> None:
        self.on_server(self.server.send_event(addr, event, self.now))

    def step(self) -> bool:
        """Advance virtual time to the next arrival or timer; False when nothing is left."""
        deadlines = [self.server.next_deadline()]
        deadlines += [c.next_deadline() for c in self.clients.values()]
        if self._heap:
            deadlines.append(self._heap[0][0])
        pending = [d for d in deadlines if d is not None]
        if not pending:
            return False
        self.now = max(self.now, min(pending))
        while self._heap and self._heap[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._heap)
            if dst == SERVER:
                self.on_server(self.server.receive(data, src, self.now))
            elif dst in self.clients:
                self.on_client(dst, self.clients[dst].receive(data, SERVER, self.now))
        self.on_server(self.server.poll(self.now))
        for addr, client in self.clients.items():
            self.on_client(addr, client.poll(self.now))
        return True

    def run_until(self, done: Any, limit: float) -> None:
        while not done() and self.now < limit:
            if not self.step():
                break


@pytest.mark.parametrize("seed", [1, 2, 3, 42])
@pytest.mark.parametrize("pack", [True, False], ids=["packed", "one-per-datagram"])
def test_lossy_link_delivers_exactly_once_in_order_both_ways(seed: int, pack: bool) -> None:
    link = LossyLink(seed, pack=pack)
    addrs = [("10.0.0.1", 5000 + i) for i in range(3)]
    for i, addr in enumerate(addrs):
        link.add_client(addr, f"user{i}")
    link.run_until(lambda: len(link.registered) == 3, limit=20.0)
    assert {r.addr for r in link.registered} == set(addrs)
    count = 150
    for n in range(count):
        for addr in addrs:
            link.client_send(addr, {"type": "say", "room": "lobby", "text": f"{addr[1]}:{n}"})
            if n % 3 == 0:
                # The server hands over three events together at times, as its sender does.
                link.on_server(
                    link.server.send_events(
                        addr,
                        [{"type": "notice", "text": f"to {addr[1]}:{n + k}"} for k in range(3)],
                        link.now,
                    )
                )
        if n % 10 == 0:
            link.step()

    def all_delivered() -> bool:
        return all(
            len(link.server_got[a]) == count + 1 and len(link.client_got[a]) == count for a in addrs
        )

    link.run_until(all_delivered, limit=link.now + 60.0)
    for addr in addrs:
        hello, *says = link.server_got[addr]
        assert hello["type"] == "hello"
        assert [e["text"] for e in says] == [f"{addr[1]}:{n}" for n in range(count)]
        assert [e["text"] for e in link.client_got[addr]] == [
            f"to {addr[1]}:{n}" for n in range(count)
        ]
    assert link.server_drops == [] and link.client_drops == {}
    stats = link.server.stats
    assert stats["retransmits"] > 0 and stats["duplicates"] > 0


def test_keepalives_hold_an_idle_session_open_over_a_lossy_link() -> None:
    link = LossyLink(5, drop=0.1, duplicate=0.0)
    link.add_client(CLIENT, "idle")
    link.run_until(lambda: bool(link.registered), limit=20.0)
    link.run_until(lambda: False, limit=5 * udp.SESSION_TIMEOUT)
    assert link.server_drops == [] and link.client_drops == {}
    assert link.server.has_session(CLIENT)


def test_dead_client_is_reported_unreachable_after_the_bounded_time() -> None:
    link = LossyLink(9)
    link.add_client(CLIENT, "alice")
    link.run_until(lambda: bool(link.registered), limit=20.0)
    link.run_until(lambda: False, limit=link.now + 1.0)
    link.up = False
    cut = link.now
    link.server_send(CLIENT, {"type": "notice", "text": "anyone there?"})
    link.run_until(lambda: bool(link.server_drops), limit=cut + 30.0)
    ((when, drop),) = link.server_drops
    assert drop == Drop(CLIENT, "peer unreachable")
    assert cut + udp.GIVE_UP_AFTER - 0.01 <= when <= cut + udp.GIVE_UP_AFTER + udp.MAX_RTO
    assert not link.server.has_session(CLIENT)


def test_dead_server_is_reported_to_the_client() -> None:
    link = LossyLink(11)
    link.add_client(CLIENT, "alice")
    link.run_until(lambda: bool(link.registered), limit=20.0)
    link.run_until(lambda: False, limit=link.now + 1.0)
    link.up = False
    cut = link.now
    link.client_send(CLIENT, {"type": "say", "room": "lobby", "text": "hello?"})
    link.run_until(lambda: bool(link.client_drops), limit=cut + 30.0)
    when, drop = link.client_drops[CLIENT]
    assert drop == Drop(SERVER, "peer unreachable")
    assert when <= cut + udp.GIVE_UP_AFTER + udp.MAX_RTO


def test_silent_client_is_timed_out_even_without_pending_data() -> None:
    link = LossyLink(13, drop=0.0, duplicate=0.0)
    link.add_client(CLIENT, "alice")
    link.run_until(lambda: bool(link.registered), limit=20.0)
    link.up = False
    cut = link.now
    link.run_until(lambda: bool(link.server_drops), limit=cut + 2 * udp.SESSION_TIMEOUT)
    ((when, drop),) = link.server_drops
    assert drop == Drop(CLIENT, "timed out")
    assert when <= cut + udp.SESSION_TIMEOUT
    # The client notices too: its keepalives go unanswered.
    link.run_until(lambda: bool(link.client_drops), limit=cut + 2 * udp.SESSION_TIMEOUT)
    assert link.client_drops[CLIENT][1] == Drop(SERVER, "timed out")


def test_late_copy_of_the_opening_hello_is_a_duplicate_not_a_forgery() -> None:
    server = ServerEndpoint()
    client, _ = handshake(server)
    late = udp.encode_hello("alice", client.nonce)
    assert sends(server.receive(late, CLIENT, 1.0)) == []
    assert server.stats["duplicates"] == 1 and "forged" not in server.stats
    assert server.has_session(CLIENT)


def test_encoded_event_envelope_is_identical_to_the_dict_one() -> None:
    event = {"type": "message", "room": "r", "from": "é", "text": "hi", "id": 3}
    compact = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    encoded = udp.EncodedEvent(compact.encode())
    assert udp.encode_data("tok", 5, 2, encoded) == udp.encode_data("tok", 5, 2, event)
    assert udp.data_datagram_size(encoded) == udp.data_datagram_size(event)
    assert udp.decode(udp.encode_data("tok", 5, 2, encoded)).events == (event,)


def test_hello_ref_travels_in_the_handshake() -> None:
    hello = udp.encode_hello("alice", "nonce", ref=9)
    assert len(hello) == udp.MIN_HELLO_SIZE
    assert udp.decode(hello).event == {"type": "hello", "name": "alice", "ref": 9}


def test_a_history_page_too_big_for_one_datagram_is_split_with_continued() -> None:
    from threadchat.protocols.udp import event_fits, fit_event

    messages = [
        {"type": "message", "room": "lobby", "from": "a", "text": "x" * 200, "id": i}
        for i in range(20)
    ]
    page = {"type": "history", "room": "lobby", "messages": messages, "more": True, "id": 1}
    pieces = fit_event(page)
    assert len(pieces) > 1 and all(event_fits(p) for p in pieces)
    assert [m for p in pieces for m in p["messages"]] == messages
    assert all(p["continued"] for p in pieces[:-1]) and "continued" not in pieces[-1]
    assert all(p["more"] is True for p in pieces)


@pytest.mark.parametrize("size", [0, 10, 1000, 1200])
def test_the_size_of_an_encoded_event_is_the_size_of_its_datagram(size: int) -> None:
    event = udp.EncodedEvent(json.dumps({"type": "say", "text": "x" * size}).encode())
    longest = udp.encode_data("x" * udp.MAX_TOKEN_LENGTH, udp.MAX_SEQ, udp.MAX_SEQ, event)
    assert udp.data_datagram_size(event) == len(longest)
    assert udp.event_fits(event) == (len(longest) <= udp.MAX_DATAGRAM_SIZE)
