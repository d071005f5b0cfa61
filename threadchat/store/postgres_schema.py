"""Versioned PostgreSQL schema: MIGRATIONS[i] upgrades a database from version i to i + 1.

The same discipline as the SQLite schema (`schema.py`): steps are only ever appended, never
edited, and each runs in one transaction together with the version bump, so a failed upgrade
leaves the old version intact. The version lives in the one-row table `schema_version`
(PostgreSQL has no user_version). Several nodes may start at once: the upgrade holds an
advisory lock (`MIGRATION_LOCK`), so exactly one of them runs each step.

v1 is the SQLite schema as of its v3, in PostgreSQL's types, plus `message_counter`: the
one row every message-writing commit updates first. Its row lock, held until that commit,
orders the commits of every node, so ids increase in commit order across nodes and times
never go back along ids (see `PostgresStore._insert_rows`). v2 is issue 15's (SQLite's v4).
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
    # v2 (issue 15): full-text search, read markers, always-on accounts (SQLite's v4).
    # Search is PostgreSQL's own: `search_vector`, a generated column of the text, and a GIN
    # index of it. Being generated, it is in step with every write of the text in the same
    # statement: an edit (an UPDATE of the text) re-indexes the row, a deletion that empties
    # the text leaves it nothing to match, a DELETE takes its entry away; adding the column
    # computes it for every row already stored (the migration indexes the old history).
    # The words are what SQLite's unicode61 tokenizer makes of the text: runs of letters
    # and digits (anything else splits, so "example.com" and "green-tea" are two words each,
    # where PostgreSQL's own parser would keep them whole), case and accents ignored
    # (unaccent), no stemming and no stop words ('simple'). Queries go through the same
    # configuration (`PostgresStore.search`), so a word is found exactly as it was indexed.
    # unaccent is a trusted extension: the database's owner may create it.
    (
        "CREATE EXTENSION IF NOT EXISTS unaccent",
        "CREATE TEXT SEARCH CONFIGURATION threadchat_search (COPY = pg_catalog.simple)",
        """ALTER TEXT SEARCH CONFIGURATION threadchat_search
            ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword,
            hword_asciipart, hword_part, hword_numpart WITH unaccent, simple""",
        """ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS
            (to_tsvector('threadchat_search'::regconfig,
                regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED""",
        "CREATE INDEX messages_search ON messages USING GIN (search_vector)",
        # Per account and conversation (a room's folded name, or "@" + the peer's folded
        # account): the time (ms) up to which the account has read it.
        """CREATE TABLE read_markers (
            account_key TEXT NOT NULL,
            target_key TEXT NOT NULL,
            read_ts BIGINT NOT NULL,
            PRIMARY KEY (account_key, target_key)
        )""",
        # Accounts that stay in their rooms while no device is connected (see schema.py v4).
        """CREATE TABLE always_on (
            account_key TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            nick TEXT NOT NULL,
            last_seen_ts BIGINT,
            last_seen_id BIGINT
        )""",
        """CREATE TABLE always_on_rooms (
            account_key TEXT NOT NULL,
            room_key TEXT NOT NULL,
            room TEXT NOT NULL,
            PRIMARY KEY (account_key, room_key)
        )""",
    ),
    # v3 (issue 14): messages that live on (SQLite's v5). A reply names its parent
    # (reply_to); an edit updates the row's text and sets `edited`; a deletion leaves a
    # tombstone (text emptied, `deleted` set) so a later history page still says it was
    # there. The generated search_vector (v2) follows both UPDATEs. Reactions have their own
    # table, one row per (message, person, reaction), `ts` in microseconds (listed in the
    # order given); its foreign key removes them with their message (retention, ended rooms:
    # SQLite's trigger), through the primary key's index, which starts with message_id.
    (
        """ALTER TABLE messages ADD COLUMN reply_to BIGINT,
            ADD COLUMN edited BOOLEAN NOT NULL DEFAULT FALSE,
            ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE""",
        """CREATE TABLE reactions (
            message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            reactor_key TEXT NOT NULL,
            reaction TEXT NOT NULL,
            reactor TEXT NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (message_id, reactor_key, reaction)
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
