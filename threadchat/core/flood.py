"""Flood control: a token bucket owned by one connection's reader thread (so it needs no lock).

Burst first, then throttle: a client may send `burst` lines at once, then `rate` lines per
second. Over the limit the reader stops reading that connection until a token is back, the way
IRC servers apply "fakelag", so TCP pushes back on the flooder and nobody else notices.
"""

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def delay(self) -> float:
        """Take one token; return how long to wait first (0 when a token was available)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def try_take(self) -> bool:
        """Take one token if one is available now; False (and no debt) otherwise.

        For transports that refuse over-limit requests instead of pausing (UDP): a refused
        request costs nothing, so a client that stops flooding is served again at once.
        """
        if not self.enabled:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
