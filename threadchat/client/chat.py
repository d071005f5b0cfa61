"""The client's state and logic, free of terminals and sockets.

`ChatClient` turns what the user types into JSON requests (the text-mode commands of the
server, parsed by the server's own parser) and server events into rendered lines, and
tracks who the user is and which room plain lines go to. Two threads use it: the input
thread (`handle_input`) and the receive thread (`handle_event`, `handle_closed`); a lock keeps
its state consistent between them. Passwords typed in commands are sent, never shown.
"""

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from threadchat.client import render
from threadchat.client.render import Line
from threadchat.core import names
from threadchat.core.history import Ref
from threadchat.protocols.native import jsonlines, requests
from threadchat.protocols.native.line import parse_text_command

# Error codes with which the server refuses a name in hello.
NAME_REFUSALS = frozenset({"name_in_use", "invalid_name"})
# How long the input side waits for the server's answer to a request that changes where
# plain lines go (join, leave, nick); past this it goes on, as a person would.
REPLY_WAIT = 5.0

# Commands whose arguments hold a password: such a line is never echoed or kept for recall.
SECRET_COMMANDS = frozenset({"register", "login", "password"})

REGISTERED = "registered"
REFUSED = "refused"
# The name belongs to an account: a password for it may register the client (or a wrong one
# was given for it).
LOGIN_NEEDED = "login_needed"
LOGIN_CODES = frozenset({"name_registered", "bad_login"})
CLOSED = "closed"


def holds_password(line: str) -> bool:
    """Whether a typed line carries a password (and must not be shown or kept)."""
    word = line.lstrip().split(maxsplit=1)[0] if line.strip() else ""
    return word.startswith("/") and word[1:].lower() in SECRET_COMMANDS


class ChatClient:
    def __init__(
        self,
        send: Callable[[dict[str, Any]], object],
        show: Callable[[list[Line]], None],
        *,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        """`send` delivers one request object, `show` prints rendered lines (both thread-safe)."""
        self._send = send
        self._show = show
        self._clock = clock
        self._lock = threading.Lock()
        self.me: str | None = None
        self.rooms: list[str] = []  # in the order joined: the last one is where lines go
        self.quitting = False
        self.closed = threading.Event()
        # The notice or error that came right before the server closed: its reason.
        self.last_word: str | None = None
        self._outcome: tuple[str, str] | None = None
        self._outcome_changed = threading.Condition(self._lock)
        self._next_ref = 0
        self._waiting: dict[int, threading.Event] = {}
        self._echo_on_ok: dict[int, requests.Request] = {}
        self._hello_ref: int | None = None
        self.account: str | None = None
        # The history request each outstanding ref asked for: (room, with, limit).
        self._history_asked: dict[int, tuple[str | None, str | None, int | None]] = {}
        # Where `/history more` continues: (room, with, oldest id shown, limit asked).
        self._history_cursor: tuple[str | None, str | None, int, int | None] | None = None

    @property
    def current_room(self) -> str | None:
        with self._lock:
            return self.rooms[-1] if self.rooms else None

    def prompt_text(self) -> str:
        """E.g. "[lobby] alice> "; names are stripped of control characters for the terminal."""
        with self._lock:
            room = f"[{render.wire(self.rooms[-1])}] " if self.rooms else ""
            return f"{room}{render.wire(self.me or '')}> "

    # -- registration (the main thread, before input starts) ---------------------------------

    def hello(self, name: str, password: str | None = None) -> None:
        # With a ref, the server's ok comes after the welcome and the first join and who:
        # input starts once the client knows which room plain lines go to.
        with self._lock:
            self._outcome = None
            self._next_ref += 1
            self._hello_ref = self._next_ref
        hello: dict[str, Any] = {"type": "hello", "name": name, "ref": self._hello_ref}
        if password is not None:
            hello["password"] = password
        self._send(hello)

    def wait_registered(self, timeout: float) -> tuple[str, str]:
        """(REGISTERED, name), (LOGIN_NEEDED, message), (REFUSED, message) or (CLOSED, reason);
        (CLOSED, ...) on timeout."""
        with self._outcome_changed:
            self._outcome_changed.wait_for(lambda: self._outcome is not None, timeout)
            return self._outcome or (CLOSED, "no answer from the server")

    # -- the input thread ------------------------------------------------------------------

    def handle_input(self, line: str) -> bool:
        """Carry out one typed line; False once the user asked to quit."""
        if not line.strip():
            return True
        request = parse_text_command(line)
        if isinstance(request, requests.Invalid):
            self._say_locally(request.message, render.ERROR)
            return True
        if isinstance(request, requests.QuitRequest):
            self.quit(request.reason)
            return False
        room = self.current_room
        if isinstance(request, requests.HistoryRequest):
            self._history(request, room)
            return True
        # Plain lines and room commands without a room mean the current room.
        defaults_room = (
            requests.Say
            | requests.LeaveRoom
            | requests.Who
            | requests.Topic
            | requests.Moderate
            | requests.TopicLock
        )
        if isinstance(request, defaults_room) and request.room is None:
            if room is None:
                self._say_locally("you are in no room; /join ROOM first", render.ERROR)
                return True
            request = replace(request, room=room)
        if isinstance(request, requests.JoinRoom | requests.LeaveRoom | requests.ChangeNick):
            # Wait for the answer so that the next line goes where the user now expects it.
            self._request_and_wait(request)
            return True
        body = jsonlines.request_to_dict(request)
        if body is None:
            return True
        if isinstance(request, requests.SendPrivate):
            # Shown once the server accepted it: the name may not exist.
            with self._lock:
                self._next_ref += 1
                body["ref"] = self._next_ref
                self._echo_on_ok[self._next_ref] = request
        if self._send(body) and not isinstance(request, requests.SendPrivate):
            self._echo(request)
        return True

    def _history(self, request: requests.HistoryRequest, room: str | None) -> None:
        # JSON has no "more": the client continues from the oldest message it was shown.
        if request.more:
            with self._lock:
                cursor = self._history_cursor
            if cursor is None:
                self._say_locally("nothing to continue; /history first", render.ERROR)
                return
            where, peer, oldest, limit = cursor
            request = requests.HistoryRequest(
                room=where, peer=peer, before=Ref.msgid(oldest), limit=limit
            )
        elif request.room is None and request.peer is None:
            if room is None:
                self._say_locally("you are in no room; /join ROOM first", render.ERROR)
                return
            request = replace(request, room=room)
        body = jsonlines.request_to_dict(request)
        assert body is not None
        with self._lock:
            self._next_ref += 1
            body["ref"] = self._next_ref
            self._history_asked[self._next_ref] = (request.room, request.peer, request.limit)
        self._send(body)

    def quit(self, reason: str = "") -> None:
        with self._lock:
            self.quitting = True
        self._send({"type": "quit", "reason": reason})

    def _request_and_wait(self, request: requests.Request) -> None:
        with self._lock:
            self._next_ref += 1
            ref = self._next_ref
            answered = self._waiting[ref] = threading.Event()
        body = jsonlines.request_to_dict(request)
        assert body is not None
        body["ref"] = ref
        if self._send(body):
            answered.wait(REPLY_WAIT)
        with self._lock:
            self._waiting.pop(ref, None)

    def _echo(self, request: requests.Request) -> None:
        # The server does not send a user's own messages back: show them as sent.
        now = self._clock()
        event: dict[str, Any]
        match request:
            case requests.Say():
                event = {"type": "message", "room": request.room, "from": self.me}
                event |= {"text": request.text, "action": request.action}
            case requests.SendPrivate():
                event = {"type": "private", "from": self.me, "to": request.target}
                event |= {"text": request.text, "action": request.action}
            case _:
                return
        self._show(render.render_event(event, me=self.me, current_room=self.current_room, now=now))

    def _say_locally(self, text: str, style: str = render.INFO) -> None:
        prefix = "!!! " if style == render.ERROR else "--- "
        self._show([render.local_line(prefix + text, style, now=self._clock())])

    # -- the receive thread ----------------------------------------------------------------

    def handle_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "ping":
            self._send({"type": "pong", "token": render.wire(event.get("token"))})
            return
        with self._lock:
            self._track(event)
            me, room = self.me, (self.rooms[-1] if self.rooms else None)
        lines = render.render_event(event, me=me, current_room=room, now=self._clock())
        if lines:
            self._show(lines)
        ref = event.get("ref")
        if kind in ("ok", "error") and isinstance(ref, int):
            with self._lock:
                answered = self._waiting.get(ref)
                echo = self._echo_on_ok.pop(ref, None)
            if echo is not None and kind == "ok":
                self._echo(echo)
            if answered is not None:
                answered.set()

    def _track(self, event: dict[str, Any]) -> None:
        """Follow the user's own name and rooms (lock held)."""
        kind = event["type"]
        self.last_word = None
        match kind:
            case "welcome":
                self.me = _text(event, "name") or self.me
            case "ok" if event.get("ref") == self._hello_ref and self.me is not None:
                self._settle(REGISTERED, self.me)
            case "error" if self.me is None and event.get("code") in LOGIN_CODES:
                self._settle(LOGIN_NEEDED, _text(event, "message") or "that name is registered")
            case "error" if self.me is None and (
                event.get("code") in NAME_REFUSALS or event.get("ref") == self._hello_ref
            ):
                self._settle(REFUSED, _text(event, "message") or "that name was refused")
            case "error" | "notice":
                self.last_word = _text(event, "message" if kind == "error" else "text")
            case "join" if self._is_me(event.get("name")):
                room = _text(event, "room")
                self.rooms = [r for r in self.rooms if names.fold(r) != names.fold(room)]
                self.rooms.append(room)
            case "leave" if self._is_me(event.get("name")):
                room = _text(event, "room")
                self.rooms = [r for r in self.rooms if names.fold(r) != names.fold(room)]
            case "nick" if self._is_me(event.get("old")):
                self.me = _text(event, "new") or self.me
            case "logged_in":
                self.account = _text(event, "account") or self.account
            case "history":
                self._track_history(event)

    def _track_history(self, event: dict[str, Any]) -> None:
        """Remember where `/history more` continues (lock held)."""
        ref = event.get("ref")
        asked = self._history_asked.pop(ref, None) if isinstance(ref, int) else None
        messages = event.get("messages")
        ids = (
            [m.get("id") for m in messages if isinstance(m, dict)]
            if isinstance(messages, list)
            else []
        )
        ids = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
        if asked is None or not ids:
            return
        room, peer, limit = asked
        # The server's answer names the room as it is spelled; the request may have folded it.
        room = _text(event, "room") or room
        self._history_cursor = (room if peer is None else None, peer, min(ids), limit)

    def _is_me(self, name: object) -> bool:
        return (
            isinstance(name, str)
            and self.me is not None
            and names.fold(name) == names.fold(self.me)
        )

    def _settle(self, outcome: str, detail: str) -> None:
        self._outcome = (outcome, detail)
        self._outcome_changed.notify_all()

    def handle_closed(self, problem: str | None) -> None:
        """The connection ended; `problem` is the socket error, None for a clean close."""
        with self._lock:
            if self._outcome is None:
                self._settle(CLOSED, self.reason(problem))
            for answered in self._waiting.values():
                answered.set()
        self.closed.set()

    def reason(self, problem: str | None = None) -> str:
        """Why the server went away, as far as the client can tell."""
        return render.wire(self.last_word or problem or "connection closed by server")


def _text(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    return value if isinstance(value, str) else ""
