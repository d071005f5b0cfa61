"""The errors every layer shares: refusals the hub and its services give, and storage failures.

They live in the core so that protocols can tell them apart without importing the services
or the store that raise them (see `core/ports.py`).
"""


class HubError(Exception):
    """A request the hub refuses; `code` is stable and protocol modules map it to their errors."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthError(HubError):
    """A login or registration refused; `message` never says whether an account exists."""


class HeldElsewhere(HubError):
    """A nick held by the same account's person on another node (several nodes): code
    `name_in_use`, with a message saying which node to reach instead, for every protocol to
    show (a person's devices share one node; docs/scaling.md, "One account on several
    devices")."""

    def __init__(self, message: str) -> None:
        super().__init__("name_in_use", message)


class StoreError(Exception):
    """The store could not do what was asked (cannot open, write failed, closed, timed out).

    The message is meant for an operator: it names the path or the operation and the reason.
    """
