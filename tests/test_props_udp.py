"""Properties of the UDP datagram protocol (protocols/udp.py): any datagram is an envelope or
a MalformedDatagram, every envelope the endpoints write decodes to what was written, and no
datagram, from a stranger, a handshake in progress or a session's own address, makes an
endpoint raise."""

import itertools
import json
from typing import Any

import pytest
from hostile_input import hostile_bytes, hostile_text, json_values
from hypothesis import given
from hypothesis import strategies as st
from test_udp_protocol import CLIENT, OTHER, SERVER, handshake, sends, unlimited

from threadchat.protocols import udp
from threadchat.protocols.udp import (
    ClientEndpoint,
    Envelope,
    MalformedDatagram,
    ReliableChannel,
    ServerEndpoint,
)

# Strings an endpoint writes into envelopes: what it chose (tokens, nonces, cookies) or a
# reason it was given; encodable as UTF-8, as every string it writes is.
short_strings = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64)
seqs = st.integers(0, udp.MAX_SEQ)
event_dicts = st.dictionaries(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    json_values.filter(lambda value: _utf8(value)),
    max_size=4,
)


def _utf8(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@given(hostile_bytes)
def test_any_datagram_decodes_or_is_malformed(data: bytes) -> None:
    try:
        envelope = udp.decode(data)
    except MalformedDatagram:
        return
    assert envelope.kind in udp.KINDS


# Envelope-shaped JSON reaches the checks behind the JSON parser; random bytes rarely do.
envelope_objects = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, True, "1"]), "k": st.sampled_from([*udp.KINDS, "x"])},
    optional={
        key: st.one_of(json_values, hostile_text, seqs, st.lists(seqs, max_size=40))
        for key in ("t", "c", "ck", "r", "s", "a", "sa", "e", "p", "pk")
    }
    # Packed events: lists of objects (too many, too few, not all objects) and anything else.
    | {
        "es": st.one_of(
            st.lists(st.dictionaries(st.text(max_size=4), json_values, max_size=3), max_size=40),
            st.lists(json_values, max_size=4),
            json_values,
        )
    },
)


@given(envelope_objects, st.booleans())
def test_any_envelope_shaped_datagram_decodes_or_is_malformed(
    obj: dict[str, Any], ascii_only: bool
) -> None:
    try:
        data = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return
    try:
        envelope = udp.decode(data)
    except MalformedDatagram:
        return
    for text in (envelope.token, envelope.nonce, envelope.cookie, envelope.reason):
        if text is not None:
            text.encode("utf-8")  # a field the endpoints compare and log is valid Unicode
    if envelope.kind == "data":
        # Events to hand over, each an object, as many as one envelope may carry.
        assert 1 <= len(envelope.events) <= udp.MAX_PACKED_EVENTS
        assert all(isinstance(event, dict) for event in envelope.events)
    else:
        assert envelope.events == ()


@given(short_strings, seqs, seqs, event_dicts)
def test_a_data_datagram_decodes_to_what_was_sent(
    token: str, seq: int, ack: int, event: dict[str, Any]
) -> None:
    seq = max(seq, 1)
    data = udp.encode_data(token, seq, ack, event)
    if len(data) > udp.MAX_DATAGRAM_SIZE:
        return
    assert udp.decode(data) == Envelope("data", token=token, seq=seq, ack=ack, events=(event,))
    encoded = udp.EncodedEvent(
        json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert udp.encode_data(token, seq, ack, encoded) == data
    assert udp.encode_data_events(token, seq, ack, [encoded]) == data


@given(
    short_strings,
    seqs,
    seqs,
    st.lists(event_dicts, min_size=1, max_size=udp.MAX_PACKED_EVENTS),
    st.booleans(),
)
def test_a_packed_data_datagram_decodes_to_what_was_sent(
    token: str, seq: int, ack: int, events: list[dict[str, Any]], as_bytes: bool
) -> None:
    seq = max(seq, 1)
    if as_bytes:
        # The server packs events it encoded once for everyone: the same bytes either way.
        out: list[udp.OutEvent] = [
            udp.EncodedEvent(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode())
            for e in events
        ]
    else:
        out = list(events)
    data = udp.encode_data_events(token, seq, ack, out)
    assert data == udp.encode_data_events(token, seq, ack, events)
    if len(data) > udp.MAX_DATAGRAM_SIZE:
        return
    assert udp.decode(data) == Envelope("data", token=token, seq=seq, ack=ack, events=tuple(events))


@given(short_strings, seqs, st.lists(st.integers(1, udp.MAX_SEQ), max_size=udp.MAX_SACKS))
def test_acks_and_keepalives_decode_to_what_was_sent(
    token: str, ack: int, sacks: list[int]
) -> None:
    assert udp.decode(udp.encode_ack(token, ack, sacks)) == Envelope(
        "ack", token=token, ack=ack, sacks=tuple(sacks)
    )
    assert udp.decode(udp.encode_keepalive(token, ack)) == Envelope(
        "keepalive", token=token, ack=ack
    )


@given(short_strings, short_strings, st.text(st.characters(exclude_categories=["Cs"])))
def test_handshake_and_bye_datagrams_decode_to_what_was_sent(
    nonce: str, secret: str, reason: str
) -> None:
    assert udp.decode(udp.encode_retry(nonce, secret)) == Envelope(
        "retry", nonce=nonce, cookie=secret
    )
    assert udp.decode(udp.encode_accept(nonce, secret)) == Envelope(
        "accept", token=secret, nonce=nonce
    )
    assert udp.decode(udp.encode_accept(nonce, secret, pack=True)) == Envelope(
        "accept", token=secret, nonce=nonce, pack=True
    )
    reason = reason[: udp.MAX_REASON_LENGTH]
    assert udp.decode(udp.encode_bye(secret, reason)) == Envelope(
        "bye", token=secret, reason=reason or None
    )
    name = secret[:20]
    hello = udp.encode_hello(name, nonce, 7, secret)
    assert len(hello) == udp.MIN_HELLO_SIZE
    assert udp.decode(hello) == Envelope(
        "hello", event={"type": "hello", "name": name, "ref": 7}, nonce=nonce, cookie=secret
    )
    offering = udp.encode_hello(name, nonce, 7, secret, pack=True)
    assert len(offering) == udp.MIN_HELLO_SIZE
    assert udp.decode(offering) == Envelope(
        "hello",
        event={"type": "hello", "name": name, "ref": 7},
        nonce=nonce,
        cookie=secret,
        pack=True,
    )


@given(
    st.fixed_dictionaries(
        {"type": st.just("message"), "room": st.just("lobby"), "from": st.just("alice")}
    ),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=4000),
)
def test_a_long_text_is_cut_into_datagrams_that_join_back_to_it(
    head: dict[str, Any], text: str
) -> None:
    pieces = udp.fit_event({**head, "text": text, "id": 12, "ts": "2026-12-07T00:00:00.000Z"})
    assert pieces and all(udp.event_fits(piece) for piece in pieces)
    assert "".join(piece["text"] for piece in pieces) == text
    assert [piece.get("more", False) for piece in pieces] == [True] * (len(pieces) - 1) + [False]


def server_with_everyone() -> tuple[ServerEndpoint, str]:
    """A server with a registered session at CLIENT and a handshake in progress at OTHER;
    the session's token."""
    server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited())
    client, _ = handshake(server)
    assert server.has_session(CLIENT) and client.token is not None
    other = ClientEndpoint("bob", SERVER)
    (hello,) = sends(other.connect(0.0))
    (retry,) = sends(server.receive(hello.data, OTHER, 0.0))
    (with_cookie,) = sends(other.receive(retry.data, SERVER, 0.0))
    server.receive(with_cookie.data, OTHER, 0.0)
    assert server.pending_handshakes() == 1
    return server, client.token


def hostile_datagrams(token: str) -> st.SearchStrategy[bytes]:
    """Raw bytes, and envelopes whose token, nonce and other fields are the session's token,
    hostile text (lone surrogates included, spelt as JSON escapes or raw) or any JSON."""
    fields = st.one_of(st.just(token), hostile_text, seqs, json_values)
    secrets = st.one_of(st.just(token), hostile_text, hostile_text.map(lambda text: token + text))
    envelopes = st.one_of(
        st.fixed_dictionaries(
            {"v": st.just(1), "k": st.sampled_from(sorted(udp.KINDS))},
            optional={
                key: fields for key in ("t", "c", "ck", "r", "s", "a", "sa", "e", "es", "p", "pk")
            },
        ),
        # Well formed but for the strings: what passes the checks that come first.
        st.fixed_dictionaries(
            {
                "v": st.just(1),
                "k": st.sampled_from(["data", "ack", "keepalive", "bye"]),
                "t": secrets,
                "s": st.integers(1, 3),
                "a": st.integers(0, 3),
                "e": st.just({"type": "ping"}),
            },
            optional={"r": secrets},
        ),
        # Packed, well formed: what reaches the hand-over of several events.
        st.fixed_dictionaries(
            {
                "v": st.just(1),
                "k": st.just("data"),
                "t": st.just(token),
                "s": st.integers(1, 3),
                "a": st.integers(0, 3),
                "es": st.lists(st.just({"type": "ping"}), min_size=1, max_size=40),
            },
        ),
    )
    return st.one_of(
        hostile_bytes,
        envelopes.map(lambda obj: json.dumps(obj).encode()),
        envelopes.map(
            lambda obj: json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
    )


@given(st.data())
def test_no_datagram_makes_the_server_raise(data: st.DataObject) -> None:
    server, token = server_with_everyone()
    for now in (1.0, 2.0, 3.0):
        datagram = data.draw(hostile_datagrams(token))
        addr = data.draw(st.sampled_from([CLIENT, OTHER, ("127.0.0.1", 40003)]))
        for action in server.receive(datagram, addr, now):
            assert isinstance(action, udp.Action)
        server.poll(now)


@given(st.data())
def test_no_datagram_makes_the_client_raise(data: st.DataObject) -> None:
    server = ServerEndpoint(rate_limiter=unlimited(), hello_limiter=unlimited())
    client, _ = handshake(server)
    assert client.token is not None
    for now in (1.0, 2.0):
        for datagram in data.draw(st.lists(hostile_datagrams(client.token), max_size=4)):
            client.receive(datagram, SERVER, now)
        client.poll(now)


def test_a_token_with_a_lone_surrogate_is_malformed_not_a_crash() -> None:
    # Found by the property above: JSON may spell a lone surrogate (\ud800), and comparing
    # such a token with the session's in constant time raised UnicodeEncodeError out of
    # ServerEndpoint.receive, which promises never to raise on bad input.
    server, _ = server_with_everyone()
    forged = json.dumps({"v": 1, "k": "ack", "t": "\ud800", "a": 0}).encode()
    for addr in (CLIENT, OTHER):
        (rejected,) = server.receive(forged, addr, 1.0)
        assert isinstance(rejected, udp.Rejected)
    # A hello from the session's address is compared with the session's nonce.
    hello = json.loads(udp.encode_hello("mallory", "n"))
    hello["c"] = "\udfff"
    hello["p"] = ""
    unpadded = len(json.dumps(hello, separators=(",", ":")))
    hello["p"] = "." * (udp.MIN_HELLO_SIZE - unpadded)
    datagram = json.dumps(hello, separators=(",", ":")).encode()
    assert len(datagram) == udp.MIN_HELLO_SIZE
    (rejected,) = server.receive(datagram, CLIENT, 1.0)
    assert isinstance(rejected, udp.Rejected)
    assert server.has_session(CLIENT)


@given(
    st.lists(st.integers(0, 10**6).map(lambda n: {"type": "say", "n": n}), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
    st.floats(0.0, 0.6),
    st.booleans(),
    st.sampled_from([0.0, udp.ACK_DELAY]),
    st.integers(1, 8),
)
def test_the_channel_delivers_every_event_once_and_in_order_over_any_loss(
    sent: list[dict[str, Any]], chance: Any, loss: float, pack: bool, ack_delay: float, burst: int
) -> None:
    # The link drops, duplicates and reorders datagrams (both ways) for its first 20 s, then
    # heals: what arrives must be what was sent, each once, in order. Events go out `burst`
    # at a time, packed or not; the receiver acknowledges at once or delays its acks.
    options = {"give_up_after": 1e9}
    sender = ReliableChannel("t", pack=pack, send_window=8, **options)
    receiver = ReliableChannel("t", ack_delay=ack_delay, **options)
    in_flight: list[tuple[float, int, ReliableChannel, bytes]] = []
    order = itertools.count()  # ties in arrival time keep the order of sending

    def post(to: ReliableChannel, datagrams: list[bytes], now: float) -> None:
        for data in datagrams:
            lossy = now < 20.0
            if lossy and chance.random() < loss:
                continue
            for _ in range(2 if lossy and chance.random() < loss / 2 else 1):
                delay = chance.uniform(0.001, 0.3) if lossy else 0.01
                in_flight.append((now + delay, next(order), to, data))

    delivered: list[dict[str, Any]] = []
    now = 0.0
    for start in range(0, len(sent), burst):
        post(receiver, sender.send_many(sent[start : start + burst], now), now)
    while len(delivered) < len(sent):
        assert now < 300.0, f"stuck: {len(delivered)} of {len(sent)} delivered"
        in_flight.sort()
        due = [item for item in in_flight if item[0] <= now]
        in_flight[:] = [item for item in in_flight if item[0] > now]
        for _, _, to, data in due:
            got, replies = to.receive(udp.decode(data), now)
            if to is receiver:
                delivered += got
            post(sender if to is receiver else receiver, replies, now)
        post(receiver, sender.poll(now), now)
        post(sender, receiver.poll(now), now)  # delayed acks
        now += 0.05
    assert delivered == sent


def test_a_number_too_large_for_a_float_is_malformed() -> None:
    # Found while writing the fuzz harness: 1e400 is valid JSON and became infinity, which
    # the encoders then write as Infinity, not JSON (NaN and Infinity themselves were refused).
    data = json.dumps({"v": 1, "k": "data", "t": "x", "s": 1, "a": 0, "e": {"n": 1}})
    with pytest.raises(MalformedDatagram):
        udp.decode(data.replace('"n": 1', '"n": 1e400').encode())
    assert udp.decode(data.replace('"n": 1', '"n": 1.5e300').encode()).events == ({"n": 1.5e300},)
