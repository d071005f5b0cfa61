"""Fuzz the UDP datagram protocol: protocols/udp.py (envelope codec and both endpoints).

Each input is a datagram sent to a server that holds a registered session and a handshake
in progress, from the session's address, the handshake's or a stranger's, and then to a
connected client; both agreed to packed data envelopes ("es"), which either end takes from
anyone anyway. Checks: `decode` raises MalformedDatagram or nothing; no datagram makes an
endpoint raise; every envelope that decodes is written back by the encoders to one that
decodes the same. Run: python tests/fuzz/run.py udp
"""

import sys

import atheris
from budget import libfuzzer_argv

# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat"]):
    from threadchat.protocols import udp

SERVER = ("127.0.0.1", 7000)
SESSION = ("127.0.0.1", 40001)
PENDING = ("127.0.0.1", 40002)
STRANGER = ("127.0.0.1", 40003)


def exchange(
    server: udp.ServerEndpoint, client: udp.ClientEndpoint, addr: tuple, now: float
) -> None:
    """Carry datagrams between the two until neither has anything more to say."""
    outbox = [a.data for a in client.connect(now) if isinstance(a, udp.Send)]
    for _ in range(6):
        replies = [
            a.data for d in outbox for a in server.receive(d, addr, now) if isinstance(a, udp.Send)
        ]
        outbox = [
            a.data
            for d in replies
            for a in client.receive(d, SERVER, now)
            if isinstance(a, udp.Send)
        ]


def connected() -> tuple[udp.ServerEndpoint, udp.ClientEndpoint]:
    # Tokens are random in the server; here they are known, so that an input can carry the
    # session's ("token-1") or the handshake's ("token-2") and reach what only they reach,
    # and so that a crashing input crashes again when replayed.
    tokens = iter(["token-1", "token-2"])
    udp.new_token = lambda: next(tokens)
    unlimited = {"rate": 1e9, "burst": 1e9}
    server = udp.ServerEndpoint(
        rate_limiter=udp.RateLimiter(**unlimited), hello_limiter=udp.RateLimiter(**unlimited)
    )
    client = udp.ClientEndpoint("alice", SERVER, nonce="n-alice")
    exchange(server, client, SESSION, 0.0)
    assert server.has_session(SESSION) and client.state == "connected"
    # bob's hello has its cookie and got an accept; his first token-bearing datagram is lost.
    bob = udp.ClientEndpoint("bob", SERVER, nonce="n-bob")
    (hello,) = bob.connect(0.0)
    (retry,) = server.receive(hello.data, PENDING, 0.0)
    (with_cookie,) = bob.receive(retry.data, SERVER, 0.0)
    server.receive(with_cookie.data, PENDING, 0.0)
    assert server.pending_handshakes() == 1
    return server, client


def reencoded(envelope: udp.Envelope) -> bytes | None:
    """The envelope as the encoders write it (None for a hello: it is padded)."""
    match envelope.kind:
        case "data":
            return udp.encode_data_events(
                envelope.token, envelope.seq, envelope.ack, envelope.events
            )
        case "ack":
            return udp.encode_ack(envelope.token, envelope.ack, envelope.sacks)
        case "keepalive":
            return udp.encode_keepalive(envelope.token, envelope.ack)
        case "bye":
            return udp.encode_bye(envelope.token, envelope.reason or "")
        case "retry":
            return udp.encode_retry(envelope.nonce, envelope.cookie)
        case "accept":
            return udp.encode_accept(envelope.nonce, envelope.token, envelope.pack)
    return None


def test_one_input(data: bytes) -> None:
    # Byte 0: who sends it; then the datagram.
    addr = (SESSION, PENDING, STRANGER)[data[0] % 3 if data else 0]
    datagram = data[1:]
    try:
        envelope = udp.decode(datagram)
    except udp.MalformedDatagram:
        envelope = None
    if envelope is not None:
        try:
            again = reencoded(envelope)
        except UnicodeEncodeError:
            # A lone surrogate in the event (JSON's \ud800): it is carried as it came to the
            # native schema, which answers the user with a clear error, and never written
            # back. Only the envelope's own strings must be valid (`decode` checks them).
            again = None
        if again is not None and len(again) <= udp.MAX_DATAGRAM_SIZE:
            assert udp.decode(again) == envelope, f"{envelope!r} changed on the wire"
    server, client = connected()
    server.receive(datagram, addr, 1.0)
    server.poll(2.0)
    client.receive(datagram, SERVER, 1.0)
    client.poll(2.0)


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
