"""Load generator: chat clients in worker processes, one selectors event loop per worker.

Main process (``run_traffic`` / ``run_idle``) plans the clients, forks ``workers`` processes, and
steps them through phases over pipes: connect -> quiesce -> go (send for ``duration``) ->
report sent counts -> drain until the expected deliveries arrived (or ``drain_s``) -> results.

Messages carry ``MARK`` followed by the sender's ``time.monotonic_ns()`` (same machine, same
clock), the sender index and a sequence number. Receivers count ``MARK`` occurrences per recv
chunk (C speed) and parse the timestamp only of sampled lines, so the generator stays cheap.

WebSocket clients (protocol ``ws-json``) speak the same JSON through wsproto while setting up;
while measuring, receivers count ``MARK`` in the raw bytes as well: server frames are not
masked, so a message's text is there as it is, and a chunk is cut after its last ``}`` (the end
of a JSON message, as ``\n`` ends a line) instead of parsing each frame in Python.

Pacing: each sender keeps at most ``window`` messages in flight, where "in flight" is measured
against one *probe* receiver of the same room in the same worker (which parses every line). In
rate mode senders also follow a fixed schedule; the window then only stops unbounded backlog.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing as mp
import random
import resource
import selectors
import socket
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

MARK = b"~bm~"
RECV_BYTES = 262144
# Default text padding: a message line is then about a short chat line (~100 bytes on IRC).
DEFAULT_PAD = 40
# Bounds for every phase: nothing in the generator may wait forever.
CONNECT_TIMEOUT_S = 120.0
QUIET_S = 0.3
QUIESCE_MAX_S = 15.0
PIPE_TIMEOUT_S = 180.0
# Latency samples kept per worker; beyond this the sample rate is what limits memory.
MAX_SAMPLES = 400_000
SLOW_RCVBUF = 4096
MAX_DRAIN_S = 60.0


@dataclass
class ClientPlan:
    gid: int  # global client index, unique across workers; senders put it in their messages
    nick: str
    rooms: list[str]
    sender: bool = False
    slow: bool = False


@dataclass
class WorkerConfig:
    index: int
    host: str
    port: int
    protocol: str
    clients: list[ClientPlan]
    connect_parallelism: int
    oper: tuple[str, str] | None = None
    window: int = 32
    rate_per_sender: float = 0.0
    sample_every: int = 16
    pad_bytes: int = DEFAULT_PAD


@dataclass(eq=False)
class Client:
    plan: ClientPlan
    idx: int
    sock: socket.socket
    state: str = "connecting"  # connecting, registering, joining, ready, closed
    partial: bytes = b""
    out: bytes = b""
    pending_joins: set[str] = field(default_factory=set)
    got: int = 0
    probe_for: dict[int, Client] = field(default_factory=dict)
    seen_seq: int = 0  # for senders: highest own seq seen by the probe
    seq: int = 0
    next_due: float = 0.0
    # WebSocket clients: the client side of the protocol (set-up), the sizes of the frames
    # in ``out`` (what is still unsent when the run ends), a text message being assembled.
    ws: wsproto.WSConnection | None = None
    frames: deque[int] = field(default_factory=deque)
    text: str = ""


def _irc_register(c: Client, oper: tuple[str, str] | None) -> bytes:
    lines = f"NICK {c.plan.nick}\r\nUSER {c.plan.nick} 0 * :bench\r\n"
    if oper and c.plan.sender:
        # Operators may set +F, lifting ngircd's flood throttling for the senders.
        lines += f"OPER {oper[0]} {oper[1]}\r\nMODE {c.plan.nick} +F\r\n"
    return lines.encode()


def _json_line(obj: str) -> bytes:
    return (obj + "\n").encode()


class Worker:
    """Owns the sockets of its share of clients; driven by commands from the main process."""

    def __init__(self, cfg: WorkerConfig, pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.sel = selectors.DefaultSelector()
        self.clients = [
            Client(p, i, socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for i, p in enumerate(cfg.clients)
        ]
        for c in self.clients:
            c.sock.close()  # replaced at connect time; keeps the field non-optional
        self.irc = cfg.protocol == "irc"
        self.websocket = cfg.protocol == "ws-json"
        # What ends a whole message in the raw bytes: a line's newline, a JSON message's brace.
        self.end = b"}" if self.websocket else b"\n"
        self.pad = "x" * cfg.pad_bytes
        self.samples = array("q")
        self.sample_debt = 0.0
        self.disconnects = 0
        self.first_rx = 0
        self.last_rx = 0
        self.counting = False

    # -- connection set-up --------------------------------------------------------------
    def connect_all(self) -> dict[str, Any]:
        start = time.monotonic()
        deadline = start + CONNECT_TIMEOUT_S
        todo = list(self.clients)
        todo.reverse()
        active = 0
        failed = 0
        while (todo or active) and time.monotonic() < deadline:
            while todo and active < self.cfg.connect_parallelism:
                c = todo.pop()
                c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.sock.setblocking(False)
                c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if c.plan.slow:
                    # A small fixed receive buffer stands in for a slow link: loopback buffers
                    # would otherwise absorb megabytes and hide the stall for the whole run.
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
                err = c.sock.connect_ex((self.cfg.host, self.cfg.port))
                if err not in (0, errno.EINPROGRESS):
                    failed += 1
                    c.state = "closed"
                    continue
                self.sel.register(c.sock, selectors.EVENT_WRITE, c)
                active += 1
            for key, mask in self.sel.select(0.5):
                c = key.data
                before = c.state
                if c.state == "connecting" and mask & selectors.EVENT_WRITE:
                    self._on_connected(c)
                elif mask & selectors.EVENT_READ:
                    self._setup_read(c)
                if before != c.state and c.state in ("ready", "closed"):
                    if before not in ("ready", "closed"):
                        active -= 1
                    if c.state == "closed":
                        failed += 1
        ready = sum(1 for c in self.clients if c.state == "ready")
        return {"ready": ready, "failed": len(self.clients) - ready,
                "connect_s": time.monotonic() - start}  # fmt: skip

    def _on_connected(self, c: Client) -> None:
        if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._close(c)
            return
        c.state = "registering"
        self.sel.modify(c.sock, selectors.EVENT_READ, c)
        if self.irc:
            c.sock.sendall(_irc_register(c, self.cfg.oper))
        elif self.websocket:
            c.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            host = f"{self.cfg.host}:{self.cfg.port}"
            request = Request(host=host, target="/ws", subprotocols=["threadchat.json"])
            c.sock.sendall(c.ws.send(request))
        else:
            self._send_json(c, f'{{"type":"hello","name":"{c.plan.nick}"}}')

    def _send_json(self, c: Client, text: str) -> None:
        if c.ws is not None:
            c.sock.sendall(c.ws.send(TextMessage(text)))
        else:
            c.sock.sendall(_json_line(text))

    def _send_joins(self, c: Client) -> None:
        c.state = "joining"
        c.pending_joins = set(c.plan.rooms)
        if not c.pending_joins:
            c.state = "ready"
            return
        if self.irc:
            c.sock.sendall(f"JOIN {','.join('#' + r for r in c.plan.rooms)}\r\n".encode())
        else:
            for r in c.plan.rooms:
                self._send_json(c, f'{{"type":"join","room":"{r}"}}')

    def _setup_read(self, c: Client) -> None:
        """Line-by-line parsing: only used before measuring starts."""
        try:
            data = c.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        if c.ws is not None:
            self._setup_frames(c, data)
            return
        if c.state == "ready":
            self._answer_pings(c, data)
            return
        data = c.partial + data
        *lines, c.partial = data.split(b"\n")
        for line in lines:
            self._setup_line(c, line.rstrip(b"\r").decode("utf-8", "replace"))

    def _setup_frames(self, c: Client, data: bytes) -> None:
        assert c.ws is not None
        c.ws.receive_data(data)
        for event in c.ws.events():
            if isinstance(event, AcceptConnection):
                self._send_json(c, f'{{"type":"hello","name":"{c.plan.nick}"}}')
            elif isinstance(event, TextMessage):
                c.text += event.data
                if event.message_finished:
                    text, c.text = c.text, ""
                    self._setup_line(c, text)
            elif isinstance(event, Ping):
                c.sock.sendall(c.ws.send(event.response()))
            elif isinstance(event, CloseConnection | RejectConnection):
                self._close(c)
                return

    def _setup_line(self, c: Client, line: str) -> None:
        nick = c.plan.nick
        if self.irc:
            parts = line.split(" ")
            if line.startswith("PING "):
                c.sock.sendall(f"PONG {line[5:]}\r\n".encode())
            elif c.state == "registering" and len(parts) > 1 and parts[1] == "001":
                self._send_joins(c)
            elif c.state == "joining" and len(parts) > 2 and parts[1] == "JOIN":
                if parts[0][1:].split("!")[0].lower() == nick.lower():
                    c.pending_joins.discard(parts[2].lstrip(":").lstrip("#"))
                    if not c.pending_joins:
                        c.state = "ready"
            elif len(parts) > 1 and parts[1] in ("432", "433", "ERROR"):
                self._close(c)
        else:
            if '"type":"welcome"' in line or '"type": "welcome"' in line:
                if c.state == "registering":
                    self._send_joins(c)
            elif c.state == "joining" and '"join"' in line and f'"{nick}"' in line:
                for r in list(c.pending_joins):
                    if f'"{r}"' in line:
                        c.pending_joins.discard(r)
                if not c.pending_joins:
                    c.state = "ready"
            elif '"type":"ping"' in line or '"type": "ping"' in line:
                token = line.split('"token"')[-1].split('"')[1] if '"token"' in line else ""
                self._send_json(c, f'{{"type":"pong","token":"{token}"}}')
            elif '"type":"error"' in line and c.state != "ready":
                self._close(c)

    def _answer_pings(self, c: Client, data: bytes) -> None:
        # Rare path: a server ping must be answered or idle clients get dropped.
        if (b"PING" in data) if self.irc else (b'"ping"' in data):
            for raw in data.split(b"\n"):
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                if self.irc and line.startswith("PING "):
                    c.sock.send(f"PONG {line[5:]}\r\n".encode())
                elif not self.irc and '"ping"' in line:
                    self._setup_line(c, line)

    def _close(self, c: Client) -> None:
        if c.state == "closed":
            return
        if c.state == "ready":
            self.disconnects += 1
        c.state = "closed"
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()

    def quiesce(self) -> dict[str, Any]:
        """Read and drop until nothing arrives for QUIET_S (JOIN floods of set-up)."""
        end = time.monotonic() + QUIESCE_MAX_S
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < QUIET_S:
            for key, _ in self.sel.select(0.05):
                last = time.monotonic()
                self._setup_read(key.data)
        return {"open": sum(1 for c in self.clients if c.state == "ready")}

    # -- measured traffic ---------------------------------------------------------------
    def _assign_probes(self) -> None:
        for room in {r for c in self.clients for r in c.plan.rooms}:
            members = [c for c in self.clients if room in c.plan.rooms and c.state == "ready"]
            probe = next((m for m in members if not m.plan.sender and not m.plan.slow), None)
            if probe is not None:
                probe.probe_for.update({m.plan.gid: m for m in members if m.plan.sender})

    def _on_data(self, c: Client) -> None:
        try:
            data = c.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        if c.partial:
            data = c.partial + data
        nl = data.rfind(self.end)
        if nl < 0:
            c.partial = data
            return
        c.partial = data[nl + 1 :]
        n = data.count(MARK, 0, nl)
        if not n:
            self._answer_pings(c, data[:nl])
            return
        now = time.monotonic_ns()
        if not self.first_rx:
            self.first_rx = now
        self.last_rx = now
        c.got += n
        if c.probe_for:
            self._probe(c, data, nl)
        if len(self.samples) >= MAX_SAMPLES:
            return
        every = self.cfg.sample_every
        if every <= 1:
            pos = data.find(MARK)
            while 0 <= pos < nl:
                self._sample(data, pos, now)
                pos = data.find(MARK, pos + 4)
            return
        self.sample_debt += n / every
        while self.sample_debt >= 1.0:
            self.sample_debt -= 1.0
            # A random byte offset picks a line roughly uniformly (lines are of similar size).
            pos = data.find(MARK, int(random.random() * nl))
            if pos < 0 or pos >= nl:
                pos = data.find(MARK)
            self._sample(data, pos, now)

    def _sample(self, data: bytes, pos: int, now: int) -> None:
        start = pos + len(MARK)
        end = data.find(b" ", start, start + 24)
        try:  # noqa: SIM105 - hot path: contextlib.suppress costs a call per sample
            self.samples.append(now - int(data[start:end]))
        except ValueError:
            pass

    def _probe(self, c: Client, data: bytes, nl: int) -> None:
        senders = c.probe_for
        pos = data.find(MARK)
        while 0 <= pos < nl:
            fields = data[pos + 4 : pos + 64].split(b" ", 3)
            try:
                s = senders.get(int(fields[1]))
                if s is not None:
                    s.seen_seq = max(s.seen_seq, int(fields[2]))
            except (ValueError, IndexError):
                pass
            pos = data.find(MARK, pos + 4)

    def _make_line(self, c: Client, room: str, seq: int, t_ns: int) -> bytes:
        text = f"~bm~{t_ns} {c.plan.gid} {seq} {self.pad}"
        if self.irc:
            return f"PRIVMSG #{room} :{text}\r\n".encode()
        if c.ws is not None:
            say = f'{{"type":"say","room":"{room}","text":"{text}","action":false}}'
            frame = c.ws.send(TextMessage(say))
            c.frames.append(len(frame))
            return frame
        return _json_line(f'{{"type":"say","room":"{room}","text":"{text}","action":false}}')

    def _pump(self, c: Client, now: float) -> None:
        """Send what the window (and, in rate mode, the schedule) allows."""
        if c.out:
            self._flush(c)
            if c.out:
                return
        room_count = len(c.plan.rooms)
        allowed = self.cfg.window - (c.seq - c.seen_seq)
        if self.cfg.rate_per_sender > 0:
            due = 0
            interval = 1.0 / self.cfg.rate_per_sender
            while c.next_due <= now and due < allowed:
                due += 1
                c.next_due += interval
            allowed = due
        if allowed <= 0 or not room_count:
            return
        t_ns = time.monotonic_ns()
        lines = []
        for _ in range(allowed):
            c.seq += 1
            lines.append(self._make_line(c, c.plan.rooms[c.seq % room_count], c.seq, t_ns))
        c.out = b"".join(lines)
        self._flush(c)

    def _flush(self, c: Client) -> None:
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(c)
            return
        c.out = c.out[sent:]
        frames = c.frames
        while frames and sent >= frames[0]:
            sent -= frames.popleft()
        if frames and sent:
            frames[0] -= sent

    def run(self, duration: float) -> dict[str, Any]:
        self._assign_probes()
        senders = [c for c in self.clients if c.plan.sender and c.state == "ready"]
        for c in self.clients:
            if c.state == "ready":
                c.partial = b""
                if c.plan.slow:
                    self.sel.unregister(c.sock)  # it stops reading: the kernel buffers fill
                else:
                    self.sel.modify(c.sock, selectors.EVENT_READ, c)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        for c in senders:
            c.next_due = t0 + random.random() / max(self.cfg.rate_per_sender, 1.0)
        end = t0 + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for c in senders:
                if c.state == "ready":
                    self._pump(c, now)
            timeout = 0.002 if self.cfg.rate_per_sender else 0.01
            for key, _ in self.sel.select(timeout):
                self._on_data(key.data)
        # Tell the main process what was sent; keep reading while it sums up expectations.
        sent_by_room: dict[str, int] = {}
        for c in senders:
            for i in range(1, c.seq + 1):
                room = c.plan.rooms[i % len(c.plan.rooms)]
                sent_by_room[room] = sent_by_room.get(room, 0) + 1
            if c.out:
                # Lines never handed to the kernel do not count as sent.
                unsent = len(c.frames) if c.ws is not None else c.out.count(b"\n")
                for i in range(c.seq - unsent + 1, c.seq + 1):
                    room = c.plan.rooms[i % len(c.plan.rooms)]
                    sent_by_room[room] -= 1
        self.pipe.send({"sent_by_room": sent_by_room, "send_s": time.monotonic() - t0})
        # Drain ends when everything owed arrived, or nothing arrived for drain_s (a loss, not
        # a slow server: a deep queue keeps draining), and never later than MAX_DRAIN_S.
        expected = None
        drain_s = 0.0
        drain_end = hard_end = float("inf")
        last_got = -1
        while True:
            if expected is None and self.pipe.poll(0):
                totals, drain_s = self.pipe.recv()
                expected = self._expected(totals, senders)
                drain_end = time.monotonic() + drain_s
                hard_end = time.monotonic() + MAX_DRAIN_S
            got = sum(c.got for c in self.clients if not c.plan.slow)
            if got != last_got:
                last_got, drain_end = got, time.monotonic() + drain_s
            if expected is not None and (
                got >= expected or time.monotonic() >= min(drain_end, hard_end)
            ):
                break
            if time.monotonic() - t0 > duration + PIPE_TIMEOUT_S:
                break
            for key, _ in self.sel.select(0.01):
                self._on_data(key.data)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        wall = time.monotonic() - t0
        slow = self._slow_report()
        return {
            "received": sum(c.got for c in self.clients if not c.plan.slow),
            "expected": expected or 0,
            "sent": sum(sent_by_room.values()),
            "samples": self.samples,
            "first_rx": self.first_rx,
            "last_rx": self.last_rx,
            "cpu_s": cpu,
            "wall_s": wall,
            "disconnects": self.disconnects,
            "slow": slow,
        }

    def _expected(self, totals: dict[str, int], senders: list[Client]) -> int:
        """Deliveries owed to this worker's reading clients: all room traffic but their own."""
        own: dict[tuple[int, str], int] = {}
        for c in senders:
            for i in range(1, c.seq + 1):
                key = (c.idx, c.plan.rooms[i % len(c.plan.rooms)])
                own[key] = own.get(key, 0) + 1
        expected = 0
        for c in self.clients:
            if c.plan.slow or c.state == "connecting":
                continue
            for r in c.plan.rooms:
                expected += totals.get(r, 0) - own.get((c.idx, r), 0)
        return expected

    def _slow_report(self) -> dict[str, Any] | None:
        slow = [c for c in self.clients if c.plan.slow]
        if not slow:
            return None
        c = slow[0]
        if c.state == "closed":
            return {"cut_off": True, "received": c.got}
        # Resume reading briefly: EOF after the buffered backlog means the server dropped it.
        total = 0
        end = time.monotonic() + 3.0
        c.sock.settimeout(0.5)
        while time.monotonic() < end:
            try:
                data = c.sock.recv(RECV_BYTES)
            except TimeoutError:
                return {"cut_off": False, "received": total}
            except OSError:
                return {"cut_off": True, "received": total}
            if not data:
                return {"cut_off": True, "received": total}
            total += data.count(MARK)
        return {"cut_off": False, "received": total}

    def idle_hold(self, hold_s: float) -> dict[str, Any]:
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            for key, _ in self.sel.select(0.1):
                self._setup_read(key.data)
        return {"open": sum(1 for c in self.clients if c.state == "ready")}

    def close_all(self) -> None:
        for c in self.clients:
            if c.state != "closed":
                c.sock.close()
                c.state = "closed"


def worker_main(cfg: WorkerConfig, pipe: Connection) -> None:
    """Entry point of a worker process: obey commands until 'exit'."""
    worker = Worker(cfg, pipe)
    try:
        while pipe.poll(PIPE_TIMEOUT_S):
            cmd, arg = pipe.recv()
            if cmd == "connect":
                pipe.send(worker.connect_all())
            elif cmd == "quiesce":
                pipe.send(worker.quiesce())
            elif cmd == "run":
                pipe.send(worker.run(arg))
            elif cmd == "hold":
                pipe.send(worker.idle_hold(arg))
            elif cmd == "exit":
                break
    finally:
        worker.close_all()


class WorkerPool:
    """Forked workers plus their pipes; always closed (joined or terminated by PID)."""

    def __init__(self, configs: list[WorkerConfig]) -> None:
        ctx = mp.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for cfg in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(cfg, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def send_all(self, cmd: str, arg: Any = None) -> None:
        for p in self.pipes:
            p.send((cmd, arg))

    def recv_all(self, timeout: float = PIPE_TIMEOUT_S) -> list[Any]:
        out = []
        for p in self.pipes:
            if not p.poll(timeout):
                raise TimeoutError("a load-generator worker did not answer in time")
            out.append(p.recv())
        return out

    def ask_all(self, cmd: str, arg: Any = None, timeout: float = PIPE_TIMEOUT_S) -> list[Any]:
        self.send_all(cmd, arg)
        return self.recv_all(timeout)

    def close(self) -> None:
        for p in self.pipes:
            with contextlib.suppress(OSError):
                p.send(("exit", None))
        for proc in self.procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
