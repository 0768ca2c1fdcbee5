"""SQLite memory bank: the embedded default `MemoryStore`.

One file (or ":memory:") holds three tables: `memories` (soft-deleted, never removed), `history` (one row per
decision with its provenance, plus the state it replaced, so `undo` is exact) and `meta` (schema version,
embedding model and dimension, checked on every open so two embedding spaces never mix in one bank).

Search never scans the table: each owner's live embeddings are kept in memory as one float32 matrix,
updated in place by this store's own writes and dropped when another connection commits (PRAGMA
data_version) or a transaction rolls back. A query is then one matmul plus an argpartition.

Several connections (threads, processes) may share one file: every write starts with BEGIN IMMEDIATE and
then re-checks PRAGMA data_version, so the cached indexes never lag behind another connection's commits.
A file is modified only once it is recognised as a bank (or is new and empty); `read_only=True` opens with
SQLite's `mode=ro` and never writes. SQLite errors (locked beyond the busy timeout, read-only file, I/O)
surface as `BankError` with the path, never as raw `sqlite3` exceptions.

Durability: files use WAL with synchronous=NORMAL, so readers never block the writer and a crashed process
neither loses a committed transaction nor exposes an uncommitted one; a power cut may lose the last commits.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from memory_r1.bank.index import OwnerIndex, similarity, top_k_exact
from memory_r1.bank.sqlite_file import connect, describe_error, file_id, open_schema
from memory_r1.bank.store import BankError, MemoryNotFoundError, normalised_vectors
from memory_r1.records import (
    Event,
    HistoryRecord,
    MemoryEntry,
    Provenance,
    ScoredMemory,
    clean_text,
    normalise_time,
)

UNDO = "UNDO"
USER = Provenance("user")  # default author of an undo
_UNDOABLE = (Event.ADD.value, Event.UPDATE.value, Event.DELETE.value)
_MAX_VARS = 900  # ids per `IN (...)`: stays under SQLite's smallest compiled-in variable limit (999)

_ENTRY_COLS = "id, owner, text, timestamp, occurred_at, created_at, updated_at, source_turn_ids, deleted"
_HISTORY_COLS = (
    "id, memory_id, owner, event, before_text, after_text, agent, model, prompt_version, reason, at, undone"
)
_LOG_SQL = (
    "INSERT INTO history (memory_id, owner, event, before_text, after_text, before_embedding,"
    " before_timestamp, before_occurred_at, before_source_turn_ids, agent, model, prompt_version, reason, at,"
    " undoes)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    """Memory bank in one SQLite file (default: in memory). Thread-safe: one connection behind a lock.

    `read_only`: open an existing bank without ever writing to it (read-only commands, read-only files).
    `busy_timeout`: seconds to wait for another connection's write lock before failing with BankError
    (sqlite3's default, 5 s).
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        embedding_model: str | None = None,
        dim: int | None = None,
        read_only: bool = False,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting; only the outermost commits
        self._touched: set[str] = set()  # owners whose cached index changed in the open transaction
        self._indexes: dict[str, OwnerIndex] = {}
        self._conn = connect(self.path, read_only, busy_timeout)
        try:
            self._dim, self._model = open_schema(self._conn, self.path, embedding_model, dim, read_only)
        except sqlite3.Error as error:
            self._conn.close()
            raise BankError(describe_error(self.path, error, busy_timeout)) from error
        except BankError:
            self._conn.close()
            raise
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        # a file removed or replaced while open is "unavailable", not written
        self._file = file_id(self.path)

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def embedding_model(self) -> str | None:
        return self._model

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, embedding_model={self._model!r}, dim={self._dim})"

    # ---------------------------------------------------------------- writes

    def add(
        self,
        owner: str,
        text: str,
        embedding: np.ndarray,
        *,
        timestamp: str = "",
        occurred_at: datetime | None = None,
        source_turn_ids: Sequence[str] = (),
        provenance: Provenance,
        reason: str | None = None,
    ) -> MemoryEntry:
        return self.add_many(
            owner,
            [text],
            _one(embedding),
            timestamps=[timestamp],
            occurred_at=[occurred_at],
            source_turn_ids=[source_turn_ids],
            provenance=provenance,
            reason=reason,
        )[0]

    def add_many(
        self,
        owner: str,
        texts: Sequence[str],
        embeddings: np.ndarray,
        *,
        timestamps: Sequence[str] | None = None,
        occurred_at: Sequence[datetime | None] | None = None,
        source_turn_ids: Sequence[Sequence[str]] | None = None,
        provenance: Provenance,
        reason: str | None = None,
    ) -> builtins.list[MemoryEntry]:
        """Bulk ADD in one transaction (executemany): one history row per memory, as with `add`."""
        n = len(texts)
        if n == 0:
            return []
        owner, texts = clean_text(owner), [clean_text(t) for t in texts]
        times = [clean_text(t) for t in timestamps] if timestamps is not None else [""] * n
        occurred = [normalise_time(o) for o in occurred_at] if occurred_at is not None else [None] * n
        sources = (
            [tuple(map(clean_text, s)) for s in source_turn_ids] if source_turn_ids is not None else [()] * n
        )
        now = _now()
        with self._guard(), self.transaction():
            vectors = self._vectors(embeddings)
            if not len(vectors) == len(times) == len(occurred) == len(sources) == n:
                raise ValueError(
                    "add_many: texts, embeddings and per-memory fields must have the same length"
                )
            start = self._conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM memories").fetchone()[0]
            ids = range(start, start + n)
            self._conn.executemany(
                f"INSERT INTO memories ({_ENTRY_COLS}, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    (i, owner, t, ts, _iso(oc), now, now, json.dumps(src), v.tobytes())
                    for i, t, ts, oc, src, v in zip(
                        ids, texts, times, occurred, sources, vectors, strict=True
                    )
                ),
            )
            self._conn.executemany(
                _LOG_SQL,
                (
                    _log_row(i, owner, Event.ADD.value, None, t, provenance, _clean(reason), now)
                    for i, t in zip(ids, texts, strict=True)
                ),
            )
            if self._dim is None:
                self._dim = vectors.shape[1]
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(self._dim),))
            self._cache_append(owner, np.fromiter(ids, np.int64, n), occurred, vectors)
        created = datetime.fromisoformat(now)
        return [
            MemoryEntry(i, owner, t, ts, oc, created, created, src)
            for i, t, ts, oc, src in zip(ids, texts, times, occurred, sources, strict=True)
        ]

    def update(
        self,
        memory_id: int,
        text: str,
        embedding: np.ndarray,
        *,
        provenance: Provenance,
        reason: str | None = None,
        timestamp: str | None = None,
        occurred_at: datetime | None = None,
        source_turn_ids: Sequence[str] | None = None,
    ) -> MemoryEntry:
        """Rewrite a memory in place (same id). Dialogue-time fields left as None keep their old values."""
        text = clean_text(text)
        with self._guard(), self.transaction():  # read and write under one write lock: no lost update
            vector = self._vectors(_one(embedding))[0]
            owner, old_text, old_ts, old_oc, old_src, old_blob = self._live_row(memory_id)
            new_ts = old_ts if timestamp is None else clean_text(timestamp)
            new_oc = old_oc if occurred_at is None else _iso(occurred_at)
            new_src = (
                old_src if source_turn_ids is None else json.dumps([clean_text(s) for s in source_turn_ids])
            )
            now = _now()
            self._conn.execute(
                "UPDATE memories SET text = ?, embedding = ?, timestamp = ?, occurred_at = ?,"
                " source_turn_ids = ?, updated_at = ? WHERE id = ?",
                (text, vector.tobytes(), new_ts, new_oc, new_src, now, memory_id),
            )
            before = (old_blob, old_ts, old_oc, old_src)
            self._log(
                _log_row(
                    memory_id, owner, "UPDATE", old_text, text, provenance, _clean(reason), now, before=before
                )
            )
            self._cache_replace(owner, memory_id, vector, _parse(new_oc))
            return self.get(memory_id)

    def delete(self, memory_id: int, *, provenance: Provenance, reason: str | None = None) -> MemoryEntry:
        """Soft delete: the row stays (for history and undo) but leaves search, list and count."""
        with self._guard(), self.transaction():
            owner, text, *_ = self._live_row(memory_id)
            now = _now()
            self._conn.execute(
                "UPDATE memories SET deleted = 1, updated_at = ? WHERE id = ?", (now, memory_id)
            )
            self._log(_log_row(memory_id, owner, "DELETE", text, None, provenance, _clean(reason), now))
            self._cache_remove(owner, memory_id)
            return self.get(memory_id)

    def record_noop(
        self,
        owner: str,
        *,
        provenance: Provenance,
        memory_id: int | None = None,
        reason: str | None = None,
        proposed_text: str | None = None,
    ) -> HistoryRecord:
        """Log a decision that changed nothing, so rejected and NONE operations stay auditable.

        before_text is the memory's text (if one is named); after_text is `proposed_text`, what a rejected
        ADD/UPDATE wanted to write, or else the unchanged text.
        """
        owner = clean_text(owner)
        with self._guard(), self.transaction():
            text = None
            if memory_id is not None:
                mem_owner, text, *_ = self._live_row(memory_id)
                if mem_owner != owner:
                    raise MemoryNotFoundError(f"memory {memory_id} belongs to {mem_owner!r}, not {owner!r}")
            after = clean_text(proposed_text) if proposed_text is not None else text
            hid = self._log(
                _log_row(memory_id, owner, "NOOP", text, after, provenance, _clean(reason), _now())
            )
            return self._history_row(hid)

    def undo(
        self,
        history_id: int | None = None,
        *,
        provenance: Provenance = USER,
        reason: str | None = None,
    ) -> HistoryRecord:
        """Revert one ADD/UPDATE/DELETE (default: the latest not yet undone) and log an UNDO row.

        Later live events on the same memory must be undone first, so the memory is back in exactly the
        state the event left it in and reverting it restores the state before it.
        """
        with self._guard(), self.transaction():
            hid, memory_id, event = self._undo_target(history_id)
            owner, text, ts, oc, src, blob = self._conn.execute(
                "SELECT owner, text, timestamp, occurred_at, source_turn_ids, embedding"
                " FROM memories WHERE id = ?",
                (memory_id,),
            ).fetchone()
            now = _now()
            why = _clean(reason) or f"undo of #{hid} {event}"
            if event == Event.ADD.value:
                self._conn.execute(
                    "UPDATE memories SET deleted = 1, updated_at = ? WHERE id = ?", (now, memory_id)
                )
                undo_id = self._log(
                    _log_row(memory_id, owner, UNDO, text, None, provenance, why, now, undoes=hid)
                )
                self._cache_remove(owner, memory_id)
            elif event == Event.DELETE.value:
                self._conn.execute(
                    "UPDATE memories SET deleted = 0, updated_at = ? WHERE id = ?", (now, memory_id)
                )
                undo_id = self._log(
                    _log_row(memory_id, owner, UNDO, None, text, provenance, why, now, undoes=hid)
                )
                vector = np.frombuffer(blob, np.float32)
                self._cache_append(owner, np.array([memory_id], np.int64), [_parse(oc)], vector[None])
            else:  # UPDATE
                b_text, b_blob, b_ts, b_oc, b_src = self._conn.execute(
                    "SELECT before_text, before_embedding, before_timestamp, before_occurred_at,"
                    " before_source_turn_ids FROM history WHERE id = ?",
                    (hid,),
                ).fetchone()
                self._conn.execute(
                    "UPDATE memories SET text = ?, embedding = ?, timestamp = ?, occurred_at = ?,"
                    " source_turn_ids = ?, updated_at = ? WHERE id = ?",
                    (b_text, b_blob, b_ts, b_oc, b_src, now, memory_id),
                )
                replaced = (blob, ts, oc, src)  # so this UNDO row, too, records what it overwrote
                undo_id = self._log(
                    _log_row(
                        memory_id,
                        owner,
                        UNDO,
                        text,
                        b_text,
                        provenance,
                        why,
                        now,
                        before=replaced,
                        undoes=hid,
                    )
                )
                self._cache_replace(owner, memory_id, np.frombuffer(b_blob, np.float32), _parse(b_oc))
            self._conn.execute("UPDATE history SET undone = 1 WHERE id = ?", (hid,))
            return self._history_row(undo_id)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside commit together or roll back together. Re-entrant: inner levels are savepoints,
        so a failing inner block rolls back only itself; only the outermost level commits. The lock is
        held throughout, so another thread's writes cannot slip into this transaction."""
        with self._guard():
            level = self._depth
            if level == 0 and self.read_only:
                raise BankError(f"{self.path}: bank opened read-only; this command cannot change it")
            self._conn.execute("BEGIN IMMEDIATE" if level == 0 else f"SAVEPOINT level{level}")
            if level == 0:
                self._sync()  # we now hold the write lock: catch up with other connections' commits
            self._depth += 1
            ok = False
            try:
                yield
                ok = True
            finally:
                self._depth -= 1
                if ok and level == 0:
                    self._commit()
                elif ok:
                    self._conn.execute(f"RELEASE level{level}")
                else:
                    if self._conn.in_transaction:  # SQLite itself may have rolled back (disk full, ...)
                        if level == 0:
                            self._conn.execute("ROLLBACK")
                        else:
                            self._conn.execute(f"ROLLBACK TO level{level}")
                            self._conn.execute(f"RELEASE level{level}")
                    self._forget_uncommitted()

    def log_turn(self, sample_id: str, dia_id: str, record: dict) -> None:
        """Mark a dialogue turn as ingested. Called inside the transaction that applied the turn's
        operations, so after a crash a turn is either fully in the bank and logged, or neither."""
        with self._guard(), self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?)",
                (clean_text(sample_id), clean_text(dia_id), clean_text(json.dumps(record)), _now()),
            )

    def turn_log(self, sample_id: str) -> dict[str, dict]:
        """dia_id -> record of every ingested turn of a conversation, in ingestion order."""
        with self._guard():
            rows = self._conn.execute(
                "SELECT dia_id, record FROM turns WHERE sample_id = ? ORDER BY rowid", (sample_id,)
            ).fetchall()
        return {dia_id: json.loads(record) for dia_id, record in rows}

    def purge(self, memory_ids: Sequence[int] = (), *, owner: str | None = None) -> int:
        """Hard delete, for deletion requests: the memories (live or soft-deleted), every history row about
        them (texts and replaced embeddings) and their metadata; with `owner`, all of that owner's rows too.
        Freed pages are zeroed (secure_delete) and the WAL checkpointed, so the text leaves the file.
        Returns how many memories were removed."""
        with self._lock:
            ids = [int(i) for i in memory_ids]
            if owner is not None:
                ids += [r[0] for r in self._conn.execute("SELECT id FROM memories WHERE owner = ?", (owner,))]
            self._conn.execute("PRAGMA secure_delete = ON")
            with self.transaction():
                owners = set()
                for start in range(0, len(ids), _MAX_VARS):
                    chunk = ids[start : start + _MAX_VARS]
                    marks = ", ".join("?" * len(chunk))
                    owners |= {
                        r[0]
                        for r in self._conn.execute(
                            f"SELECT DISTINCT owner FROM memories WHERE id IN ({marks})", chunk
                        )
                    }
                    self._conn.execute(f"DELETE FROM memories WHERE id IN ({marks})", chunk)
                    self._conn.execute(f"DELETE FROM history WHERE memory_id IN ({marks})", chunk)
                    if self._has_metadata_table():
                        self._conn.execute(f"DELETE FROM metadata WHERE memory_id IN ({marks})", chunk)
                if owner is not None:
                    owners.add(owner)
                    self._conn.execute("DELETE FROM history WHERE owner = ?", (owner,))
                for name in owners:
                    self._touched.add(name)
                    self._indexes.pop(name, None)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return len(set(ids))

    def set_metadata(self, memory_id: int, metadata: dict) -> None:
        """Attach a JSON object to a memory (replacing any), inside the caller's transaction if one is open.
        The table is created on first use, so banks that never use metadata are not changed."""
        with self._lock, self.transaction():
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS metadata (memory_id INTEGER PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO metadata VALUES (?, ?)",
                (memory_id, json.dumps(metadata, sort_keys=True)),
            )

    def metadata(self, memory_ids: Sequence[int]) -> dict[int, dict]:
        """memory id -> its metadata object, for the ids that have one."""
        found: dict[int, dict] = {}
        with self._lock:
            if not self._has_metadata_table():
                return found
            ids = [int(i) for i in memory_ids]
            for start in range(0, len(ids), _MAX_VARS):
                chunk = ids[start : start + _MAX_VARS]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT memory_id, value FROM metadata WHERE memory_id IN ({marks})"
                found.update((mid, json.loads(value)) for mid, value in self._conn.execute(sql, chunk))
        return found

    def _has_metadata_table(self) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metadata'"
            ).fetchone()
            is not None
        )

    # ---------------------------------------------------------------- reads

    def get(self, memory_id: int) -> MemoryEntry:
        """The memory with this id, soft-deleted ones included (`deleted=True`)."""
        with self._guard():
            row = self._conn.execute(
                f"SELECT {_ENTRY_COLS} FROM memories WHERE id = ?", (memory_id,)
            ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"memory {memory_id} does not exist")
        return _entry(row)

    def list(self, owner: str | None = None, *, include_deleted: bool = False) -> builtins.list[MemoryEntry]:
        """Memories in id (insertion) order."""
        where, args = _where(owner=owner, deleted=None if include_deleted else 0)
        with self._guard():
            rows = self._conn.execute(
                f"SELECT {_ENTRY_COLS} FROM memories{where} ORDER BY id", args
            ).fetchall()
        return [_entry(r) for r in rows]

    def owners(self) -> builtins.list[str]:
        """Owners with at least one live memory, sorted."""
        with self._guard():
            rows = self._conn.execute("SELECT DISTINCT owner FROM memories WHERE deleted = 0 ORDER BY owner")
            return [r[0] for r in rows]

    def count(self, owner: str | None = None) -> int:
        """Number of live memories (of one owner, or all)."""
        where, args = _where(owner=owner, deleted=0)
        with self._guard():
            return self._conn.execute(f"SELECT COUNT(*) FROM memories{where}", args).fetchone()[0]

    def search(
        self,
        owner: str,
        query_embedding: np.ndarray,
        k: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[ScoredMemory]:
        """Top-k live memories of `owner` by cosine similarity, best first; equal scores: lower id first.

        Scores are recomputed in float64 for the preselected candidates, so `search` and `search_many`
        return the same memories, scores and order for the same query (see `index.top_k_exact`).

        `since`/`until` keep memories whose occurred_at lies in [since, until]; memories without one are
        then excluded. Naive datetimes are read as UTC on both sides.
        """
        return self.search_many(owner, _one(query_embedding), k, since=since, until=until)[0]

    def search_many(
        self,
        owner: str,
        query_embeddings: np.ndarray,
        k: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[builtins.list[ScoredMemory]]:
        """`search` for a batch of queries (Q, D): one matmul for all of them."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        queries = self._vectors(query_embeddings)  # (Q, D)
        since, until = normalise_time(since), normalise_time(until)
        with self._guard():
            index = self._index(owner)
            if index is None or k == 0:
                return [[] for _ in queries]
            matrix, ids = index.matrix[: index.n], index.ids[: index.n]  # (n, D), (n,)
            if since is not None or until is not None:
                lo = _posix(since) if since is not None else -np.inf
                hi = _posix(until) if until is not None else np.inf
                times = index.times[: index.n]
                rows = np.flatnonzero((times >= lo) & (times <= hi))  # NaN (unknown time) fails both
                matrix, ids = matrix[rows], ids[rows]
            scores = similarity(matrix, queries)  # (n, Q) float32, for preselection only
            picks = [top_k_exact(matrix, ids, queries[j], scores[:, j], k) for j in range(len(queries))]
            entries = self._entries({int(i) for rows, _ in picks for i in ids[rows]})
        return [
            [ScoredMemory(entries[int(ids[r])], float(score)) for r, score in zip(rows, exact, strict=True)]
            for rows, exact in picks
        ]

    def history(
        self, *, memory_id: int | None = None, owner: str | None = None, limit: int | None = None
    ) -> builtins.list[HistoryRecord]:
        """History rows oldest first; `limit` keeps the most recent ones."""
        where, args = _where(memory_id=memory_id, owner=owner)
        sql = f"SELECT {_HISTORY_COLS} FROM history{where} ORDER BY id DESC"
        if limit is not None:
            sql, args = sql + " LIMIT ?", (*args, limit)
        with self._guard():
            rows = self._conn.execute(sql, args).fetchall()
        return [_history(r) for r in reversed(rows)]

    # ---------------------------------------------------------------- lifetime

    def fork(self) -> SQLiteStore:
        """An independent in-memory copy (sqlite3 backup), e.g. for an RL rollout to try operations on."""
        with self._guard():
            if self._depth:
                raise BankError("cannot fork inside a transaction: the copy would hold uncommitted writes")
            self._sync()
            clone = SQLiteStore()
            self._conn.backup(clone._conn)
            clone._dim, clone._model = self._dim, self._model
            clone._indexes = {owner: index.copy() for owner, index in self._indexes.items()}
            clone._data_version = clone._conn.execute("PRAGMA data_version").fetchone()[0]
            return clone

    def save_as(self, path: str | Path) -> None:
        """Write a consistent copy of the committed bank to a new file."""
        target = Path(path)
        if target.exists():
            raise FileExistsError(f"{target} already exists; not overwriting a bank")
        with self._guard():
            if self._depth:
                raise BankError("cannot save inside a transaction: the copy would hold uncommitted writes")
            dest = sqlite3.connect(target)
            try:
                self._conn.backup(dest)
            finally:
                dest.close()

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back by SQLite)."""
        with self._guard():
            self._indexes.clear()
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _vectors(self, embeddings: np.ndarray) -> np.ndarray:
        return normalised_vectors(embeddings, self._dim)

    def _live_row(self, memory_id: int) -> tuple[str, str, str, str | None, str, bytes]:
        row = self._conn.execute(
            "SELECT owner, text, timestamp, occurred_at, source_turn_ids, embedding, deleted"
            " FROM memories WHERE id = ?",
            (memory_id,),
        ).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"memory {memory_id} does not exist")
        if row[-1]:
            raise MemoryNotFoundError(f"memory {memory_id} is deleted")
        return row[:-1]

    def _log(self, row: tuple[object, ...]) -> int:
        """Insert one history row (values from `_log_row`); returns its id."""
        return int(self._conn.execute(_LOG_SQL, row).lastrowid or 0)

    def _history_row(self, history_id: int) -> HistoryRecord:
        return _history(
            self._conn.execute(f"SELECT {_HISTORY_COLS} FROM history WHERE id = ?", (history_id,)).fetchone()
        )

    def _undo_target(self, history_id: int | None) -> tuple[int, int, str]:
        """(history id, memory id, event) to revert, or BankError saying why it cannot be."""
        if history_id is None:
            row = self._conn.execute(
                "SELECT id, memory_id, event, undone FROM history WHERE event IN (?, ?, ?) AND undone = 0"
                " ORDER BY id DESC LIMIT 1",
                _UNDOABLE,
            ).fetchone()
            if row is None:
                raise BankError("nothing to undo: every ADD/UPDATE/DELETE is already undone")
        else:
            row = self._conn.execute(
                "SELECT id, memory_id, event, undone FROM history WHERE id = ?", (history_id,)
            ).fetchone()
            if row is None:
                raise BankError(f"no history row #{history_id}")
        hid, memory_id, event, undone = row
        if event not in _UNDOABLE:
            raise BankError(f"history #{hid} is {event}: only ADD, UPDATE and DELETE can be undone")
        if undone:
            raise BankError(f"history #{hid} ({event} of memory {memory_id}) is already undone")
        later = self._conn.execute(
            "SELECT id, event FROM history WHERE memory_id = ? AND id > ? AND event IN (?, ?, ?)"
            " AND undone = 0 ORDER BY id DESC LIMIT 1",
            (memory_id, hid, *_UNDOABLE),
        ).fetchone()
        if later is not None:
            raise BankError(
                f"history #{hid} ({event} of memory {memory_id}) is followed by #{later[0]} ({later[1]});"
                " undo that first"
            )
        return hid, memory_id, event

    def _entries(self, ids: set[int]) -> dict[int, MemoryEntry]:
        ordered = sorted(ids)
        found: dict[int, MemoryEntry] = {}
        for start in range(0, len(ordered), _MAX_VARS):
            chunk = ordered[start : start + _MAX_VARS]
            marks = ", ".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT {_ENTRY_COLS} FROM memories WHERE id IN ({marks})", chunk):
                found[row[0]] = _entry(row)
        return found

    def _commit(self) -> None:
        try:
            if self._file is not None and file_id(self.path) != self._file:  # gone while we wrote
                raise sqlite3.OperationalError(
                    "bank unavailable: the file was removed or replaced while open"
                )
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:  # e.g. disk full: the transaction is lost, say so plainly
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._forget_uncommitted()
            raise BankError(f"{self.path}: commit failed, transaction rolled back ({error})") from error
        self._touched.clear()

    def _forget_uncommitted(self) -> None:
        """After a rollback: drop cached indexes the rolled-back writes touched, re-read the dimension."""
        for owner in self._touched:
            self._indexes.pop(owner, None)
        if self._depth == 0:
            self._touched.clear()
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        self._dim = int(row[0]) if row else None

    # The cached per-owner index. Only owners already cached are maintained; others load lazily.

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lock; turn SQLite's errors (locked, read-only, I/O, id out of range) into BankError."""
        with self._lock:
            if self._depth == 0 and self._file is not None and file_id(self.path) != self._file:
                raise BankError(f"{self.path}: bank unavailable: the file was removed or replaced while open")
            try:
                yield
            except sqlite3.Error as error:
                raise BankError(describe_error(self.path, error, self.busy_timeout)) from error
            except OverflowError as error:  # an integer SQLite cannot store, e.g. a 30-digit id
                raise MemoryNotFoundError(
                    f"{self.path}: no memory or history row has that id ({error})"
                ) from error

    def _sync(self) -> None:
        """Drop cached indexes if another connection committed since we last looked (PRAGMA data_version)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version and self._depth == 0:
            self._indexes.clear()
            self._data_version = version
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
            self._dim = int(row[0]) if row else None

    def _index(self, owner: str) -> OwnerIndex | None:
        self._sync()
        index = self._indexes.get(owner)
        if index is None and self._dim is not None:
            rows = self._conn.execute(
                "SELECT id, occurred_at, embedding FROM memories WHERE owner = ? AND deleted = 0 ORDER BY id",
                (owner,),
            ).fetchall()
            if not rows:
                return None
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), self._dim)
            index = self._indexes[owner] = OwnerIndex(self._dim)
            if self._depth:  # built from uncommitted rows: drop it if they roll back
                self._touched.add(owner)
            index.append(ids, np.array([_posix_iso(r[1]) for r in rows]), matrix)
        return index

    def _cache_append(
        self, owner: str, ids: np.ndarray, occurred: Sequence[datetime | None], rows: np.ndarray
    ) -> None:
        if (index := self._indexes.get(owner)) is not None:
            self._touched.add(owner)
            index.append(ids, np.array([_posix(o) for o in occurred], np.float64), rows)

    def _cache_replace(self, owner: str, memory_id: int, row: np.ndarray, occurred: datetime | None) -> None:
        if (index := self._indexes.get(owner)) is not None:
            self._touched.add(owner)
            if memory_id in index.row_of:
                index.replace(memory_id, row, _posix(occurred))
            else:  # cannot happen after _sync; if it ever does, rebuild from the table rather than lie
                self._indexes.pop(owner)

    def _cache_remove(self, owner: str, memory_id: int) -> None:
        if (index := self._indexes.get(owner)) is not None:
            self._touched.add(owner)
            if memory_id in index.row_of:
                index.remove(memory_id)
            else:
                self._indexes.pop(owner)


# ---------------------------------------------------------------- helpers


def _clean(text: str | None) -> str | None:
    return None if text is None else clean_text(text)


def _one(embedding: np.ndarray) -> np.ndarray:
    """A single vector as a (1, D) batch; a clear error for anything else."""
    if np.ndim(embedding) != 1:
        raise ValueError(f"expected one embedding vector (D,), got shape {np.shape(embedding)}")
    return np.asarray(embedding)[None]


def _where(**filters: object) -> tuple[str, tuple[object, ...]]:
    used = {column: value for column, value in filters.items() if value is not None}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{column} = ?" for column in used), tuple(used.values())


def _entry(row: tuple) -> MemoryEntry:
    mid, owner, text, timestamp, occurred, created, updated, sources, deleted = row
    return MemoryEntry(
        mid,
        owner,
        text,
        timestamp,
        _parse(occurred),
        datetime.fromisoformat(created),
        datetime.fromisoformat(updated),
        tuple(json.loads(sources)),
        bool(deleted),
    )


def _history(row: tuple) -> HistoryRecord:
    hid, memory_id, owner, event, before, after, agent, model, prompt_version, reason, at, undone = row
    return HistoryRecord(
        hid,
        memory_id,
        owner,
        event,
        before,
        after,
        Provenance(agent, model, prompt_version),
        reason,
        datetime.fromisoformat(at),
        bool(undone),
    )


def _log_row(
    memory_id: int | None,
    owner: str,
    event: str,
    before_text: str | None,
    after_text: str | None,
    provenance: Provenance,
    reason: str | None,
    at: str,
    *,
    before: tuple[bytes | None, str | None, str | None, str | None] = (None, None, None, None),
    undoes: int | None = None,
) -> tuple[object, ...]:
    """Values for `_LOG_SQL`; `before`: (embedding, timestamp, occurred_at, source_turn_ids) replaced."""
    p = provenance
    return (
        memory_id,
        owner,
        event,
        before_text,
        after_text,
        *before,
        p.agent,
        p.model,
        p.prompt_version,
        reason,
        at,
        undoes,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _iso(moment: datetime | None) -> str | None:
    """Dialogue times are stored naive in UTC (records.normalise_time), so any two compare."""
    normal = normalise_time(moment)
    return None if normal is None else normal.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else normalise_time(datetime.fromisoformat(text))


def _posix(moment: datetime | None) -> float:
    """Seconds for time filters; naive datetimes count as UTC so naive and aware values compare."""
    if moment is None:
        return float("nan")
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _posix_iso(text: str | None) -> float:
    return _posix(_parse(text))
