"""The store backends the store tests run against: SQLite in a temporary directory, and
PostgreSQL (127.0.0.1:5432, user postgres, trust) in a database of the test's own.

Each PostgreSQL database is created with a unique name (process id and a random part) and
dropped when the test ends, so parallel runs never see each other's rows. PostgreSQL is
expected to be there (as on every machine of this project, CI included): a test that needs
it fails, never skips, when it is not.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from threadchat.store.base import Store

# Where the tests find PostgreSQL; THREADCHAT_TEST_POSTGRES overrides it (a server URL, no
# database name: each test makes its own).
POSTGRES_SERVER = os.environ.get("THREADCHAT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
# Names of the test databases start with this, so a leftover is easy to spot and drop.
TEST_DATABASE_PREFIX = "threadchat_test_"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database for the block; its URL. Dropped afterwards."""
    name = f"{TEST_DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(
            f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5
        ) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


class Backend:
    """One place a store lives: `open` opens a store there (again after a close, to see
    what survived); `sql` runs a statement on it from outside (`?` placeholders)."""

    name: str
    # What the crash test's child process passes to `open_child_store`.
    location: str

    def open(self) -> Store:
        raise NotImplementedError

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.location = str(data_dir)

    def open(self) -> Store:
        from threadchat.store.sqlite import SQLiteStore

        return SQLiteStore(self.data_dir)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        from threadchat.store.sqlite import DB_FILENAME

        with sqlite3.connect(self.data_dir / DB_FILENAME) as conn:
            return conn.execute(statement, params).fetchall()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = url

    def open(self) -> Store:
        from threadchat.store.postgres import PostgresStore

        return PostgresStore(self.url)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


@contextmanager
def backend_of(kind: str, tmp_path: Path) -> Iterator[Backend]:
    if kind == "sqlite":
        yield SQLiteBackend(tmp_path / "data")
        return
    with postgres_database() as url:
        yield PostgresBackend(url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn (import this fixture into a test module to use it)."""
    with backend_of(request.param, tmp_path) as where:
        yield where


def open_child_store(kind: str, location: str) -> Store:
    """For a child process: the store a Backend's `kind` and `location` name."""
    if kind == "sqlite":
        from threadchat.store.sqlite import SQLiteStore

        return SQLiteStore(location)
    from threadchat.store.postgres import PostgresStore

    return PostgresStore(location)
