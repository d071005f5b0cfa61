"""Wiring of storage, history, accounts, moderation and TLS into a Server.

Kept apart from server.py so that the server's own code stays about listeners and threads.
The server owns the store: opened in `start` (before any listener exists), closed in `stop`
(after every connection is gone, so no write is cut off).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from threadchat.core.errors import StoreError
from threadchat.services.accounts import ENFORCEMENT_MODES, AccountService
from threadchat.services.history import MessageLog, Retention
from threadchat.services.moderation import RoomKeeper
from threadchat.store import open_store
from threadchat.transports import tls

if TYPE_CHECKING:
    from threadchat.app.server import Server

log = logging.getLogger(__name__)

# How long stop() waits for the retention thread to finish a purge chunk.
RETENTION_JOIN = 5.0


def start(server: Server) -> None:
    """Open the store and plug the services into the hub; raise StartupError saying why not."""
    from threadchat.app.server import StartupError

    config = server.config
    if config.nick_enforcement not in ENFORCEMENT_MODES:
        raise StartupError(
            f"nick_enforcement must be one of {', '.join(ENFORCEMENT_MODES)}, "
            f"not {config.nick_enforcement!r}"
        )
    if config.history_on_join < 0 or config.history_days < 0:
        raise StartupError("history_on_join and history_days cannot be negative")
    try:
        store = open_store(config.data_dir)
    except StoreError as problem:
        raise StartupError(f"cannot use the data directory: {problem}") from problem
    server.store = store
    hub = server.hub
    if config.history:
        hub.history = MessageLog(store, on_join=config.history_on_join)
    hub.accounts = AccountService(store, enforcement=config.nick_enforcement, admins=config.admins)
    keeper = RoomKeeper(hub, store)
    try:
        loaded = keeper.load()
    except StoreError as problem:
        raise StartupError(f"cannot load rooms: {problem}") from problem
    hub.moderation = keeper
    log.info("data directory %s: %d stored rooms", config.data_dir, loaded)
    if config.history_days > 0:
        retention = Retention(store, config.history_days, server.stopping)
        retention.start()
        server._retention = retention
    try:
        if config.tls_cert:
            server.tls_context = tls.server_context(config.tls_cert, config.tls_key or None)
        elif config.tls_key:
            raise StartupError("--tls-key needs --tls-cert")
        elif config.tls_self_signed:
            cert, key = tls.ensure_self_signed(config.data_dir)
            server.tls_context = tls.server_context(cert, key)
    except tls.TlsSetupError as problem:
        raise StartupError(str(problem)) from problem
    if server.tls_context is not None:
        log.info("TLS on every TCP listener")


def stop(server: Server) -> None:
    """Stop the retention thread and close the store (idempotent)."""
    retention = server._retention
    if retention is not None and retention.is_alive():
        retention.join(RETENTION_JOIN)
    if server.hub.history is not None:
        server.hub.history.close()
    store, server.store = server.store, None
    if store is not None:
        with contextlib.suppress(StoreError):
            store.close()
