"""A real IRC client library (the `irc` package) as the peer of the IRC transport."""

import queue
import threading
from collections.abc import Iterator
from typing import Any

import irc.client
import pytest
from conftest import WAIT, JsonClient

from threadchat.app.server import Server


class LibraryClient:
    """An `irc.client` connection driven by its own thread; events land in a queue."""

    def __init__(self, port: int, nick: str) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self.reactor = irc.client.Reactor()
        self.reactor.add_global_handler("all_events", self._on_event)
        self.connection = self.reactor.server().connect("127.0.0.1", port, nick)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _on_event(self, connection: Any, event: Any) -> None:
        self.events.put(event)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.reactor.process_once(0.05)

    def expect(self, kind: str, **attrs: Any) -> Any:
        """The next event of `kind` whose attributes match, within WAIT seconds."""
        seen = []
        while True:
            try:
                event = self.events.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no {kind} event; saw {seen}") from None
            seen.append((event.type, event.target, event.arguments))
            if event.type == kind and all(getattr(event, k) == v for k, v in attrs.items()):
                return event

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.connection.close()


@pytest.fixture
def library(server: Server) -> Iterator[Any]:
    clients: list[LibraryClient] = []

    def open_client(nick: str) -> LibraryClient:
        client = LibraryClient(server.listener("irc").port, nick)
        clients.append(client)
        client.expect("welcome")
        return client

    yield open_client
    for client in clients:
        client.close()


def test_library_client_registers_and_chats(library: Any, connect_json: Any) -> None:
    alice = library("alice")
    bob = library("bob")
    assert alice.connection.get_nickname() == "alice"
    alice.connection.join("#lib")
    alice.expect("join", target="#lib")
    names = alice.expect("namreply")
    assert names.arguments[-1] == "@alice"
    bob.connection.join("#lib")
    joined = alice.expect("join", target="#lib")
    assert joined.source.nick == "bob"
    bob.connection.privmsg("#lib", "hello from a library")
    message = alice.expect("pubmsg", target="#lib")
    assert message.source.nick == "bob" and message.arguments == ["hello from a library"]
    alice.connection.action("#lib", "nods")
    action = bob.expect("action", target="#lib")
    assert action.arguments == ["nods"]

    native: JsonClient = connect_json("nat")
    native.send_json(type="join", room="lib")
    assert alice.expect("join", target="#lib").source.nick == "nat"
    native.send_json(type="say", room="lib", text="hi from native")
    assert alice.expect("pubmsg").arguments == ["hi from native"]
    alice.connection.privmsg("nat", "private hello")
    native.expect_event("private", to="nat", text="private hello")
    native.send_json(type="msg", to="bob", text="back at you")
    private = bob.expect("privmsg")
    assert private.source.nick == "nat" and private.arguments == ["back at you"]


def test_library_sees_errors_and_modes(library: Any) -> None:
    alice = library("alice")
    bob = library("bob")
    alice.connection.join("#m")
    alice.expect("endofnames")
    bob.connection.join("#m")
    bob.expect("endofnames")
    bob.connection.mode("#m", "+m")
    assert bob.expect("chanoprivsneeded").arguments[0] == "#m"
    alice.connection.mode("#m", "+v bob")
    mode = bob.expect("mode", target="#m")
    assert mode.arguments == ["+v", "bob"]
    alice.connection.privmsg("ghost", "x")
    assert alice.expect("nosuchnick").arguments[0] == "ghost"
    alice.connection.nick("bob")
    assert alice.expect("nicknameinuse").arguments[0] == "bob"
    alice.connection.nick("alicia")
    renamed = bob.expect("nick")
    assert (renamed.source.nick, renamed.target) == ("alice", "alicia")
