"""TLS on the TCP listeners: a test CA, self-signed quick start, plain clients, slow handshakes."""

import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from conftest import WAIT, JsonClient

from threadchat.app.server import Server, StartupError
from threadchat.transports import tls


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(make_server: Callable[..., Server], ca: trustme.CA, tmp_path: Path) -> Server:
    combined = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(combined)
    )
    return make_server(tls_cert=str(combined))


def tls_client(port: int, context: ssl.SSLContext) -> JsonClient:
    # A plain SSLSocket: the test client reads and writes from one thread only.
    client = JsonClient(port)
    client.sock = context.wrap_socket(client.sock, server_hostname="127.0.0.1")
    return client


def trusting(ca: trustme.CA, tmp_path: Path) -> ssl.SSLContext:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return tls.client_context(cafile=str(ca_file))


def hello(client: JsonClient, name: str) -> JsonClient:
    client.send_json(type="hello", name=name)
    client.expect_event("who", room="lobby")
    return client


def test_chat_over_tls(tls_server: Server, ca: trustme.CA, tmp_path: Path) -> None:
    port = tls_server.listener("line").port
    context = trusting(ca, tmp_path)
    alice = hello(tls_client(port, context), "alice")
    bob = hello(tls_client(port, context), "bob")
    assert isinstance(alice.sock, ssl.SSLSocket) and alice.sock.version() in ("TLSv1.2", "TLSv1.3")
    alice.send_json(type="say", room="lobby", text="over tls")
    assert bob.expect_event("message", text="over tls")["from"] == "alice"
    # A burst bigger than socket buffers goes through the writer thread in order.
    lines = [f"line {i} " + "x" * 200 for i in range(300)]
    for text in lines:
        alice.send_json(type="say", room="lobby", text=text)
    received = [bob.expect_event("message")["text"] for _ in lines]
    assert received == lines
    # One write of many lines: the server reads it in several recv calls, some non-blocking.
    alice.send(*(json.dumps({"type": "say", "room": "lobby", "text": t}) for t in lines))
    received = [bob.expect_event("message")["text"] for _ in lines]
    assert received == lines


def test_plain_tcp_against_a_tls_port_fails_cleanly(
    tls_server: Server, ca: trustme.CA, tmp_path: Path
) -> None:
    port = tls_server.listener("line").port
    plain = JsonClient(port)
    plain.send("alice")
    with pytest.raises((EOFError, ConnectionResetError)):
        plain.read_line()
    # The server goes on serving TLS clients.
    hello(tls_client(port, trusting(ca, tmp_path)), "bob")


def test_the_client_refuses_an_unverified_certificate(tls_server: Server) -> None:
    port = tls_server.listener("line").port
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_client(port, tls.client_context())
    hello(tls_client(port, tls.client_context(insecure=True)), "carol")


def test_a_silent_client_neither_blocks_accepting_nor_stays_forever(
    make_server: Callable[..., Server],
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT", 0.5)
    combined = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(combined))
    server = make_server(tls_cert=str(combined))
    port = server.listener("line").port
    silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    hello(tls_client(port, trusting(ca, tmp_path)), "dave")  # accepted while one is silent
    silent.settimeout(WAIT)
    assert silent.recv(100) == b""  # closed after the handshake timeout
    silent.close()


def test_self_signed_certificate_is_made_once_and_kept(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first = make_server(data_dir=str(tmp_path), tls_self_signed=True)
    cert_file = tmp_path / tls.SELF_SIGNED_CERT
    key_file = tmp_path / tls.SELF_SIGNED_KEY
    assert cert_file.exists() and key_file.stat().st_mode & 0o077 == 0
    pem = cert_file.read_bytes()
    context = tls.client_context(cafile=str(cert_file))
    hello(tls_client(first.listener("line").port, context), "erin").close()
    first.stop()
    second = make_server(data_dir=str(tmp_path), tls_self_signed=True)
    assert cert_file.read_bytes() == pem
    hello(tls_client(second.listener("line").port, context), "erin")


def test_unusable_certificate_files_stop_the_start(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    with pytest.raises(StartupError, match="cannot load TLS certificate"):
        make_server(tls_cert=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(StartupError, match="cannot load TLS certificate"):
        make_server(tls_cert=str(garbage))
    with pytest.raises(StartupError, match="needs --tls-cert"):
        make_server(tls_key=str(garbage))


# -- the terminal client ----------------------------------------------------------------------


def test_client_connects_with_tls_and_refuses_an_untrusted_server(
    tls_server: Server, ca: trustme.CA, tmp_path: Path
) -> None:
    from test_client import ClientProcess

    address = f"127.0.0.1:{tls_server.listener('line').port}"
    untrusted = ClientProcess(address, "--name", "alice", "--tls")
    try:
        code, err = untrusted.finish()
    finally:
        untrusted.kill()
    assert code == 1 and "not trusted" in err and "--cafile" in err
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for extra in (["--cafile", str(ca_file)], ["--insecure"]):
        trusted = ClientProcess(address, "--name", "bob", *extra)
        try:
            trusted.expect("in lobby:")
            trusted.send("/quit")
            code, _ = trusted.finish()
        finally:
            trusted.kill()
        assert code == 0


def test_irc_listener_speaks_tls_too(tls_server: Server, ca: trustme.CA, tmp_path: Path) -> None:
    client = JsonClient(tls_server.listener("irc").port)
    client.sock = trusting(ca, tmp_path).wrap_socket(client.sock, server_hostname="127.0.0.1")
    client.send("NICK tlsuser", "USER t 0 * :T")
    assert " 001 tlsuser " in client.expect(" 001 ")


def offered_caps(client: JsonClient) -> list[str]:
    """The capabilities of a `CAP LS 302` reply, over its continuation lines."""
    client.send("CAP LS 302")
    caps: list[str] = []
    while True:
        line = client.expect(" LS ")
        # The list is the last parameter: after " :", or a lone word without the colon.
        caps += line.split(" :", 1)[1].split() if " :" in line else [line.rsplit(" ", 1)[1]]
        if " LS * " not in line:
            return caps


def test_irc_over_tls_announces_an_sts_persistence_policy(
    tls_server: Server, ca: trustme.CA, tmp_path: Path, make_server: Callable[..., Server]
) -> None:
    # With TLS on, the one IRC port speaks TLS: STS tells clients to keep to it.
    client = JsonClient(tls_server.listener("irc").port)
    client.sock = trusting(ca, tmp_path).wrap_socket(client.sock, server_hostname="127.0.0.1")
    assert f"sts=duration={30 * 24 * 3600}" in offered_caps(client)
    plain = JsonClient(make_server().listener("irc").port)
    assert not any(cap.startswith("sts") for cap in offered_caps(plain))
