"""Limits per address and in all, the partial-line bound, and UDP pacing, on real sockets.

Tests connect from 127.0.0.1 and 127.0.0.2 only. Loopback is exempt from the per-address
limits by default (so the rest of the suite may open many clients), so the tests of those
limits turn the exemption off with `limit_exempt=["none"]`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import WAIT, JsonClient, LineClient
from test_irc import IrcClient
from test_udp import UdpClient, udp_clients, wait_for

from threadchat.app.server import Server, default_max_clients
from threadchat.app.startup import StartupError
from threadchat.config import Config
from threadchat.core.admission import Admission, Refusal, RefusalLog, parse_exempt
from threadchat.protocols import udp as proto

__all__ = ["udp_clients"]  # a fixture, used by name

NO_EXEMPTION = ["none"]
TOO_MANY = "too many connections from your address (16 at once)"


@pytest.fixture
def clients() -> Iterator[list[LineClient]]:
    """Clients to close after the test, whatever happens."""
    opened: list[LineClient] = []
    yield opened
    for client in opened:
        with contextlib.suppress(OSError):
            client.close()


def named(client: LineClient, name: str) -> LineClient:
    client.send(name)
    client.expect("--- in lobby:")
    return client


# -- connections per address ------------------------------------------------------------------


def test_the_seventeenth_connection_from_one_address_is_refused_on_any_listener(
    make_server: Callable[..., Server], clients: list[LineClient]
) -> None:
    server = make_server(limit_exempt=NO_EXEMPTION)
    line_port, irc_port = server.listener("line").port, server.listener("irc").port
    # Sixteen at once from 127.0.0.1, over both TCP protocols: they count together.
    for n in range(16):
        clients.append(LineClient(line_port if n % 2 else irc_port))
    wait_for(lambda: server.admission.count("127.0.0.1") == 16)
    refused_line = LineClient(line_port)
    refused_irc = IrcClient(irc_port)
    clients.extend([refused_line, refused_irc])
    assert refused_line.read_until_closed() == [f"!!! {TOO_MANY}"]
    assert refused_irc.read_until_closed() == [f"ERROR :Closing Link: 127.0.0.1 ({TOO_MANY})"]
    # Another address is not affected.
    other = named(LineClient(line_port, source="127.0.0.2"), "other")
    clients.append(other)
    # One of the sixteen leaves: its place is free again.
    clients[0].close()
    wait_for(lambda: server.admission.count("127.0.0.1") == 15)
    clients.append(named(LineClient(line_port), "again"))
    other.expect("--> again joined lobby")
    assert server.listener("line").thread.is_alive()


def test_the_web_port_refuses_past_the_limit_in_http(
    make_server: Callable[..., Server], clients: list[LineClient]
) -> None:
    """The page's port shares the limits: over them, a 503 that says why, then the close."""
    server = make_server(limit_exempt=NO_EXEMPTION, max_connections_per_ip=1)
    clients.append(LineClient(server.listener("line").port))
    wait_for(lambda: server.admission.count("127.0.0.1") == 1)
    with socket.create_connection(("127.0.0.1", server.listener("web").port), WAIT) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert answer.endswith(b"\r\n\r\ntoo many connections from your address (1 at once)\n")


def test_udp_sessions_count_with_the_tcp_connections_of_their_address(
    make_server: Callable[..., Server],
    clients: list[LineClient],
    udp_clients: Callable[..., UdpClient],
) -> None:
    server = make_server(limit_exempt=NO_EXEMPTION, max_connections_per_ip=2)
    port = server.listener("line").port
    clients.extend([LineClient(port), LineClient(port)])
    wait_for(lambda: server.admission.count("127.0.0.1") == 2)
    refused = udp_clients(server, "udpuser")
    error = refused.expect_event("error", code="too_many_connections")
    assert error["message"] == "too many connections from your address (2 at once)"
    assert refused.disconnected.get(timeout=WAIT) == error["message"]
    assert server.udp is not None and server.udp.users() == []
    # A UDP user that is let in holds a place until it leaves.
    clients.pop().close()
    wait_for(lambda: server.admission.count("127.0.0.1") == 1)
    admitted = udp_clients(server, "udpuser")
    admitted.expect_event("who", room="lobby")
    assert server.admission.count("127.0.0.1") == 2
    admitted.send(type="quit", reason="bye")
    assert admitted.disconnected.get(timeout=WAIT) is None
    wait_for(lambda: server.admission.count("127.0.0.1") == 1)


def test_exempt_addresses_are_not_limited(
    make_server: Callable[..., Server], clients: list[LineClient]
) -> None:
    server = make_server(limit_exempt=["127.0.0.2/32"], max_connections_per_ip=1)
    port = server.listener("line").port
    clients.extend(LineClient(port, source="127.0.0.2") for _ in range(3))
    for n, client in enumerate(clients):
        named(client, f"exempt{n}")
    clients.append(LineClient(port))
    wait_for(lambda: server.admission.count("127.0.0.1") == 1)
    refused = LineClient(port)
    clients.append(refused)
    assert refused.read_until_closed() == ["!!! too many connections from your address (1 at once)"]


# A hello unanswered this long was refused (on loopback an answer takes a millisecond or so).
UDP_REFUSED_AFTER = 0.3


def udp_handshakes(port: int, source: str, count: int) -> tuple[int, int]:
    """Open `count` UDP handshakes from `source`, each from its own port, one after another
    (all at once would overflow the server's socket buffer): every hello, then every cookie
    echoed, none finished. Returns how many got a retry and how many then an accept."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.settimeout(UDP_REFUSED_AFTER)
            socks.append(sock)

        def answer(sock: socket.socket, hello: bytes, kind: str) -> proto.Envelope | None:
            sock.sendto(hello, ("127.0.0.1", port))
            try:
                envelope = proto.decode(sock.recv(2048))
            except TimeoutError:
                return None  # refused: the server answers nothing
            return envelope if envelope.kind == kind else None

        nonces = [proto.new_nonce() for _ in socks]
        retries = [answer(sock, proto.encode_hello(f"local{n}", nonce), "retry")
                   for n, (sock, nonce) in enumerate(zip(socks, nonces, strict=True))]  # fmt: skip
        accepts = [
            answer(sock, proto.encode_hello(f"local{n}", nonce, cookie=retry.cookie), "accept")
            for n, (sock, nonce, retry) in enumerate(zip(socks, nonces, retries, strict=True))
            if retry is not None
        ]
        return sum(r is not None for r in retries), sum(a is not None for a in accepts)
    finally:
        for sock in socks:
            sock.close()


def test_many_udp_logins_at_once_from_an_exempt_address_are_not_limited_per_host(
    make_server: Callable[..., Server],
) -> None:
    """Many UDP clients on one machine (a load test, a bouncer) are not one host flooding
    hellos: the soak's UDP visits failed under load while loopback's hellos were limited as
    a stranger's (50 a second, 32 handshakes at once)."""
    server = make_server()
    assert server.udp is not None
    assert udp_handshakes(server.udp.port, "127.0.0.1", 150) == (150, 150)
    assert server.udp.endpoint.pending_handshakes() == 150


def test_udp_hellos_from_an_address_not_exempt_are_limited_per_host(
    make_server: Callable[..., Server],
) -> None:
    """The counterpart: from a host not exempt, at most its share of the handshake table is
    pending at once (40 logins cost 80 hellos, within the host's burst of 100; the hello
    rate itself is test_udp.py's hello flood)."""
    server = make_server(limit_exempt=NO_EXEMPTION)
    assert server.udp is not None
    assert udp_handshakes(server.udp.port, "127.0.0.1", 40) == (40, proto.MAX_PENDING_PER_HOST)
    assert server.udp.endpoint_stats()["host_handshakes_full"] == 40 - proto.MAX_PENDING_PER_HOST


# -- connection rate per address --------------------------------------------------------------


def test_connecting_too_fast_is_refused_with_a_rate_limited_log_line(
    make_server: Callable[..., Server],
    clients: list[LineClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="threadchat.core.admission")
    # A burst of 3, then one every 100 s: the fourth attempt is refused however slow the test.
    server = make_server(
        limit_exempt=NO_EXEMPTION, connect_burst_per_ip=3, connect_rate_per_ip=0.01
    )
    port = server.listener("line").port
    for n in range(3):
        clients.append(named(LineClient(port), f"early{n}"))
    attempts = 20
    for _ in range(attempts):
        refused = LineClient(port)
        [line] = refused.read_until_closed()
        assert line.startswith("!!! connecting too fast from your address; try again in ")
        refused.close()
    # Another address still connects.
    clients.append(named(LineClient(port, source="127.0.0.2"), "elsewhere"))
    logged = [m for m in caplog.messages if "connecting too fast" in m]
    # The log's own burst, then silence: not one line per refused connection.
    assert 1 <= len(logged) <= 5
    assert logged[0].startswith("line: refused 127.0.0.1: connecting too fast")
    assert server.admission.refusals.unlogged == attempts - len(logged)
    assert server.listener("line").thread.is_alive()


def test_refusal_log_counts_what_it_did_not_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="threadchat.core.admission")
    now = [0.0]
    refusals = RefusalLog(burst=2, interval=10.0, clock=lambda: now[0])
    refusal = Refusal("connecting_too_fast", "connecting too fast")
    for _ in range(7):
        refusals.note("192.0.2.1", "irc", refusal)
    refusals.flush()  # no token yet: nothing more is logged
    assert caplog.messages == ["irc: refused 192.0.2.1: connecting too fast"] * 2
    now[0] = 10.0
    refusals.flush()
    assert caplog.messages[-1] == (
        "refused more connections (not logged since the last line: connecting_too_fast 5)"
    )
    now[0] = 20.0
    refusals.flush()  # nothing left to report
    assert len(caplog.messages) == 3


# -- clients in all ----------------------------------------------------------------------------


def test_past_max_clients_new_clients_hear_the_server_is_full_then_service_resumes(
    make_server: Callable[..., Server],
    clients: list[LineClient],
    udp_clients: Callable[..., UdpClient],
) -> None:
    server = make_server(max_clients=3)
    port, irc_port = server.listener("line").port, server.listener("irc").port
    for n in range(3):
        clients.append(named(LineClient(port), f"user{n}"))
    full = "the server is full (3 clients); try again later"
    # Exempt addresses too: the limit guards descriptors and threads, which everyone uses.
    for _ in range(10):
        refused = LineClient(port)
        clients.append(refused)
        assert refused.read_until_closed() == [f"!!! {full}"]
    refused_irc = IrcClient(irc_port)
    clients.append(refused_irc)
    assert refused_irc.read_until_closed() == [f"ERROR :Closing Link: 127.0.0.1 ({full})"]
    udp = udp_clients(server, "udpuser")
    assert udp.expect_event("error", code="server_full")["message"] == full
    # The acceptor took every refusal in its stride: no failure, no backoff, still there.
    for listener in server.listeners:
        assert listener.thread.is_alive() and not listener.failures.failing
    clients[0].send("/quit")
    clients[0].read_until_closed()
    wait_for(lambda: server.admission.clients == 2)
    clients.append(named(LineClient(port), "newcomer"))
    clients[1].expect("--> newcomer joined lobby")


def test_max_clients_defaults_to_the_descriptor_limit_less_a_reserve() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_clients() == max(1, soft - 64)
    assert Server(Config(max_clients=0)).admission.max_clients == default_max_clients()
    assert Server(Config(max_clients=7)).admission.max_clients == 7


# -- the exempt networks and the host key ------------------------------------------------------


def test_limit_exempt_parsing() -> None:
    assert parse_exempt(["none"]) == ()
    assert [str(n) for n in parse_exempt(["10.0.0.0/8, 192.168.1.7", "2001:db8::/32"])] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "2001:db8::/32",
    ]
    with pytest.raises(ValueError, match="not a network"):
        parse_exempt(["10.0.0.0/8,localhost"])
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_exempt(["none", "10.0.0.0/8"])
    with pytest.raises(StartupError, match="limit_exempt: 'nonsense'"):
        Server(Config(limit_exempt=["nonsense"]))


def test_an_ipv6_64_is_one_host_and_mapped_loopback_is_exempt() -> None:
    admission = Admission(
        max_clients=100, per_host=2, rate=0, burst=0, exempt=parse_exempt(["127.0.0.0/8"])
    )
    assert admission.admit("2001:db8:1:2::1", "test") is None
    assert admission.admit("2001:db8:1:2:ffff::9", "test") is None
    refusal = admission.admit("2001:db8:1:2::3", "test")
    assert refusal is not None and refusal.code == "too_many_connections"
    assert admission.admit("2001:db8:1:3::1", "test") is None  # another /64
    for _ in range(5):
        assert admission.admit("::ffff:127.0.0.1", "test") is None
    admission.release("2001:db8:1:2::1")
    assert admission.admit("2001:db8:1:2::3", "test") is None
    assert admission.clients == 8


# -- a time bound on a partial line ------------------------------------------------------------


def test_a_line_that_never_ends_is_cut_off(
    make_server: Callable[..., Server], clients: list[LineClient]
) -> None:
    server = make_server(line_timeout=0.5)
    port = server.listener("line").port
    watcher = named(LineClient(port), "watcher")
    slow = named(LineClient(port), "slow")
    clients.extend([watcher, slow])
    # A slowloris: a byte now and then, each of them input, none of them a line end.
    started = time.monotonic()
    said: list[str] = []
    while not said and time.monotonic() < started + 0.5 + 2 + WAIT:
        with contextlib.suppress(OSError):
            slow.send_raw(b"x")
        said = slow.quiet(0.2)  # also the pace of the attack
    assert said == ["!!! no line end within 0.5 s of a line's start"]
    assert time.monotonic() - started >= 0.5
    assert watcher.expect("<-- slow") == "<-- slow quit (line timeout)"


def test_lines_that_end_in_time_are_not_cut(
    make_server: Callable[..., Server], clients: list[LineClient]
) -> None:
    server = make_server(line_timeout=1.5)
    port = server.listener("line").port
    alice, bob = named(LineClient(port), "alice"), named(LineClient(port), "bob")
    clients.extend([alice, bob])
    # Each line ends within its time, though the connection always holds part of one.
    alice.send_raw(b"one")
    for word in ("two", "three", "four", "five"):
        time.sleep(0.5)  # the pace of the client, not synchronisation
        alice.send_raw(f"\n{word}".encode())
    time.sleep(0.5)
    alice.send_raw(b"\n")
    for word in ("one", "two", "three", "four", "five"):
        bob.expect(f"alice: {word}")


def test_an_irc_line_that_never_ends_is_cut_off(make_server: Callable[..., Server]) -> None:
    server = make_server(line_timeout=0.5)
    client = IrcClient(server.listener("irc").port)
    try:
        client.register("slowirc")
        client.send_raw(b"PRIVMSG #lobby :never finished")
        lines = client.read_until_closed()
        assert lines[-1] == (
            "ERROR :Closing Link: 127.0.0.1 (Line timeout: no line end within 0.5 seconds)"
        )
    finally:
        client.close()


# -- UDP: flood control paces, nothing is lost ---------------------------------------------------


def test_a_udp_flood_is_paced_and_nothing_is_lost(
    make_server: Callable[..., Server], udp_clients: Callable[..., UdpClient]
) -> None:
    server = make_server(flood_rate=20, flood_burst=10)
    watcher = JsonClient(server.listener("line").port)
    try:
        watcher.send_json(type="hello", name="watcher")
        watcher.expect_event("who", room="lobby")
        flooder = udp_clients(server, "flooder")
        flooder.expect_event("who", room="lobby")
        count = 60
        started = time.monotonic()
        for n in range(count):
            flooder.send(type="say", room="lobby", text=f"line {n}", ref=n)
        # Every line, in order, at the pace: (60 - 10) / 20 s after the burst.
        for n in range(count):
            watcher.expect_event("message", text=f"line {n}", timeout=WAIT * 2)
        assert time.monotonic() - started >= (count - 10) / 20 * 0.8
        oks = set()
        while len(oks) < count:
            event = flooder.expect_event("ok")
            oks.add(event["ref"])
        assert oks == set(range(count))
        assert server.udp is not None
        assert server.udp.endpoint_stats()["paced"] >= 1
        assert all(e["type"] != "error" for e in flooder.quiet(0.2))
    finally:
        watcher.close()


def test_sixty_lines_piped_into_the_udp_client_all_reach_the_room_in_order(
    make_server: Callable[..., Server],
) -> None:
    from test_client import ClientProcess

    # The default flood limits: 20 at once, then 10 a second.
    server = make_server(flood_rate=10, flood_burst=20)
    assert server.udp is not None
    watcher = JsonClient(server.listener("line").port)
    alice = ClientProcess("--udp", f"127.0.0.1:{server.udp.port}", "--name", "alice")
    try:
        watcher.send_json(type="hello", name="watcher")
        watcher.expect_event("who", room="lobby")
        alice.expect("in lobby:")
        alice.send(*(f"piped {n}" for n in range(60)))
        for n in range(60):
            event = watcher.expect_event("message", text=f"piped {n}", timeout=WAIT * 2)
            assert event["from"] == "alice"
        code, _ = alice.finish(timeout=WAIT * 2)
        assert code == 0
        watcher.expect_event("quit", name="alice")
    finally:
        alice.kill()
        watcher.close()


def test_a_paste_longer_than_the_quit_wait_is_not_lost_when_input_ends(
    make_server: Callable[..., Server],
) -> None:
    """Input ends (EOF) right after a paste the server paces for longer than the client's
    wait after its quit: the client waits on while the server makes progress."""
    from test_client import ClientProcess

    from threadchat.client.main import QUIT_WAIT

    count, rate, burst = 450, 60, 10
    # More than the send window (64) is still unsent when the quit wait is over: a bye then
    # would lose it (what the server holds in the window it takes before the bye).
    assert count - burst - rate * QUIT_WAIT > 64 * 2
    server = make_server(flood_rate=rate, flood_burst=burst)
    assert server.udp is not None
    watcher = JsonClient(server.listener("line").port)
    alice = ClientProcess("--udp", f"127.0.0.1:{server.udp.port}", "--name", "alice")
    try:
        watcher.send_json(type="hello", name="watcher")
        watcher.expect_event("who", room="lobby")
        alice.expect("in lobby:")
        alice.send(*(f"pasted {n}" for n in range(count)))
        assert alice.proc.stdin is not None
        alice.proc.stdin.close()
        for n in range(count):
            event = watcher.expect_event("message", text=f"pasted {n}", timeout=WAIT * 2)
            assert event["from"] == "alice"
        watcher.expect_event("quit", name="alice", timeout=WAIT * 2)
        code, _ = alice.finish(timeout=WAIT * 2)
        assert code == 0
    finally:
        alice.kill()
        watcher.close()
