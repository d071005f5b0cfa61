"""A bounded run of every fuzz harness (tests/fuzz/), as part of `make test`.

FUZZ_TEST_SECONDS of fuzzing in all (15 by default), split evenly between the harnesses, so
that with their start-up the whole stays within 30 s however many harnesses there are.
`make fuzz` runs them as long as asked. atheris must be installed (`make test` installs the
`fuzz` extra): without it these tests fail, they never skip.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).parent / "fuzz"
_spec = importlib.util.spec_from_file_location("fuzz_runner", FUZZ_DIR / "run.py")
assert _spec is not None and _spec.loader is not None
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)

HARNESSES = runner.harnesses()
BUDGET = int(os.environ.get("FUZZ_TEST_SECONDS", "15"))
EACH = max(1, BUDGET // max(1, len(HARNESSES)))


def test_atheris_is_installed() -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(
            f"atheris is not installed in {sys.executable}: the fuzz harnesses cannot run. "
            "Install the fuzz extra: pip install -e '.[test,fuzz]' (make test does)."
        )


def test_every_parser_has_a_harness() -> None:
    assert {"line", "json", "irc", "udp", "hub", "websocket"} <= set(HARNESSES)


@pytest.mark.timeout(EACH + runner.START_UP_ALLOWANCE + 10)
@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_the_harness_finds_no_crash(name: str, tmp_path: Path) -> None:
    outcome = runner.run_harness(
        name, HARNESSES[name], EACH, tmp_path / "corpus", tmp_path / "crashes"
    )
    if not outcome.ok:
        inputs = "".join(
            f"\ncrashing input {path.name}: {path.read_bytes()[:300]!r}" for path in outcome.crashes
        )
        pytest.fail(f"{outcome.summary()}{inputs}\n{outcome.output[-3000:]}")
    assert outcome.runs > 0, outcome.output[-2000:]
