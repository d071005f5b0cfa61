"""Flood control: the one token bucket of every transport and protocol.

Burst first, then throttle: a client may send `burst` requests at once, then `rate` per second.
The TCP transports pause an over-limit connection until a token is back (`delay`), the way IRC
servers apply "fakelag", so TCP pushes back on the flooder and nobody else notices; UDP cannot
pause a socket shared by everyone, so it refuses over-limit datagrams instead (`allow`).

A bucket has no lock: its owner serialises calls (a TCP connection's reader thread, or the lock
of a UDP endpoint).
"""

import time
from collections.abc import Callable


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
        if not self.enabled:
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
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
