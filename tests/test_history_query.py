"""The one history query builder (core/history.py) that native and IRC requests translate to."""

import pytest

from threadchat.core.history import (
    DEFAULT_PAGE,
    MAX_HISTORY_LIMIT,
    HistoryQuery,
    Ref,
    build_query,
)


def test_the_limit_is_clamped_and_defaults_to_a_page() -> None:
    assert build_query("latest", None).limit == DEFAULT_PAGE
    assert build_query("latest", 10**9).limit == MAX_HISTORY_LIMIT
    assert build_query("latest", -3).limit == 0
    assert HistoryQuery.latest(10**9).limit == MAX_HISTORY_LIMIT  # the named forms too


def test_each_mode_takes_the_references_it_needs() -> None:
    start, end = Ref.msgid(5), Ref.at(1_700_000_000_000)
    assert build_query("latest", 5) == HistoryQuery("latest", 5)
    assert build_query("latest", 5, start) == HistoryQuery.latest(5, after=start)
    assert build_query("before", 5, start) == HistoryQuery.before(start, 5)
    assert build_query("after", 5, start) == HistoryQuery.after(start, 5)
    assert build_query("around", 5, start) == HistoryQuery.around(start, 5)
    assert build_query("between", 5, start, end) == HistoryQuery.between(start, end, 5)


@pytest.mark.parametrize(
    ("mode", "refs"),
    [
        ("sideways", ()),
        ("before", ()),
        ("around", ()),
        ("between", (Ref.msgid(1),)),
        ("after", (Ref.msgid(1), Ref.msgid(2))),
    ],
)
def test_a_query_that_does_not_fit_together_is_refused(mode: str, refs: tuple[Ref, ...]) -> None:
    with pytest.raises(ValueError):
        build_query(mode, 5, *refs)


def test_a_reference_past_the_store_integers_is_refused() -> None:
    with pytest.raises(ValueError):
        Ref.msgid(2**63)
    with pytest.raises(ValueError):
        Ref.at(-1)
