"""What a native client asks for (text mode, JSON mode, UDP, WebSocket), parsed by protocol modules.

`ref` is the client's own correlation value, echoed in the direct reply (JSON mode).
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    pass


@dataclass(frozen=True, slots=True)
class Hello(Request):
    name: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Say(Request):
    """A room message; `room` None means the connection's current room (text mode)."""

    text: str
    room: str | None = None
    action: bool = False
    ref: object = None


@dataclass(frozen=True, slots=True)
class SendPrivate(Request):
    target: str
    text: str
    action: bool = False
    ref: object = None


@dataclass(frozen=True, slots=True)
class JoinRoom(Request):
    room: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class LeaveRoom(Request):
    room: str | None = None
    reason: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class ChangeNick(Request):
    name: str
    ref: object = None


@dataclass(frozen=True, slots=True)
class Topic(Request):
    """Query the topic when `topic` is None, otherwise set it."""

    room: str | None = None
    topic: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class ListRooms(Request):
    ref: object = None


@dataclass(frozen=True, slots=True)
class Who(Request):
    room: str | None = None
    ref: object = None


@dataclass(frozen=True, slots=True)
class Help(Request):
    ref: object = None


@dataclass(frozen=True, slots=True)
class ClientPing(Request):
    token: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class ClientPong(Request):
    token: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class QuitRequest(Request):
    reason: str = ""
    ref: object = None


@dataclass(frozen=True, slots=True)
class Invalid(Request):
    """Input that could not be understood; the connection answers with this error and goes on."""

    code: str
    message: str
    ref: object = None
