"""Persistent storage: messages, rooms, accounts. The hub uses the Store interface only.

It raises `threadchat.core.errors.StoreError`; history queries are `core.history`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from threadchat.core.names import fold
from threadchat.store.base import (
    AccountExistsError,
    RoomRecord,
    Store,
    StoredMessage,
)

# Relative to the server's working directory, like most self-hosted servers' defaults.
DEFAULT_DATA_DIR = "./data"

__all__ = [
    "DEFAULT_DATA_DIR",
    "AccountExistsError",
    "RoomRecord",
    "Store",
    "StoredMessage",
    "add_data_dir_argument",
    "fold",
    "open_store",
]


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--data-dir DIR` (default ./data) to a command line parser."""
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        type=Path,
        help="directory holding threadchat.db (created if missing; default: %(default)s)",
    )


def open_store(data_dir: str | Path = DEFAULT_DATA_DIR, database_url: str = "") -> Store:
    """Open the PostgreSQL store at `database_url` if one is given, else the embedded SQLite
    store in `data_dir`; raises StoreError naming the place (never a password) and reason."""
    if database_url:
        from threadchat.store.postgres import PostgresStore

        return PostgresStore(database_url)
    from threadchat.store.sqlite import SQLiteStore

    return SQLiteStore(data_dir)
