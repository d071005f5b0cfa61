"""Shared fixtures: a real server on ephemeral loopback ports, and raw-socket clients."""

import contextlib
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Every store backend in turn, for the tests of the store and of what it keeps.
from store_backends import backend  # noqa: F401  (a fixture)

from threadchat.app.server import Server
from threadchat.config import Config
from threadchat.protocols.irc.wire import Message, parse
from threadchat.store.sqlite import SQLiteStore, wait_for

# Every blocking wait in the tests is bounded by this.
WAIT = 5.0

# Property tests (tests/test_props_*.py). "quick" keeps `make test` fast: a bounded number of
# examples per test, and a deadline generous enough for a loaded 2-core machine (a deadline
# catches an input that makes a parser slow, not a busy neighbour). "thorough" is for hunting:
# HYPOTHESIS_PROFILE=thorough make test, or with pytest -k props.
settings.register_profile(
    "quick",
    max_examples=100,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start servers with chosen settings; each is stopped after the test.

    Each server gets its own fresh data directory unless `data_dir` is given.
    """
    started: list[Server] = []

    def start(**settings: Any) -> Server:
        # Flood control off unless a test asks for it: tests send bursts on purpose.
        data_dir = str(tmp_path_factory.mktemp("data"))
        base = Config(flood_rate=0, log_level="debug", data_dir=data_dir)
        server = Server(replace(base, **settings), ephemeral_ports=True)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


class ThreadLimit:
    """Makes `server`'s reader threads fail to start while `reached` is set, as
    `Thread.start` fails at a pids limit (for tests that cannot set a real one)."""

    def __init__(self, server: Server) -> None:
        self.reached = threading.Event()
        server.start_reader = self._start

    def _start(self, thread: threading.Thread) -> None:
        if self.reached.is_set():
            raise RuntimeError("can't start new thread")
        thread.start()


@contextlib.contextmanager
def writer_held(store: SQLiteStore) -> Iterator[None]:
    """Hold the store's writer thread inside a job of its own for the block: every write
    queued meanwhile waits, and they are then written together, as one group commit."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(WAIT * 6)

    held = store._enqueue(hold)
    assert started.wait(WAIT)
    try:
        yield
    finally:
        release.set()
        wait_for(held, WAIT)


def unref(line: str) -> str:
    """A text-mode line without the short reference (`  #a3f`) that ends a chat message."""
    return re.sub(r"  #[0-9a-f]{3}$", "", line)


class LineClient:
    """A raw TCP client, as nc would be: send lines, read lines with a bounded wait."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.settimeout(WAIT)
        if source is not None:
            # Another loopback address (127.0.0.2): another client machine, as the server sees it.
            self.sock.bind((source, 0))
        if rcvbuf is not None:
            # Before connect, so the small window is what the server sees from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((host, port))
        self.buffer = b""

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s; have {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; have {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def expect(self, predicate: Callable[[str], bool] | str, timeout: float = WAIT) -> str:
        """Read lines until one matches (a substring, or a predicate); return it."""
        check = predicate if callable(predicate) else (lambda line: predicate in line)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.read_line(max(0.0, deadline - time.monotonic()))
            except TimeoutError as problem:
                raise AssertionError(f"no line matching {predicate!r}; saw {seen}") from problem
            seen.append(line)
            if check(line):
                return line

    def read_until_closed(self, timeout: float = WAIT) -> list[str]:
        """Every line until the server closes the connection."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines.append(self.read_line(max(0.0, deadline - time.monotonic())))
            except (EOFError, ConnectionResetError):
                return lines

    def quiet(self, timeout: float = 0.3) -> list[str]:
        """Lines that arrive within `timeout` (for asserting that nothing else arrives)."""
        lines = []
        try:
            while True:
                lines.append(self.read_line(timeout))
        except (TimeoutError, EOFError):
            return lines

    def close(self) -> None:
        self.sock.close()


class JsonClient(LineClient):
    def send_json(self, **obj: Any) -> None:
        self.send(json.dumps(obj))

    def read_event(self, timeout: float = WAIT) -> dict[str, Any]:
        return json.loads(self.read_line(timeout))

    def expect_event(self, kind: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                event = self.read_event(max(0.0, deadline - time.monotonic()))
            except TimeoutError as problem:
                raise AssertionError(f"no {kind} event with {fields}; saw {seen}") from problem
            seen.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event


class IrcClient(LineClient):
    def read_line(self, timeout: float = WAIT) -> str:
        return super().read_line(timeout).rstrip("\r")

    def expect_msg(
        self,
        command: str,
        check: Callable[[Message], bool] = lambda m: True,
        timeout: float = WAIT,
    ) -> Message:
        """Read until a message with `command` (a numeric or a word) passing `check`."""
        line = self.expect(
            lambda line: parse(line).command == command and check(parse(line)), timeout
        )
        return parse(line)

    def register(self, nick: str, caps: tuple[str, ...] = ()) -> None:
        if caps:
            self.send("CAP LS 302", f"CAP REQ :{' '.join(caps)}")
            self.expect_msg("CAP", lambda m: m.params[1] == "ACK")
        self.send(f"NICK {nick}", f"USER {nick} 0 * :Real {nick}")
        if caps:
            self.send("CAP END")
        self.expect_msg("001")
        self.expect(lambda line: parse(line).command in ("376", "422"))


@pytest.fixture
def irc(server: Server) -> Iterator[Callable[..., IrcClient]]:
    clients: list[IrcClient] = []

    def open_client(
        nick: str | None = None, caps: tuple[str, ...] = (), on: Server | None = None
    ) -> IrcClient:
        client = IrcClient((on or server).listener("irc").port)
        clients.append(client)
        if nick is not None:
            client.register(nick, caps)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[..., LineClient]]:
    """Open text-mode clients; `connect("alice")` registers and waits until in the lobby."""
    clients: list[LineClient] = []

    def open_client(name: str | None = None) -> LineClient:
        client = LineClient(server.listener("line").port)
        clients.append(client)
        if name is not None:
            client.send(name)
            client.expect("--- in lobby:")
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def connect_json(server: Server) -> Iterator[Callable[..., JsonClient]]:
    clients: list[JsonClient] = []

    def open_client(name: str | None = None) -> JsonClient:
        client = JsonClient(server.listener("line").port)
        clients.append(client)
        if name is not None:
            client.send_json(type="hello", name=name)
            client.expect_event("who", room="lobby")
        return client

    yield open_client
    for client in clients:
        client.close()
