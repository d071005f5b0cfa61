"""Faults, injected for real: a client process stopped with SIGSTOP, thousands of half-open
connections, and a server that runs out of file descriptors (started under `prlimit`).

Every test sends to 127.0.0.1 only, opens a bounded number of connections, waits with
bounds, and ends only the processes it started, by their PID. A canary pair (bench/canary.py)
in a room of its own measures what each fault costs everyone else; the tests assert generous
bounds (a loaded 2-core machine), and docs/reliability.md has the figures measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WAIT, JsonClient, LineClient
from test_history import _free_port

from bench.canary import canary_running
from threadchat.app.server import Server
from threadchat.core.history import HistoryQuery, Ref

# The canary's worst round trip a test accepts: generous, for a loaded 2-core machine. The
# figures measured (docs/reliability.md) are far below it; a server that stalled would not be.
CANARY_BOUND_S = 3.0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or condition}")
        time.sleep(0.02)


@contextlib.contextmanager
def process(command: list[str], **options: object) -> Iterator[subprocess.Popen]:
    """A process of ours, ended (by its PID, continued first if stopped) after the block."""
    child = subprocess.Popen(command, **options)  # type: ignore[call-overload]
    try:
        yield child
    finally:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
                child.terminate()
            try:
                child.wait(WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(WAIT)


def stored_texts(server: Server, room: str) -> list[str]:
    assert server.store is not None
    texts: list[str] = []
    before = None
    while page := server.store.room_history(
        room, HistoryQuery.latest(500) if before is None else HistoryQuery.before(before, 500)
    ):
        texts[:0] = [m.text for m in page]
        before = Ref.msgid(page[0].id)
    return texts


def client_process(port: int, name: str) -> list[str]:
    """The command of the bundled client, scripted (stdin a pipe), as `name`."""
    return [sys.executable, "-m", "threadchat", "connect", f"127.0.0.1:{port}", "--name", name]


# -- SIGSTOP -----------------------------------------------------------------------------------


def test_a_stopped_client_is_cut_off_by_its_send_queue_and_nothing_accepted_is_lost(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(sendq=256 * 1024, history_on_join=0)
    port = server.listener("line").port
    output = tmp_path / "stopped.out"
    with (
        output.open("wb") as out,
        process(
            client_process(port, "sleeper"),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as sleeper,
    ):
        wait_until(lambda: server.hub.find_user("sleeper") is not None, what="sleeper in")
        sender, reader = JsonClient(port), JsonClient(port)
        for client, name in ((sender, "sender"), (reader, "reader")):
            client.send_json(type="hello", name=name)
            client.expect_event("who", room="lobby")
        os.kill(sleeper.pid, signal.SIGSTOP)
        payload = "z" * 3000
        acknowledged: list[int] = []
        heard: list[int] = []
        quits: list[dict] = []
        with canary_running(port) as canary:
            sent = 0
            # Bounded at 30 MB: a 256 KiB send queue behind the client's socket buffers
            # overflows long before (measured: after about 300 messages, under 1 MB).
            while server.hub.find_user("sleeper") is not None and sent < 10_000:
                batch = range(sent, sent + 50)
                sender.send(*(json.dumps({"type": "say", "text": f"{n} {payload}", "ref": n})
                              for n in batch))  # fmt: skip
                sent += 50
                while len(acknowledged) < sent:
                    event = sender.read_event()
                    if event["type"] == "ok":
                        acknowledged.append(event["ref"])
                    assert event["type"] != "error", event
                while len(heard) < sent:
                    event = reader.read_event()
                    if event["type"] == "message":
                        heard.append(int(event["text"].split()[0]))
                    elif event["type"] == "quit":
                        quits.append(event)
        assert server.hub.find_user("sleeper") is None, f"not cut off after {sent} messages"
        # Still stopped: it was the server that gave up on it, not the client that left.
        assert sleeper.poll() is None
        if not any(q["name"] == "sleeper" for q in quits):
            quits.append(reader.expect_event("quit", name="sleeper"))
        os.kill(sleeper.pid, signal.SIGCONT)
        sleeper.stdin.close()
        sleeper.wait(WAIT)
        sender.close()
        reader.close()
    assert [q["reason"] for q in quits if q["name"] == "sleeper"] == ["send queue exceeded"]
    assert acknowledged == list(range(sent)) == heard
    assert [int(text.split()[0]) for text in stored_texts(server, "lobby")] == acknowledged
    assert canary.lost == 0 and canary.round_trips
    assert max(canary.round_trips) < CANARY_BOUND_S, canary.worst_ms
    print(f"\nSIGSTOP: cut off after {sent} messages; canary worst {canary.worst_ms} ms")


def test_a_stopped_client_in_a_quiet_room_is_cut_off_by_the_ping_timeout(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = make_server(ping_interval=0.5, ping_timeout=1)
    port = server.listener("line").port
    output = tmp_path / "stopped.out"
    other = JsonClient(port)
    other.send_json(type="hello", name="other")
    other.expect_event("who", room="lobby")
    with (
        output.open("wb") as out,
        process(
            client_process(port, "sleeper"),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as sleeper,
    ):
        other.expect_event("join", name="sleeper")
        os.kill(sleeper.pid, signal.SIGSTOP)
        started = time.monotonic()
        # Others are unaffected: "other" answers the pings meanwhile, and stays.
        while True:
            event = other.read_event()
            if event["type"] == "ping":
                other.send_json(type="pong", token=event["token"])
            elif event["type"] == "quit" and event["name"] == "sleeper":
                break
        waited = time.monotonic() - started
        other.send_json(type="say", text="still here", ref=1)
        other.expect_event("ok", ref=1)
        os.kill(sleeper.pid, signal.SIGCONT)
    other.close()
    assert event["reason"] == "timed out"  # the native protocol's word for a ping timeout
    assert 1.0 <= waited < WAIT


# -- thousands of half-open connections -----------------------------------------------------


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Room for 5,000 client sockets and the server's own in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 12_000
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the open-file limit's hard cap ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


HALF_OPEN = 5000


@pytest.mark.timeout(120)
def test_five_thousand_half_open_connections_are_bounded_and_the_canary_keeps_chatting(
    make_server: Callable[..., Server], many_descriptors: None
) -> None:
    # Loopback is exempt from the per-address limits (as a NAT of many users would be
    # configured): what bounds this flood is --max-clients, and the name timeout.
    max_clients = 1000
    server = make_server(max_clients=max_clients, name_timeout=4, history_on_join=0)
    port = server.listener("line").port
    held: list[socket.socket] = []
    try:
        with canary_running(port) as canary:
            time.sleep(1.0)  # a few quiet round trips first
            started = time.monotonic()
            for n in range(HALF_OPEN):
                sock = socket.socket()
                sock.settimeout(WAIT)
                sock.connect(("127.0.0.1", port))
                # Half say nothing at all; half start a name and never end it.
                if n % 2:
                    sock.send(b"half-a-na")
                held.append(sock)
            opened_in = time.monotonic() - started
            # The server holds at most max_clients (the canary pair among them) ...
            wait_until(lambda: server.admission.clients >= max_clients, what="server full")
            assert server.admission.clients <= max_clients
            # ... and lets go of every one that never gave a name, after the name timeout.
            wait_until(lambda: server.admission.clients == 2, 3 * WAIT, "the half-open gone")
        refused = sum(1 for sock in held if _closed_by_server(sock))
    finally:
        for sock in held:
            sock.close()
    assert refused == HALF_OPEN, f"{HALF_OPEN - refused} connections still held"
    assert canary.lost == 0 and canary.round_trips
    assert max(canary.round_trips) < CANARY_BOUND_S, canary.worst_ms
    print(
        f"\n{HALF_OPEN} half-open connections opened in {opened_in:.1f} s; canary "
        f"{len(canary.round_trips)} round trips, worst {canary.worst_ms} ms, {canary.lost} lost"
    )


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF or a reset, after its reason)."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# -- out of descriptors ---------------------------------------------------------------------

DESCRIPTOR_LIMIT = 160


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(120)
def test_out_of_descriptors_accepts_fail_without_spinning_and_service_resumes(
    tmp_path: Path,
) -> None:
    port = _free_port()
    log_path = tmp_path / "server.log"
    command = [
        "prlimit", f"--nofile={DESCRIPTOR_LIMIT}:{DESCRIPTOR_LIMIT}", "--",
        sys.executable, "-m", "threadchat", "serve", "--line-port", str(port),
        "--udp-port", "0", "--irc-port", "0", "--web-port", "0",
        "--data-dir", str(tmp_path / "data"), "--history-on-join", "0",
        # More clients than descriptors: the limit reached is the kernel's, not ours.
        "--max-clients", "1000", "--name-timeout", "60", "--log-level", "info",
    ]  # fmt: skip
    held: list[socket.socket] = []
    with log_path.open("w") as log_file, process(command, stderr=log_file) as server:
        wait_until(lambda: _listening(port) or server.poll() is not None, 20, "listening")
        assert server.poll() is None, log_path.read_text()
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        assert f"Max open files            {DESCRIPTOR_LIMIT}" in limits
        try:
            with canary_running(port) as canary:
                time.sleep(1.0)
                # More than the server can take: the rest wait in the listen backlog.
                for _ in range(DESCRIPTOR_LIMIT + 40):
                    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                    held.append(sock)
                wait_until(
                    lambda: "cannot take on a new connection" in log_path.read_text(),
                    what="accept failing",
                )
                # Failing, it must not spin: measure its CPU time over two seconds.
                before = _cpu_seconds(server.pid)
                time.sleep(2.0)
                cpu_while_failing = _cpu_seconds(server.pid) - before
                # A newcomer waits in the backlog meanwhile; those already in chat go on.
                late = LineClient(port)
                late.send("late")
                with pytest.raises(AssertionError):
                    late.expect("--- in lobby", timeout=1.0)
                # The flood leaves: the backlog is taken, then the newcomer is served.
                for sock in held:
                    sock.close()
                held.clear()
                late.expect("--- in lobby", timeout=3 * WAIT)
                late.close()
                wait_until(
                    lambda: "accepting connections again" in log_path.read_text(),
                    what="recovery logged",
                )
        finally:
            for sock in held:
                sock.close()
    log = log_path.read_text()
    assert cpu_while_failing < 0.5, f"{cpu_while_failing:.2f} s of CPU in 2 s: spinning"
    failure_lines = [line for line in log.splitlines() if "new connection" in line]
    assert len(failure_lines) <= 10, failure_lines
    assert "Traceback" not in log
    assert canary.lost == 0 and canary.round_trips
    assert max(canary.round_trips) < CANARY_BOUND_S, canary.worst_ms
    print(
        f"\nout of descriptors at {DESCRIPTOR_LIMIT}: {cpu_while_failing:.2f} s CPU in 2 s; "
        f"{len(failure_lines)} log lines; canary worst {canary.worst_ms} ms, {canary.lost} lost"
    )


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# -- kill -9, then a restart -----------------------------------------------------------------


def _start_server(port: int, data_dir: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "threadchat", "serve", "--line-port", str(port),
               "--udp-port", "0", "--irc-port", "0", "--web-port", "0", "--data-dir",
               str(data_dir), "--flood-rate", "0", "--history-on-join", "0"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _listening(port) or server.poll() is not None, 20, "listening")
    assert server.poll() is None, "the server did not start"
    return server


def test_kill_9_under_load_then_restart_keeps_every_acknowledged_message(
    tmp_path: Path,
) -> None:
    port = _free_port()
    acknowledged: dict[str, set[str]] = {}
    server = _start_server(port, tmp_path)
    try:
        senders = []
        for n in range(4):
            client = JsonClient(port)
            client.send_json(type="hello", name=f"sender{n}")
            client.expect_event("who", room="lobby")
            senders.append(client)
        # Each sender keeps 20 messages in flight; an `ok` names what is stored.
        sent = dict.fromkeys(range(4), 0)
        for n, client in enumerate(senders):
            acknowledged[f"sender{n}"] = set()
            client.send(*(json.dumps({"type": "say", "text": f"s{n}-{k}", "ref": k})
                          for k in range(20)))  # fmt: skip
            sent[n] = 20
        total = 0
        while total < 2000:
            for n, client in enumerate(senders):
                event = client.read_event()
                if event["type"] == "ok":
                    acknowledged[f"sender{n}"].add(f"s{n}-{event['ref']}")
                    total += 1
                    k = sent[n]
                    client.send_json(type="say", text=f"s{n}-{k}", ref=k)
                    sent[n] += 1
        # In the middle of all that: kill -9.
        os.kill(server.pid, signal.SIGKILL)
        server.wait(WAIT)
        for client in senders:
            client.close()
        # A restart on the same data directory: everything acknowledged is in its history.
        server = _start_server(port, tmp_path)
        reader = JsonClient(port)
        reader.send_json(type="hello", name="reader")
        reader.expect_event("who", room="lobby")
        stored: set[str] = set()
        before = None
        while True:
            query = {"limit": 500} if before is None else {"limit": 500, "before": before}
            reader.send_json(type="history", room="lobby", ref="h", **query)
            page = reader.expect_event("history", ref="h")["messages"]
            if not page:
                break
            stored.update(m["text"] for m in page)
            before = page[0]["id"]
        reader.close()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(WAIT)
    every_ok = set().union(*acknowledged.values())
    assert len(every_ok) >= 2000
    missing = every_ok - stored
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:5]}"
