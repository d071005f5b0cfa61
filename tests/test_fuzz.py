"""A bounded run of every fuzz harness (tests/fuzz/), as part of `make test`.

FUZZ_TEST_SECONDS (30) in all, start-up included: every harness starts at once and fuzzes
until one shared deadline (tests/fuzz/budget.py), so the run takes its budget however many
harnesses there are and however long each takes to start. `make fuzz` runs them as long as
asked. atheris must be installed (`make test` installs the `fuzz` extra): without it these
tests fail, they never skip.
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
BUDGET = float(os.environ.get("FUZZ_TEST_SECONDS", "30"))


def test_atheris_is_installed() -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(
            f"atheris is not installed in {sys.executable}: the fuzz harnesses cannot run. "
            "Install the fuzz extra: pip install -e '.[test,fuzz]' (make test does)."
        )


def test_every_parser_has_a_harness() -> None:
    assert {"line", "json", "irc", "udp", "hub", "websocket"} <= set(HARNESSES)


@pytest.mark.timeout(BUDGET + runner.START_UP_ALLOWANCE + 10)
def test_no_harness_finds_a_crash_within_the_budget(tmp_path: Path) -> None:
    outcomes, took = runner.run_all_at_once(HARNESSES, BUDGET, tmp_path)
    # Shown with -s, and in the report when a harness failed.
    print(f"bounded fuzz run: {took:.1f} s in all (budget {BUDGET:g} s)")
    for outcome in outcomes:
        print(f"  {outcome.summary()}")
    failed = [outcome for outcome in outcomes if not outcome.ok or outcome.runs == 0]
    report = "".join(
        f"\n{outcome.summary()}"
        + "".join(
            f"\n    crashing input {path.name}: {path.read_bytes()[:300]!r}"
            for path in outcome.crashes
        )
        + f"\n{outcome.output[-3000:]}"
        for outcome in failed
    )
    assert not failed, report
