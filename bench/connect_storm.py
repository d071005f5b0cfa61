"""Connect storm: many clients connect and register, a few at a time, and stay connected.

One process, one selectors loop. At most ``in_flight`` connections are between ``connect()``
and the end of their welcome burst at any moment; as one finishes, the next is opened. A
registration is done at the end of the welcome burst, not at ``001``, so the cost of the burst
counts:

- IRC: ``NICK``/``USER``, done at ``376`` (end of MOTD) or ``422`` (no MOTD).
- JSON (threadchat's native port): ``hello`` with a ``ref``, done at the ``ok`` for that ref,
  which the server sends after ``welcome``, the lobby ``join``, its ``who`` and recent history.

Registered clients stay connected (not read any more) until the storm ends, as after a server
restart, when every client comes back and stays: each registration then happens with all
earlier ones still online, which is what shows per-connection global work on the server.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

RECV_BYTES = 65536
# A server that says nothing for this long to one registering client fails the storm run.
STALL_TIMEOUT_S = 30.0


@dataclass(eq=False)
class _Pending:
    index: int
    sock: socket.socket
    started_ns: int
    connected: bool = False
    partial: bytes = b""
    last_seen: float = field(default_factory=time.monotonic)


def _registration(protocol: str, nick: str) -> bytes:
    if protocol == "irc":
        return f"NICK {nick}\r\nUSER {nick} 0 * :storm\r\n".encode()
    return f'{{"type":"hello","name":"{nick}","ref":"storm"}}\n'.encode()


def _verdict(protocol: str, line: bytes) -> str | None:
    """'done', 'failed', a reply to send back (IRC PING), or None for a line of the burst."""
    if protocol == "irc":
        parts = line.split(b" ", 3)
        if parts[0] == b"PING":
            return "PONG " + line[5:].decode("utf-8", "replace")
        if parts[0] == b"ERROR":
            return "failed"
        if len(parts) > 1 and parts[1] in (b"376", b"422"):
            return "done"
        # Nick refused or in use, or a registration error: this storm does not retry.
        if len(parts) > 1 and parts[1] in (b"432", b"433", b"436", b"461", b"465"):
            return "failed"
        return None
    if b'"type":"ok"' in line or b'"type": "ok"' in line:
        return "done"
    if b'"type":"error"' in line or b'"type": "error"' in line:
        return "failed"
    return None


def storm(
    host: str,
    port: int,
    protocol: str,
    count: int,
    in_flight: int = 8,
    nick_prefix: str = "s",
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Register ``count`` clients, at most ``in_flight`` at a time; close them all at the end.

    Returns the wall time from the first connect to the last end of burst, the registrations
    per second, per-registration latency percentiles and how many failed."""
    sel = selectors.DefaultSelector()
    kept: list[socket.socket] = []
    latencies = array("q")
    failed = 0
    next_index = 0
    pending = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + timeout_s

    def finish(p: _Pending, ok: bool) -> None:
        nonlocal pending, failed
        pending -= 1
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(p.sock)
        if ok:
            latencies.append(time.monotonic_ns() - p.started_ns)
            kept.append(p.sock)
        else:
            failed += 1
            p.sock.close()

    try:
        while (next_index < count or pending) and time.monotonic() < deadline:
            while next_index < count and pending < in_flight:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                p = _Pending(next_index, sock, time.monotonic_ns())
                next_index += 1
                pending += 1
                err = sock.connect_ex((host, port))
                if err not in (0, errno.EINPROGRESS):
                    finish(p, ok=False)
                    continue
                sel.register(sock, selectors.EVENT_WRITE, p)
            now = time.monotonic()
            for key, mask in sel.select(0.5):
                p = key.data
                p.last_seen = now
                if not p.connected and mask & selectors.EVENT_WRITE:
                    if p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        finish(p, ok=False)
                        continue
                    p.connected = True
                    sel.modify(p.sock, selectors.EVENT_READ, p)
                    p.sock.sendall(_registration(protocol, f"{nick_prefix}{p.index:05d}"))
                    continue
                try:
                    data = p.sock.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    finish(p, ok=False)
                    continue
                *lines, p.partial = (p.partial + data).split(b"\n")
                for raw in lines:
                    verdict = _verdict(protocol, raw.rstrip(b"\r"))
                    if verdict in ("done", "failed"):
                        finish(p, ok=verdict == "done")
                        break
                    if verdict is not None:
                        p.sock.sendall(f"{verdict}\r\n".encode())
            # A client the server stopped answering fails instead of holding its slot forever.
            for key in list(sel.get_map().values()):
                if now - key.data.last_seen > STALL_TIMEOUT_S:
                    finish(key.data, ok=False)
        total_s = time.monotonic() - start
        held = len(kept)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()
        for sock in kept:
            sock.close()
    ordered = sorted(latencies)

    def quantile_ms(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6 if ordered else None

    return {
        "clients": count, "in_flight": in_flight, "registered": held,
        "failed": failed + (count - next_index) + pending,
        "total_s": round(total_s, 3),
        "registrations_per_s": round(held / total_s, 1) if total_s > 0 else None,
        "p50_ms": quantile_ms(0.5), "p99_ms": quantile_ms(0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else None,
        "generator_cpu_s": round(time.process_time() - cpu0, 3),
        "kept_connected": True,
    }  # fmt: skip
