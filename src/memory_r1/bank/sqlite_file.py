"""Opening a SQLite bank file: the connection, the schema and the checks that refuse a foreign file.

Split from `sqlite.py` (the store itself): nothing here knows about memories beyond the schema.
A file is modified only once it is recognised as a bank (or is new and empty).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from memory_r1.bank.store import BankError, IncompatibleBankError

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE memories (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        text TEXT NOT NULL,
        timestamp TEXT NOT NULL DEFAULT '',  -- dialogue time string, as shown to the agents
        occurred_at TEXT,                    -- parsed dialogue time (ISO), NULL if unknown
        created_at TEXT NOT NULL,            -- wall clock, UTC ISO
        updated_at TEXT NOT NULL,
        source_turn_ids TEXT NOT NULL DEFAULT '[]',
        embedding BLOB NOT NULL,             -- L2-normalised float32
        deleted INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX memories_owner ON memories (owner, deleted)",
    """CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        memory_id INTEGER,                   -- NULL for a NOOP that touched no memory
        owner TEXT NOT NULL,
        event TEXT NOT NULL,                 -- ADD, UPDATE, DELETE, NOOP or UNDO
        before_text TEXT,
        after_text TEXT,
        before_embedding BLOB,               -- UPDATE: the replaced state, so undo restores it exactly
        before_timestamp TEXT,
        before_occurred_at TEXT,
        before_source_turn_ids TEXT,
        agent TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_version TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL,
        undone INTEGER NOT NULL DEFAULT 0,
        undoes INTEGER)                      -- UNDO: the history row it reverted""",
    "CREATE INDEX history_owner ON history (owner)",
    "CREATE INDEX history_memory ON history (memory_id)",
    """CREATE TABLE turns (
        sample_id TEXT NOT NULL,
        dia_id TEXT NOT NULL,
        record TEXT NOT NULL,                -- JSON: what ingesting the turn did (facts, operations, cost)
        at TEXT NOT NULL,
        PRIMARY KEY (sample_id, dia_id))""",
)

def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of a bank file, None for ":memory:" or a file that is gone."""
    try:
        return None if path == ":memory:" else (os.stat(path).st_dev, os.stat(path).st_ino)
    except OSError:
        return None


def connect(path: str, read_only: bool, timeout: float) -> sqlite3.Connection:
    """Open with autocommit (we issue BEGIN ourselves); nothing is written to the file here.

    WAL is switched on only by `_open_schema`, once the file is known to be a bank or is new.
    """
    if read_only and path != ":memory:" and not Path(path).is_file():
        raise BankError(f"no bank at {path}")
    if path != ":memory:" and Path(path).is_file() and Path(path).stat().st_size > 0:
        with open(path, "rb") as handle:  # SQLite would take a short non-empty file for an empty database
            if handle.read(16) != b"SQLite format 3\x00":
                raise BankError(f"cannot open bank {path}: file is not a database")
    target = f"file:{quote(str(Path(path).absolute()))}?mode=ro" if read_only and path != ":memory:" else path
    try:
        conn = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None, timeout=timeout, uri=target != path
        )
        conn.execute("PRAGMA synchronous=NORMAL")  # per connection: does not touch the file
    except sqlite3.Error as error:
        raise BankError(describe_error(path, error, timeout)) from error
    return conn


def open_schema(
    conn: sqlite3.Connection, path: str, embedding_model: str | None, dim: int | None, read_only: bool = False
) -> tuple[int | None, str | None]:
    """Create the schema in an empty database, or check an existing one; returns (dim, model).

    The check reads only: a foreign file (another app's SQLite database, not a database at all, another
    schema version) is refused before anything is written to it.
    """
    meta: dict[str, str] = {}
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise BankError(f"cannot open bank {path}: {error}") from error
    if not tables and read_only:
        raise IncompatibleBankError(f"{path} is an empty database, not a memory bank")
    if tables:
        meta = _check_meta(conn, path, tables, embedding_model, dim)
    needs_meta = (dim is not None and "dim" not in meta) or (
        embedding_model is not None and "embedding_model" not in meta
    )
    if read_only or (tables and not needs_meta and _journal_mode(conn, path) == "wal"):
        return _resolved(meta, embedding_model, dim)  # nothing to write: no write lock needed to open
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")  # a recognised bank or a new, empty file: ours to set up
    conn.execute("BEGIN IMMEDIATE")  # two processes creating the same new file must not both create
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        meta = _check_meta(conn, path, tables or {"meta"}, embedding_model, dim)
        if "dim" not in meta and dim is not None:
            conn.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
        if "embedding_model" not in meta and embedding_model is not None:
            conn.execute("INSERT INTO meta VALUES ('embedding_model', ?)", (embedding_model,))
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return _resolved(meta, embedding_model, dim)


def _journal_mode(conn: sqlite3.Connection, path: str) -> str:
    return "wal" if path == ":memory:" else str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _check_meta(
    conn: sqlite3.Connection, path: str, tables: set[str], embedding_model: str | None, dim: int | None
) -> dict[str, str]:
    """The meta table of a bank, or IncompatibleBankError saying why this database is not one we can use."""
    if "meta" not in tables:
        raise IncompatibleBankError(f"{path} is a SQLite database but not a memory bank (no meta table)")
    try:
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta").fetchall()}
    except sqlite3.DatabaseError as error:
        raise IncompatibleBankError(f"{path}: not a memory bank (unreadable meta table: {error})") from error
    found = meta.get("schema_version")
    if found != str(SCHEMA_VERSION):
        raise IncompatibleBankError(
            f"{path}: bank schema version {found}, this memory-r1 expects {SCHEMA_VERSION}"
        )
    stored_dim = meta.get("dim")
    if stored_dim is not None and not stored_dim.isdecimal():
        raise IncompatibleBankError(f"{path}: bank records an invalid embedding dimension {stored_dim!r}")
    if dim is not None and stored_dim is not None and dim != int(stored_dim):
        raise IncompatibleBankError(f"{path}: bank embeddings have dim {stored_dim}, asked for {dim}")
    stored_model = meta.get("embedding_model")
    if embedding_model is not None and stored_model is not None and embedding_model != stored_model:
        raise IncompatibleBankError(
            f"{path}: bank embeddings come from {stored_model!r}, asked for {embedding_model!r}"
        )
    return meta


def _resolved(
    meta: dict[str, str], embedding_model: str | None, dim: int | None
) -> tuple[int | None, str | None]:
    stored_dim = int(meta["dim"]) if "dim" in meta else None
    return (stored_dim if stored_dim is not None else dim, meta.get("embedding_model") or embedding_model)


def describe_error(path: str, error: sqlite3.Error, timeout: float) -> str:
    """One line for a storage error a user can act on."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return f"{path}: bank is locked by another process (waited {timeout:g} s): {text}"
    if "readonly" in text or "read-only" in text:
        return f"{path}: bank is read-only here ({text}); read-only commands still work"
    return (
        f"cannot open bank {path}: {text}" if "unable to open" in text else f"{path}: storage error: {text}"
    )
