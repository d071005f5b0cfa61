"""The person is separate from their connections (core level, no sockets).

A `User` holds one or more connections; every delivery reaches each of them, and a message
is kept only from the connection it came from (the person's other connections get its
`own` copy). These tests drive the hub with stand-in connections that record the bytes the
hub queues for them, served both ways the hub serves connections: through the fast fan-out
groups (`direct_queue`) and one by one (`send_bytes`); tests/test_devices.py does the same
with real clients of every protocol.
"""

from collections.abc import Hashable

import pytest

from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.hub import Hub, HubError, RoomRelay, User

ROOM = "den"


class Codec:
    """Encodes an event as its index in a shared list, so a test reads back the very
    events each connection was sent, whatever protocol would show them."""

    def __init__(self) -> None:
        self.sent: list[Event] = []

    def encode(self, event: Event) -> bytes:
        self.sent.append(event)
        return b"%d\n" % (len(self.sent) - 1)

    def decode(self, data: bytes) -> list[Event]:
        return [self.sent[int(index)] for index in data.split()]


class Recorder:
    """A stand-in `Connection` keeping what the hub queues for it; `direct` chooses whether
    it offers the hub its queue (the fast fan-out) or is served through `send_bytes`."""

    def __init__(self, codec: Codec, *, direct: bool) -> None:
        self.codec = codec
        self.direct = direct
        self.queue: list[bytes] = []

    def codec_key(self) -> Hashable:
        return "events"

    def encode(self, event: Event) -> bytes | None:
        return self.codec.encode(event)

    def send_bytes(self, data: bytes) -> None:
        self.queue.append(data)

    def direct_queue(self) -> "tuple[list[bytes], Recorder] | None":
        return (self.queue, self) if self.direct else None

    def flush(self) -> None:
        """The data stays queued: the test reads it with `take`."""

    def take(self) -> list[Event]:
        """The events queued for this connection since the last take."""
        data = b"".join(self.queue)
        self.queue.clear()
        return self.codec.decode(data)


def texts(received: list[Event]) -> list[str]:
    return [e.text for e in received if isinstance(e, events.RoomMessage | events.PrivateMessage)]


class People:
    """alice on two connections (`a1` first, `a2` attached after she joined, so the room's
    groups must be rebuilt), bob on one (`b1`); both in ROOM, every queue emptied."""

    def __init__(self, hub: Hub, directs: tuple[bool, bool, bool]) -> None:
        codec = Codec()
        self.a1, self.a2, self.b1 = (Recorder(codec, direct=d) for d in directs)
        self.alice = hub.register(self.a1, "alice")
        hub.join(self.alice, ROOM)
        hub.attach(self.alice, self.a2)
        self.bob = hub.register(self.b1, "bob")
        hub.join(self.bob, ROOM)
        for conn in (self.a1, self.a2, self.b1):
            conn.take()


# Fast fan-out for all, one by one for all, and alice's two connections served differently.
SERVING = pytest.mark.parametrize(
    "directs",
    [(True, True, True), (False, False, False), (True, False, True)],
    ids=["grouped", "one-by-one", "mixed"],
)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@SERVING
def test_each_connection_of_a_person_receives_room_and_private_events_once(
    hub: Hub, directs: tuple[bool, bool, bool]
) -> None:
    people = People(hub, directs)
    assert people.alice.connections == (people.a1, people.a2)
    hub.set_topic(people.alice, ROOM, "tea")  # a state event: every connection sees it
    hub.say(people.bob, ROOM, "hello both")
    hub.send_private(people.bob, "alice", "psst")
    for conn in (people.a1, people.a2):
        received = conn.take()
        assert [type(e) for e in received] == [
            events.TopicChanged,
            events.RoomMessage,
            events.PrivateMessage,
        ]
        assert texts(received) == ["hello both", "psst"]
    assert [type(e) for e in people.b1.take()] == [events.TopicChanged]


@SERVING
def test_a_message_from_one_connection_reaches_the_persons_others_but_not_itself(
    hub: Hub, directs: tuple[bool, bool, bool]
) -> None:
    people = People(hub, directs)
    hub.say(people.alice, ROOM, "from the laptop", origin=people.a1)
    hub.send_private(people.alice, "bob", "phone to bob", origin=people.a2)
    assert texts(people.a1.take()) == ["phone to bob"]
    assert texts(people.a2.take()) == ["from the laptop"]
    assert texts(people.b1.take()) == ["from the laptop", "phone to bob"]

    # A run of stored messages from both of alice's connections and bob's (the history
    # relay's path): each connection gets the run without what it sent itself, in order.
    sent = [("a1", "one"), ("b1", "two"), ("a2", "three"), ("a1", "four")]
    conns = {"a1": people.a1, "a2": people.a2, "b1": people.b1}
    owner = {"a1": people.alice, "a2": people.alice, "b1": people.bob}
    hub.relay_room_run(
        [
            (RoomRelay(hub, owner[c], ROOM, text, events.TEXT, None, conns[c]), {})
            for c, text in sent
        ]
    )
    for name, conn in conns.items():
        assert texts(conn.take()) == [text for c, text in sent if c != name]


def test_a_person_with_several_connections_must_say_which_one_sent(hub: Hub) -> None:
    people = People(hub, (True, True, True))
    with pytest.raises(ValueError, match="which one sent"):
        hub.say(people.alice, ROOM, "from where?")
    assert people.b1.take() == []
    # With one connection the hub knows: bob's own message is kept from him alone.
    hub.say(people.bob, ROOM, "from bob")
    assert texts(people.a1.take()) == texts(people.a2.take()) == ["from bob"]
    assert people.b1.take() == []


@SERVING
def test_detaching_connections_quits_only_with_the_last(
    hub: Hub, directs: tuple[bool, bool, bool]
) -> None:
    people = People(hub, directs)
    assert hub.detach(people.alice, people.a1, "laptop closed") is False
    assert hub.find_user("alice") is people.alice
    assert people.alice.connections == (people.a2,)
    assert hub.members(ROOM) == (ROOM, ("alice", "bob"))
    assert people.b1.take() == []  # no quit, no part
    hub.say(people.bob, ROOM, "still there?")
    assert people.a1.take() == []  # a detached connection gets nothing more
    assert texts(people.a2.take()) == ["still there?"]
    hub.say(people.alice, ROOM, "yes")  # one connection left: it is the origin
    assert texts(people.b1.take()) == ["yes"]
    assert people.a2.take() == []

    assert hub.detach(people.alice, people.a1, "again") is False  # not attached any more
    assert hub.detach(people.alice, people.a2, "phone off") is True
    [quit_event] = people.b1.take()
    assert isinstance(quit_event, events.Quit)
    assert (quit_event.nick, quit_event.reason) == ("alice", "phone off")
    assert hub.find_user("alice") is None
    assert people.alice.connections == ()
    assert hub.members(ROOM) == (ROOM, ("bob",))


def test_a_connection_attaches_only_to_someone_still_here(hub: Hub) -> None:
    codec = Codec()
    first, second = Recorder(codec, direct=True), Recorder(codec, direct=True)
    alice = hub.register(first, "alice")
    hub.attach(alice, first)  # already attached: nothing changes
    assert alice.connections == (first,)
    hub.unregister(alice, "bye")
    with pytest.raises(HubError) as refused:
        hub.attach(alice, second)
    assert refused.value.code == "no_such_nick"
    assert alice.connections == ()
    stranger = User(nick="alice", connections=(second,))
    with pytest.raises(HubError):
        hub.attach(stranger, first)  # the name is free, but this person never registered


@SERVING
def test_the_copy_a_persons_other_connections_get_is_marked_as_their_own(
    hub: Hub, directs: tuple[bool, bool, bool]
) -> None:
    people = People(hub, directs)
    conns = {"a1": people.a1, "a2": people.a2, "b1": people.b1}
    owner = {"a1": people.alice, "a2": people.alice, "b1": people.bob}
    sent = [("b1", "one"), ("a1", "two"), ("b1", "three"), ("a2", "four")]
    hub.relay_room_run(
        [
            (RoomRelay(hub, owner[c], ROOM, text, events.TEXT, None, conns[c]), {})
            for c, text in sent
        ]
    )
    marked = {
        name: [(e.text, e.own) for e in conn.take() if isinstance(e, events.RoomMessage)]
        for name, conn in conns.items()
    }
    assert marked["a1"] == [("one", False), ("three", False), ("four", True)]
    assert marked["a2"] == [("one", False), ("two", True), ("three", False)]
    assert marked["b1"] == [("two", False), ("four", False)]
    hub.send_private(people.alice, "bob", "psst", origin=people.a1)
    assert [(e.text, e.own) for e in people.a2.take()] == [("psst", True)]
    assert [(e.text, e.own) for e in people.b1.take()] == [("psst", False)]
