"""History as every protocol asks for it: positions, queries, and what a join replays.

The one query builder lives here (`build_query`): a native `history` request and an IRC
`CHATHISTORY` command each translate to its mode, references and limit, and nothing else
builds a query. The store answers queries (`store.base.Store.room_history`); the history
service reads them for the hub (`core.ports.History`).

Times are integers: milliseconds since the Unix epoch, UTC. Message ids are integers assigned
by the store, unique and increasing in commit order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from threadchat.core.events import Event

# Largest number of messages one history query returns. Bounds the work and the reply size a
# single client request can cause (IRC servers commonly advertise CHATHISTORY limits of 100-1000).
MAX_HISTORY_LIMIT = 500
# Messages a history page holds unless the client asks for another number.
DEFAULT_PAGE = 50
# Largest message id or millisecond time accepted as a history reference: SQLite integers are
# 64-bit, and a bigger number would make the query fail instead of matching nothing.
MAX_REF = 2**62


@dataclass(frozen=True, slots=True)
class Ref:
    """A position in a history: a message id (IRC `msgid=`) or a time in ms (`timestamp=`)."""

    kind: Literal["id", "ts"]
    value: int

    def __post_init__(self) -> None:
        # Checked here, once for every protocol: a number past SQLite's 64-bit integers made
        # the query raise OverflowError in whichever reader thread asked.
        if not 0 <= self.value <= MAX_REF:
            raise ValueError(f"a history reference is between 0 and {MAX_REF}")

    @classmethod
    def msgid(cls, message_id: int) -> Ref:
        return cls("id", message_id)

    @classmethod
    def at(cls, ts_ms: int) -> Ref:
        return cls("ts", ts_ms)


HistoryMode = Literal["latest", "before", "after", "around", "between"]
MODES: tuple[HistoryMode, ...] = get_args(HistoryMode)


def clamp_limit(limit: int) -> int:
    """The number of messages a query may return: `limit` forced into 0..MAX_HISTORY_LIMIT."""
    return max(0, min(int(limit), MAX_HISTORY_LIMIT))


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """One history request. Results are always returned oldest first.

    - latest(limit, after=None): the newest `limit` messages (only those after `after` if given).
    - before(ref, limit): the newest `limit` messages strictly before `ref`.
    - after(ref, limit): the oldest `limit` messages strictly after `ref`.
    - around(ref, limit): up to limit//2 messages before `ref`, the rest at or after it.
    - between(start, end, limit): messages strictly between the two; if `start` is the earlier
      one, the `limit` oldest of them, otherwise the `limit` newest (IRC chathistory BETWEEN).

    Made by `build_query` (the named constructors below use it too), so `limit` is already
    clamped to 0..MAX_HISTORY_LIMIT.
    """

    mode: HistoryMode
    limit: int
    ref: Ref | None = None
    end: Ref | None = None

    @classmethod
    def latest(cls, limit: int, after: Ref | None = None) -> HistoryQuery:
        return build_query("latest", limit, after)

    @classmethod
    def before(cls, ref: Ref, limit: int) -> HistoryQuery:
        return build_query("before", limit, ref)

    @classmethod
    def after(cls, ref: Ref, limit: int) -> HistoryQuery:
        return build_query("after", limit, ref)

    @classmethod
    def around(cls, ref: Ref, limit: int) -> HistoryQuery:
        return build_query("around", limit, ref)

    @classmethod
    def between(cls, start: Ref, end: Ref, limit: int) -> HistoryQuery:
        return build_query("between", limit, start, end)


def build_query(
    mode: str, limit: int | None, ref: Ref | None = None, end: Ref | None = None
) -> HistoryQuery:
    """The one place a history request becomes a query, whatever protocol asked.

    `mode` is one of MODES; `ref` is required except for "latest" (where it means "only
    after this"), `end` only for "between". `limit` None means DEFAULT_PAGE; any other is
    clamped. Raises ValueError for a mode or references that do not fit together.
    """
    if mode not in MODES:
        raise ValueError(f"unknown history mode {mode!r}")
    if mode != "latest" and ref is None:
        raise ValueError(f"a {mode} query needs a reference")
    if (mode == "between") != (end is not None):
        raise ValueError("only a between query has an end, and it needs one")
    size = DEFAULT_PAGE if limit is None else clamp_limit(limit)
    return HistoryQuery(mode, size, ref, end)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Replay:
    """What a user who just joined a room is shown of its history (see `Hub.replay`): its
    last messages as events marked `history`, oldest first. `page` is how many a replay
    holds at most, the page size a client continuing further back would use."""

    room: str
    messages: tuple[Event, ...]
    page: int
