"""Both sans-I/O endpoints driven over real UDP sockets through the lossy relay.

A deliberately minimal single-threaded driver: it shows how thin a transport can be and checks
the protocol against real timing, not just the simulated clock.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import Any

from lossy_relay import LossyRelay

from threadchat.protocols import udp

# Bound on the whole exchange; at 20% loss and 200 ms RTO it normally takes about a second.
EXCHANGE_TIMEOUT = 20.0


def test_events_cross_a_lossy_relay_exactly_once_in_order() -> None:
    count = 40
    server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server_sock, client_sock, selectors.DefaultSelector() as selector:
        server_sock.bind(("127.0.0.1", 0))
        client_sock.bind(("127.0.0.1", 0))
        for sock in (server_sock, client_sock):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        relay = LossyRelay(
            server_sock.getsockname(), drop=0.2, duplicate=0.1, reorder=0.1, seed=21
        ).start()
        try:
            server = udp.ServerEndpoint()
            client = udp.ClientEndpoint("alice", relay.address)
            server_got: list[dict[str, Any]] = []
            client_got: list[dict[str, Any]] = []
            user: list[Any] = []

            def run_server(actions: list[udp.Action]) -> None:
                for a in actions:
                    if isinstance(a, udp.Send):
                        server_sock.sendto(a.data, a.addr)
                    elif isinstance(a, udp.Deliver):
                        server_got.append(a.event)
                    elif isinstance(a, udp.Registered):
                        user.append(a.addr)
                    assert not isinstance(a, udp.Drop), a

            def run_client(actions: list[udp.Action]) -> None:
                for a in actions:
                    if isinstance(a, udp.Send):
                        client_sock.sendto(a.data, a.addr)
                    elif isinstance(a, udp.Deliver):
                        client_got.append(a.event)
                    assert not isinstance(a, udp.Drop), a

            run_client(client.connect(time.monotonic()))
            for n in range(count):
                run_client(
                    client.send({"type": "say", "room": "r", "text": str(n)}, time.monotonic())
                )
            end = time.monotonic() + EXCHANGE_TIMEOUT
            sent_to_client = False
            while len(server_got) < count + 1 or len(client_got) < count:
                now = time.monotonic()
                assert now < end, (len(server_got), len(client_got), relay.stats)
                if user and not sent_to_client:
                    sent_to_client = True
                    for n in range(count):
                        run_server(
                            server.send_event(user[0], {"type": "notice", "text": str(n)}, now)
                        )
                deadlines = [
                    d for d in (server.next_deadline(), client.next_deadline()) if d is not None
                ]
                timeout = max(0.0, min([*deadlines, now + 0.1]) - now)
                for key, _ in selector.select(timeout):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data, addr = sock.recvfrom(udp.RECV_BUFFER_SIZE)
                    now = time.monotonic()
                    if sock is server_sock:
                        run_server(server.receive(data, addr, now))
                    else:
                        run_client(client.receive(data, addr, now))
                now = time.monotonic()
                run_server(server.poll(now))
                run_client(client.poll(now))
        finally:
            relay.stop()
    assert server_got[0] == {"type": "hello", "name": "alice"}
    assert [e["text"] for e in server_got[1:]] == [str(n) for n in range(count)]
    assert [e["text"] for e in client_got] == [str(n) for n in range(count)]
    assert relay.stats["dropped"] > 0
