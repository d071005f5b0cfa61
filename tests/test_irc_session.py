"""The IRC session without a socket: bytes in, bytes out, through its `IrcTransport` seam.

The session is sans-I/O (protocols/irc/session.py); here an in-memory transport stands where
`transports/irc.py` stands in the server, so registration, replies, capabilities and the
protocol-neutral view of other users are checked without threads or sockets.
"""

from collections.abc import Hashable

from threadchat.config import Config
from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.hub import Hub
from threadchat.protocols.irc.session import IrcSession
from threadchat.protocols.irc.wire import Message, parse


class MemoryTransport:
    """An `IrcTransport` that keeps the bytes the session queues."""

    label = "memory"

    def __init__(self) -> None:
        self.sent = bytearray()
        self.session: IrcSession | None = None

    def send_bytes(self, data: bytes) -> None:
        self.sent += data

    def codec_key(self) -> Hashable:
        assert self.session is not None
        return self.session.codec.codec_key()

    def encode(self, event: Event) -> bytes | None:
        assert self.session is not None
        return self.session.codec.encode(event)

    def direct_queue(self) -> None:
        return None

    def throttle(self) -> None:
        pass

    def flush_now(self) -> None:
        pass

    def connection_count(self) -> int:
        return 1

    def take(self) -> list[Message]:
        lines = [parse(line) for line in bytes(self.sent).split(b"\r\n") if line]
        self.sent.clear()
        return lines


def open_session(hub: Hub) -> tuple[IrcSession, MemoryTransport]:
    transport = MemoryTransport()
    session = IrcSession(hub, Config(), transport, "10.0.0.1")
    transport.session = session
    return session, transport


def test_a_session_registers_and_quits_without_a_socket() -> None:
    hub = Hub()
    session, transport = open_session(hub)
    assert session.receive_data(b"NICK alice\r\nUSER al 0 * :Alice A\r\n") is None
    replies = transport.take()
    assert replies[0].command == "001"
    assert replies[0].params[-1].endswith("alice!~al@10.0.0.1")
    user = hub.find_user("alice")
    assert user is not None and user.username == "~al" and user.connections == (transport,)
    assert session.receive_data(b"PING :x\r\n") is None
    assert transport.take()[-1].params == ["threadchat", "x"]
    # QUIT: the session says ERROR and gives the transport the reason to close with.
    assert session.receive_data(b"QUIT :bye\r\n") == "Quit: bye"
    assert transport.take()[-1].command == "ERROR"
    session.closed("Quit: bye")
    assert hub.find_user("alice") is None


def test_capabilities_choose_the_codec() -> None:
    hub = Hub()
    session, transport = open_session(hub)
    plain_key = session.codec.codec_key()
    session.receive_data(b"CAP LS 302\r\nCAP REQ :server-time\r\nNICK alice\r\nUSER a 0 * :A\r\n")
    session.receive_data(b"CAP END\r\n")
    assert "server-time" in session.caps
    assert session.codec.codec_key() != plain_key
    event = events.PrivateMessage(sender="bob", target="alice", text="hi", ts=1_795_608_000.0)
    data = transport.encode(event)
    assert data is not None and data.startswith(b"@time=2026-11-")


def test_other_protocols_users_are_told_apart_by_their_identity() -> None:
    # A user registered by another protocol gives no ident: IRC shows nick!nick@host and says
    # "native protocol", without knowing that protocol's connection class.
    hub = Hub()
    hub.register(MemoryTransport(), "bob", host="::1")
    session, transport = open_session(hub)
    session.receive_data(b"NICK alice\r\nUSER al 0 * :Alice\r\n")
    transport.take()
    session.receive_data(b"WHOIS bob\r\nWHOIS alice\r\n")
    whois = {(m.command, m.params[1]): m.params for m in transport.take()}
    assert whois[("311", "bob")][2:] == ["bob", "0::1", "*", "threadchat native user"]
    assert whois[("312", "bob")][-1] == "threadchat (native protocol)"
    assert whois[("311", "alice")][2:] == ["~al", "10.0.0.1", "*", "Alice"]
    assert whois[("312", "alice")][-1] == "threadchat (IRC)"
