"""Flood control: the one token bucket of every transport and protocol.

Burst first, then throttle: a client may send `burst` requests at once, then `rate` per second.
The TCP transports pause an over-limit connection until a token is back (`delay`), the way IRC
servers apply "fakelag", so TCP pushes back on the flooder and nobody else notices. UDP cannot
pause a socket shared by everyone: a UDP user's requests over the limit are held in its
session's receive window, unacknowledged, until a token is back (`allow`, `ready_at`), and the
sender's window makes it wait; datagrams over the per-address limit are dropped (`allow`).
Connection attempts per address are limited with the same bucket (`RateLimiter`, keyed).

A bucket has no lock: its owner serialises calls (a TCP connection's reader thread, the lock
of a UDP endpoint, or the admission lock).
"""

import time
from collections.abc import Callable, Hashable

# What the tokens may lack of a whole one through floating-point rounding and still count.
ROUNDING = 1e-9
# Keys a RateLimiter keeps a bucket for before it forgets idle ones.
MAX_TRACKED_KEYS = 8192


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; no limit when either is 0 or less.

    Time is `now` where a call passes it (sans-I/O callers keep their own clock), else `clock`.
    A clock going backwards adds nothing.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        now: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self.tokens = float(burst)
        # When the bucket was last refilled: an idle bucket is full again after burst / rate.
        self.updated = clock() if now is None else now

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def _refill(self, now: float | None) -> None:
        if now is None:
            now = self._clock()
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, now: float | None = None) -> float:
        """Take one token; return how long to wait first (0 when a token was available).

        The token is taken even when it is not there yet: the wait pays that debt back.
        """
        if self.rate <= 0 or self.burst <= 0:  # `enabled`, without a call: once per line
            return 0.0
        self._refill(now)
        self.tokens -= 1
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def allow(self, now: float | None = None, cost: float = 1.0) -> bool:
        """Take `cost` tokens if they are there now; False (and no debt) otherwise.

        A refused request costs nothing, so a client that stops flooding is served again at once.
        """
        if not self.enabled:
            return True
        self._refill(now)
        # The refill is floating point: at the very time `ready_at` gave, the tokens may lack
        # a rounding error of being whole, and the caller would wake again for nothing.
        if self.tokens < cost - ROUNDING:
            return False
        self.tokens -= cost
        return True

    def ready_at(self, cost: float = 1.0) -> float:
        """When `cost` tokens will be there (at the latest refill's clock; now or earlier if
        they already are)."""
        if not self.enabled or self.tokens >= cost:
            return self.updated
        return self.updated + (cost - self.tokens) / self.rate


class RateLimiter:
    """One `TokenBucket` per key (an address, a host), in a table of bounded size."""

    def __init__(self, rate: float, burst: float, max_addresses: int = MAX_TRACKED_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[Hashable, TokenBucket] = {}

    def bucket(self, key: Hashable, now: float) -> TokenBucket:
        """The bucket of `key`, made full if it has none (the table stays bounded)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._evict(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        return self.bucket(key, now).allow(now, cost)

    def _evict(self, now: float) -> None:
        # A bucket idle long enough to be full again carries no information: forget it.
        refill_time = self.burst / self.rate if self.rate > 0 else float("inf")
        idle = [k for k, b in self._buckets.items() if now - b.updated >= refill_time]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self.max_addresses:
            # Still full: drop the least recently used, the table must stay bounded.
            oldest = min(self._buckets, key=lambda k: self._buckets[k].updated)
            del self._buckets[oldest]

    def __len__(self) -> int:
        return len(self._buckets)
