"""Batched UDP I/O (transports/mmsg.py) against Python's own recvfrom and sendto, on real
sockets at 127.0.0.1 and [::1]. The listener on either path, over a lossy link:
`test_udp.py::test_lossy_relay_every_message_once_in_order`."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest
from conftest import WAIT

from threadchat.protocols import udp as proto
from threadchat.transports import mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg/sendmmsg here")

HOSTS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


@pytest.fixture(params=HOSTS, ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking socket under test and a plain peer, both bound to loopback."""
    family, host = request.param
    under_test = socket.socket(family, socket.SOCK_DGRAM)
    peer = socket.socket(family, socket.SOCK_DGRAM)
    try:
        under_test.bind((host, 0))
        peer.bind((host, 0))
    except OSError as problem:  # pragma: no cover - a machine without IPv6
        pytest.skip(f"cannot bind {host}: {problem}")
    under_test.setblocking(False)
    peer.settimeout(WAIT)
    yield under_test, peer
    under_test.close()
    peer.close()


def _receive_all(
    receiver: mmsg.Receiver, sock: socket.socket, expected: int
) -> list[tuple[bytes, tuple]]:
    """What arrives, waiting (bounded) for the socket to be readable between batches."""
    got: list[tuple[bytes, tuple]] = []
    while len(got) < expected:
        readable, _, _ = select.select([sock], [], [], WAIT)
        assert readable, f"only {len(got)} of {expected} datagrams arrived"
        got.extend(receiver.recv_many())
    return got


def test_recv_many_gives_what_recvfrom_gives(pair: tuple[socket.socket, socket.socket]) -> None:
    under_test, peer = pair
    receiver = mmsg.Receiver(under_test, proto.RECV_BUFFER_SIZE)
    try:
        assert receiver.recv_many() == []  # nothing waiting: no exception, no wait
        sent = [b"", b"a\0b", *(b"x%d" % k for k in range(150)), b"z" * 60000]
        for data in sent:
            peer.sendto(data, under_test.getsockname())
        got = _receive_all(receiver, under_test, len(sent))
        assert [data for data, _ in got] == sent  # in order, across several batches, whole
        # The sender's address exactly as Python's recvfrom reports it (a dict key of the
        # endpoint's sessions).
        peer.sendto(b"check", under_test.getsockname())
        under_test.settimeout(WAIT)
        data, address = under_test.recvfrom(100)
        assert data == b"check"
        assert {addr for _, addr in got} == {address}
    finally:
        receiver.close()


def test_send_many_sends_each_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    under_test, peer = pair
    sender = mmsg.Sender(under_test)
    to = peer.getsockname()
    datagrams = [(b"d%d" % k, to) for k in range(100)] + [(b"big" * 300, to)]
    assert sender.send_many(datagrams) == []
    me = under_test.getsockname()
    assert [peer.recvfrom(2000) for _ in datagrams] == [(data, me) for data, _ in datagrams]
    assert sender.send_many([]) == []


def test_send_many_skips_a_datagram_that_fails_and_sends_the_rest(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    under_test, peer = pair
    sender = mmsg.Sender(under_test)
    to = peer.getsockname()
    # An address of the other family fails in the kernel; a malformed one before the call.
    wrong_family = ("::1", 9, 0, 0) if len(to) == 2 else ("127.0.0.1", 9)
    errors = sender.send_many(
        [(b"first", to), (b"lost", wrong_family), (b"lost too", ("no such host", 9)), (b"last", to)]
    )
    assert len(errors) == 2
    assert all(isinstance(problem, OSError) for problem in errors)
    assert [peer.recvfrom(100)[0] for _ in range(2)] == [b"first", b"last"]
