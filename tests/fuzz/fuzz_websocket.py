"""Fuzz the web port's sans-I/O protocol: protocols/web/ (HTTP with h11, then WebSocket
framing with websockets' ServerProtocol, as the transport drives them).

Byte 0 picks the read size and the mode; the rest is the stream:

- mode "http": raw bytes to `HttpEndpoint`, as a browser or an attacker would send them, and
  past an upgrade the rest to the `WebSocketLink`;
- mode "frames": a valid handshake first, then the bytes as WebSocket frames (most inputs
  reach the frame parser at once);
- mode "messages": the bytes cut into messages that a real client library (wsproto, masked
  as a client must) frames; the link must give back exactly those messages.

Checks, for any input: nothing raises; the endpoint answers only in HTTP responses; a link
gives whole messages (text as str, binary as bytes, none over the size bound) and at most one
close, last; its items are the same however the stream is cut.
Run: python tests/fuzz/run.py websocket
"""

import sys

import atheris
from budget import libfuzzer_argv

# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat", "h11", "websockets"]):
    from wsproto.frame_protocol import FrameProtocol

    from threadchat.protocols.web import websocket
    from threadchat.protocols.web.endpoint import HttpEndpoint, OriginPolicy
    from threadchat.protocols.web.static import StaticFiles
    from threadchat.protocols.web.websocket import CloseIn, MessageIn, Refused

MODES = ("http", "frames", "messages")
# Small, so that "message too big" (1009) is reached by short inputs.
MAX_MESSAGE = 256
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
SITE = StaticFiles.load(None)
ORIGINS = OriginPolicy()


def reads_of(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)] or [b""]


def drive(reads: list[bytes]) -> list[object]:
    """What the transport would do with these reads: every response, upgrade and item."""
    endpoint = HttpEndpoint(SITE, ORIGINS, "fuzz")
    link = None
    seen: list[object] = []
    for read in reads:
        if link is None:
            step = endpoint.receive_data(read)
            if step.send:
                assert step.send.startswith(b"HTTP/1.1 "), f"not HTTP: {step.send[:80]!r}"
            if step.upgrade is None:
                if step.close is not None:
                    seen.append(("closed", step.send[:12]))
                    return seen
                continue
            result = websocket.accept(step.upgrade.request, step.upgrade.subprotocol, MAX_MESSAGE)
            if isinstance(result, Refused):
                assert 400 <= result.status < 600, result
                endpoint.refuse(result.status, result.text, result.headers)
                seen.append(("refused", result.status))
                return seen
            link, response = result
            assert response.startswith(b"HTTP/1.1 101 "), response[:80]
            read = step.upgrade.trailing
        items, replies = link.receive_data(read)
        for n, item in enumerate(items):
            assert isinstance(item, MessageIn | CloseIn), item
            if isinstance(item, MessageIn):
                assert isinstance(item.payload, str | bytes)
                assert len(item.payload) <= MAX_MESSAGE, len(item.payload)
            else:
                assert n == len(items) - 1, "items after a close"
                assert not any(isinstance(s, CloseIn) for s in seen), "two closes"
        assert isinstance(replies, bytes)
        seen += items
    return seen


def same_however_cut(items: list[object]) -> list[object]:
    """What may not depend on the reads: every message, and whether the link ended. Not who
    ended it or with which code: with two faults in the stream (invalid UTF-8 in a message,
    then a broken frame or the peer's close), the library judges what follows the message
    as it parses, which may be before the link has decoded the message. Either verdict is
    true, and no message after the first fault is given in either case."""
    return [isinstance(item, CloseIn) or item for item in items]


def client_frames(data: bytes) -> tuple[bytes, list[str | bytes]]:
    """Messages from the bytes (split at 0xff; odd ones binary), framed by a real client."""
    client = FrameProtocol(client=True, extensions=[])
    framed, messages = b"", []
    for n, part in enumerate(data.split(b"\xff")):
        message: str | bytes = part if n % 2 else part.decode("utf-8", "replace")
        if len(message) > MAX_MESSAGE // 4:
            continue  # under the bound however text encodes
        framed += client.send_data(message, fin=True)
        messages.append(message)
    return framed, messages


def test_one_input(data: bytes) -> None:
    choice = data[0] if data else 0
    mode = MODES[choice % len(MODES)]
    size = choice // len(MODES) % 64 + 1
    stream = data[1:]
    if mode == "http":
        # How HTTP answers a broken request may depend on where the reads fell (h11 judges
        # what it has); past an upgrade, the link's items may not.
        whole = drive([stream])
        cut = drive(reads_of(stream, size))
        if not any(isinstance(item, tuple) for item in whole + cut):
            whole, cut = same_however_cut(whole), same_however_cut(cut)
            assert cut == whole, f"the link's items depend on the reads: {cut!r} != {whole!r}"
        return
    if mode == "frames":
        whole = same_however_cut(drive([HANDSHAKE + stream]))
        cut = same_however_cut(drive([HANDSHAKE, *reads_of(stream, size)]))
        assert cut == whole, f"the link's items depend on the reads: {cut!r} != {whole!r}"
        return
    framed, messages = client_frames(stream)
    got = drive([HANDSHAKE, *reads_of(framed, size)])
    assert got == [MessageIn(m) for m in messages], f"{messages!r} came back as {got!r}"


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
