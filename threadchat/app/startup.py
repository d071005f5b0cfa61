"""Wiring of storage, history, accounts, moderation and TLS into the server's hub.

Kept apart from server.py so that the server's own code stays about listeners and threads;
server.py imports this module, never the other way round. The server owns what `start`
returns: the store is opened before any listener exists and closed by `stop` after every
connection is gone, so no write is cut off.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass

from threadchat.config import Config
from threadchat.core.errors import StoreError
from threadchat.core.hub import Hub
from threadchat.services.accounts import ENFORCEMENT_MODES, AccountService
from threadchat.services.cluster import BusError, RedisBus
from threadchat.services.history import MessageLog, Retention
from threadchat.services.moderation import RoomKeeper
from threadchat.services.presence import AlwaysOnKeeper
from threadchat.store import open_store
from threadchat.store.base import Store
from threadchat.transports import tls

log = logging.getLogger(__name__)

# How long stop() waits for the retention thread to finish a purge chunk.
RETENTION_JOIN = 5.0


class StartupError(Exception):
    """The server cannot start (unusable data directory, bad TLS files); says why."""


class UnreachableError(StartupError):
    """A service the server was told to use (PostgreSQL, Redis) cannot be reached or used at
    start: `threadchat serve` exits with code 2 for it, 1 for other start-up failures."""


@dataclass
class Wiring:
    """What `start` opened for the server: closed again by `stop`."""

    store: Store
    tls_context: ssl.SSLContext | None = None
    retention: Retention | None = None
    bus: RedisBus | None = None


def start(config: Config, hub: Hub, stopping: threading.Event) -> Wiring:
    """Open the store and plug the services into the hub; raise StartupError saying why not."""
    if config.nick_enforcement not in ENFORCEMENT_MODES:
        raise StartupError(
            f"nick_enforcement must be one of {', '.join(ENFORCEMENT_MODES)}, "
            f"not {config.nick_enforcement!r}"
        )
    if config.history_on_join < 0 or config.history_days < 0:
        raise StartupError("history_on_join and history_days cannot be negative")
    try:
        store = open_store(config.data_dir, config.database_url)
    except StoreError as problem:
        if config.database_url:
            raise UnreachableError(f"cannot use the database: {problem}") from problem
        raise StartupError(f"cannot use the data directory: {problem}") from problem
    wiring = Wiring(store)
    try:
        _plug_in(config, hub, stopping, wiring)
    except BaseException:
        # Whatever did open is closed again: the caller gets no wiring to stop.
        stop(wiring, hub)
        raise
    return wiring


def _plug_in(config: Config, hub: Hub, stopping: threading.Event, wiring: Wiring) -> None:
    store = wiring.store
    if config.history:
        hub.history = MessageLog(store, on_join=config.history_on_join)
        # Spaced commits are spaced relay rounds: several messages per send to each client.
        store.commit_interval = max(0.0, config.relay_interval)
    hub.accounts = AccountService(store, enforcement=config.nick_enforcement, admins=config.admins)
    keeper = RoomKeeper(hub, store)
    always_on = AlwaysOnKeeper(store)
    try:
        kept = always_on.load()
        # The rooms always-on accounts are in keep their history, whether stored or not.
        # With several nodes the others' rooms live on: their history is not deleted.
        loaded = keeper.load(
            keep=[room for record in kept for room in record.rooms], purge=not config.redis_url
        )
    except StoreError as problem:
        raise StartupError(f"cannot load rooms: {problem}") from problem
    hub.moderation = keeper
    hub.always_on = always_on
    hub.always_on_expiry = config.always_on_expiry * 86400
    if config.history_days > 0:
        wiring.retention = Retention(store, config.history_days, stopping)
        wiring.retention.start()
    try:
        if config.tls_cert:
            wiring.tls_context = tls.server_context(config.tls_cert, config.tls_key or None)
        elif config.tls_key:
            raise StartupError("--tls-key needs --tls-cert")
        elif config.tls_self_signed:
            cert, key = tls.ensure_self_signed(config.data_dir)
            wiring.tls_context = tls.server_context(cert, key)
    except tls.TlsSetupError as problem:
        raise StartupError(str(problem)) from problem
    if wiring.tls_context is not None:
        log.info("TLS on every TCP listener")
    if config.redis_url:
        _link(config, hub, wiring)
    # After the link: with several nodes, the node that claims an account's nick first
    # restores it (`Hub.restore_always_on`).
    restored = hub.restore_always_on(kept)
    place = "PostgreSQL" if config.database_url else f"data directory {config.data_dir}"
    log.info("%s: %d stored rooms, %d always-on accounts", place, loaded, restored)


def _link(config: Config, hub: Hub, wiring: Wiring) -> None:
    """Join the other nodes through Redis (last: the hub has its services by now)."""
    if config.node_expiry <= 0:
        raise StartupError("node_expiry must be positive")
    if config.history and not config.database_url:
        log.warning(
            "several nodes with history in SQLite: each node keeps only what its own users "
            "sent; give every node the same --database-url"
        )
    port = config.line_port or config.irc_port or config.web_port
    node = config.node_name or f"{socket.gethostname()}:{port}"
    bus = RedisBus(hub, config.redis_url, node, expiry=config.node_expiry,
                   prefix=config.redis_prefix)  # fmt: skip
    hub.bus = bus
    try:
        bus.start()
    except BusError as problem:
        hub.bus = None
        raise UnreachableError(str(problem)) from problem
    wiring.bus = bus


def stop(wiring: Wiring, hub: Hub) -> None:
    """Leave the other nodes, stop the retention thread and close the store."""
    if wiring.bus is not None:
        wiring.bus.stop()
        hub.bus = None
    retention = wiring.retention
    if retention is not None and retention.is_alive():
        retention.join(RETENTION_JOIN)
    if hub.history is not None:
        hub.history.close()
    with contextlib.suppress(StoreError):
        wiring.store.close()
