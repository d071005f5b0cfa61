"""Full-text search of history, as every protocol asks for it.

The one place a search request becomes a query (`build_search`) and the one reading of the
words a person types (`parse_terms`, `parse_filters`): native `/search`, JSON `search` and
IRC `SEARCH` each only gather their fields. The words become an FTS5 match expression built
from quoted terms only, so nothing a user types is ever FTS5 syntax (no column filter, no
NEAR, no stray quote): `"exact phrase"` is a phrase, `word*` a prefix, and every term must
match. Who may find what is the hub's rule (`Hub.search`): the store answers only within the
rooms and the account it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from threadchat.core.history import MAX_REF

# Results one search returns at most, and by default.
MAX_SEARCH_LIMIT = 100
DEFAULT_SEARCH_LIMIT = 20
# A query of more terms than this is refused: each one is a posting list to intersect.
MAX_TERMS = 16
# Terms shorter than this cannot be a prefix (`a*` would walk most of the index).
MIN_PREFIX = 2

_TERM = re.compile(r'"([^"]*)"|(\S+)')
# What the unicode61 tokenizer keeps of a word: letters and digits (anything else splits).
_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search: `match` is an FTS5 expression made by `build_search` (never user syntax);
    `sender` an author's nick or account; times in ms since the epoch (exclusive bounds);
    `room` limits it to one room, `peer` to the private conversation with that account
    (either still within what the asker may read); newest first."""

    match: str
    limit: int = DEFAULT_SEARCH_LIMIT
    sender: str | None = None
    room: str | None = None
    peer: str | None = None
    before_ts: int | None = None
    after_ts: int | None = None


def parse_terms(text: str) -> list[tuple[str, bool]]:
    """The terms of what a person typed: ("exact phrase", False), ("prefix", True), ...

    A quoted run is a phrase; a word ending in `*` is a prefix; anything that is not a
    letter or digit only separates words (as the index's tokenizer does)."""
    terms: list[tuple[str, bool]] = []
    for phrase, word in _TERM.findall(text):
        if phrase:
            tokens = _TOKEN.findall(phrase)
            if tokens:
                terms.append((" ".join(tokens), False))
            continue
        prefix = word.endswith("*")
        tokens = _TOKEN.findall(word)
        if not tokens:
            continue
        for token in tokens[:-1]:
            terms.append((token, False))
        terms.append((tokens[-1], prefix))
    return terms


def build_search(
    text: str,
    *,
    limit: int | None = None,
    sender: str | None = None,
    room: str | None = None,
    before_ts: int | None = None,
    after_ts: int | None = None,
) -> SearchQuery:
    """The one place a search request becomes a query. Raises ValueError saying what is
    wrong (no words, too many, a prefix too short, a time out of range)."""
    terms = parse_terms(text)
    if not terms:
        raise ValueError("search for at least one word")
    if len(terms) > MAX_TERMS:
        raise ValueError(f"search for at most {MAX_TERMS} words")
    parts = []
    for term, prefix in terms:
        if prefix and len(term) < MIN_PREFIX:
            raise ValueError(f"a prefix needs at least {MIN_PREFIX} letters")
        parts.append(f'"{term}"' + ("*" if prefix else ""))
    for bound in (before_ts, after_ts):
        if bound is not None and not 0 <= bound <= MAX_REF:
            raise ValueError("a search time is out of range")
    size = DEFAULT_SEARCH_LIMIT if limit is None else max(1, min(int(limit), MAX_SEARCH_LIMIT))
    # The words are searched in the text only; an author narrows the match in the index
    # (the store still checks the author exactly: the index only knows words of names).
    match = f"text : ({' '.join(parts)})"
    author = " ".join(_TOKEN.findall(sender or ""))
    if author:
        match += f' AND {{sender sender_account}} : "{author}"'
    return SearchQuery(
        match=match,
        limit=size,
        sender=sender or None,
        room=room or None,
        before_ts=before_ts,
        after_ts=after_ts,
    )


_FILTERS = ("from", "in", "before", "after")


def parse_filters(text: str) -> tuple[str, dict[str, str]]:
    """Split `words from:nick in:room before:date after:date` (native and the web's search
    box) into the words and the filters given; a filter word inside quotes is a word."""
    words: list[str] = []
    filters: dict[str, str] = {}
    for phrase, word in _TERM.findall(text):
        if phrase or not word:
            words.append(f'"{phrase}"')
            continue
        name, colon, value = word.partition(":")
        if colon and name.lower() in _FILTERS and value:
            filters[name.lower()] = value
        else:
            words.append(word)
    return " ".join(words), filters
