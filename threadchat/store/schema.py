"""Versioned SQLite schema: MIGRATIONS[i] upgrades a database from version i to i + 1.

The version lives in PRAGMA user_version. Steps are only ever appended, never edited: a data
directory written by any earlier release is upgraded in place on start, never recreated.
Each step is a list of single statements (not a script) so that it runs inside one explicit
transaction together with the user_version bump: a failed upgrade leaves the old version intact.
A statement may also be a function of the connection, for what SQL cannot say exactly (it
runs in the same transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

# How `messages.reactions` (v6) holds a message's reactions: each reaction and the people
# who gave it, joined by US, the reactions joined by RS, in the order each was first given.
# Neither can be in a reaction (control characters are refused) nor in a nick.
REACTION_PEOPLE_SEPARATOR = "\x1f"
REACTIONS_SEPARATOR = "\x1e"
# A message's reaction rows in the order given (`ts` in microseconds, then the person).
REACTIONS_OF_MESSAGE = (
    "SELECT reaction, reactor FROM reactions WHERE message_id = ? ORDER BY ts, reactor_key"
)


def reactions_summary(rows: Iterable[tuple[str, str]]) -> str | None:
    """`messages.reactions` for a message's (reaction, person) rows in the order given; None
    when there are none."""
    given: dict[str, list[str]] = {}
    for reaction, reactor in rows:
        given.setdefault(reaction, []).append(reactor)
    joined = REACTIONS_SEPARATOR.join(
        REACTION_PEOPLE_SEPARATOR.join((reaction, *people)) for reaction, people in given.items()
    )
    return joined or None


def summarize_reactions(conn: sqlite3.Connection, ids: Iterable[int] | None = None) -> None:
    """Set `messages.reactions` from the reactions table: of the messages `ids`, or of every
    message that has reactions (the v6 upgrade)."""
    if ids is None:
        ids = [row[0] for row in conn.execute("SELECT DISTINCT message_id FROM reactions")]
    conn.executemany(
        "UPDATE messages SET reactions = ? WHERE id = ?",
        [(reactions_summary(conn.execute(REACTIONS_OF_MESSAGE, (msgid,))), msgid) for msgid in ids],
    )


Step = str | Callable[[sqlite3.Connection], None]

MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    # v1: messages, accounts, rooms with their topic.
    (
        """CREATE TABLE accounts (
            name_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_ts INTEGER NOT NULL
        )""",
        # AUTOINCREMENT: ids are never reused, even after the newest rows are purged, so a
        # client's msgid reference can never point at a different message later.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts INTEGER NOT NULL,
            room_key TEXT,
            room TEXT,
            sender TEXT NOT NULL,
            sender_account TEXT,
            target TEXT,
            target_account TEXT,
            pair_lo TEXT,
            pair_hi TEXT,
            text TEXT NOT NULL,
            action INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX messages_room ON messages (room_key, id)",
        "CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, id)",
        """CREATE TABLE rooms (
            room_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            topic TEXT NOT NULL DEFAULT '',
            topic_by TEXT,
            topic_ts INTEGER,
            created_ts INTEGER NOT NULL
        )""",
    ),
    # v2: room ownership, modes, key, limit and access lists; a ts index for retention.
    (
        "ALTER TABLE rooms ADD COLUMN owner TEXT",
        "ALTER TABLE rooms ADD COLUMN modes TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE rooms ADD COLUMN room_password TEXT",
        "ALTER TABLE rooms ADD COLUMN user_limit INTEGER",
        """CREATE TABLE room_entries (
            room_key TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('op', 'voice', 'ban')),
            value TEXT NOT NULL,
            PRIMARY KEY (room_key, kind, value)
        ) WITHOUT ROWID""",
        "CREATE INDEX messages_ts ON messages (ts)",
    ),
    # v3: the private-pair index holds private messages only. Room messages (nearly all) had
    # an entry with NULLs in it, which cost every append 0.2 of its 1.5 us of SQLite time
    # (measured with 400-row INSERTs). `pair_lo = ?` implies `pair_lo IS NOT NULL`, so
    # private-history queries still use it.
    (
        "DROP INDEX messages_pair",
        "CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, id) WHERE pair_lo IS NOT NULL",
    ),
    # v4 (issue 15): full-text search, read markers, always-on accounts.
    # messages_fts is an external-content FTS5 index of messages.text (the text is not kept
    # twice). New messages are indexed by the store's writer right after their commit, many
    # at once (`SQLiteStore._index_new`), up to the id messages_fts_progress holds: an FTS5
    # insert costs about 8 us of CPU per message and 100 us per transaction, which a
    # trigger would add to every group commit (measured: raw inserts at 0.1 to 0.2 of their
    # speed). Edits and deletions of indexed messages are kept in step by triggers: an
    # UPDATE of the text (an edit, or a deletion that empties it) takes the old text out and
    # puts the new one in; a DELETE (retention, a room's end) takes it out. The rebuild
    # indexes what is already stored. unicode61 with remove_diacritics 2: "cafe" finds
    # "café"; columnsize=0: no per-row size table (results are ordered by id, not rank).
    # The sender's nick and account are indexed too, so an author filter is a lookup in
    # the index instead of a check of every match (measured: p50 118 ms for a word with
    # 4,500 matches among 1,000,000 messages, filtered to one of 200 authors).
    (
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, sender, sender_account, content='messages', content_rowid='id',
            columnsize=0, tokenize='unicode61 remove_diacritics 2'
        )""",
        "CREATE TABLE messages_fts_progress (upto INTEGER NOT NULL)",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
            WHEN old.id <= (SELECT upto FROM messages_fts_progress) BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text, sender, sender_account)
                VALUES ('delete', old.id, old.text, old.sender, old.sender_account);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
            WHEN old.id <= (SELECT upto FROM messages_fts_progress) BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text, sender, sender_account)
                VALUES ('delete', old.id, old.text, old.sender, old.sender_account);
            INSERT INTO messages_fts (rowid, text, sender, sender_account)
                VALUES (new.id, new.text, new.sender, new.sender_account);
        END""",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
        "INSERT INTO messages_fts_progress (upto) SELECT COALESCE(MAX(id), 0) FROM messages",
        # Per account and conversation (a room's folded name, or "@" + the peer's folded
        # account): the time (ms) up to which the account has read it.
        """CREATE TABLE read_markers (
            account_key TEXT NOT NULL,
            target_key TEXT NOT NULL,
            read_ts INTEGER NOT NULL,
            PRIMARY KEY (account_key, target_key)
        ) WITHOUT ROWID""",
        # Accounts that stay in their rooms while no device is connected: their nick, when
        # their last connection went (NULL while connected) and the newest message id
        # relayed then (where their catch-up starts), and the rooms they are in.
        """CREATE TABLE always_on (
            account_key TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            nick TEXT NOT NULL,
            last_seen_ts INTEGER,
            last_seen_id INTEGER
        )""",
        """CREATE TABLE always_on_rooms (
            account_key TEXT NOT NULL,
            room_key TEXT NOT NULL,
            room TEXT NOT NULL,
            PRIMARY KEY (account_key, room_key)
        ) WITHOUT ROWID""",
    ),
    # v5 (issue 14): messages that live on. A reply names its parent (reply_to); an edit
    # updates the row's text and sets `edited`; a deletion leaves a tombstone (text emptied,
    # `deleted` set), so a later history page still says the message was there. Reactions
    # have their own table, one row per (message, person, reaction), gone with their message;
    # their `ts` is in microseconds (they are listed in the order given).
    (
        "ALTER TABLE messages ADD COLUMN reply_to INTEGER",
        "ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE reactions (
            message_id INTEGER NOT NULL,
            reactor_key TEXT NOT NULL,
            reaction TEXT NOT NULL,
            reactor TEXT NOT NULL,
            ts INTEGER NOT NULL,
            PRIMARY KEY (message_id, reactor_key, reaction)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER messages_reactions_gone AFTER DELETE ON messages BEGIN
            DELETE FROM reactions WHERE message_id = old.id;
        END""",
    ),
    # v6 (issue 14, measured): each message's reactions also in a column of its row, in the
    # form of `reactions_summary`, kept by the writer with every change of the reactions
    # table. A history page then reads them with its messages: the page query read them
    # from the reactions table, one row per person and reaction, which made a page with
    # reactions cost 1.4 times a plain one (CPU), past issue 14's bound of 1.2
    # (docs/performance.md, "Messages that live on").
    (
        "ALTER TABLE messages ADD COLUMN reactions TEXT",
        summarize_reactions,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
