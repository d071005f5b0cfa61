"""One case mapping: the hub, the store and the IRC module fold names the same way."""

from pathlib import Path

import pytest

from threadchat import store
from threadchat.core import names
from threadchat.protocols.irc import wire as irc
from threadchat.store.sqlite import SQLiteStore

KELVIN_SIGN = "\u212a"  # str.lower turns it into an ASCII "k"

# (name, what IRC's ascii casemapping folds it to)
TRICKY = [
    ("[]\\^", "[]\\^"),  # ascii, not rfc1459: the brackets do not fold to {}|~
    ("{}|~", "{}|~"),
    ("ÉCOLE", "École"),  # only A-Z fold
    ("Straße", "straße"),  # no Unicode full folding ("strasse")
    (KELVIN_SIGN, KELVIN_SIGN),
    ("İstanbul", "İstanbul"),  # str.lower would make it "i̇stanbul", one letter longer
    ("Alice[Away]", "alice[away]"),
]


@pytest.mark.parametrize(("name", "folded"), TRICKY)
def test_every_fold_uses_the_ascii_casemapping(name: str, folded: str) -> None:
    assert names.fold(name) == folded
    assert store.fold(name) == folded
    assert irc.casefold(name) == folded


def test_store_keys_follow_the_same_casemapping(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "data")
    try:
        s.create_account("ÉCOLE", "correct horse")
        s.create_account("k", "correct horse")
        assert s.account_exists("École")
        assert not s.account_exists("école")
        assert not s.account_exists(KELVIN_SIGN)
        assert s.account_exists("K")
    finally:
        s.close()


def test_irc_wildcards_are_only_star_and_question_mark() -> None:
    # Nicks may hold brackets; a mask naming one must not read them as a character class.
    assert names.glob_match("[bot]!*@*", "[bot]!~b@10.0.0.1")
    assert not names.glob_match("[bot]!*@*", "b!~b@10.0.0.1")
    assert names.glob_match("*!*@10.0.0.?", "x!y@10.0.0.7")
    assert not names.glob_match("*an?", "#chan12")
    assert names.glob_match("a*b", "a\nb")  # any character, as IRC servers match
