"""The lossy relay itself, exercised with a tiny echo server over real UDP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from lossy_relay import LossyRelay

RECV_TIMEOUT = 5.0
# Only used to assert that nothing (more) arrives; never to wait for something that will.
QUIET = 0.5


class Echo:
    """Echoes every datagram back to its sender; remembers the senders' addresses."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self.sources: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.sources.add(source)
            self.sock.sendto(data, source)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(RECV_TIMEOUT)
        assert not self._thread.is_alive()
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def recv_n(sock: socket.socket, n: int) -> list[bytes]:
    sock.settimeout(RECV_TIMEOUT)
    return [sock.recvfrom(65536)[0] for _ in range(n)]


def recv_until_quiet(sock: socket.socket) -> list[bytes]:
    sock.settimeout(QUIET)
    got = []
    while True:
        try:
            got.append(sock.recvfrom(65536)[0])
        except TimeoutError:
            return got


def numbered(n: int) -> list[bytes]:
    return [b"%d" % i for i in range(n)]


def test_lossless_relay_passes_everything_in_order(echo: Echo, client: socket.socket) -> None:
    with LossyRelay(echo.address, drop=0, duplicate=0, reorder=0) as relay:
        for data in numbered(50):
            client.sendto(data, relay.address)
            assert recv_n(client, 1) == [data]
        big = b"x" * 3000  # oversize datagrams pass untouched; refusing them is the server's job
        client.sendto(big, relay.address)
        assert recv_n(client, 1) == [big]
    stats = relay.stats  # read after stop: the worker counts a datagram after sending it
    assert stats["forwarded_up"] == stats["forwarded_down"] == 51


def test_duplicate_doubles_each_hop(echo: Echo, client: socket.socket) -> None:
    with LossyRelay(echo.address, drop=0, duplicate=1.0, reorder=0) as relay:
        client.sendto(b"ping", relay.address)
        assert recv_n(client, 4) == [b"ping"] * 4
        assert recv_until_quiet(client) == []


def test_drop_loses_some_but_never_invents(echo: Echo, client: socket.socket) -> None:
    sent = numbered(100)
    with LossyRelay(echo.address, drop=0.3, duplicate=0, reorder=0, seed=3) as relay:
        for data in sent:
            client.sendto(data, relay.address)
        got = recv_until_quiet(client)
    stats = relay.stats
    assert 0 < len(got) < len(sent)
    assert set(got) <= set(sent)
    assert len(got) == stats["forwarded_down"]
    up_drops = stats["received_up"] - stats["forwarded_up"]
    down_drops = stats["received_down"] - stats["forwarded_down"]
    assert stats["dropped"] == up_drops + down_drops
    assert up_drops > 0 and down_drops > 0


def test_reorder_changes_order_but_loses_nothing(echo: Echo, client: socket.socket) -> None:
    sent = numbered(60)
    with LossyRelay(echo.address, drop=0, duplicate=0, reorder=0.3, seed=5) as relay:
        for data in sent:
            client.sendto(data, relay.address)
        got = recv_n(client, len(sent))
        assert relay.stats["reordered"] > 0
    assert sorted(got) == sorted(sent)
    assert got != sent


def test_partition_blackholes_until_healed(echo: Echo, client: socket.socket) -> None:
    with LossyRelay(echo.address, drop=0, duplicate=0, reorder=0) as relay:
        relay.partition()
        client.sendto(b"lost", relay.address)
        assert recv_until_quiet(client) == []
        relay.heal()
        client.sendto(b"found", relay.address)
        assert recv_n(client, 1) == [b"found"]


def test_each_client_gets_its_own_upstream_address(echo: Echo) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        with LossyRelay(echo.address, drop=0, duplicate=0, reorder=0) as relay:
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", 0))
                sock.sendto(b"c%d" % i, relay.address)
            assert [recv_n(sock, 1) for sock in socks] == [[b"c0"], [b"c1"]]
        assert len(echo.sources) == 2
    finally:
        for sock in socks:
            sock.close()


def test_relay_stops_by_itself_after_its_lifetime(echo: Echo) -> None:
    relay = LossyRelay(echo.address, lifetime=0.2).start()
    try:
        assert relay.stopped.wait(RECV_TIMEOUT)
    finally:
        started = time.monotonic()
        relay.stop(timeout=RECV_TIMEOUT)
    assert time.monotonic() - started < RECV_TIMEOUT


def test_stop_is_prompt(echo: Echo) -> None:
    relay = LossyRelay(echo.address).start()
    relay.stop(timeout=RECV_TIMEOUT)
    assert relay.stopped.is_set()
    with pytest.raises(RuntimeError):
        relay.start()
