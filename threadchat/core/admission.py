"""Who may connect: limits per address and in all, shared by every listener.

One `Admission` serves every listener of a server (each TCP protocol, UDP), so the limits
count a host's clients over all of them, as ergo does:

- at most `max_clients` clients at once in all (TCP connections and UDP sessions): past it a
  new client is told the server is full. Exempt addresses count too: the limit protects the
  process's file descriptors and threads, which every client uses up alike.
- at most `per_host` at once from one host (an IPv4 address, or an IPv6 /64: see
  `addresses.host_key`), and connection attempts per host paced by a token bucket (`burst`
  at once, then `rate` per second). Addresses in the exempt networks (loopback by default,
  for local load tests and bouncers) skip these two.

A refused client gets a `Refusal`, whose text the transport tells it in its own protocol.
Refusals are logged through `RefusalLog`, which is itself rate-limited: a flood of refused
connections must not become a flood of log lines.

Thread-safe: one leaf lock, held for a few dictionary operations; nothing is logged under it.
"""

import functools
import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from threadchat.core.addresses import host_key
from threadchat.core.flood import RateLimiter, TokenBucket

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Loopback is exempt by default: local load tests, bouncers and the test suite connect many
# clients from it, and whoever can connect from it runs on the machine already.
DEFAULT_EXEMPT = ("127.0.0.0/8", "::1/128")
# The value of --limit-exempt that exempts no address at all.
EXEMPT_NONE = "none"
# The refusal log: this many lines at once, then one per REFUSAL_LOG_INTERVAL seconds, each
# counting the refusals that were not logged since the one before.
REFUSAL_LOG_BURST = 5
REFUSAL_LOG_INTERVAL = 10.0

# Refusal codes (the JSON `error` code; other protocols only show the text).
SERVER_FULL = "server_full"
TOO_MANY_CONNECTIONS = "too_many_connections"
CONNECTING_TOO_FAST = "connecting_too_fast"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client may not connect: a code, and the sentence it is told."""

    code: str
    text: str


def parse_exempt(values: Iterable[str]) -> tuple[Network, ...]:
    """Networks from CIDR items, each possibly a comma-separated list; `none` alone: none.

    Raises ValueError saying which item is not a network.
    """
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if EXEMPT_NONE in (item.lower() for item in items):
        if len(items) > 1:
            raise ValueError(f"limit_exempt: {EXEMPT_NONE!r} cannot be combined with networks")
        return ()
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as problem:
            raise ValueError(f"limit_exempt: {item!r} is not a network: {problem}") from None
    return tuple(networks)


@functools.lru_cache(maxsize=4096)  # once per admitted client: see `addresses.host_key`
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RefusalLog:
    """Logs refusals: each while they are few, then one line per interval with a count."""

    def __init__(
        self,
        burst: float = REFUSAL_LOG_BURST,
        interval: float = REFUSAL_LOG_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bucket = TokenBucket(1.0 / interval, burst, clock=clock)
        self._lock = threading.Lock()
        # Refusals not logged yet, by code.
        self._unlogged: Counter[str] = Counter()

    def note(self, host: str, via: str, refusal: Refusal) -> None:
        with self._lock:
            if not self._bucket.allow():
                self._unlogged[refusal.code] += 1
                return
            unlogged = self._take_unlogged()
        log.warning("%s: refused %s: %s%s", via, host, refusal.text, unlogged)

    def flush(self) -> None:
        """Log the count of unlogged refusals, if the log's bucket allows a line now (called
        about once a second, so a burst that stopped is still reported)."""
        with self._lock:
            if not self._unlogged or not self._bucket.allow():
                return
            unlogged = self._take_unlogged()
        log.warning("refused more connections%s", unlogged)

    @property
    def unlogged(self) -> int:
        with self._lock:
            return sum(self._unlogged.values())

    def _take_unlogged(self) -> str:
        if not self._unlogged:
            return ""
        counts = ", ".join(f"{code} {count}" for code, count in sorted(self._unlogged.items()))
        self._unlogged.clear()
        return f" (not logged since the last line: {counts})"


class Admission:
    """Counts the clients of every listener and says who may connect (see the module doc)."""

    def __init__(
        self,
        *,
        max_clients: int,
        per_host: int,
        rate: float,
        burst: float,
        exempt: Iterable[Network] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_clients` or `per_host` of 0 or less, or `rate` or `burst` of 0 or less: that
        limit is off."""
        self.max_clients = max_clients
        self.per_host = per_host
        self.exempt = tuple(exempt)
        self.refusals = RefusalLog(clock=clock)
        self._clock = clock
        self._attempts = RateLimiter(rate, burst)
        self._lock = threading.Lock()
        self._clients = 0
        self._per_host: Counter[str] = Counter()

    @property
    def clients(self) -> int:
        return self._clients

    def count(self, host: str) -> int:
        """Clients admitted from `host`'s host key now (for tests and statistics)."""
        with self._lock:
            return self._per_host[host_key(host)]

    def is_exempt(self, host: str) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip in network for network in self.exempt)

    def admit(self, host: str, via: str) -> Refusal | None:
        """Count a new client from `host` (an IP literal) or say why it may not connect.

        `via` names the listener, for the log. Every client admitted is `release`d once.
        """
        refusal = self._admit(host)
        if refusal is not None:
            self.refusals.note(host, via, refusal)
        return refusal

    def _admit(self, host: str) -> Refusal | None:
        key = host_key(host)
        exempt = self.is_exempt(host)
        with self._lock:
            if 0 < self.max_clients <= self._clients:
                return Refusal(
                    SERVER_FULL, f"the server is full ({self.max_clients} clients); try again later"
                )
            if not exempt:
                if 0 < self.per_host <= self._per_host[key]:
                    return Refusal(
                        TOO_MANY_CONNECTIONS,
                        f"too many connections from your address ({self.per_host} at once)",
                    )
                now = self._clock()
                bucket = self._attempts.bucket(key, now)
                if not bucket.allow(now):
                    wait = max(1, round(bucket.ready_at() - now))
                    return Refusal(
                        CONNECTING_TOO_FAST,
                        f"connecting too fast from your address; try again in {wait} s",
                    )
            self._clients += 1
            self._per_host[key] += 1
        return None

    def release(self, host: str) -> None:
        """A client admitted from `host` is gone."""
        key = host_key(host)
        with self._lock:
            self._clients -= 1
            left = self._per_host[key] - 1
            if left > 0:
                self._per_host[key] = left
            else:
                del self._per_host[key]


class Ticket:
    """One admitted client: `release` it once it is gone; later calls do nothing, so every
    path that may end a client can call it."""

    __slots__ = ("_admission", "_host", "_lock")

    def __init__(self, admission: Admission, host: str) -> None:
        self._admission: Admission | None = admission
        self._host = host
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            admission, self._admission = self._admission, None
        if admission is not None:
            admission.release(self._host)
