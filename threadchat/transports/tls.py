"""TLS for the TCP listeners and the client: contexts, a self-signed certificate, and a
socket-like TLS channel that the threaded transports can use unchanged.

Why a channel over a memory BIO instead of `ssl.SSLSocket`: a connection is read by its reader
thread while other threads write to it (the sender's thread via the outbox, or the outbox's
writer thread). OpenSSL objects must not be used by two threads at once, and SSLSocket also
refuses the outbox's `send(data, MSG_DONTWAIT)`. `TlsChannel` keeps one `ssl.SSLObject` behind
a lock that is held only for CPU work (encrypt, decrypt), never across socket I/O:

- recv (reader thread only): raw recv -> decrypt under the lock. The handshake happens here, on
  the first recv, in the connection's own thread and bounded by HANDSHAKE_TIMEOUT, so a slow or
  silent client never holds up the acceptor.
- send(data, MSG_DONTWAIT) always raises BlockingIOError: the outbox then hands the data to its
  writer thread, which calls sendall (encrypt under the lock, then a blocking raw sendall under
  a send lock that keeps records in order). So a TLS connection with traffic has one writer
  thread besides its reader (it lingers ~1 s when idle); the sender's thread never blocks.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# A client must finish the TLS handshake within this many seconds: long enough for a slow
# mobile link, short enough that idle sockets held open by scanners are dropped soon.
HANDSHAKE_TIMEOUT = 10.0
# Raw bytes read at once (one TLS record is at most 16 KiB plus overhead).
RAW_RECV = 65536
SELF_SIGNED_CERT = "tls-self-signed.crt"
SELF_SIGNED_KEY = "tls-self-signed.key"
# A quick-start certificate is renewed when it has less than this left.
SELF_SIGNED_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsSetupError(Exception):
    """The certificate or key cannot be used; the message names the file and the reason."""


def server_context(
    cert: str | os.PathLike[str], key: str | os.PathLike[str] | None
) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer, the platform's default (secure) ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as problem:
        raise TlsSetupError(
            f"cannot load TLS certificate {cert} / key {key}: {problem}"
        ) from problem
    return context


def client_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client-side context that verifies the server (against `cafile` if given, else the
    system's CAs) unless `insecure`, which accepts any certificate (for self-signed tests)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def wrap_client(
    sock: socket.socket, host: str, context: ssl.SSLContext, timeout: float = HANDSHAKE_TIMEOUT
) -> TlsChannel:
    """Client side: a TlsChannel over a connected socket, handshake done (raises ssl.SSLError,
    e.g. SSLCertVerificationError). Safe to read from one thread while others send."""
    channel = TlsChannel(sock, context, server_side=False, server_hostname=host)
    channel.handshake(timeout)
    return channel


def ensure_self_signed(data_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The paths of a self-signed certificate and key in `data_dir`, made if missing or due.

    For a quick start on localhost: clients must use --insecure or trust the certificate file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(data_dir)
    cert_path, key_path = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    now = datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - now > RENEW_BEFORE:
                return cert_path, key_path
        except (OSError, ValueError) as problem:
            log.warning("replacing unreadable self-signed certificate: %s", problem)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "threadchat self-signed")])
    alt_names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName(socket.gethostname()),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key_bytes = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_bytes)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as problem:
        raise TlsSetupError(
            f"cannot write a self-signed certificate in {directory}: {problem}"
        ) from problem
    log.info("made a self-signed TLS certificate: %s", cert_path)
    return cert_path, key_path


class TlsChannel:
    """A TLS connection over a connected socket, with the socket methods the transports use
    (recv, send, sendall, shutdown, close). See the module docstring. Server side by default;
    the client uses it too (via wrap_client), for the same reason: one thread reads while
    another sends, which an SSLSocket does not allow safely."""

    def __init__(
        self,
        raw: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self._tls_lock = threading.Lock()  # guards the SSLObject and both BIOs; CPU work only
        self._send_lock = threading.Lock()  # keeps records in order on the wire
        self._handshaken = False

    # -- reading (the connection's reader thread only) --------------------------------------

    def handshake(self, timeout: float | None = None) -> None:
        """Do the TLS handshake now, bounded by `timeout` (default HANDSHAKE_TIMEOUT)."""
        if not self._handshaken:
            self._handshake(HANDSHAKE_TIMEOUT if timeout is None else timeout)

    def _handshake(self, timeout: float) -> None:
        previous = self.raw.gettimeout()
        self.raw.settimeout(timeout)
        try:
            while True:
                failure: ssl.SSLError | None = None
                with self._tls_lock:
                    try:
                        self._tls.do_handshake()
                        done = True
                    except ssl.SSLWantReadError:
                        done = False
                    except ssl.SSLError as problem:
                        # OpenSSL wrote an alert saying why (an old TLS version, no shared
                        # cipher...): it goes out before the connection closes.
                        failure, done = problem, False
                try:
                    self._send_pending()
                except OSError:
                    if failure is None:
                        raise
                if failure is not None:
                    raise failure
                if done:
                    break
                data = self.raw.recv(RAW_RECV)
                if not data:
                    raise ConnectionResetError("closed during the TLS handshake")
                with self._tls_lock:
                    self._incoming.write(data)
        except TimeoutError:
            raise TimeoutError("TLS handshake timed out") from None
        self.raw.settimeout(previous)
        self._handshaken = True

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Decrypted bytes (b"" at EOF); raises OSError (ssl.SSLError) on a TLS error.

        `flags` may hold MSG_DONTWAIT: then BlockingIOError when nothing can be read at once.
        """
        if not self._handshaken:
            self._handshake(HANDSHAKE_TIMEOUT)
        raw_flags = flags & socket.MSG_DONTWAIT
        while True:
            with self._tls_lock:
                try:
                    data = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    data = b""
                pending = self._outgoing.pending
            if pending:
                self._send_pending()  # e.g. a TLS 1.3 key update answer
            if data is not None:
                return data
            # Wait for the peer without holding a buffer (see `tcp.RECV_FIRST_SIZE`): a
            # blocked recv of RAW_RECV would keep 64 KiB per idle connection.
            if not raw_flags and not self.raw.recv(1, socket.MSG_PEEK):
                return b""
            raw = self.raw.recv(RAW_RECV, raw_flags)  # BlockingIOError when non-blocking
            if not raw:
                return b""
            with self._tls_lock:
                self._incoming.write(raw)

    # -- writing (any thread; the outbox guarantees one writer at a time) -------------------

    def send(self, data: bytes, flags: int = 0) -> int:
        """Never sends without blocking: hand the data to the outbox's writer thread."""
        raise BlockingIOError("TLS sends go through the writer thread")

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            with self._tls_lock:
                self._tls.write(data)
                encrypted = self._outgoing.read()
            self.raw.sendall(encrypted)

    def _send_pending(self) -> None:
        with self._send_lock:
            with self._tls_lock:
                encrypted = self._outgoing.read()
            if encrypted:
                self.raw.sendall(encrypted)

    # -- ending -----------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()

    def getpeername(self) -> object:
        return self.raw.getpeername()

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.raw.gettimeout()

    def version(self) -> str | None:
        return self._tls.version()
