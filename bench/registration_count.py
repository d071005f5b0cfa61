"""The server's instructions per registration, counted: a connect storm under callgrind.

``python -m bench --scenario connect-10000`` times the storm, and its wall clock needs a
quiet machine. This counts what the server executes for it instead (valgrind's callgrind,
zeroed after start-up and dumped after the storm, every thread summed), which repeats on a
busy machine, so a change to the registration path can be shown to save work:

    python -m bench.registration_count --protocol irc --clients 300
    python -m bench.registration_count --baseline REV      # REV's checkout too, in turn

The count includes each client's close at the end of the storm (the storm closes every
client it kept), the same on every revision.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import tempfile
from pathlib import Path

from bench.baseline import prepare_baseline
from bench.connect_storm import storm
from bench.instructions import (
    QUIET_TIMERS,
    callgrind_control,
    dumped_instructions,
    start_server,
    wait_listening,
)
from bench.servers import HOST, free_port, threadchat_command

ROOT = Path(__file__).resolve().parent.parent
SETTLE_S = 2.0
STORM_TIMEOUT_S = 900.0


def count(source: Path, protocol: str, clients: int, in_flight: int) -> tuple[int, int]:
    """(registrations, instructions) of one storm against the server of ``source``."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-regcount-"))
    line_port, irc_port = free_port(), free_port()
    cmd = threadchat_command(line_port, irc_port, data_dir=str(tmp / "data")) + QUIET_TIMERS
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", *cmd]
    proc = start_server(cmd, source, tmp)
    try:
        port = irc_port if protocol == "irc" else line_port
        wait_listening(proc, port)
        # Start-up's own work (migrations, the lobby's load) must end before the zero.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SETTLE_S)
        callgrind_control("--zero", proc.pid)
        result = storm(HOST, port, protocol, clients, in_flight, timeout_s=STORM_TIMEOUT_S)
        callgrind_control("--dump", proc.pid)
        return int(result["registered"]), dumped_instructions(tmp, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.registration_count",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", default="irc", choices=("irc", "json"))
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--baseline", metavar="REV", help="also count git revision REV")
    args = parser.parse_args(argv)
    sources = [("working tree", ROOT)]
    if args.baseline:
        baseline = prepare_baseline(args.baseline)
        sources.append((baseline.label, baseline.path))
    print("| revision | protocol | registered | instructions per registration |")
    print("| --- | --- | --: | --: |")
    for name, source in sources:
        registered, instructions = count(source, args.protocol, args.clients, args.in_flight)
        per = instructions / max(1, registered)
        print(f"| {name} | {args.protocol} | {registered}/{args.clients} | {per:,.0f} |")


if __name__ == "__main__":
    main()
