"""Servers under test: how to start one on loopback, where it listens, how to stop it.

Every scenario gets a fresh server (``start_server``) that is stopped by its own PID. Add a
server by adding a ``ServerSpec`` to ``SERVERS``. When threadchat's command line changes, edit
``threadchat_command`` and nothing else.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# How long a server may take to accept its first connection before the run is abandoned.
STARTUP_TIMEOUT_S = 15.0
# Grace between SIGTERM and SIGKILL when stopping a server.
STOP_TIMEOUT_S = 5.0
# Operator credentials for our private ngircd instance (loopback only, throwaway config).
NGIRCD_OPER = ("bench", "bench-oper-pass")


def raise_nofile_limit() -> None:
    """Lift the soft open-files limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (tiny race, fine for a bench)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def threadchat_command(
    line_port: int, irc_port: int, history: bool | None = None, data_dir: str | None = None
) -> list[str]:
    """The exact command that starts threadchat for a run; adjust here when its CLI changes."""
    cmd = [
        sys.executable, "-m", "threadchat", "serve",
        "--host", HOST,
        "--line-port", str(line_port),
        "--irc-port", str(irc_port),
        "--udp-port", "0",
        "--flood-rate", "0",
        "--log-level", "warning",
    ]  # fmt: skip
    if data_dir is not None:
        cmd += ["--data-dir", data_dir]
    if history is not None:
        cmd += ["--history" if history else "--no-history"]
    return cmd


@dataclass
class RunningServer:
    """A started server; ``pid`` is what CPU and RSS are read from."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    protocol: str  # "irc" or "json"
    connect_parallelism: int
    oper: tuple[str, str] | None = None
    tmpdir: str | None = None
    host: str = HOST

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Terminate by PID, escalate to kill, and remove the temp dir."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


@dataclass(frozen=True)
class ServerSpec:
    """How to launch one kind of server; ``start`` returns once it accepts connections."""

    name: str
    protocol: str
    launcher: Callable[[dict[str, object]], RunningServer]
    supports_history: bool = False
    notes: str = ""
    options: dict[str, object] = field(default_factory=dict)

    def start(self, **options: object) -> RunningServer:
        server = self.launcher({**self.options, **options})
        try:
            wait_until_listening(server)
        except BaseException:
            server.stop()
            raise
        return server


def _popen(
    cmd: list[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=raise_nofile_limit,  # the harness starts no threads
    )


def wait_until_listening(server: RunningServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode} at start")
        try:
            with socket.create_connection((server.host, server.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not listen on {server.port} in {STARTUP_TIMEOUT_S}s")


def ensure_ngircd() -> str:
    """Path to ngircd, installing the Debian package non-interactively when missing."""
    path = shutil.which("ngircd") or (
        "/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else None
    )
    if path:
        return path
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "ngircd"], env=env, check=False)
    path = shutil.which("ngircd") or "/usr/sbin/ngircd"
    if not os.path.exists(path):
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "ngircd"], env=env, check=True)
    return path


NGIRCD_CONF = """\
[Global]
Name = bench.ngircd
Info = threadchat benchmark instance
Listen = {host}
Ports = {port}
MotdPhrase = bench
PidFile = {tmp}/ngircd.pid
ServerUID = {uid}
ServerGID = {gid}

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600

[Options]
DNS = no
Ident = no
PAM = no
OperCanUseMode = yes

[Operator]
Name = {oper_name}
Password = {oper_pass}
"""


def _launch_ngircd(options: dict[str, object]) -> RunningServer:
    binary = ensure_ngircd()
    tmp = tempfile.mkdtemp(prefix="bench-ngircd-")
    port = free_port()
    conf = Path(tmp) / "ngircd.conf"
    conf.write_text(
        NGIRCD_CONF.format(
            host=HOST, port=port, tmp=tmp, uid=os.getuid(), gid=os.getgid(),
            oper_name=NGIRCD_OPER[0], oper_pass=NGIRCD_OPER[1],
        )
    )  # fmt: skip
    proc = _popen([binary, "-n", "-f", str(conf)])
    # ngircd listens with a backlog of 10: more simultaneous connects overflow the accept queue
    # and wait a full SYN retransmit (1 s), so connections are opened a few at a time.
    return RunningServer("ngircd", proc, port, "irc", 8, NGIRCD_OPER, tmp)


def _launch_naive(options: dict[str, object]) -> RunningServer:
    port = free_port()
    proc = _popen([sys.executable, str(BENCH_DIR / "naive_server.py"), "--port", str(port)])
    protocol = str(options.get("protocol", "irc"))
    return RunningServer(f"naive-{protocol}", proc, port, protocol, 64)


def threadchat_env(source_dir: Path, web_port: int = 0) -> dict[str, str]:
    """The environment that makes ``python -m threadchat`` import the package in source_dir,
    not an installed one: that checkout first on PYTHONPATH (the server also runs there).

    The web port is set here, not on the command line: revisions from before it existed
    (baselines) ignore an unknown variable but would refuse an unknown flag."""
    paths = [str(source_dir), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "THREADCHAT_WEB_PORT": str(web_port),
    }


def threadchat_module_file(source_dir: Path) -> Path:
    """Where the threadchat package a server started from source_dir comes from."""
    out = subprocess.run(
        [sys.executable, "-c", "import threadchat; print(threadchat.__file__)"],
        cwd=source_dir, env=threadchat_env(source_dir),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip()).resolve()


def _launch_threadchat(options: dict[str, object]) -> RunningServer:
    line_port, irc_port = free_port(), free_port()
    protocol = str(options["protocol"])
    web_port = free_port() if protocol == "ws-json" else 0
    history = options.get("history")
    # Another revision's checkout (a baseline, bench/baseline.py) or this one.
    source_dir = Path(str(options.get("source_dir", REPO_DIR)))
    # A fresh data directory per run: the database starts empty and never lands in the repo.
    tmp = tempfile.mkdtemp(prefix="bench-threadchat-")
    cmd = threadchat_command(
        line_port, irc_port, history if isinstance(history, bool) else None, data_dir=tmp
    )
    proc = _popen(cmd, cwd=str(source_dir), env=threadchat_env(source_dir, web_port))
    port = {"irc": irc_port, "ws-json": web_port}.get(protocol, line_port)
    revision = options.get("revision")
    name = {"ws-json": "threadchat-ws"}.get(protocol, f"threadchat-{protocol}")
    name += f"@{revision}" if revision else ""
    return RunningServer(name, proc, port, protocol, 16, tmpdir=tmp)


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("ngircd", "irc", _launch_ngircd, notes="ngIRCd (C, single-threaded poll loop)"),
        ServerSpec("naive", "irc", _launch_naive, options={"protocol": "irc"},
                   notes="bench/naive_server.py: thread per client, sendall loop (IRC)"),
        ServerSpec("naive-json", "json", _launch_naive, options={"protocol": "json"},
                   notes="bench/naive_server.py in JSON-lines mode"),
        ServerSpec("threadchat-irc", "irc", _launch_threadchat, supports_history=True,
                   options={"protocol": "irc"}, notes="threadchat, IRC port"),
        ServerSpec("threadchat-json", "json", _launch_threadchat, supports_history=True,
                   options={"protocol": "json"}, notes="threadchat, native JSON-lines port"),
        ServerSpec("threadchat-ws", "ws-json", _launch_threadchat, supports_history=True,
                   options={"protocol": "ws-json"},
                   notes="threadchat, JSON over WebSocket on the web port"),
    )
}  # fmt: skip
