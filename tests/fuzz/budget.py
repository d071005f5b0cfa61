"""libFuzzer's arguments for a harness, its fuzzing time cut to a deadline shared by all.

The bounded run in `make test` (tests/test_fuzz.py) starts every harness at once with one
deadline for the whole run, start-up included: FUZZ_DEADLINE in the environment, in seconds
since the epoch. libFuzzer's -max_total_time counts from its own start, after the harness
has imported and instrumented its modules, which takes from under a second to several on a
busy machine; so each harness, once ready to fuzz, asks for what is left of the run (at
least MIN_SECONDS, so that it runs its seeds and some inputs however late it starts).
Without FUZZ_DEADLINE (`make fuzz`, a replay) the arguments are used as given.
"""

import os
import time

DEADLINE_VARIABLE = "FUZZ_DEADLINE"
MIN_SECONDS = 1


def libfuzzer_argv(argv: list[str]) -> list[str]:
    deadline = os.environ.get(DEADLINE_VARIABLE)
    if deadline is None:
        return argv
    left = max(MIN_SECONDS, int(float(deadline) - time.time()))
    kept = [arg for arg in argv[1:] if not arg.startswith("-max_total_time=")]
    return [argv[0], f"-max_total_time={left}", *kept]
