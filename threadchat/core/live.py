"""Messages that live on after they are sent: ids, replies, reactions, edits, deletions,
typing notices and multiline text. The rules are `Hub` methods (`say` with `reply_to`,
`react`, `edit_message`, `delete_message`, `typing`); this module holds their limits, the
data a message carries about them (`MessageExtra`) and the short references of text mode.

A message id (msgid) is the stored id with history on, and the event id without it: unique
on the server, increasing. Text mode names a message `#a3f`: `#` and hexadecimal digits,
the last three of the id when shown (see `short_ref`). A reference resolves to the newest
message among the recent ones of the user's rooms whose id ends in those digits; one that
matches none there is read as the whole id (`Hub.find_ref`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Messages per room the hub keeps in memory, at least (it trims to this many each time it
# holds twice as many), for replies, reactions, edits, deletions and short references
# (older ones are read from history, when kept). Three hex digits tell
# 4096 consecutive ids apart, so a short reference shown for one of these stays unique
# while fewer than 4096 messages are sent on the whole server after it.
RECENT_PER_ROOM = 1024
# Typing: at most one notice per user and room in this many seconds (IRCv3 typing asks
# clients for no more than one `active` every 3 s); a `done` is let through once after an
# `active` or `paused`, so a user who stops is not shown typing until the others time out.
TYPING_INTERVAL = 3.0
TYPING_STATES = ("active", "paused", "done")
# Multiline messages: what IRC's draft/multiline advertises as max-lines and max-bytes (the
# values ergo advertises), and the limit of every protocol's text with line breaks.
MULTILINE_MAX_LINES = 32
MULTILINE_MAX_BYTES = 4096
# A reaction is a short string (an emoji, `+1`, `lol`): IRCv3 react sets no limit; this
# one keeps a reaction from being a message in disguise.
REACTION_MAX_BYTES = 32
# Characters of a replied-to message quoted with a reply (`↪ alice: first words…`).
EXCERPT_CHARS = 40

_REF = re.compile(r"#?([0-9a-fA-F]{1,16})")


@dataclass(frozen=True, slots=True)
class MessageExtra:
    """What a room message carries beyond its text, when anything: the message it replies
    to (id, sender, first words), whether it was edited or deleted (history keeps the latest
    text, and a tombstone with no text for a deleted one), and its reactions as
    (reaction, (who, ...)) in the order they were first given."""

    reply_to: int | None = None
    reply_sender: str = ""
    reply_excerpt: str = ""
    edited: bool = False
    deleted: bool = False
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()


def short_ref(msgid: int) -> str:
    """How text mode shows a message id: `#` and its last three hexadecimal digits."""
    return f"#{msgid & 0xFFF:03x}"


def full_ref(msgid: int) -> str:
    """The reference that names exactly one message: `#` and the whole id in hexadecimal."""
    return f"#{msgid:x}"


def parse_ref(text: str) -> tuple[int, int] | None:
    """A reference as typed (`#a3f`, `a3f`): (its value, how many hex digits), or None."""
    match = _REF.fullmatch(text.strip())
    if match is None:
        return None
    digits = match.group(1)
    return int(digits, 16), len(digits)


def excerpt(text: str) -> str:
    """The first words of `text` for a reply's quote: its first line, cut at a word
    boundary near EXCERPT_CHARS, with `…` when something was left out."""
    first = text.split("\n", 1)[0]
    if len(first) <= EXCERPT_CHARS and first == text:
        return first
    cut = first[:EXCERPT_CHARS]
    if len(first) > EXCERPT_CHARS and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


def with_reaction(
    reactions: tuple[tuple[str, tuple[str, ...]], ...], reaction: str, who: str, on: bool
) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], bool]:
    """`reactions` with `who`'s `reaction` added (`on`) or taken away, and whether that
    changed anything (a second identical reaction, or taking away one not given, does not)."""
    result: list[tuple[str, tuple[str, ...]]] = []
    changed = False
    found = False
    for name, people in reactions:
        if name == reaction:
            found = True
            if on and who not in people:
                people, changed = (*people, who), True
            elif not on and who in people:
                people, changed = tuple(p for p in people if p != who), True
        if people:
            result.append((name, people))
    if on and not found:
        result.append((reaction, (who,)))
        changed = True
    return tuple(result), changed
