"""Free text that no protocol can carry (lone surrogates, CR, LF) is refused at the hub, for
every field and from every protocol, and can never lock other users out or forge lines."""

from collections.abc import Callable, Iterator

import pytest
from conftest import JsonClient, LineClient
from test_irc import IrcClient

from threadchat.app.server import Server
from threadchat.core import events
from threadchat.core.hub import encode_contained
from threadchat.protocols.native import jsonlines

Connect = Callable[..., LineClient]
ConnectJson = Callable[..., JsonClient]

# Legal JSON (json.dumps writes it as the escape \ud800), but not encodable as UTF-8.
LONE_SURROGATE = "welcome \ud800"


@pytest.fixture
def irc(server: Server) -> Iterator[Callable[[str], IrcClient]]:
    clients: list[IrcClient] = []

    def open_client(nick: str) -> IrcClient:
        client = IrcClient(server.listener("irc").port)
        clients.append(client)
        client.register(nick)
        return client

    yield open_client
    for client in clients:
        client.close()


def test_a_topic_with_a_lone_surrogate_is_refused_and_the_lobby_stays_open(
    connect: Connect, connect_json: ConnectJson, irc: Callable[[str], IrcClient]
) -> None:
    mallory = connect_json("mallory")
    mallory.send_json(type="topic", room="lobby", topic="clean topic", ref=1)
    mallory.expect_event("ok", ref=1)
    mallory.send_json(type="topic", room="lobby", topic=LONE_SURROGATE, ref=2)
    assert mallory.expect_event("error", ref=2)["code"] == "bad_encoding"
    mallory.send_json(type="say", room="lobby", text=LONE_SURROGATE, ref=3)
    assert mallory.expect_event("error", ref=3)["code"] == "bad_encoding"

    # Everyone still gets into the lobby and sees the topic as it was.
    alice = connect("alice")
    bob = connect_json("bob")
    carol = irc("carol")
    carol.send("JOIN #lobby")
    assert carol.expect_msg("332").params[-1] == "clean topic"
    carol.expect_msg("366")
    mallory.send_json(type="say", room="lobby", text="still here")
    alice.expect("mallory: still here")
    bob.expect_event("message", text="still here")
    assert carol.expect_msg("PRIVMSG").params[-1] == "still here"


def lobby_of_three(
    connect: Connect, connect_json: ConnectJson, irc: Callable[[str], IrcClient]
) -> tuple[LineClient, IrcClient, JsonClient]:
    """alice (text), carol (IRC) and then mallory (JSON) in the lobby, each arrival seen."""
    alice = connect("alice")
    carol = irc("carol")
    carol.send("JOIN #lobby")
    carol.expect_msg("366")
    mallory = connect_json("mallory")
    alice.expect("--> mallory joined lobby")
    carol.expect_msg("JOIN", lambda m: m.source is not None and m.source.startswith("mallory!"))
    return alice, carol, mallory


def test_a_leave_reason_with_a_newline_is_refused(
    connect: Connect, connect_json: ConnectJson, irc: Callable[[str], IrcClient]
) -> None:
    alice, carol, mallory = lobby_of_three(connect, connect_json, irc)
    mallory.send_json(type="leave", room="lobby", reason="bye\n--- FORGED give password", ref=1)
    assert mallory.expect_event("error", ref=1)["code"] == "control_chars"
    mallory.send_json(type="leave", room="lobby", reason="bye", ref=2)
    mallory.expect_event("ok", ref=2)
    assert alice.expect("<-- mallory left lobby") == "<-- mallory left lobby (bye)"
    assert carol.expect_msg("PART").params == ["#lobby", "bye"]


def test_a_quit_reason_with_a_newline_shows_as_one_line_to_everyone(
    connect: Connect, connect_json: ConnectJson, irc: Callable[[str], IrcClient]
) -> None:
    alice, carol, mallory = lobby_of_three(connect, connect_json, irc)
    mallory.send_json(type="quit", reason="bye\n--- the server is shutting down FORGED")
    line = alice.expect("<-- mallory quit")
    assert "FORGED" in line  # mended into the one line, not a line of its own
    quit_message = carol.expect_msg("QUIT")
    assert "FORGED" in quit_message.params[-1]
    # Nobody is left behind as a ghost, and nothing forged follows.
    assert not [seen for seen in alice.quiet() if "FORGED" in seen]
    carol.send("NAMES #lobby")
    names_line = carol.expect_msg("353").params[-1]
    assert "mallory" not in names_line.split()


def test_an_event_one_codec_cannot_encode_is_skipped_for_that_codec_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The last line behind the hub's checks: the real JSON encoder fails on a lone surrogate,
    # and the fan-out's encode step turns that into "not sent" instead of an exception.
    event = events.TopicChanged(room="lobby", topic=LONE_SURROGATE, by="mallory")
    with pytest.raises(UnicodeEncodeError):
        jsonlines.encode_event(event)
    assert encode_contained(jsonlines.encode_event, event) is None
    assert "cannot encode TopicChanged" in caplog.text
