"""RFC 3339 UTC times with milliseconds, cheaply, for encoders on the fan-out path; and the
one reader of times clients send (`parse_millis`, for JSON history and IRC CHATHISTORY).

`jsonlines.timestamp` and `irc.format_server_time` format every relayed message's time; going
through `datetime` cost more than building the rest of the line. Pure, no I/O.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

# Longer than any RFC 3339 time (35 characters with nanoseconds and an offset).
MAX_TIME_LEN = 40

# Up to 9999-12-31T23:59:58Z: years stay four digits (where `%Y`, `%04d` and isoformat agree)
# and a fraction rounding up cannot carry into year 10000, which datetime refuses.
_FAST_LIMIT = 253402300799
_FAST_LIMIT_FLOAT = float(_FAST_LIMIT)  # comparing a float with an int is slower
# Indexing these is several times cheaper than a "02d" or "03d" format per call.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_TWO = tuple(f"{n:02d}" for n in range(60))
# gmtime says 60 for a leap second (with a leap-second time zone); datetime clamps it to 59.
_SECOND = (*_TWO, "59", "59")

# The last whole second formatted, as (second, "YYYY-MM-DDThh:mm:ss"). Messages relayed
# together share their second. One tuple is replaced whole, so a thread reads a consistent
# pair without a lock; a race at worst formats a second twice.
_last_second: tuple[int, str] = (-1, "")


def millis(ts: float) -> str | None:
    """`ts` as YYYY-MM-DDThh:mm:ss.sssZ, or None when `ts` is not a float or int in 1970..9999.

    Matches `datetime.fromtimestamp(ts, UTC)` then milliseconds by truncation: datetime first
    rounds the fraction to microseconds (half to even), so .9999996 s is the next second.
    Callers format the None cases the slow way.
    """
    global _last_second
    kind = type(ts)
    if kind is float:
        if not 0.0 <= ts < _FAST_LIMIT_FLOAT:  # also refuses NaN
            return None
        second = int(ts)
        # Exact: a float's fractional part is representable; then the same double product and
        # half-even rounding as CPython's timestamp conversion (built-in round is half-even).
        micros = round((ts - second) * 1e6)
        if micros == 1_000_000:
            second += 1
            micros = 0
    elif kind is int:
        if not 0 <= ts < _FAST_LIMIT:
            return None
        second, micros = ts, 0
    else:
        return None
    last = _last_second
    if last[0] == second:
        prefix = last[1]
    else:
        # gmtime, as datetime uses; the years in range all have four digits.
        y, mo, d, h, mi, s = time.gmtime(second)[:6]
        prefix = f"{y}-{_TWO[mo]}-{_TWO[d]}T{_TWO[h]}:{_TWO[mi]}:{_SECOND[s]}"
        _last_second = (second, prefix)
    return prefix + _MILLIS[micros // 1000]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def parse_millis(text: str) -> int:
    """Milliseconds since the epoch for an RFC 3339 time, e.g. 2026-11-25T12:00:00.123Z.

    The rule of every protocol: a time without an offset is UTC, as every time the server
    sends is (and IRC's server-time always is); an offset is honoured. Raises ValueError if
    `text` is not such a time or is out of range.
    """
    if len(text) > MAX_TIME_LEN:
        raise ValueError("too long")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # In integers: through a float, 00:00:01.001 became 1000 ms (1.001 * 1000 is
        # 1000.9999...), so a time the server wrote did not read back as itself.
        return (moment - _EPOCH) // _MILLISECOND
    except (OverflowError, OSError) as problem:
        raise ValueError(f"out of range: {text}") from problem
