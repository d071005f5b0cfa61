"""Properties of the web port on real sockets: any bytes as an HTTP handshake, and any frames
after a WebSocket handshake, get a clear answer (an HTTP status, a close code) or a close,
never an internal error, and the other users go on chatting."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import pytest
import wsproto
from conftest import WAIT, LineClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_web import raw_websocket, web_port
from wsproto.events import CloseConnection

from threadchat.app.server import Server

# One server serves every example, as it serves every hostile client in turn; an example
# costs a connection or two, so fewer than the profile's default.
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Close codes the server may send for bad input; 1011 (internal error) is not among them.
# 1005 is how a client reads a close frame without a code: the server's echo of a client's
# own close that had none (RFC 6455 5.5.1: the reply echoes the code it received; 1005 itself
# is never put in a frame).
CLEAR_CLOSE_CODES = {1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009}

http_garbage = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda method, target, version, headers, tail: (
            f"{method} {target} HTTP/{version}\r\n".encode() + headers + b"\r\n\r\n" + tail
        ),
        st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "G\x00T"]),
        st.sampled_from(["/", "/ws", "/app.js", "/../etc/passwd", "*", "/%00"]),
        # HTTP/1.0 and 1.2 once raised in the reader thread (test_web.py), found by fuzzing.
        st.sampled_from(["1.1", "1.1", "1.0", "1.2", "2.0"]),
        st.lists(
            st.sampled_from(
                [
                    b"Host: 127.0.0.1",
                    b"Upgrade: websocket",
                    b"Connection: Upgrade",
                    b"Sec-WebSocket-Version: 13",
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    b"Sec-WebSocket-Protocol: threadchat.json",
                    b"Origin: http://evil.example",
                    b"Content-Length: 5",
                    b"Transfer-Encoding: chunked",
                    b"X: \xff\xfe",
                ]
            ),
            max_size=8,
        ).map(b"\r\n".join),
        st.binary(max_size=100),
    ),
)


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    """One WebSocket frame as a client might write it, well-formed or not."""
    fin = draw(st.booleans())
    opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB, 0xF]))
    masked = draw(st.sampled_from([True, True, True, False]))  # a client must mask
    payload = draw(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    else:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    if not masked:
        return head + payload
    key = draw(st.binary(min_size=4, max_size=4))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


frames = st.lists(frame(), max_size=6).map(b"".join) | st.binary(max_size=300)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded)."""
    got = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data
    raise AssertionError(f"not closed within {WAIT}s; got {got[:200]!r}")


def others_unaffected(henry: LineClient, caplog: pytest.LogCaptureFixture) -> None:
    assert "internal error" not in caplog.text
    assert "Traceback" not in caplog.text
    henry.send("/who")
    henry.expect("--- in lobby: henry")


def test_any_bytes_as_a_handshake_get_an_http_answer_or_a_close(
    server: Server, connect: Callable[..., LineClient], caplog: pytest.LogCaptureFixture
) -> None:
    henry = connect("henry")

    @EXAMPLES
    @given(request=http_garbage)
    def check(request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", web_port(server)), timeout=WAIT) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = read_until_closed(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
        others_unaffected(henry, caplog)

    check()


def test_any_frames_after_the_handshake_get_a_close_or_nothing(
    server: Server, connect: Callable[..., LineClient], caplog: pytest.LogCaptureFixture
) -> None:
    henry = connect("henry")

    @EXAMPLES
    @given(data=frames)
    # A masked close frame without a code (found by hypothesis on a fresh clone).
    @example(data=b"\x88\x80\x00\x00\x00\x00")
    def check(data: bytes) -> None:
        sock, client = raw_websocket(web_port(server))
        with sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = read_until_closed(sock)
        client.receive_data(answer)
        try:
            received = list(client.events())
        except wsproto.utilities.LocalProtocolError:
            received = []
        for event in received:
            if isinstance(event, CloseConnection):
                assert event.code in CLEAR_CLOSE_CODES, event
        others_unaffected(henry, caplog)

    check()
