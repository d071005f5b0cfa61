"""Configuration precedence, and the server as a real process: start, chat, signals, exit 0."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, LineClient

from threadchat import config
from threadchat.app import cli


def parse(argv: list[str], environ: dict[str, str]) -> config.Config:
    args = cli.build_parser().parse_args(["serve", *argv])
    return config.load(args, environ)


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "threadchat.toml"
    toml.write_text('line-port = 7100\nmax_line = 200\nflood_rate = 3.5\nhost = "::1"\n')
    env = {"THREADCHAT_CONFIG": str(toml), "THREADCHAT_MAX_LINE": "300"}
    settings = parse(["--max-line", "400"], env)
    assert settings.max_line == 400  # flag
    settings = parse([], env)
    assert settings.max_line == 300  # environment
    assert settings.line_port == 7100 and settings.flood_rate == 3.5  # file
    assert settings.sendq == 1048576  # default


def test_bad_values_are_reported_with_their_source(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="THREADCHAT_SENDQ"):
        parse([], {"THREADCHAT_SENDQ": "lots"})
    toml = tmp_path / "bad.toml"
    toml.write_text("colour = 'blue'\n")
    with pytest.raises(config.ConfigError, match="unknown key 'colour'"):
        parse(["--config", str(toml)], {})


def test_serve_help_documents_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    import dataclasses

    for field in dataclasses.fields(config.Config):
        assert "--" + field.name.replace("_", "-") in text
        assert "THREADCHAT_" + field.name.upper() in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn_server(
    tmp_path: Path, port: int, *, cgroup: Path | None = None, **settings: str
) -> subprocess.Popen[str]:
    """Run `threadchat serve` in `tmp_path`, in `cgroup` from its first instruction if given;
    `settings` are extra THREADCHAT_* variables."""
    # Only the line listener: the default ports of the others may be taken on a test machine.
    env = dict(
        os.environ,
        THREADCHAT_LINE_PORT=str(port),
        THREADCHAT_IRC_PORT="0",
        THREADCHAT_UDP_PORT="0",
        THREADCHAT_WEB_PORT="0",
        **settings,
    )

    def join_cgroup() -> None:
        assert cgroup is not None
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.Popen(
        [sys.executable, "-m", "threadchat", "serve", "--log-level", "info"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=join_cgroup if cgroup is not None else None,
    )


def start_process(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[str], int]:
    """A server process, once it listens; `settings` are extra THREADCHAT_* variables."""
    port = free_port()
    proc = spawn_server(tmp_path, port, **settings)
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the process prints this line or exits
        if "listening" in line:
            return proc, port
    proc.kill()
    raise AssertionError("server did not start")


@contextlib.contextmanager
def server_process(tmp_path: Path, **settings: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`start_process`, killed at the end of the block if it has not stopped by then."""
    proc, port = start_process(tmp_path, **settings)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def stop_and_read_log(proc: subprocess.Popen[str], signum: int, client: LineClient) -> str:
    """Stop the server with `signum`: `client` is told, the exit is clean; its whole log."""
    proc.send_signal(signum)
    # A whole process start and stop: allow for a loaded CI machine.
    assert "--- the server is shutting down" in client.read_until_closed(3 * WAIT)
    assert proc.wait(3 * WAIT) == 0
    assert proc.stdout is not None
    return proc.stdout.read()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_process_stops_cleanly_on_ctrl_c_and_sigterm(tmp_path: Path, signum: int) -> None:
    with server_process(tmp_path) as (proc, port):
        alice, bob = LineClient(port), LineClient(port)
        alice.send("alice")
        alice.expect("--- in lobby")
        bob.send("bob")
        alice.expect("--> bob joined")
        bob.send("before the end")
        alice.expect("bob: before the end")
        output = stop_and_read_log(proc, signum, alice)
    assert "stopped" in output and "Traceback" not in output


@pytest.fixture
def pids_group() -> Iterator[Path]:
    """A new cgroup that can limit its processes' threads (pids.max), where one can be had:
    under cgroup v2 or the v1 pids hierarchy, as root. Removed after the test."""
    for hierarchy in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/pids")):
        group = hierarchy / f"threadchat-test-{os.getpid()}"
        try:
            group.mkdir()
        except OSError:
            continue
        if (group / "pids.max").exists():
            break
        group.rmdir()  # not a cgroup hierarchy with the pids controller
    else:
        pytest.skip("no pids cgroup can be created here")
    try:
        yield group
    finally:
        group.rmdir()  # empty by then: its one process has ended


def test_process_at_a_thread_limit_refuses_clients_then_recovers_and_stops_cleanly(
    tmp_path: Path, pids_group: Path
) -> None:
    with server_process(tmp_path) as (proc, port):
        (pids_group / "cgroup.procs").write_text(str(proc.pid))
        # Not one thread more: the next client's reader thread cannot start.
        (pids_group / "pids.max").write_text((pids_group / "pids.current").read_text())
        refused = LineClient(port)
        assert refused.read_until_closed() == [
            "!!! the server cannot take more connections right now; try again later"
        ]
        refused.close()
        (pids_group / "pids.max").write_text("max")
        alice = LineClient(port)
        alice.send("alice")
        alice.expect("--- in lobby")
        output = stop_and_read_log(proc, signal.SIGTERM, alice)
    assert "can't start new thread; refusing new connections" in output
    assert "accepting connections again (failures meanwhile: 1)" in output
    assert "Traceback" not in output


def test_process_at_a_thread_limit_cuts_off_a_slow_reader_and_no_one_else(
    tmp_path: Path, pids_group: Path
) -> None:
    # Flood control off: the test sends bursts on purpose.
    with server_process(tmp_path, THREADCHAT_FLOOD_RATE="0") as (proc, port):
        sender, fast, slow = LineClient(port), LineClient(port), LineClient(port, rcvbuf=4096)
        for client, name in ((sender, "sender"), (fast, "fast"), (slow, "slow")):
            client.send(name)
            client.expect("--- in lobby")
        (pids_group / "cgroup.procs").write_text(str(proc.pid))
        (pids_group / "pids.max").write_text((pids_group / "pids.current").read_text())
        # The slow reader's backlog needs a writer thread, which cannot start now.
        payload = "z" * 1000
        received: list[str] = []
        others: list[str] = []
        count, per_batch = 600, 100
        for start in range(0, count, per_batch):
            sender.send(*[f"{i} {payload}" for i in range(start, start + per_batch)])
            while len(received) < start + per_batch:
                line = fast.read_line()
                (received if line.startswith("sender:") else others).append(line)
        assert [int(line.split()[1]) for line in received] == list(range(count))
        others += fast.quiet()
        assert others == ["--> slow joined lobby", "<-- slow quit (send queue exceeded)"]
        # The sender, whose reader thread may have been the one flushing, is not harmed.
        assert sender.quiet() == [
            "--> fast joined lobby",
            "--> slow joined lobby",
            "<-- slow quit (send queue exceeded)",
        ]
        (pids_group / "pids.max").write_text("max")
        output = stop_and_read_log(proc, signal.SIGTERM, sender)
    assert "no writer thread for a" in output
    assert "Traceback" not in output


def test_process_that_cannot_start_its_threads_says_so_and_exits_1(
    tmp_path: Path, pids_group: Path
) -> None:
    # The main thread, the store's writer and the acceptor: the housekeeper cannot start.
    (pids_group / "pids.max").write_text("3")
    proc = spawn_server(tmp_path, free_port(), cgroup=pids_group)
    try:
        output, _ = proc.communicate(timeout=3 * WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert "cannot start: can't start new thread" in output
    assert "Traceback" not in output


# Starts threads that each call malloc (through ctypes, outside the interpreter lock) while all
# are alive (an ended thread's arena is reused by the next), then has glibc print one
# "Arena N:" block per arena to stderr.
_ARENA_CENSUS = """
import ctypes, sys, threading
from threadchat.app.server import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "cap" else "uncapped", flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
all_alive = threading.Barrier(8)
def allocate():
    all_alive.wait(timeout=10)
    libc.free(libc.malloc(1000))
    all_alive.wait(timeout=10)
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()
"""


@pytest.mark.skipif(os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only")
@pytest.mark.parametrize(
    ("mode", "environ", "printed", "most_arenas"),
    [
        ("cap", {}, "2", 2),
        # The operator's own choice wins: the cap is not set over it.
        ("cap", {"MALLOC_ARENA_MAX": "4"}, "None", 4),
        # Without the cap a thread that finds the arenas busy gets a new one: the check above
        # can fail.
        ("plain", {}, "uncapped", 16),
    ],
)
def test_server_caps_glibc_malloc_arenas(
    mode: str, environ: dict[str, str], printed: str, most_arenas: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    done = subprocess.run(
        [sys.executable, "-c", _ARENA_CENSUS, mode],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    arenas = done.stderr.count("Arena ")
    assert done.stdout.strip() == printed
    assert 1 <= arenas <= most_arenas
    if mode == "plain":
        assert arenas > 2, done.stderr
