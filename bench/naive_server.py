"""The classic lab chat server, kept as a performance reference.

One thread per client; a room message is relayed by the sender's own thread, which loops
``sendall`` over every other member's socket. It speaks a small IRC subset (NICK, USER, JOIN,
PRIVMSG to a channel, PING, QUIT) and, when a client's first line starts with ``{``, the native
JSON lines ``hello``/``join``/``say``/``ping``. It is deliberately simple: no flood control, no
output queues, no limits beyond the line length. Never expose it beyond loopback.

Run: ``python bench/naive_server.py --port P``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import threading
from dataclasses import dataclass, field

# A client line longer than this is dropped with its connection: the reference must not grow
# without bound on a client that never sends a newline.
MAX_LINE_BYTES = 8192
# The kernel accept queue; large so that load generators connecting in bursts are not stalled.
LISTEN_BACKLOG = 1024
SERVER_NAME = "naive.bench"


@dataclass(eq=False)
class Client:
    """One connected socket; ``send`` may be called from any thread."""

    sock: socket.socket
    nick: str = ""
    json_mode: bool = False
    rooms: set[str] = field(default_factory=set)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    event_id: int = 0

    def send(self, data: bytes) -> None:
        # Per-socket lock: two relaying threads must not interleave halves of their lines.
        with self.send_lock, contextlib.suppress(OSError):
            self.sock.sendall(data)


class NaiveServer:
    """Rooms are sets of clients guarded by one lock; relaying happens outside the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rooms: dict[str, set[Client]] = {}
        self.event_counter = 0

    def next_id(self) -> int:
        with self.lock:
            self.event_counter += 1
            return self.event_counter

    def members(self, room: str) -> list[Client]:
        with self.lock:
            return list(self.rooms.get(room, ()))

    def join(self, client: Client, room: str) -> None:
        with self.lock:
            self.rooms.setdefault(room, set()).add(client)
        client.rooms.add(room)

    def leave_all(self, client: Client) -> None:
        with self.lock:
            for room in client.rooms:
                self.rooms.get(room, set()).discard(client)

    def relay(self, sender: Client, room: str, irc_line: bytes, json_line: bytes) -> None:
        for other in self.members(room):
            if other is not sender:
                other.send(json_line if other.json_mode else irc_line)

    def serve_client(self, client: Client) -> None:
        buf = b""
        try:
            while True:
                chunk = client.sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > MAX_LINE_BYTES and b"\n" not in buf:
                    return
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.rstrip(b"\r").decode("utf-8", "replace")
                    if not line:
                        continue
                    if not client.nick and not client.json_mode and line.startswith("{"):
                        client.json_mode = True
                    if client.json_mode:
                        self.handle_json(client, line)
                    else:
                        self.handle_irc(client, line)
        except OSError:
            return
        finally:
            self.leave_all(client)
            client.sock.close()

    def json_event(self, kind: str, **fields: object) -> bytes:
        event = {"type": kind, "id": self.next_id(), "ts": "1970-01-01T00:00:00.000Z", **fields}
        return (json.dumps(event, separators=(",", ":")) + "\n").encode()

    def handle_json(self, client: Client, line: str) -> None:
        try:
            req = json.loads(line)
        except ValueError:
            return
        kind = req.get("type")
        if kind == "hello":
            client.nick = str(req.get("name", ""))
            client.send(self.json_event("welcome", name=client.nick, server=SERVER_NAME))
        elif kind == "join":
            room = str(req.get("room", ""))
            self.join(client, room)
            irc = f":{client.nick}!u@h JOIN #{room}\r\n".encode()
            event = self.json_event("join", room=room, name=client.nick)
            client.send(event)
            self.relay(client, room, irc, event)
        elif kind == "say":
            room, text = str(req.get("room", "")), str(req.get("text", ""))
            irc = f":{client.nick}!u@h PRIVMSG #{room} :{text}\r\n".encode()
            self.relay(
                client,
                room,
                irc,
                self.json_event(
                    "message", room=room, **{"from": client.nick}, text=text, action=False
                ),
            )
        elif kind == "ping":
            client.send(self.json_event("pong", token=req.get("token", "")))

    def handle_irc(self, client: Client, line: str) -> None:
        cmd, _, rest = line.partition(" ")
        cmd = cmd.upper()
        if cmd == "NICK":
            client.nick = rest.strip().lstrip(":")
        elif cmd == "USER":
            client.send(f":{SERVER_NAME} 001 {client.nick} :Welcome\r\n".encode())
        elif cmd == "JOIN":
            for chan in rest.split(",") if rest else []:
                room = chan.strip().lstrip("#")
                self.join(client, room)
                irc = f":{client.nick}!u@h JOIN #{room}\r\n".encode()
                client.send(irc)
                event = self.json_event("join", room=room, name=client.nick)
                self.relay(client, room, irc, event)
        elif cmd == "PRIVMSG":
            target, _, text = rest.partition(" :")
            if target.startswith("#"):
                room = target[1:]
                irc = f":{client.nick}!u@h PRIVMSG {target} :{text}\r\n".encode()
                event = self.json_event(
                    "message", room=room, **{"from": client.nick}, text=text, action=False
                )
                self.relay(client, room, irc, event)
        elif cmd == "PING":
            client.send(f":{SERVER_NAME} PONG {SERVER_NAME} {rest}\r\n".encode())
        elif cmd == "QUIT":
            raise OSError("quit")

    def serve_forever(self, host: str, port: int) -> None:
        listener = socket.create_server((host, port), backlog=LISTEN_BACKLOG, reuse_port=False)
        while True:
            sock, _ = listener.accept()
            client = Client(sock)
            # Small thread stacks: thousands of idle clients must fit in memory.
            threading.Thread(target=self.serve_client, args=(client,), daemon=True).start()


def raise_nofile_limit() -> None:
    """Lift the soft open-files limit to the hard one (thousands of clients need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    threading.stack_size(256 * 1024)
    NaiveServer().serve_forever(args.host, args.port)


if __name__ == "__main__":
    main()
