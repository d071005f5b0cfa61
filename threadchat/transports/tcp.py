"""TCP transport: one acceptor thread per listener, one reader thread per connection.

`TcpConnection` owns its socket: only its reader thread closes it. Other threads (the
housekeeper, the server on shutdown, an overflowing outbox) end a connection with `abort`,
which records why and shuts the socket down; the blocked `recv` then returns and the reader
thread cleans up, so there is exactly one place where a user leaves.
"""

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from threadchat.core import delivery
from threadchat.core.admission import Refusal, Ticket
from threadchat.core.flood import ROUNDING, TokenBucket
from threadchat.transports.outbox import Outbox
from threadchat.transports.tls import TlsChannel

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)

# A blocked recv holds a buffer of the size it asked for, for as long as it waits: with
# thousands of idle connections that buffer is most of their memory (64 KiB each was
# measured as the largest item of an idle server; 4 KiB, a seventh of an idle connection,
# after that). So a reader waits for input with a one-byte MSG_PEEK, which holds no buffer
# (a TLS channel waits the same way inside its recv), then reads up to RECV_FIRST_SIZE, and
# when that comes back full, takes the rest of the burst at once without waiting: its lines
# are still handled as one batch.
RECV_FIRST_SIZE = 4096
RECV_SIZE = 65536
# TCP keepalive: find peers that vanished without a FIN (cable pulled, laptop closed) within
# about two minutes, without pinging people who are merely quiet. It is the only liveness
# check of text mode: a person behind nc cannot answer a ping, but their kernel answers these
# probes. A peer that fails them makes the blocked recv fail, and its user leaves "timed out".
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6
# The timing options by name, set where the platform has them (Linux has all three; others
# lack some, and keep their own default timing for those).
KEEPALIVE_TIMING = (
    ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
    ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
    ("TCP_KEEPCNT", KEEPALIVE_COUNT),
)
# A fixed kernel send buffer per client. Left to autotuning, Linux grows it to 4 MiB, so a
# client that stops reading could pin megabytes of kernel memory before our own send queue
# bound (--sendq) even starts counting; fixed, the two bounds add up to a known figure.
SEND_BUFFER = 256 * 1024
# How often an acceptor looks up from accept() to see whether the server is stopping.
ACCEPT_POLL = 0.25
# After a connection could not be taken on (no thread to read it at a pids limit such as
# systemd's TasksMax, no file descriptor left), the acceptor pauses this long, doubling while
# failures go on: retrying at once would spin a core on a condition that lasts, while the
# clients in the backlog only wait a little longer. Every failing client is told and closed.
ACCEPT_BACKOFF_MIN = 0.05
ACCEPT_BACKOFF_MAX = 1.0
# While failures go on, one log line per this many seconds (with a count), not one per client.
FAILURE_LOG_INTERVAL = 10.0
# What a refused client is told (plain TCP only: TLS would need a handshake first).
BUSY_TEXT = "the server cannot take more connections right now; try again later"


def tune_socket(sock: socket.socket) -> None:
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE_TIMING:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class TcpConnection:
    """Base of every TCP connection: socket, outbox, reader thread, flood pacing, shutdown.

    Subclasses implement `handle_data` (one recv's bytes, inside `hub.pipeline.reading`),
    `on_close` (leave the hub), and may override `on_flood`.

    The lifecycle every protocol shares is timed here (`tick`): a connection that has not
    registered (given its name) within `name_timeout` is closed, and a registered one that
    has been silent for `ping_interval` is pinged and closed if it stays silent for
    `ping_timeout` more. Subclasses only say what is said on the way: `registered`,
    `on_name_timeout`, `pings_apply`, `send_ping`, `on_ping_timeout`.

    A line may take at most `line_timeout` seconds from its first byte to its line end
    (`partial_since`), registered or not, so a peer trickling bytes (slowloris) is cut off
    although every byte counts as input; subclasses say how many bytes of a line they hold
    (`partial_line`) and what the peer is told (`on_line_timeout`).
    """

    kind = "tcp"

    @classmethod
    def refusal(cls, address: tuple, text: str) -> bytes:
        """The bytes that tell a client, in its protocol, why it is closed before it starts."""
        return b""

    def __init__(self, server: "Host", sock: socket.socket, address: tuple) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.label = f"{address[0]}:{address[1]}"
        config = server.config
        self.outbox = Outbox(sock, config.sendq, self._on_overflow)
        # The hub calls send_bytes once per delivery: bind it straight to the outbox.
        self.send_bytes = self.outbox.put
        self.bucket = TokenBucket(config.flood_rate, config.flood_burst)
        self.connected_at = time.monotonic()
        self.last_input = self.connected_at
        # When the ping now unanswered was sent (any input answers it).
        self.ping_sent_at: float | None = None
        # When the line now held unfinished began (None: no partial line), see `tick`.
        self.partial_since: float | None = None
        # This client's place in the server's limits (`Host.admission`), set by the listener.
        self.ticket: Ticket | None = None
        self.abort_reason: str | None = None
        self._flooding = False
        self._batch = delivery.batch()
        self.thread = threading.Thread(
            target=self._run, name=f"{self.kind}-reader {self.label}", daemon=True
        )

    # -- called from other threads ---------------------------------------------------------

    def direct_queue(self) -> tuple[list[bytes], Outbox] | None:
        """For the hub's fast fan-out; subclasses whose codec key is fixed return the outbox's."""
        return None

    def abort(self, reason: str) -> None:
        """End this connection from any thread; the first reason given wins."""
        if self.abort_reason is None:
            self.abort_reason = reason
        if threading.current_thread() is self.thread:
            # The reader itself ends the loop and leaves the hub before the socket closes, so
            # a client that sees the close (after /quit, say) finds its name already free.
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def tick(self, now: float) -> None:
        """Called about once a second by the housekeeper to enforce timeouts."""
        config = self.server.config
        since = self.partial_since
        if since is not None and 0 < config.line_timeout < now - since:
            self.abort(self.on_line_timeout(config.line_timeout))
            return
        if not self.registered:
            if now - self.connected_at > config.name_timeout:
                self.abort(self.on_name_timeout(config.name_timeout))
            return
        if config.ping_interval <= 0 or not self.pings_apply():
            return
        if self.ping_sent_at is not None:
            waited = now - self.ping_sent_at
            if waited > config.ping_timeout:
                self.abort(self.on_ping_timeout(waited))
        elif now - self.last_input > config.ping_interval:
            self.ping_sent_at = now
            self.send_ping()

    # -- the reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        reason = "EOF"
        try:
            self.on_connect()
            # A TLS channel's recv waits without a buffer itself (and must not be peeked:
            # its peer's bytes are records, not the input).
            peek = isinstance(self.sock, socket.socket)
            while self.abort_reason is None:
                if peek and not self.sock.recv(1, socket.MSG_PEEK):
                    break
                data = self.sock.recv(RECV_FIRST_SIZE)
                if not data:
                    break
                if len(data) == RECV_FIRST_SIZE:
                    data += self._recv_more()
                self.last_input = time.monotonic()
                self.ping_sent_at = None
                held = self.partial_line()
                # The requests of one recv share one commit (see `Hub.pipeline`).
                with self.server.hub.pipeline.reading(self._batch):
                    if not self.handle_data(data):
                        break
                self._time_partial_line(held, len(data))
        except ConnectionResetError:
            reason = "connection reset"
        except TimeoutError:
            reason = "timed out"
        except OSError as problem:
            reason = f"connection error: {problem.strerror or problem}"
        except Exception:
            log.exception("%s: internal error", self.label)
            reason = "internal error"
        finally:
            self._finish(self.abort_reason or reason)

    def _time_partial_line(self, held_before: int, received: int) -> None:
        """Start, keep or stop the clock of the unfinished line after one recv was handled."""
        held = self.partial_line()
        if not held:
            self.partial_since = None
        elif held < held_before + received or self.partial_since is None:
            # A line ended in this data (or none was held): the held bytes began a new line
            # now (after any flood pause, whose time is ours, not the peer's).
            self.partial_since = time.monotonic()

    def _recv_more(self) -> bytes:
        try:
            return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""

    def _finish(self, reason: str) -> None:
        try:
            self.on_close(reason)
        except Exception:
            log.exception("%s: error while closing", self.label)
        self.outbox.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.ticket is not None:
            self.ticket.release()
        self.server.forget(self)
        log.debug("%s: closed (%s)", self.label, reason)
        self.release()

    def discard(self) -> None:
        """Close a connection whose reader thread never ran (the server stopped meanwhile)."""
        self.sock.close()
        if self.ticket is not None:
            self.ticket.release()

    def throttle(self) -> None:
        """Take a flood token for one line; when none is left, pause reading this connection.

        While paused the kernel buffers fill and TCP pushes back on the flooder alone. What
        earlier lines queued is relayed and flushed first, so their recipients do not wait for
        the pause; while tokens last, lines stay pipelined (see `hub.pipeline`).
        """
        delay = self.bucket.delay()
        if delay <= 0:
            # The flood is over once the bucket was full again (the client paused for
            # burst / rate seconds), not at the first line that found a token: a pause that
            # overslept by one token's time (a busy machine) would otherwise end it, and the
            # next line would say "flood control" a second time in the same flood.
            if self.bucket.tokens >= self.bucket.burst - 1 - ROUNDING:
                self._flooding = False
            return
        if not self._flooding:
            self._flooding = True
            log.info("%s: flood, reading paused", self.label)
            self.on_flood()
        # Messages queued from this read go out before the pause, not after it.
        self.server.hub.pipeline.complete()
        # A pause is ours, not the peer's: the clock of a partial line restarts after it.
        self.partial_since = None
        self._batch.__exit__(None, None, None)
        self.server.stopping.wait(delay)
        self._batch.__enter__()

    def close_after_flush(self, reason: str, timeout: float = 2.0) -> None:
        """End the connection once what is queued for it has been sent (e.g. after /quit)."""
        self._batch.__exit__(None, None, None)
        self.outbox.wait_empty(timeout)
        self._batch.__enter__()
        self.abort(reason)

    def _on_overflow(self) -> None:
        log.warning(
            "%s: send queue exceeded (%d bytes), cutting off", self.label, self.outbox.limit
        )
        self.abort("send queue exceeded")

    # -- for subclasses --------------------------------------------------------------------

    def on_connect(self) -> None:
        pass

    def handle_data(self, data: bytes) -> bool:
        """Handle one recv's bytes; return False to close the connection."""
        raise NotImplementedError

    def on_close(self, reason: str) -> None:
        pass

    def release(self) -> None:
        """The last step of the reader thread: let the protocol's session go of this
        connection (see `NativeSession.release`), so that reference counting frees both."""

    def partial_line(self) -> int:
        """Bytes received of a line not yet ended (0: none), for the line timeout."""
        return 0

    def on_line_timeout(self, limit: float) -> str:
        """Tell the peer its line took too long; return the reason it is closed with."""
        log.info("%s: no line end within %gs of a line's first byte, closing", self.label, limit)
        return "line timeout"

    def on_flood(self) -> None:
        pass

    # The shared lifecycle (see `tick`): what each protocol says on the way.

    @property
    def registered(self) -> bool:
        """Whether the peer has registered (given its name); until then the name timeout runs."""
        return True

    def on_name_timeout(self, limit: float) -> str:
        """Tell the peer it took too long to register; return the reason it is closed with."""
        return "timed out"

    def pings_apply(self) -> bool:
        """Whether this registered peer is pinged when silent (it must be able to answer)."""
        return False

    def send_ping(self) -> None:
        """Ask the peer for a sign of life; any input answers."""

    def on_ping_timeout(self, waited: float) -> str:
        """Tell the peer it did not answer in time; return the reason it is closed with."""
        return "timed out"


class FailureLog:
    """Logs failures that may repeat for every client: the first at once, then a count per
    FAILURE_LOG_INTERVAL, and the recovery, so a lasting condition cannot flood the log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self._failures = 0
        self._suppressed = 0
        self._next_report = 0.0

    def failed(self, problem: str) -> None:
        self._failures += 1
        now = time.monotonic()
        if not self.failing:
            self.failing = True
            log.error("%s: %s; refusing new connections until it works again", self.name, problem)
        elif now >= self._next_report:
            log.error(
                "%s: still failing, %d more failures: %s",
                self.name,
                self._suppressed + 1,
                problem,
            )
            self._suppressed = 0
        else:
            self._suppressed += 1
            return
        self._next_report = now + FAILURE_LOG_INTERVAL

    def recovered(self) -> None:
        if self.failing:
            log.warning(
                "%s: accepting connections again (failures meanwhile: %d)",
                self.name,
                self._failures,
            )
            self.failing = False
            self._failures = self._suppressed = 0


class TcpListener:
    """A listening socket and its acceptor thread, creating one connection per client.

    The acceptor outlives any failure of one connection (see `_accept_loop`): a listener that
    died would leave every later client waiting forever, even once resources are back.
    """

    def __init__(
        self,
        server: "Host",
        host: str,
        port: int,
        connection_class: type[TcpConnection],
        *,
        name: str,
        backlog: int = 1024,
    ) -> None:
        self.server = server
        self.connection_class = connection_class
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.settimeout(ACCEPT_POLL)
        self.address = self.sock.getsockname()
        self.thread = threading.Thread(target=self._accept_loop, name=f"{name}-acceptor")
        self.failures = FailureLog(name)

    @property
    def port(self) -> int:
        return int(self.address[1])

    def start(self) -> None:
        self.thread.start()

    def _accept_loop(self) -> None:
        backoff = ACCEPT_BACKOFF_MIN
        try:
            while not self.server.stopping.is_set():
                try:
                    took_one = self._accept_one()
                except Exception as problem:
                    if self.server.stopping.is_set():
                        break
                    self.failures.failed(
                        f"cannot take on a new connection: {type(problem).__name__}: {problem}"
                    )
                    self.server.stopping.wait(backoff)
                    backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                else:
                    if took_one:
                        self.failures.recovered()
                        backoff = ACCEPT_BACKOFF_MIN
        finally:
            self.sock.close()

    def _accept_one(self) -> bool:
        """Take on one client; False if none came within ACCEPT_POLL.

        Raises when that failed: OSError from accept (out of file descriptors: the client
        stays in the backlog), or anything from setting the connection up (RuntimeError
        "can't start new thread" at a pids limit, or a bug), after refusing the client.
        """
        try:
            sock, address = self.sock.accept()
        except TimeoutError:
            return False
        admission = self.server.admission
        host = str(address[0])
        refusal = admission.admit(host, self.name)
        if refusal is not None:
            # Over a limit (this address, or the server full): told why and closed at once.
            # Not a failure of the acceptor: it goes straight on with the next client.
            self._refuse(sock, address, refusal)
            return True
        ticket = Ticket(admission, host)
        try:
            tune_socket(sock)
            channel = sock
            if self.server.tls_context is not None:
                # No I/O here: the handshake runs in the connection's reader thread.
                channel = TlsChannel(sock, self.server.tls_context)  # type: ignore[assignment]
            conn = self.connection_class(self.server, channel, address)
            conn.ticket = ticket
            self.server.adopt(conn)
        except BaseException:
            # The reader never ran (see `Host.adopt`), so nothing else releases the ticket.
            ticket.release()
            self._refuse(sock, address)
            raise
        return True

    def _refuse(self, sock: socket.socket, address: tuple, refusal: Refusal | None = None) -> None:
        try:
            if self.server.tls_context is None:
                # A fresh socket's send buffer takes these few bytes without waiting.
                text = BUSY_TEXT if refusal is None else refusal.text
                message = self.connection_class.refusal(address, text)
                sock.send(message, socket.MSG_DONTWAIT)
                # Closing with unread input would reset the connection, and a reset can
                # overtake the refusal: end our side, and take what the client sent already.
                sock.shutdown(socket.SHUT_WR)
                sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except OSError:
            pass  # it is being closed anyway: nothing more to tell it
        finally:
            sock.close()
