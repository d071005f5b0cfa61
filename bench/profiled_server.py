"""Run ``python -m threadchat ...`` with cProfile in every thread; merged stats go to a file.

Started as a script (``python bench/profiled_server.py OUT.prof serve ...``), not as a module,
so that the threadchat it runs is whichever PYTHONPATH names first (a baseline's checkout, see
bench/baseline.py), not this one. Every thread the server starts profiles itself from its
start; SIGUSR1 clears what all of them counted so far (the end of set-up) and SIGUSR2 writes
the merged stats to OUT.prof (the end of the measured rounds); bench/instructions.py sends
both. SIGTERM then stops the server as usual.

cProfile slows every Python call, so its times are not the server's. Its call counts are
exact: divided by the messages sent they say how many calls of each function a message
costs, which is what a change to the per-message path adds or removes.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import signal
import sys
import threading
from collections.abc import Callable

_profiles: list[cProfile.Profile] = []
_registry_lock = threading.Lock()
_out = ""


def _profiled(run: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with _registry_lock:
            _profiles.append(profile)
        profile.runcall(run, self)

    return profiled_run


def _clear(_signum: int, _frame: object) -> None:
    # Safe from the main thread: the profilers' C code runs under the GIL, which a signal
    # handler holds, so no other thread is inside one.
    with _registry_lock:
        for profile in _profiles:
            profile.clear()


def _dump(_signum: int, _frame: object) -> None:
    with _registry_lock:
        profiles = list(_profiles)
    stats: pstats.Stats | None = None
    for profile in profiles:
        profile.snapshot_stats()
        if not profile.stats:  # type: ignore[attr-defined]
            continue
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(_out)


if __name__ == "__main__":
    _out = sys.argv[1]
    sys.argv = ["threadchat", *sys.argv[2:]]
    # `_bootstrap_inner`, not `run`: it calls `run`, also where a subclass overrides it (the
    # flusher thread does).
    threading.Thread._bootstrap_inner = _profiled(threading.Thread._bootstrap_inner)  # type: ignore[attr-defined]
    signal.signal(signal.SIGUSR1, _clear)
    signal.signal(signal.SIGUSR2, _dump)
    runpy.run_module("threadchat", run_name="__main__", alter_sys=True)
