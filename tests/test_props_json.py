"""Properties of the native JSON codec and request parsing (protocols/native/jsonlines.py,
requests.py): any line gives a request, requests survive the trip through JSON, and an event
is always exactly one line."""

import json

import pytest
from hostile_input import (
    any_event,
    hostile_text,
    instances,
    json_request_objects,
    json_requests,
    json_values,
    utf8_text,
)
from hypothesis import given
from hypothesis import strategies as st

from threadchat.core import events, names
from threadchat.protocols.native import jsonlines, requests
from threadchat.protocols.native.line import LineProtocol


@given(st.one_of(hostile_text, json_values.map(json.dumps)))
def test_any_line_gives_a_request(line: str) -> None:
    assert isinstance(jsonlines.parse_line(line), requests.Request)


@given(st.one_of(json_request_objects, json_values))
def test_any_json_value_gives_a_request_or_a_clear_refusal(value: object) -> None:
    request = jsonlines.parse_request(value)
    assert isinstance(request, requests.Request)
    if isinstance(request, requests.Invalid):
        assert request.code in {"bad_request", "unknown_type"}
        # The refusal reaches its client: the session makes the message sendable, and the
        # ref it echoes can be written.
        error = events.Error(request.code, names.sendable(request.message), ref=request.ref)
        assert jsonlines.encode_event(error) is not None
    if isinstance(request, requests.ClientPing):
        assert jsonlines.encode_event(events.Pong(token=request.token)) is not None


def test_what_a_reply_echoes_cannot_hold_a_lone_surrogate() -> None:
    # Found by the hub's property test: a ref or a ping token of "\ud800" (legal in JSON)
    # made every reply to that request unsendable: the client got no answer at all, and the
    # server logged a traceback for each such line.
    say = jsonlines.parse_line('{"type":"say","text":"hi","ref":"\\ud800"}')
    assert say == requests.Invalid("bad_request", '"ref" must be valid Unicode')
    ping = jsonlines.parse_line('{"type":"ping","token":"\\udfff","ref":1}')
    assert isinstance(ping, requests.Invalid) and ping.ref == 1
    assert jsonlines.parse_line('{"type":"ping","token":"caf\\u00e9"}') == requests.ClientPing(
        token="café"
    )


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    for opener in "[{":
        line = '{"type":"say","text":' + opener * 100_000
        assert isinstance(jsonlines.parse_line(line), requests.Invalid)


@given(json_requests())
def test_a_request_survives_the_trip_through_json(request: requests.Request) -> None:
    body = jsonlines.request_to_dict(request)
    assert body is not None
    # As a client writes it (json.dumps escapes what is not ASCII, lone surrogates included),
    # read back by the server's own framing.
    line = json.dumps(body).encode() + b"\n"
    protocol = LineProtocol(max_line=1 << 20)
    assert list(protocol.receive_data(line)) == [request]


@given(any_event(utf8_text))
def test_an_event_is_exactly_one_json_line(event: events.Event) -> None:
    data = jsonlines.encode_event(event)
    if data is None:
        return
    # One line: JSON escapes every control character, so no CR, LF or NUL is left raw, and
    # a reader splitting on LF gets the whole event.
    assert data.endswith(b"\n")
    assert not any(byte in data[:-1] for byte in b"\r\n\0")
    assert json.loads(data) == json.loads(json.dumps(jsonlines.event_to_dict(event)))


@given(
    st.one_of(instances(events.RoomMessage, utf8_text), instances(events.PrivateMessage, utf8_text))
)
def test_a_message_reads_back_as_it_was_sent(message: events.RoomMessage) -> None:
    data = jsonlines.encode_event(message)
    assert data is not None
    decoded = json.loads(data)
    assert decoded["text"] == message.text
    assert decoded["from"] == message.sender
    assert decoded["id"] == message.id
    # The shortcut for messages writes exactly what the general encoder does.
    assert data == jsonlines._encode_event_general(message)


@given(instances(events.TopicChanged, hostile_text))
def test_an_event_with_a_lone_surrogate_fails_its_encoder_alone(event: events.TopicChanged) -> None:
    # The hub refuses such text (core/names.py); were one to slip through, the encoder raises
    # (the fan-out's encode_contained then skips that codec) rather than writing bad UTF-8.
    fields = event.topic + event.by + event.room
    if any("\ud800" <= ch <= "\udfff" for ch in fields):
        with pytest.raises(UnicodeEncodeError):
            jsonlines.encode_event(event)
        return
    data = jsonlines.encode_event(event)
    assert data is not None
    data.decode("utf-8")
