"""Versioned PostgreSQL schema: MIGRATIONS[i] upgrades a database from version i to i + 1.

The same discipline as the SQLite schema (`schema.py`): steps are only ever appended, never
edited, and each runs in one transaction together with the version bump, so a failed upgrade
leaves the old version intact. The version lives in the one-row table `schema_version`
(PostgreSQL has no user_version). Several nodes may start at once: the upgrade holds an
advisory lock (`MIGRATION_LOCK`), so exactly one of them runs each step.

v1 is the SQLite schema as of its v3, in PostgreSQL's types, plus `message_counter`: the
one row every message-writing commit updates first. Its row lock, held until that commit,
orders the commits of every node, so ids increase in commit order across nodes and times
never go back along ids (see `PostgresStore._insert_rows`).
"""

from __future__ import annotations

# pg_advisory_lock key of schema upgrades (any constant; "tc" "sc" in ASCII).
MIGRATION_LOCK = 0x7463_7363

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: accounts, messages, rooms with their entries, the id/time counter.
    (
        """CREATE TABLE accounts (
            name_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_ts BIGINT NOT NULL
        )""",
        # Ids come from message_counter, never from a sequence: a sequence hands out ids at
        # insert time, not commit time, so two nodes' commits could interleave them.
        """CREATE TABLE messages (
            id BIGINT PRIMARY KEY,
            ts BIGINT NOT NULL,
            room_key TEXT,
            room TEXT,
            sender TEXT NOT NULL,
            sender_account TEXT,
            target TEXT,
            target_account TEXT,
            pair_lo TEXT,
            pair_hi TEXT,
            text TEXT NOT NULL,
            action BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX messages_room ON messages (room_key, id)",
        "CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, id) WHERE pair_lo IS NOT NULL",
        "CREATE INDEX messages_ts ON messages (ts)",
        """CREATE TABLE message_counter (
            only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
            last_id BIGINT NOT NULL,
            last_ts BIGINT NOT NULL
        )""",
        "INSERT INTO message_counter (last_id, last_ts) VALUES (0, 0)",
        """CREATE TABLE rooms (
            room_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT NOT NULL DEFAULT '',
            topic_by TEXT,
            topic_ts BIGINT,
            created_ts BIGINT NOT NULL,
            owner TEXT,
            modes TEXT NOT NULL DEFAULT '',
            room_password TEXT,
            user_limit INTEGER
        )""",
        """CREATE TABLE room_entries (
            room_key TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('op', 'voice', 'ban')),
            value TEXT NOT NULL,
            PRIMARY KEY (room_key, kind, value)
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
