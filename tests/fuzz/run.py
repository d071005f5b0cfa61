"""Run the fuzz harnesses (atheris, libFuzzer) for as long as asked.

    python tests/fuzz/run.py --seconds 600            # every harness, 600 s in all
    python tests/fuzz/run.py --seconds 300 irc udp    # only these two, 150 s each
    python tests/fuzz/fuzz_irc.py CRASH_FILE          # replay one input

`make fuzz` runs this (FUZZ_SECONDS, FUZZ_HARNESS). A harness is any `fuzz_NAME.py` beside
this file: a new parser gets its harness by adding one, with seed inputs in `seeds/NAME/`
and a libFuzzer dictionary of the words that matter to it in `dicts/NAME.dict`; this runner
and the bounded run in `make test` (tests/test_fuzz.py) pick it up by its name. Inputs that
reach new code are kept in `.fuzz/corpus/NAME/` (each run starts from them and the seeds);
an input that makes a harness fail is written to `.fuzz/crashes/` and the run ends with
status 1.
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# budget.py lies beside this file, which tests/test_fuzz.py loads by its path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import DEADLINE_VARIABLE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Headroom over the fuzzing time for a harness to start (instrumenting its imports) and end.
START_UP_ALLOWANCE = 60.0
# A harness at its deadline still ends its last input and prints its statistics: the bounded
# run's deadline is set this much before its end.
ENDING_ALLOWANCE = 1.5
# libFuzzer reports an input that runs this long (seconds) as a hang: no parser may take it.
INPUT_TIMEOUT = 10


def rss_limit_mb() -> int:
    """libFuzzer's memory limit for a harness started from this process: 2 GiB above what
    this process has used. A child inherits its parent's peak RSS (it survives fork and
    exec), so under a large parent, such as the whole test suite's pytest, libFuzzer's plain
    2 GiB limit reported an out-of-memory before the first input."""
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    return inherited + 2048


def harnesses() -> dict[str, Path]:
    """Every harness by name: fuzz_irc.py is "irc"."""
    return {path.stem.removeprefix("fuzz_"): path for path in sorted(HERE.glob("fuzz_*.py"))}


@dataclass
class Outcome:
    name: str
    ok: bool
    runs: int
    seconds: float
    crashes: list[Path]
    output: str

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        found = "".join(f"\n    crashing input: {path}" for path in self.crashes)
        return f"{self.name}: {verdict}, {self.runs} inputs in {self.seconds:.1f} s{found}"


def run_harness(
    name: str,
    path: Path,
    seconds: int,
    corpus: Path,
    crashes: Path,
    timeout: float | None = None,
    deadline: float | None = None,
) -> Outcome:
    """Fuzz one harness for `seconds`; new inputs go to `corpus`, failing ones to `crashes`.

    With a `deadline` (a time.time()), the harness fuzzes only until then, its start-up
    included (see budget.py). Either way it is ended, and fails, if it runs past `timeout`
    (by default `seconds` and START_UP_ALLOWANCE)."""
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    seeds = HERE / "seeds" / name
    words = HERE / "dicts" / f"{name}.dict"
    command = [
        sys.executable,
        str(path),
        f"-max_total_time={seconds}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-artifact_prefix={crashes}/{name}-",
        "-print_final_stats=1",
        f"-rss_limit_mb={rss_limit_mb()}",
        *([f"-dict={words}"] if words.is_file() else []),
        str(corpus),
        *([str(seeds)] if seeds.is_dir() else []),
    ]
    environment = dict(os.environ)
    if deadline is not None:
        environment[DEADLINE_VARIABLE] = repr(deadline)
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=ROOT,
            env=environment,
            timeout=timeout if timeout is not None else seconds + START_UP_ALLOWANCE,
        )
        output, ok = result.stdout + result.stderr, result.returncode == 0
    except subprocess.TimeoutExpired as expired:
        output = (
            f"{expired.stdout or ''}{expired.stderr or ''}\n(killed: ran past {expired.timeout} s)"
        )
        ok = False
    elapsed = time.monotonic() - started
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    found = sorted(set(crashes.iterdir()) - before)
    return Outcome(name, ok and not found, int(runs[-1]) if runs else 0, elapsed, found, output)


def run_all_at_once(
    chosen: dict[str, Path], seconds: float, work: Path
) -> tuple[list[Outcome], float]:
    """Every harness at the same time, all done `seconds` after the start, start-up included
    (the bounded run of `make test`): on a machine of two cores the harnesses' start-ups
    overlap, where one after another they added up to more than the fuzzing itself.
    Returns the outcomes and the seconds the whole took."""
    started = time.monotonic()
    deadline = time.time() + seconds - ENDING_ALLOWANCE
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        futures = [
            pool.submit(
                run_harness,
                name,
                path,
                int(seconds),
                work / "corpus" / name,
                work / "crashes",
                deadline=deadline,
            )
            for name, path in chosen.items()
        ]
        outcomes = [future.result() for future in futures]
    return outcomes, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    known = harnesses()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="HARNESS", help=f"of {', '.join(known)}")
    parser.add_argument("--seconds", type=int, default=60, help="in all, split evenly")
    parser.add_argument("--work", type=Path, default=ROOT / ".fuzz", help="corpus and crashes")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)}; there are {', '.join(known)}")
    chosen = args.names or list(known)
    each = max(1, args.seconds // len(chosen))
    failed = False
    for name in chosen:
        print(f"fuzzing {name} for {each} s ...", flush=True)
        outcome = run_harness(
            name, known[name], each, args.work / "corpus" / name, args.work / "crashes"
        )
        print(outcome.summary(), flush=True)
        if not outcome.ok:
            failed = True
            print(outcome.output[-4000:], flush=True)
            print(f"replay: {sys.executable} {known[name]} CRASHING_INPUT", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
