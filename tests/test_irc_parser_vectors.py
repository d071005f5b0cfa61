"""The IRC parser, serialiser and mask matcher against the public test vectors of the
`irc-parser-tests` package (ircdocs/parser-tests): message splitting, message joining and
mask matching, one test per vector."""

from typing import Any

import pytest
from parser_tests.data import mask_match, msg_join, msg_split

from threadchat.core import names
from threadchat.protocols.irc.wire import Message, parse, serialize


def _vector_id(vector: dict[str, Any]) -> str:
    return str(vector.get("input") or vector.get("desc") or vector.get("mask"))[:60]


def _tags(tags: dict[str, str | None]) -> dict[str, str]:
    # The vectors write a tag without a value as an empty string; we keep it as None (IRCv3
    # makes the two the same).
    return {key: value or "" for key, value in tags.items()}


def _with_upper_verb(line: str) -> str:
    # Commands are upper-cased on parsing (they are case-insensitive): compare the verb so.
    words = line.split(" ")
    for i, word in enumerate(words):
        if word and word[0] not in "@:":
            words[i] = word.upper()
            break
    return " ".join(words)


@pytest.mark.parametrize("vector", msg_split["tests"], ids=_vector_id)
def test_split(vector: dict[str, Any]) -> None:
    atoms = vector["atoms"]
    message = parse(vector["input"])
    assert message.command == atoms["verb"].upper()
    assert message.params == atoms.get("params", [])
    assert message.source == atoms.get("source")
    assert _tags(message.tags) == atoms.get("tags", {})


@pytest.mark.parametrize("vector", msg_join["tests"], ids=_vector_id)
def test_join(vector: dict[str, Any]) -> None:
    atoms = vector["atoms"]
    message = Message(
        atoms["verb"], atoms.get("params", []), atoms.get("source"), atoms.get("tags", {})
    )
    line = serialize(message).decode()
    assert line.endswith("\r\n")
    assert _with_upper_verb(line[:-2]) in {_with_upper_verb(m) for m in vector["matches"]}


@pytest.mark.parametrize("vector", mask_match["tests"], ids=_vector_id)
def test_mask_match(vector: dict[str, Any]) -> None:
    # The matcher of bans, exceptions, WHO and LIST (IRC wildcards: `*` and `?` only).
    mask = names.fold(vector["mask"])
    for hostmask in vector["matches"]:
        assert names.glob_match(mask, names.fold(hostmask)), hostmask
    for hostmask in vector.get("fails", []):
        assert not names.glob_match(mask, names.fold(hostmask)), hostmask


def test_the_vectors_are_there() -> None:
    # A package that loaded no vectors would make every test above vacuous.
    assert len(msg_split["tests"]) > 20 and len(msg_join["tests"]) > 10
    assert len(mask_match["tests"]) > 3
