"""A real-UDP relay on 127.0.0.1 that drops, duplicates and reorders datagrams, for tests.

Put it between a client and a server: the client sends to ``relay.address``; each client
address gets its own upstream socket, so the server sees one distinct address per client, and
replies travel back the same way.  Each datagram's fate is drawn from a ``random.Random(seed)``,
in arrival order, so a run is as repeatable as the arrival order is.

    with LossyRelay(server_addr, drop=0.2, duplicate=0.1, reorder=0.1, seed=7) as relay:
        client.sendto(data, relay.address)

The relay runs one worker thread, stops on ``stop()`` (bounded by a timeout) and also by itself
after ``lifetime`` seconds, so a test that forgets it cannot hang the run.
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from collections import Counter
from types import TracebackType

Address = tuple[str, int]

# Large enough to carry oversize datagrams through untouched: refusing them is the server's job.
RELAY_RECV_SIZE = 65536
# Longest the worker blocks, so stop requests and the lifetime are noticed promptly.
TICK = 0.02


class LossyRelay:
    """UDP relay with seeded loss; ``stats`` counts what happened to datagrams.

    Probabilities apply per datagram and per direction: ``drop`` discards it, ``duplicate``
    sends it twice, ``reorder`` holds a copy back for ``reorder_delay`` seconds so later
    datagrams overtake it.  ``partition()`` drops everything until ``heal()``.
    """

    def __init__(
        self,
        target: Address,
        *,
        drop: float = 0.2,
        duplicate: float = 0.1,
        reorder: float = 0.1,
        reorder_delay: float = 0.03,
        seed: int = 1,
        lifetime: float = 60.0,
        max_clients: int = 64,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.lifetime = lifetime
        self.max_clients = max_clients
        self._host = host
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._partitioned = threading.Event()
        self._stop = threading.Event()
        self.stopped = threading.Event()
        self._front: socket.socket | None = None
        self._upstream: dict[Address, socket.socket] = {}
        self._client_of: dict[socket.socket, Address] = {}
        self._delayed: list[tuple[float, int, socket.socket, bytes, Address]] = []
        self._n = 0
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> Address:
        """Where clients send; valid after ``start``."""
        if self._front is None:
            raise RuntimeError("relay not started")
        host, port = self._front.getsockname()[:2]
        return host, port

    @property
    def stats(self) -> dict[str, int]:
        """received_up/down, forwarded_up/down, dropped, duplicated, reordered, refused."""
        with self._lock:
            return dict(self._stats)

    def partition(self) -> None:
        """Drop every datagram in both directions (a dead link) until ``heal``."""
        self._partitioned.set()

    def heal(self) -> None:
        self._partitioned.clear()

    def start(self, timeout: float = 5.0) -> LossyRelay:
        if self._thread is not None:
            raise RuntimeError("relay already started")
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind((self._host, 0))
        self._front.setblocking(False)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="lossy-relay", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            self.stop(timeout)
            raise TimeoutError("relay did not start")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and close all sockets; raises TimeoutError if it does not stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("relay thread did not stop")
        self._close_sockets()

    def __enter__(self) -> LossyRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _close_sockets(self) -> None:
        for sock in [self._front, *self._upstream.values()]:
            if sock is not None:
                sock.close()
        self._upstream.clear()
        self._client_of.clear()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _run(self, ready: threading.Event) -> None:
        assert self._front is not None
        end = time.monotonic() + self.lifetime
        with selectors.DefaultSelector() as selector:
            selector.register(self._front, selectors.EVENT_READ)
            ready.set()
            try:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now >= end:
                        break
                    self._release_delayed(now)
                    wait = TICK
                    if self._delayed:
                        wait = max(0.0, min(wait, self._delayed[0][0] - now))
                    for key, _ in selector.select(wait):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        self._drain(sock, selector)
            finally:
                self.stopped.set()

    def _drain(self, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                data, source = sock.recvfrom(RELAY_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # e.g. ICMP port unreachable reported on the next read: the peer went away.
                return
            if sock is self._front:
                upstream = self._upstream_for(source, selector)
                self._count("received_up")
                if upstream is not None:
                    self._forward(upstream, data, self.target, "forwarded_up")
            else:
                if source != self.target:
                    continue
                self._count("received_down")
                assert self._front is not None
                self._forward(self._front, data, self._client_of[sock], "forwarded_down")

    def _upstream_for(
        self, client: Address, selector: selectors.BaseSelector
    ) -> socket.socket | None:
        sock = self._upstream.get(client)
        if sock is None:
            if len(self._upstream) >= self.max_clients:
                self._count("refused")
                return None
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self._host, 0))
            sock.setblocking(False)
            self._upstream[client] = sock
            self._client_of[sock] = client
            selector.register(sock, selectors.EVENT_READ)
        return sock

    def _forward(self, sock: socket.socket, data: bytes, dest: Address, counter: str) -> None:
        # Always draw the same number of values so one datagram's fate does not shift the next's.
        r_drop, r_dup, r_order1, r_order2 = (self._rng.random() for _ in range(4))
        if self._partitioned.is_set() or r_drop < self.drop:
            self._count("dropped")
            return
        copies = [r_order1]
        if r_dup < self.duplicate:
            self._count("duplicated")
            copies.append(r_order2)
        now = time.monotonic()
        for r_order in copies:
            if r_order < self.reorder:
                self._count("reordered")
                self._n += 1
                heapq.heappush(self._delayed, (now + self.reorder_delay, self._n, sock, data, dest))
            else:
                self._send(sock, data, dest, counter)

    def _release_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, sock, data, dest = heapq.heappop(self._delayed)
            counter = "forwarded_down" if sock is self._front else "forwarded_up"
            self._send(sock, data, dest, counter)

    def _send(self, sock: socket.socket, data: bytes, dest: Address, counter: str) -> None:
        if self._partitioned.is_set():
            self._count("dropped")
            return
        try:
            sock.sendto(data, dest)
        except OSError:
            self._count("send_errors")
            return
        self._count(counter)
