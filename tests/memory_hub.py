"""A real hub with real sessions and no sockets, for hostile-input tests and fuzzing.

The native session behind the line protocol (text and JSON mode) and the IRC session, each
fed by an in-memory transport that keeps what it is sent (as tests/test_irc_session.py
does). `open_room` seats mallory, the attacker, and three observers, one per protocol, in her
room and the lobby; `check_everyone_is_safe` then checks every event each observer was given
and every byte it received: no CR, LF, NUL or lone surrogate in any field, every line whole.
Used by tests/test_props_hub.py (hypothesis) and tests/fuzz/fuzz_hub.py (atheris).
"""

import dataclasses
import json
import re
from collections.abc import Hashable
from typing import Any

from threadchat.config import Config
from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.hub import Hub, encode_contained
from threadchat.protocols.irc import wire
from threadchat.protocols.irc.session import IrcSession
from threadchat.protocols.native import jsonlines, requests
from threadchat.protocols.native.line import LineProtocol
from threadchat.protocols.native.session import NativeSession, SessionEnded


class Recording:
    """What every in-memory transport here shares: the bytes and events it was given.

    Its codec key is its own, so the hub encodes each event for it alone and every event
    this connection is given passes through `encode` (and is recorded there)."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.events: list[Event] = []
        self.unsendable: list[Event] = []

    def codec_key(self) -> Hashable:
        return id(self)

    def send_bytes(self, data: bytes) -> None:
        self.sent += data

    def direct_queue(self) -> None:
        return None

    def encode(self, event: Event) -> bytes | None:
        self.events.append(event)
        try:
            return self.encode_for_peer(event)
        except Exception:
            # The hub and the sessions contain it (`encode_contained`), so the peer is sent
            # nothing: an error that never reaches the client who caused it.
            self.unsendable.append(event)
            raise

    def encode_for_peer(self, event: Event) -> bytes | None:
        raise NotImplementedError


class MemoryLine(Recording):
    """A native connection (transports/native.py) without its socket."""

    def __init__(self, hub: Hub, host: str) -> None:
        super().__init__()
        self.hub = hub
        self.protocol = LineProtocol()
        self.session = NativeSession(
            hub, self, self.reply, label=host, host=host, on_registered=self._registered
        )

    def _registered(self) -> None:
        self.protocol.registered = True

    def encode_for_peer(self, event: Event) -> bytes | None:
        return self.protocol.encode(event, self.session.several_rooms)

    def reply(self, event: Event) -> None:
        data = encode_contained(self.encode, event)
        if data:
            self.send_bytes(data)

    def receive(self, data: bytes) -> str | None:
        """Like `LineConnection.handle_data`: the reason to close, or None to read on."""
        for request in self.protocol.receive_data(data):
            if (reason := self.handle(request)) is not None:
                return reason
        return "protocol error" if self.protocol.fatal else None

    def handle(self, request: requests.Request) -> str | None:
        try:
            self.session.handle(request)
        except SessionEnded as ended:
            return ended.reason
        return None

    def close(self, reason: str) -> None:
        if self.session.user is not None:
            self.hub.detach(self.session.user, self, reason)


class MemoryIrc(Recording):
    """An IRC connection (transports/irc.py) without its socket."""

    label = "memory-irc"

    def __init__(self, hub: Hub, host: str) -> None:
        super().__init__()
        self.hub = hub
        self.session = IrcSession(hub, Config(), self, host)

    def encode_for_peer(self, event: Event) -> bytes | None:
        return self.session.codec.encode(event)

    def throttle(self) -> None:
        pass

    def flush_now(self) -> None:
        pass

    def connection_count(self) -> int:
        return 1

    def receive(self, data: bytes) -> str | None:
        return self.session.receive_data(data)

    def close(self, reason: str) -> None:
        self.session.closed(reason)


def string_values(value: Any) -> list[str]:
    """Every string inside an event (its fields, tuples and mode changes, recursively)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple | list):
        return [text for item in value for text in string_values(item)]
    if isinstance(value, dict):
        return [text for item in value.items() for text in string_values(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return [text for f in fields for text in string_values(getattr(value, f.name))]
    return []


UNSAFE = re.compile("[\r\n\0\ud800-\udfff]")


# The one field that may hold line breaks: a message's text (a multiline message, issue 14),
# which every protocol shows as several lines of its own (IRC: a batch or several PRIVMSGs;
# text mode: continuation lines). CR, NUL and lone surrogates stay refused there too.
MULTILINE = (events.RoomMessage, events.PrivateMessage, events.MessageEdited)
UNSAFE_IN_TEXT = re.compile("[\r\0\ud800-\udfff]")


def assert_clean_events(observer: Recording) -> None:
    for event in observer.events:
        if isinstance(event, MULTILINE):
            text = event.text
            assert not UNSAFE_IN_TEXT.search(text), f"{type(event).__name__} carries {text!r}"
            event = dataclasses.replace(event, text="")
        for text in string_values(event):
            assert not UNSAFE.search(text), f"{type(event).__name__} carries {text!r}"


def assert_clean_text_mode(data: bytes) -> None:
    text = data.decode("utf-8")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)


def assert_clean_json_mode(data: bytes) -> None:
    assert not data or data.endswith(b"\n")
    # Split at LF alone: JSON lines end there (str.splitlines would split at U+2028 too,
    # which JSON, and so an event's text, may hold).
    for line in data.decode("utf-8").split("\n")[:-1]:
        body = json.loads(line)
        assert isinstance(body, dict)
        carried = [body, *body.get("messages", ())] if body.get("type") == "history" else [body]
        for item in carried:
            if isinstance(item, dict) and item.get("type") in ("message", "private", "edit"):
                # A multiline message's text: line breaks are its own (see MULTILINE).
                text = item.pop("text", "")
                assert not UNSAFE_IN_TEXT.search(text), f"{item['type']} carries {text!r}"
        for text in string_values(body):
            assert not UNSAFE.search(text), f"{body['type']} carries {text!r}"


def assert_clean_irc(data: bytes) -> None:
    assert not data or data.endswith(b"\r\n")
    for raw in data.split(b"\r\n")[:-1]:
        assert not re.search(rb"[\r\n\0]", raw)
        wire.parse(raw)


@dataclasses.dataclass
class Room:
    """A hub with mallory the attacker and three observers, one per protocol."""

    hub: Hub
    mallory: MemoryLine | MemoryIrc
    text: MemoryLine
    json: MemoryLine
    irc: MemoryIrc


def open_room(attacker_protocol: str) -> Room:
    hub = Hub()
    mallory: MemoryLine | MemoryIrc
    if attacker_protocol == "irc":
        mallory = MemoryIrc(hub, "10.0.0.66")
        assert mallory.receive(b"NICK mallory\r\nUSER m 0 * :M\r\nJOIN #den\r\n") is None
    else:
        mallory = MemoryLine(hub, "10.0.0.66")
        hello = (
            b"mallory\n" if attacker_protocol == "text" else b'{"type":"hello","name":"mallory"}\n'
        )
        assert mallory.receive(hello) is None
        mallory.session.handle(requests.JoinRoom(room="den"))
    text = MemoryLine(hub, "10.0.0.1")
    assert text.receive(b"olivia\n/join den\n") is None
    json_observer = MemoryLine(hub, "10.0.0.2")
    assert (
        json_observer.receive(b'{"type":"hello","name":"oscar"}\n{"type":"join","room":"den"}\n')
        is None
    )
    irc = MemoryIrc(hub, "10.0.0.3")
    caps = b"CAP REQ :message-tags server-time account-tag extended-join away-notify\r\n"
    setup = b"CAP LS 302\r\n" + caps + b"NICK irene\r\nUSER i 0 * :I\r\nCAP END\r\n"
    assert irc.receive(setup + b"JOIN #lobby,#den\r\n") is None
    assert hub.find_user("irene") is not None
    return Room(hub, mallory, text, json_observer, irc)


def check_everyone_is_safe(room: Room) -> None:
    # Everyone, mallory included, could be sent every event they were given: bad input is
    # answered with an error its sender receives.
    for conn in (room.mallory, room.text, room.json, room.irc):
        assert not conn.unsendable, f"could not be sent: {conn.unsendable}"
    for observer in (room.text, room.json, room.irc):
        assert_clean_events(observer)
    assert_clean_text_mode(bytes(room.text.sent))
    assert_clean_json_mode(bytes(room.json.sent))
    assert_clean_irc(bytes(room.irc.sent))
    # Every observer is still there to be harmed, or not.
    for nick in ("olivia", "oscar", "irene"):
        assert room.hub.find_user(nick) is not None


def attack(room: Room, protocol: str, sent: list[bytes]) -> None:
    """Feed mallory's reads (`protocol`: text, json, irc; udp for one JSON object per read,
    as UDP datagrams carry them), then close her connection as an EOF would."""
    mallory = room.mallory
    reason = None
    for data in sent:
        if protocol == "udp":
            assert isinstance(mallory, MemoryLine)
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):
                continue
            reason = mallory.handle(jsonlines.parse_request(obj))
        else:
            reason = mallory.receive(data)
        if reason is not None:
            break
    mallory.close(reason or "EOF")
