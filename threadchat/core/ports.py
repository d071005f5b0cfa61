"""The services the hub calls, as interfaces the core defines itself.

The hub runs without any of them (memory only); the wiring plugs in implementations from
`threadchat.services` when there is a store. The core never imports those: it knows only
these Protocols, so the dependency points down, from services to core.

Every method here may be called with the hub lock held, so none may block on I/O: each
only queues work (history), checks memory (accounts, moderation), or is called after the
lock is released where the docstring says so.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the hub's own model; ports.py is imported by hub.py itself
    from threadchat.core.hub import ModeChange, Room, User

# Called with a stored message's id and time ({"id": ..., "ts": ...}) to relay it.
Relay = Callable[[dict[str, Any]], None]


class History(Protocol):
    """Stores each message before it is relayed (see services.history.MessageLog)."""

    def submit(
        self,
        user: "User",
        text: str,
        kind: str,
        relay: Relay,
        *,
        room: str | None = None,
        target: "User | None" = None,
    ) -> None:
        """Commit the message, then call `relay` with its stamp (maybe later, pipelined)."""
        ...

    def room_created(self, room: str) -> None:
        """A room was created; it starts with no history (hub lock held: only queues)."""
        ...

    def room_ended(self, room: str) -> None:
        """A room that is not kept ended; its history ends with it (hub lock held)."""
        ...


class Accounts(Protocol):
    """Guards registered names (see services.accounts.AccountService)."""

    def check_name(self, nick: str, account: str | None) -> None:
        """May someone logged in to `account` (None: a guest) take `nick`? Raises HubError."""
        ...


class Moderation(Protocol):
    """Keeps rooms of account owners, grants and mutes (services.moderation.RoomKeeper)."""

    def created(self, user: "User", room: "Room") -> None:
        """`user` created `room` (hub lock held): decide whether it is kept, and by whom."""
        ...

    def joining(self, user: "User", room: "Room") -> None:
        """`user` is joining `room` (hub lock held): apply the grants their account holds."""
        ...

    def is_muted(self, user: "User", room: "Room") -> bool: ...

    def mode_applied(self, room: "Room", change: "ModeChange") -> None:
        """A mode change was applied (hub lock held): keep grants in step."""
        ...

    def save(self, room: "Room") -> None:
        """Store the room's state if it is kept (called without the hub lock)."""
        ...
