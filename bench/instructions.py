"""The server's work per message as a count, not a time: a fixed workload, counted.

``python -m bench`` measures wall-clock throughput and latency, which a loaded machine
disturbs. This harness drives a real server over loopback with a fixed, lock-step workload
and counts what the server does for it, so two revisions can be compared on a busy machine
and a change shown to save work:

- C clients join one room; the first S of them send.
- In each of R rounds every sender writes B lines in one ``sendall`` (one read on the
  server, as the benchmark's 128-line window makes it), and the round ends when every
  client that is not a sender has received all of them (the senders' copies of the others'
  lines are counted as they come). So each read, commit and relay run holds the same lines
  on every revision.
- Counting starts after set-up and ends once the last round is received.

Tools (``--tool``):

- ``callgrind`` (the default): the instructions the server process executes, every thread
  summed (valgrind's callgrind, zeroed and dumped with ``callgrind_control``). Runs about 50
  times slower; repeated runs agree within about 0.5 %. It does not see the kernel's work
  (sends, wake-ups), cache misses or time spent waiting for the GIL.
- ``cprofile``: every server thread under cProfile (bench/profiled_server.py); prints the
  functions with calls per message. The counts are exact, the times are cProfile's.
- ``cpu``: no instrumentation; the server's CPU time, and perf's software counts (context
  switches, system calls, sends) when ``perf`` is there. Quick but as noisy as the machine.

Figures: instructions (or CPU time) per message sent and per delivery (a line received).

  python -m bench.instructions --protocol irc --clients 100 --no-history
  python -m bench.instructions --baseline f195cf1 --protocol irc,json --repeat 2
  python -m bench.instructions --tool cprofile --protocol json --clients 1000 --history

``--baseline REV`` runs the same workload against threadchat of revision REV as well (its
checkout in bench/baselines/, see bench/baseline.py), the two taking turns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.baseline import prepare_baseline
from bench.runner import CLK_TCK
from bench.servers import HOST, REPO_DIR, free_port, threadchat_command, threadchat_env

PROFILED_SERVER = Path(__file__).resolve().parent / "profiled_server.py"
MARK = b"~bm~"
ROOM = "bench"
RECV_BYTES = 262144
# Under callgrind the server runs some 50 times slower than natively: generous bounds.
START_TIMEOUT_S = 300.0
PHASE_TIMEOUT_S = 900.0
# Connections opened at once while setting up (the server's accept loop is slow under valgrind).
CONNECT_AT_ONCE = 20
# Timers must not fire during a run: no pings, no registration timeout.
QUIET_TIMERS = ["--ping-interval", "3600", "--name-timeout", "3600"]
PAD = "x" * 40


@dataclass(eq=False)
class Client:
    index: int
    nick: str
    sender: bool
    sock: socket.socket | None = None
    state: str = "connecting"  # connecting, registering, joining, ready
    partial: bytes = b""
    got: int = 0


class Harness:
    def __init__(self, port: int, protocol: str, clients: int, senders: int) -> None:
        self.port = port
        self.irc = protocol == "irc"
        self.sel = selectors.DefaultSelector()
        self.clients = [Client(i, f"u{i:05d}", i < senders) for i in range(clients)]

    # -- set-up: registration and joins, line by line --------------------------------------

    def setup(self) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        waiting = list(self.clients)
        while any(c.state != "ready" for c in self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError("set-up did not finish")
            in_progress = sum(1 for c in self.clients if c.sock and c.state != "ready")
            while waiting and in_progress < CONNECT_AT_ONCE:
                self._connect(waiting.pop(0))
                in_progress += 1
            for key, _ in self.sel.select(0.2):
                self._setup_read(key.data)
        self._quiesce()

    def _connect(self, c: Client) -> None:
        sock = socket.create_connection((HOST, self.port), timeout=PHASE_TIMEOUT_S)
        sock.setblocking(False)
        c.sock = sock
        c.state = "registering"
        self.sel.register(sock, selectors.EVENT_READ, c)
        if self.irc:
            self._send(c, f"NICK {c.nick}\r\nUSER {c.nick} 0 * :bench\r\n".encode())
        else:
            self._send(c, f'{{"type":"hello","name":"{c.nick}"}}\n'.encode())

    @staticmethod
    def _send(c: Client, data: bytes) -> None:
        assert c.sock is not None
        c.sock.setblocking(True)
        try:
            c.sock.sendall(data)
        finally:
            c.sock.setblocking(False)

    def _recv(self, c: Client) -> bytes:
        assert c.sock is not None
        try:
            data = c.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return b""
        if not data:
            raise RuntimeError(f"{c.nick}: the server closed the connection")
        return data

    def _setup_read(self, c: Client) -> None:
        data = c.partial + self._recv(c)
        *lines, c.partial = data.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if self.irc:
                words = line.split(" ")
                if line.startswith("PING "):
                    self._send(c, f"PONG {line[5:]}\r\n".encode())
                elif len(words) > 1 and words[1] in ("432", "433", "ERROR"):
                    raise RuntimeError(f"{c.nick}: refused: {line}")
                elif c.state == "registering" and len(words) > 1 and words[1] == "001":
                    c.state = "joining"
                    self._send(c, f"JOIN #{ROOM}\r\n".encode())
                elif c.state == "joining" and len(words) > 1 and words[1] == "366":
                    c.state = "ready"
            else:
                if '"type":"welcome"' in line and c.state == "registering":
                    c.state = "joining"
                    self._send(c, f'{{"type":"join","room":"{ROOM}"}}\n'.encode())
                elif c.state == "joining" and '"join"' in line and f'"{c.nick}"' in line:
                    c.state = "ready"
                elif '"type":"error"' in line:
                    raise RuntimeError(f"{c.nick}: refused: {line}")

    def _quiesce(self, quiet_s: float = 2.0) -> None:
        """Read and drop until nothing arrives for quiet_s (the joins' announcements)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            for key, _ in self.sel.select(0.1):
                last = time.monotonic()
                c = key.data
                c.partial = b""
                self._recv(c)

    # -- measured: lock-step rounds ---------------------------------------------------------

    def message(self, c: Client, seq: int) -> bytes:
        text = f"~bm~{c.index} {seq} {PAD}"
        if self.irc:
            return f"PRIVMSG #{ROOM} :{text}\r\n".encode()
        return f'{{"type":"say","room":"{ROOM}","text":"{text}","action":false}}\n'.encode()

    def run(self, rounds: int, batch: int, spread_s: float = 0.0) -> int:
        """Send the rounds; the number of deliveries received. With `spread_s`, the senders
        of a round write one after another, that long apart (as at a fixed rate), instead of
        all at once."""
        senders = [c for c in self.clients if c.sender]
        listeners = [c for c in self.clients if not c.sender]
        for c in self.clients:
            c.got = 0
            c.partial = b""
        seq = 0
        for r in range(1, rounds + 1):
            writes = []
            for c in senders:
                writes.append((c, b"".join(self.message(c, seq + i) for i in range(batch))))
            seq += batch
            for index, (c, data) in enumerate(writes):
                if spread_s and index:
                    time.sleep(spread_s)
                self._send(c, data)
            expected = len(senders) * batch * r
            deadline = time.monotonic() + PHASE_TIMEOUT_S
            while any(c.got < expected for c in listeners):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"round {r} was not delivered")
                for key, _ in self.sel.select(0.5):
                    self._count(key.data)
        # A sender's copies of its own and the others' lines: whatever is still on its way.
        self._drain(senders, len(senders) * batch * rounds)
        return sum(c.got for c in self.clients)

    def _count(self, c: Client) -> None:
        data = c.partial + self._recv(c)
        # Count whole lines only: a mark may be cut between two reads.
        end = data.rfind(b"\n") + 1
        c.partial = data[end:]
        c.got += data.count(MARK, 0, end)
        if self.irc and b"PING " in data:  # not expected: the timers are off
            raise RuntimeError("the server pinged during the run")

    def _drain(self, senders: list[Client], sent: int, quiet_s: float = 2.0) -> None:
        # A sender receives the others' lines, not its own.
        expected = sent - sent // len(senders)
        last = time.monotonic()
        while any(c.got < expected for c in senders) and time.monotonic() - last < quiet_s:
            for key, _ in self.sel.select(0.1):
                last = time.monotonic()
                self._count(key.data)

    def close(self) -> None:
        for c in self.clients:
            if c.sock is not None:
                c.sock.close()
        self.sel.close()


@dataclass
class Result:
    revision: str
    protocol: str
    clients: int
    senders: int
    history: bool
    sent: int
    deliveries: int
    instructions: int | None  # callgrind's Ir
    cpu_s: float | None  # --tool cpu: user and system
    system_s: float | None  # of which system (the kernel's share: sends, receives, wake-ups)
    counts: dict[str, int] = field(default_factory=dict)  # perf stat's, with --tool cpu
    profile: Path | None = None  # --tool cprofile: the stats file

    def per_message(self) -> float:
        return (self.instructions or 0) / self.sent

    def per_delivery(self) -> float:
        return (self.instructions or 0) / self.deliveries


def callgrind_control(option: str, pid: int) -> None:
    subprocess.run(
        ["callgrind_control", option, str(pid)],
        check=True,
        capture_output=True,
        timeout=PHASE_TIMEOUT_S,
    )


def dumped_instructions(out_dir: Path, pid: int, timeout_s: float = 120.0) -> int:
    """The Ir total of the first dump callgrind wrote on request (``cg.<pid>.1``)."""
    path = out_dir / f"cg.{pid}.1"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            match = re.search(rb"^totals: (\d+)", path.read_bytes(), re.MULTILINE)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump at {path}")


def start_server(cmd: list[str], source: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """Start `cmd` (a server of `source`'s checkout), its standard error kept in tmp."""
    with open(tmp / "stderr", "wb") as errors:
        return subprocess.Popen(
            cmd,
            cwd=source,
            env=threadchat_env(source),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def run_once(source: Path, revision: str, args: argparse.Namespace, protocol: str) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    line_port, irc_port = free_port(), free_port()
    cmd = threadchat_command(line_port, irc_port, args.history, data_dir=str(tmp / "data"))
    cmd += QUIET_TIMERS
    if args.tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", *cmd]
    elif args.tool == "cprofile":
        # Not `-m threadchat`: the script, so threadchat still comes from source's checkout.
        assert cmd[1:3] == ["-m", "threadchat"]
        cmd = [cmd[0], str(PROFILED_SERVER), str(tmp / "stats.prof"), *cmd[3:]]
    proc = start_server(cmd, source, tmp)
    harness = None
    try:
        port = irc_port if protocol == "irc" else line_port
        wait_listening(proc, port)
        harness = Harness(port, protocol, args.clients, args.senders)
        harness.setup()
        instructions = cpu_s = system_s = None
        if args.tool == "callgrind":
            callgrind_control("--zero", proc.pid)
        user_before, system_before = cpu_times(proc.pid)
        perf = start_perf_stat(proc.pid, tmp / "perf.csv") if args.tool == "cpu" else None
        sampler = None
        if args.tool == "cpu" and args.perf_record is not None:
            args.perf_record.mkdir(parents=True, exist_ok=True)
            sampler = start_perf_record(proc.pid, args.perf_record / f"{revision}-{protocol}.data")
        if args.tool == "cprofile":
            proc.send_signal(signal.SIGUSR1)  # the set-up's counts are dropped
        deliveries = harness.run(args.rounds, args.batch, args.spread_ms / 1000)
        for watcher in (perf, sampler):
            if watcher is not None:
                watcher.send_signal(signal.SIGINT)
                watcher.wait(60)
        counts = read_perf_stat(tmp / "perf.csv") if perf is not None else {}
        kept = None
        if args.tool == "cprofile":
            proc.send_signal(signal.SIGUSR2)
            kept = profile_path(args.profile_dir, revision, protocol)
            wait_for_file(tmp / "stats.prof")
            shutil.copy(tmp / "stats.prof", kept)
        if args.tool == "callgrind":
            callgrind_control("--dump", proc.pid)
            instructions = dumped_instructions(tmp, proc.pid)
            if args.keep_dumps is not None:
                # For callgrind_annotate: where the instructions of the measured part went.
                args.keep_dumps.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp / f"cg.{proc.pid}.1", args.keep_dumps / f"{revision}-{protocol}.cg")
        else:
            user_after, system_after = cpu_times(proc.pid)
            system_s = system_after - system_before
            cpu_s = user_after - user_before + system_s
        sent = args.senders * args.batch * args.rounds
        return Result(
            revision,
            protocol,
            args.clients,
            args.senders,
            args.history,
            sent,
            deliveries,
            instructions,
            cpu_s,
            system_s,
            counts,
            kept,
        )
    finally:
        if harness is not None:
            harness.close()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)


# Software events and tracepoints: they need no hardware counters (a VM has none).
PERF_EVENTS = {
    "context-switches": "switches",
    "raw_syscalls:sys_enter": "syscalls",
    "syscalls:sys_enter_sendto": "sends",
    "syscalls:sys_enter_recvfrom": "receives",
    "syscalls:sys_enter_futex": "futex",
}


def start_perf_stat(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """``perf stat`` counting the server's switches and system calls, or None without perf."""
    if not shutil.which("perf"):
        return None
    proc = subprocess.Popen(
        ["perf", "stat", "-x", ",", "-o", str(out), "-e", ",".join(PERF_EVENTS), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc


def start_perf_record(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """``perf record -g`` sampling the server (every thread) until interrupted."""
    if not shutil.which("perf"):
        return None
    proc = subprocess.Popen(
        ["perf", "record", "-g", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc


def read_perf_stat(path: Path) -> dict[str, int]:
    counts = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in PERF_EVENTS and fields[0].isdigit():
                counts[PERF_EVENTS[fields[2]]] = int(fields[0])
    return counts


def profile_path(folder: Path, revision: str, protocol: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{revision.replace(' ', '-')}-{protocol}.prof"


def wait_for_file(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    size = -1
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size == size > 0:
            return  # written, and no longer growing
        size = path.stat().st_size if path.exists() else -1
        time.sleep(0.5)
    raise RuntimeError(f"{path} was not written")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server did not listen on {port}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", default="irc", help="irc, json or both: irc,json")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="lines per sender per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--spread-ms",
        type=float,
        default=0.0,
        help="the senders of a round write this many ms apart (a fixed rate's timing; "
        "meant for --tool cpu: callgrind slows the server too much for it)",
    )
    parser.add_argument("--history", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--tool",
        choices=["callgrind", "cpu", "cprofile"],
        default="callgrind",
        help="callgrind: instructions; cpu: CPU time and perf's software "
        "counts; cprofile: every thread under cProfile, calls per message",
    )
    parser.add_argument("--baseline", metavar="REV", help="also run revision REV, taking turns")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="with --tool cprofile: where each run's stats go",
    )
    parser.add_argument(
        "--keep-dumps",
        type=Path,
        help="with --tool callgrind: copy each run's dump here (REVISION-PROTOCOL.cg)",
    )
    parser.add_argument(
        "--perf-record",
        type=Path,
        metavar="DIR",
        help="with --tool cpu: also sample the counted part with perf record -g "
        "(DIR/REVISION-PROTOCOL.data, for perf report)",
    )
    args = parser.parse_args(argv)
    if args.tool == "callgrind" and not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    sources = [(REPO_DIR, "working tree")]
    if args.baseline:
        baseline = prepare_baseline(args.baseline)
        sources.append((baseline.path, baseline.label))
    results: list[Result] = []
    for protocol in args.protocol.split(","):
        for round_index in range(args.repeat):
            order = sources if round_index % 2 == 0 else sources[::-1]
            for source, revision in order:
                result = run_once(source, revision, args, protocol)
                results.append(result)
                print(describe(result), flush=True)
    print()
    summarize(results)


def describe(r: Result) -> str:
    head = (
        f"{r.revision:>12} {r.protocol:4} C={r.clients} S={r.senders} "
        f"history={'on' if r.history else 'off'}: {r.sent} sent, {r.deliveries} delivered"
    )
    if r.instructions is not None:
        return (
            f"{head}, {r.instructions:,} Ir, {r.per_message():,.0f} per message, "
            f"{r.per_delivery():,.0f} per delivery"
        )
    if r.profile is not None:
        return f"{head}, cProfile stats in {r.profile}\n{profile_table(r.profile, r.sent)}"
    counts = "".join(f", {n:,} {name}" for name, n in r.counts.items())
    return (
        f"{head}, {r.cpu_s:.2f} CPU-s ({r.system_s:.2f} system), "
        f"{1e6 * (r.cpu_s or 0) / r.deliveries:.3f} us per delivery{counts}"
    )


def profile_table(path: Path, sent: int, top: int = 40) -> str:
    """The functions that took most of the profiled time (their own), with calls per message."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in stats.values()) or 1.0
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = ["  own time  calls/msg  function"]
    for (filename, line, name), (_, calls, own, _, _) in rows:
        where = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        lines.append(f"  {100 * own / total:7.1f}%  {calls / sent:9.3f}  {name} {where}:{line}")
    return "\n".join(lines)


def summarize(results: list[Result]) -> None:
    """Medians per revision and protocol, and the change of the working tree against the rest."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.protocol, r.revision), []).append(r)

    def figure(r: Result) -> float:
        if r.instructions is not None:
            return r.per_delivery()
        return 1e6 * (r.cpu_s or 0) / r.deliveries

    if not results or results[0].profile is not None:
        return
    unit = "Ir" if results[0].instructions is not None else "CPU-us"
    digits = 0 if results[0].instructions is not None else 3
    unit += " per delivery"
    print(f"| protocol | revision | {unit} (median) | runs | change |")
    print("| --- | --- | --- | --- | --- |")
    for (protocol, revision), rs in groups.items():
        value = statistics.median(figure(r) for r in rs)
        spread = ", ".join(f"{figure(r):,.{digits}f}" for r in rs)
        change = ""
        ours = groups.get((protocol, "working tree"))
        if revision != "working tree" and ours:
            mine = statistics.median(figure(r) for r in ours)
            change = f"working tree {100 * (mine - value) / value:+.1f} %"
        print(f"| {protocol} | {revision} | {value:,.{digits}f} | {spread} | {change} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
