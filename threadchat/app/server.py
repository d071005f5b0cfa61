"""The server: the hub, its listeners, the housekeeper thread, and a clean shutdown."""

import ctypes
import gc
import logging
import os
import resource
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from threadchat.app import startup
from threadchat.app.startup import StartupError
from threadchat.config import Config
from threadchat.core.admission import Admission, parse_exempt
from threadchat.core.hub import Hub
from threadchat.services import history
from threadchat.store.base import Store
from threadchat.transports import web
from threadchat.transports.irc import IrcConnection
from threadchat.transports.native import LineConnection
from threadchat.transports.tcp import TcpConnection, TcpListener
from threadchat.transports.udp import UdpListener
from threadchat.transports.web import WebConnection

log = logging.getLogger(__name__)

# How long queued messages may take to reach their clients on shutdown.
SHUTDOWN_FLUSH = 2.0
# How long to wait for reader threads to finish once their sockets are shut down.
SHUTDOWN_JOIN = 5.0
# Thread stacks are reserved address space, not memory, but thousands of them add up; this is
# ample for the reader's call depth (JSON nesting is bounded by the recursion limit).
THREAD_STACK = 1024 * 1024
HOUSEKEEPING_INTERVAL = 1.0
# Descriptors kept back from the clients when --max-clients is derived from the open-file
# limit: the listeners and the UDP socket pairs (under 10), the store (a write connection and
# a pool of readers, each with its database, WAL and shared-memory files: under 20), logs,
# TLS files being read, and a margin so that a client over the limit can still be accepted and
# told the server is full rather than left in the backlog.
DESCRIPTOR_RESERVE = 64
# The derived limit when the open-file limit is unlimited.
UNLIMITED_DESCRIPTORS_CLIENTS = 100_000


def default_max_clients() -> int:
    """--max-clients when it is not set: the soft open-file limit less DESCRIPTOR_RESERVE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_DESCRIPTORS_CLIENTS
    return max(1, soft - DESCRIPTOR_RESERVE)


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (as the Go runtime does for every Go
    server): the usual soft limit of 1,024 would cap a server at under a thousand clients.
    Returns the limit before and after; for a server process, not for servers in tests."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and soft != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, hard
    return soft, soft


# glibc's malloc gives each thread that meets a locked arena a new one, up to eight per core,
# and an arena never returns its free pages while one live block sits at its top. With a
# thread per connection, a server soon has every arena, each holding freed message buffers the
# others cannot reuse: in fan-out to 100 clients with history off the server held 102 KiB
# per connection, against 45 with two arenas (bench/analysis.md, "glibc arenas capped").
# Python allocates under the interpreter lock, so the threads seldom meet in malloc anyway;
# two arenas leave one for the few calls made without it.
MALLOC_ARENAS = 2
# mallopt's parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas() -> int | None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS; returns the cap set, or None when the C
    library is not glibc or the operator chose one (MALLOC_ARENA_MAX, GLIBC_TUNABLES). For a
    server process before its threads start, not for servers embedded in tests."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return MALLOC_ARENAS if mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1 else None


# The cyclic garbage collector, left at its defaults, was a quarter of a busy server's CPU
# (perf, fan-out at C=100): a collection of the young generation starts after every 700 net
# container allocations, which a burst of queued messages reaches many times a second, and
# every tenth of those escalates, until full collections walk every object of every thread
# and connection (36 ms each, a latency spike for everyone). Messages are freed by reference
# counting, not by the collector, so it has little to find: the startup objects are moved out
# of its reach for good, and it runs on net growth of YOUNG_GENERATION_THRESHOLD objects.
YOUNG_GENERATION_THRESHOLD = 100_000


def tune_garbage_collector() -> None:
    """For a server process, once it has started (not for servers embedded in tests)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


@dataclass(frozen=True)
class ListenerRow:
    """One TCP protocol the server speaks: its name, the setting that holds its port (0 turns
    it off), and the transport's connection class."""

    name: str
    port_setting: str
    connection_class: type[TcpConnection]
    # Checks the protocol's own settings at start (raises ValueError saying what is wrong).
    check: Callable[[Config], None] | None = None


# The listener table: adding a TCP protocol is one protocol package, one transport, one row.
TCP_LISTENERS: tuple[ListenerRow, ...] = (
    ListenerRow("line", "line_port", LineConnection),
    ListenerRow("irc", "irc_port", IrcConnection),
    ListenerRow("web", "web_port", WebConnection, web.check_settings),
)


class Server:
    def __init__(self, config: Config, *, ephemeral_ports: bool = False) -> None:
        """`ephemeral_ports` binds every enabled listener to a free port (for tests)."""
        self.config = config
        self.ephemeral_ports = ephemeral_ports
        self.hub = Hub(server_name=config.server_name, quiet_room_size=config.quiet_room_size)
        # Every transport reads within the history service's pipeline, history on or off.
        self.hub.use_pipeline(history.PIPELINE)
        self.hub.multiclient = config.multiclient
        self.stopping = threading.Event()
        try:
            exempt = parse_exempt(config.limit_exempt)
        except ValueError as problem:
            raise StartupError(str(problem)) from problem
        self.admission = Admission(
            max_clients=config.max_clients if config.max_clients > 0 else default_max_clients(),
            per_host=config.max_connections_per_ip,
            rate=config.connect_rate_per_ip,
            burst=config.connect_burst_per_ip,
            exempt=exempt,
        )
        self.listeners: list[TcpListener] = []
        self.udp: UdpListener | None = None
        self._connections: set[TcpConnection] = set()
        self._connections_lock = threading.Lock()
        self._housekeeper = threading.Thread(target=self._housekeep, name="housekeeper")
        self._stopped = False
        # What startup opened (the store, TLS, retention); None before start and after stop.
        self.wiring: startup.Wiring | None = None
        # Set when TLS is configured: every TCP listener then wraps its connections.
        self.tls_context: ssl.SSLContext | None = None
        # Starts each connection's reader thread. A test hook: tests make it fail the way
        # `Thread.start` does at a thread limit, without touching the threading module.
        self.start_reader: Callable[[threading.Thread], None] = threading.Thread.start

    def start(self) -> None:
        """Open storage, bind every configured listener and start their threads.

        Raises StartupError (storage, TLS, no thread to be had) or OSError (bind) with a
        message for the operator; `stop` then closes whatever did start.
        """
        threading.stack_size(THREAD_STACK)
        try:
            self._start()
        except RuntimeError as problem:
            # Thread.start at a thread limit (a pids cgroup such as systemd's TasksMax).
            raise StartupError(str(problem)) from problem

    def _start(self) -> None:
        self.wiring = startup.start(self.config, self.hub, self.stopping)
        self.tls_context = self.wiring.tls_context
        for row in TCP_LISTENERS:
            configured = getattr(self.config, row.port_setting)
            if configured > 0:
                if row.check is not None:
                    try:
                        row.check(self.config)
                    except ValueError as problem:
                        raise StartupError(str(problem)) from problem
                self.listeners.append(
                    TcpListener(
                        self,
                        self.config.host,
                        self.port(configured),
                        row.connection_class,
                        name=row.name,
                    )
                )
        if self.config.udp_port > 0:
            self.udp = UdpListener(self, self.config.host, self.port(self.config.udp_port))
            self.udp.start()
            log.info("udp protocol listening on %s port %d", self.config.host, self.udp.port)
        for listener in self.listeners:
            listener.start()
            log.info(
                "%s protocol listening on %s port %d",
                listener.name,
                self.config.host,
                listener.port,
            )
        self._housekeeper.start()
        log.info(
            "limits: %d clients in all, %s per address, connections per address %s; exempt: %s",
            self.admission.max_clients,
            self.config.max_connections_per_ip or "no limit",
            f"{self.config.connect_burst_per_ip} at once then {self.config.connect_rate_per_ip:g}/s"
            if self.config.connect_rate_per_ip > 0 and self.config.connect_burst_per_ip > 0
            else "not limited",
            ", ".join(str(network) for network in self.admission.exempt) or "none",
        )

    @property
    def store(self) -> Store | None:
        """The open store, while the server runs."""
        return self.wiring.store if self.wiring is not None else None

    def port(self, configured: int) -> int:
        return 0 if self.ephemeral_ports else configured

    def listener(self, name: str) -> TcpListener:
        return next(listener for listener in self.listeners if listener.name == name)

    # -- connections -------------------------------------------------------------------------

    def adopt(self, conn: TcpConnection) -> None:
        """Register `conn` and start its reader thread.

        If the thread cannot start (RuntimeError at a thread limit) this raises and leaves
        nothing registered; the caller still owns the socket.
        """
        # Register before start(): the thread may finish (and call forget) at once.
        with self._connections_lock:
            if self.stopping.is_set():
                conn.discard()
                return
            self._connections.add(conn)
        try:
            self.start_reader(conn.thread)
        except BaseException:
            self.forget(conn)
            raise

    def forget(self, conn: TcpConnection) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def connections(self) -> list[TcpConnection]:
        with self._connections_lock:
            return list(self._connections)

    def connection_count(self) -> int:
        # len() of a set is atomic under the GIL; a copy of the registry per registration
        # made a connect storm's LUSERS quadratic.
        return len(self._connections)

    def _housekeep(self) -> None:
        while not self.stopping.wait(HOUSEKEEPING_INTERVAL):
            now = time.monotonic()
            for conn in self.connections():
                try:
                    conn.tick(now)
                except Exception:
                    log.exception("%s: housekeeping failed", conn.label)
            self.admission.refusals.flush()
            if self.hub.accounts is not None:
                try:
                    self.hub.accounts.tick(self.hub)
                except Exception:
                    log.exception("account housekeeping failed")
            try:
                for nick in self.hub.expire_always_on():
                    log.info("%s: always-on expired", nick)
            except Exception:
                log.exception("always-on housekeeping failed")

    # -- running and stopping ----------------------------------------------------------------

    def stop_on_signals(self) -> None:
        """Make SIGINT (Ctrl+C) and SIGTERM stop the server cleanly (main thread only).

        Called before `start`: once a listener is open a client may connect and an operator
        may stop the server, and a SIGTERM that came before the handler was set would kill
        the process without a word to anyone (seen in a test that chatted, then stopped).
        """

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def serve_forever(self) -> None:
        """Run until `stopping` is set (see `stop_on_signals`), then stop cleanly."""
        try:
            self.stopping.wait()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, tell everyone, flush for at most SHUTDOWN_FLUSH s, close all."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        for listener in self.listeners:
            if listener.thread.is_alive():
                listener.thread.join()
            else:
                listener.sock.close()  # its acceptor never ran (start failed)
        conns = self.connections()
        self.hub.broadcast_notice("the server is shutting down")
        deadline = time.monotonic() + SHUTDOWN_FLUSH
        for conn in conns:
            conn.outbox.wait_empty(max(0.0, deadline - time.monotonic()))
        if self.udp is not None:
            self.udp.stop(deadline)
        for conn in conns:
            conn.abort("server shutdown")
        deadline = time.monotonic() + SHUTDOWN_JOIN
        for conn in conns:
            # Only started threads can be joined (a connection is registered before its
            # thread starts, see `adopt`).
            if conn.thread.is_alive():
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        if self._housekeeper.is_alive():
            self._housekeeper.join()
        wiring, self.wiring = self.wiring, None
        if wiring is not None:
            startup.stop(wiring, self.hub)
        left = [c.label for c in self.connections()]
        if left:
            log.warning("connections still open after shutdown: %s", ", ".join(left))
        log.info("stopped")
