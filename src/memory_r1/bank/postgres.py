"""PostgreSQL + pgvector memory bank: the shared, multi-process `MemoryStore`.

Same semantics as the SQLite store (soft delete, history with provenance, exact undo, turn log, metadata,
hard purge), on psycopg 3 with a connection pool, so any number of processes and machines share one bank.

Search is exact per-scope top-k, by choice: the query filters on the B-tree index (owner, deleted) and
ranks that scope's rows by inner product (vectors are L2-normalised, so it is cosine) with ORDER BY ...
LIMIT k. pgvector's HNSW/IVFFlat indexes filter after their approximate scan and can return fewer than k
rows for a filtered query; a per-scope scan cannot, and one scope's memories number in the thousands at
most. Migrations are versioned in `schema_migrations`; each runs once, under an advisory lock.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from memory_r1.bank.store import (
    BankError,
    IncompatibleBankError,
    MemoryNotFoundError,
    MemoryStore,
    normalised_vectors,
)
from memory_r1.records import Event, HistoryRecord, MemoryEntry, Provenance, ScoredMemory

UNDO = "UNDO"
USER = Provenance("user")
_UNDOABLE = (Event.ADD.value, Event.UPDATE.value, Event.DELETE.value)
_LOCK_KEY = 0x6D656D72  # advisory lock id for migrations ("memr")

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE memories (
        id BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL, text TEXT NOT NULL,
        timestamp TEXT NOT NULL DEFAULT '', occurred_at TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        source_turn_ids TEXT NOT NULL DEFAULT '[]', embedding vector NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE, metadata JSONB);
    CREATE INDEX memories_owner ON memories (owner, deleted);
    CREATE TABLE history (
        id BIGSERIAL PRIMARY KEY, memory_id BIGINT, owner TEXT NOT NULL, event TEXT NOT NULL,
        before_text TEXT, after_text TEXT, before_embedding vector, before_timestamp TEXT,
        before_occurred_at TEXT, before_source_turn_ids TEXT, agent TEXT NOT NULL, model TEXT NOT NULL,
        prompt_version TEXT NOT NULL, reason TEXT, at TEXT NOT NULL,
        undone BOOLEAN NOT NULL DEFAULT FALSE, undoes BIGINT);
    CREATE INDEX history_owner ON history (owner);
    CREATE INDEX history_memory ON history (memory_id);
    CREATE TABLE turns (sample_id TEXT NOT NULL, dia_id TEXT NOT NULL, record TEXT NOT NULL, at TEXT NOT NULL,
        seq BIGSERIAL, PRIMARY KEY (sample_id, dia_id));
    """),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
_ENTRY_COLS = "id, owner, text, timestamp, occurred_at, created_at, updated_at, source_turn_ids, deleted"
_HISTORY_COLS = (
    "id, memory_id, owner, event, before_text, after_text, agent, model, prompt_version, reason, at, undone"
)
_LOG_SQL = (
    "INSERT INTO history (memory_id, owner, event, before_text, after_text, before_embedding,"
    " before_timestamp, before_occurred_at, before_source_turn_ids, agent, model, prompt_version, reason, at,"
    " undoes)"
    " VALUES (%s, %s, %s, %s, %s, %s::vector, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


class PostgresStore:
    """Memory bank in a PostgreSQL database with pgvector. Thread-safe: one pooled connection per
    transaction; a thread's nested `transaction()` blocks are savepoints on that connection."""

    def __init__(
        self, dsn: str, *, embedding_model: str | None = None, dim: int | None = None,
        pool_size: int = 4, timeout_s: float = 10.0,
    ) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as error:  # pragma: no cover - the extra is not installed
            raise ImportError("PostgreSQL support needs `pip install 'memory-r1[postgres]'`") from error
        self._psycopg = psycopg
        self.dsn = dsn
        self._local = threading.local()
        try:
            self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, timeout=timeout_s, open=True,
                                        kwargs={"autocommit": True, "connect_timeout": int(timeout_s)})
            self._pool.wait(timeout=timeout_s)
            self._dim, self._model = self._migrate(embedding_model, dim)
        except (psycopg.Error, OSError) as error:
            self._close_pool()
            raise BankError(f"cannot open PostgreSQL bank: {error}") from error
        except BankError:
            self._close_pool()
            raise
        except Exception as error:  # psycopg_pool.PoolTimeout is not a psycopg.Error
            self._close_pool()
            raise BankError(f"cannot open PostgreSQL bank: {error}") from error

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def embedding_model(self) -> str | None:
        return self._model

    def __repr__(self) -> str:
        return f"PostgresStore(embedding_model={self._model!r}, dim={self._dim})"

    # ---------------------------------------------------------------- connections and transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit together or roll back together; nested blocks are savepoints."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._errors(), conn.transaction():
                yield
            return
        with self._errors(), self._pool.connection() as conn:
            self._local.conn = conn
            try:
                with conn.transaction():
                    yield
            finally:
                self._local.conn = None
                self._reload_dim(conn)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with conn.cursor() as cur:
                yield cur
            return
        with self._errors(), self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.OperationalError as error:  # server gone, connection lost, timeout
            raise BankError(f"PostgreSQL bank unavailable: {error}".strip()) from error

    def _reload_dim(self, conn: Any) -> None:
        if self._dim is None:
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
            except self._psycopg.Error:
                return
            self._dim = int(row[0]) if row else None

    def _migrate(self, embedding_model: str | None, dim: int | None) -> tuple[int | None, str | None]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, at TEXT NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            if done and max(done) > SCHEMA_VERSION:
                raise IncompatibleBankError(
                    f"bank schema version {max(done)}, this memory-r1 knows {SCHEMA_VERSION}"
                )
            for version, sql in MIGRATIONS:
                if version not in done:
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, _now()))
            meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            stored_dim = int(meta["dim"]) if "dim" in meta else None
            if dim is not None and stored_dim is not None and dim != stored_dim:
                raise IncompatibleBankError(f"bank embeddings have dim {stored_dim}, asked for {dim}")
            stored_model = meta.get("embedding_model")
            if embedding_model is not None and stored_model is not None and embedding_model != stored_model:
                raise IncompatibleBankError(
                    f"bank embeddings come from {stored_model!r}, asked for {embedding_model!r}")
            if stored_dim is None and dim is not None:
                conn.execute("INSERT INTO meta VALUES ('dim', %s) ON CONFLICT DO NOTHING", (str(dim),))
            if stored_model is None and embedding_model is not None:
                conn.execute("INSERT INTO meta VALUES ('embedding_model', %s) ON CONFLICT DO NOTHING",
                             (embedding_model,))
        return (stored_dim if stored_dim is not None else dim,
                stored_model if stored_model is not None else embedding_model)

    # ---------------------------------------------------------------- writes

    def add(self, owner: str, text: str, embedding: np.ndarray, *, timestamp: str = "",
            occurred_at: datetime | None = None, source_turn_ids: Sequence[str] = (), provenance: Provenance,
            reason: str | None = None) -> MemoryEntry:
        return self.add_many(owner, [text], _one(embedding), timestamps=[timestamp],
                             occurred_at=[occurred_at],
                             source_turn_ids=[source_turn_ids], provenance=provenance, reason=reason)[0]

    def add_many(self, owner: str, texts: Sequence[str], embeddings: np.ndarray, *,
                 timestamps: Sequence[str] | None = None,
                 occurred_at: Sequence[datetime | None] | None = None,
                 source_turn_ids: Sequence[Sequence[str]] | None = None, provenance: Provenance,
                 reason: str | None = None) -> builtins.list[MemoryEntry]:
        n = len(texts)
        if n == 0:
            return []
        times = list(timestamps) if timestamps is not None else [""] * n
        occurred = list(occurred_at) if occurred_at is not None else [None] * n
        sources = [tuple(s) for s in source_turn_ids] if source_turn_ids is not None else [()] * n
        vectors = self._vectors(embeddings)
        if not len(vectors) == len(times) == len(occurred) == len(sources) == n:
            raise ValueError("add_many: texts, embeddings and per-memory fields must have the same length")
        now = _now()
        ids: list[int] = []
        with self.transaction(), self._cursor() as cur:
            if self._dim is None:
                cur.execute("INSERT INTO meta VALUES ('dim', %s) ON CONFLICT DO NOTHING",
                            (str(vectors.shape[1]),))
            for t, ts, oc, src, v in zip(texts, times, occurred, sources, vectors, strict=True):
                cur.execute(
                    "INSERT INTO memories (owner, text, timestamp, occurred_at, created_at, updated_at,"
                    " source_turn_ids, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::vector)"
                    " RETURNING id",
                    (owner, t, ts, _iso(oc), now, now, json.dumps(list(src)), _vec(v)),
                )
                mid = cur.fetchone()[0]
                ids.append(mid)
                cur.execute(_LOG_SQL, _log_row(mid, owner, "ADD", None, t, provenance, reason, now))
        if self._dim is None:
            self._dim = vectors.shape[1]
        created = datetime.fromisoformat(now)
        return [MemoryEntry(i, owner, t, ts, oc, created, created, src)
                for i, t, ts, oc, src in zip(ids, texts, times, occurred, sources, strict=True)]

    def update(self, memory_id: int, text: str, embedding: np.ndarray, *, provenance: Provenance,
               reason: str | None = None, timestamp: str | None = None, occurred_at: datetime | None = None,
               source_turn_ids: Sequence[str] | None = None) -> MemoryEntry:
        vector = self._vectors(_one(embedding))[0]
        with self.transaction(), self._cursor() as cur:
            owner, old_text, old_ts, old_oc, old_src, old_vec = self._live_row(cur, memory_id)
            new_ts = old_ts if timestamp is None else timestamp
            new_oc = old_oc if occurred_at is None else _iso(occurred_at)
            new_src = old_src if source_turn_ids is None else json.dumps(list(source_turn_ids))
            now = _now()
            cur.execute(
                "UPDATE memories SET text = %s, embedding = %s::vector, timestamp = %s, occurred_at = %s,"
                " source_turn_ids = %s, updated_at = %s WHERE id = %s",
                (text, _vec(vector), new_ts, new_oc, new_src, now, memory_id),
            )
            cur.execute(_LOG_SQL,
                        _log_row(memory_id, owner, "UPDATE", old_text, text, provenance, reason, now,
                                           before=(old_vec, old_ts, old_oc, old_src)))
        return self.get(memory_id)

    def delete(self, memory_id: int, *, provenance: Provenance, reason: str | None = None) -> MemoryEntry:
        with self.transaction(), self._cursor() as cur:
            owner, text, *_ = self._live_row(cur, memory_id)
            now = _now()
            cur.execute("UPDATE memories SET deleted = TRUE, updated_at = %s WHERE id = %s", (now, memory_id))
            cur.execute(_LOG_SQL, _log_row(memory_id, owner, "DELETE", text, None, provenance, reason, now))
        return self.get(memory_id)

    def record_noop(self, owner: str, *, provenance: Provenance, memory_id: int | None = None,
                    reason: str | None = None, proposed_text: str | None = None) -> HistoryRecord:
        """As `SQLiteStore.record_noop`: after_text is what a rejected ADD/UPDATE proposed, else the text."""
        with self.transaction(), self._cursor() as cur:
            text = None
            if memory_id is not None:
                mem_owner, text, *_ = self._live_row(cur, memory_id)
                if mem_owner != owner:
                    raise MemoryNotFoundError(f"memory {memory_id} belongs to {mem_owner!r}, not {owner!r}")
            after = proposed_text if proposed_text is not None else text
            cur.execute(_LOG_SQL, _log_row(memory_id, owner, "NOOP", text, after, provenance, reason, _now()))
            hid = cur.fetchone()[0]
        return self._history_row(hid)

    def undo(self, history_id: int | None = None, *, provenance: Provenance = USER,
             reason: str | None = None) -> HistoryRecord:
        with self.transaction(), self._cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY + 1,))  # undo checks, then writes
            hid, memory_id, event = self._undo_target(cur, history_id)
            cur.execute("SELECT owner, text, timestamp, occurred_at, source_turn_ids, embedding::text"
                        " FROM memories WHERE id = %s FOR UPDATE", (memory_id,))
            owner, text, ts, oc, src, vec = cur.fetchone()
            now, why = _now(), reason or f"undo of #{hid} {event}"
            if event == "ADD":
                cur.execute("UPDATE memories SET deleted = TRUE, updated_at = %s WHERE id = %s",
                            (now, memory_id))
                row = _log_row(memory_id, owner, UNDO, text, None, provenance, why, now, undoes=hid)
            elif event == "DELETE":
                cur.execute("UPDATE memories SET deleted = FALSE, updated_at = %s WHERE id = %s",
                            (now, memory_id))
                row = _log_row(memory_id, owner, UNDO, None, text, provenance, why, now, undoes=hid)
            else:
                cur.execute(
                    "SELECT before_text, before_embedding::text, before_timestamp, before_occurred_at,"
                    " before_source_turn_ids FROM history WHERE id = %s",
                    (hid,),
                )
                b_text, b_vec, b_ts, b_oc, b_src = cur.fetchone()
                cur.execute("UPDATE memories SET text = %s, embedding = %s::vector, timestamp = %s,"
                            " occurred_at = %s, source_turn_ids = %s, updated_at = %s WHERE id = %s",
                            (b_text, b_vec, b_ts, b_oc, b_src, now, memory_id))
                row = _log_row(memory_id, owner, UNDO, text, b_text, provenance, why, now,
                               before=(vec, ts, oc, src), undoes=hid)
            cur.execute(_LOG_SQL, row)
            undo_id = cur.fetchone()[0]
            cur.execute("UPDATE history SET undone = TRUE WHERE id = %s", (hid,))
        return self._history_row(undo_id)

    def log_turn(self, sample_id: str, dia_id: str, record: dict) -> None:
        with self.transaction(), self._cursor() as cur:
            cur.execute(
                "INSERT INTO turns (sample_id, dia_id, record, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (sample_id, dia_id) DO UPDATE SET record = EXCLUDED.record, at = EXCLUDED.at",
                (sample_id, dia_id, json.dumps(record), _now()),
            )

    def turn_log(self, sample_id: str) -> dict[str, dict]:
        with self._cursor() as cur:
            cur.execute("SELECT dia_id, record FROM turns WHERE sample_id = %s ORDER BY seq", (sample_id,))
            return {d: json.loads(r) for d, r in cur.fetchall()}

    def purge(self, memory_ids: Sequence[int] = (), *, owner: str | None = None) -> int:
        ids = [int(i) for i in memory_ids]
        with self.transaction(), self._cursor() as cur:
            if owner is not None:
                cur.execute("SELECT id FROM memories WHERE owner = %s", (owner,))
                ids += [r[0] for r in cur.fetchall()]
                cur.execute("DELETE FROM history WHERE owner = %s", (owner,))
            cur.execute("DELETE FROM history WHERE memory_id = ANY(%s)", (ids,))
            cur.execute("DELETE FROM memories WHERE id = ANY(%s)", (ids,))
        return len(set(ids))

    def set_metadata(self, memory_id: int, metadata: dict) -> None:
        with self._cursor() as cur:
            cur.execute("UPDATE memories SET metadata = %s::jsonb WHERE id = %s",
                        (json.dumps(metadata, sort_keys=True), memory_id))

    def metadata(self, memory_ids: Sequence[int]) -> dict[int, dict]:
        with self._cursor() as cur:
            cur.execute("SELECT id, metadata::text FROM memories WHERE id = ANY(%s) AND metadata IS NOT NULL",
                        ([int(i) for i in memory_ids],))
            return {mid: json.loads(value) for mid, value in cur.fetchall()}

    # ---------------------------------------------------------------- reads

    def get(self, memory_id: int) -> MemoryEntry:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_ENTRY_COLS} FROM memories WHERE id = %s", (memory_id,))
            row = cur.fetchone()
        if row is None:
            raise MemoryNotFoundError(f"memory {memory_id} does not exist")
        return _entry(row)

    def list(self, owner: str | None = None, *, include_deleted: bool = False) -> builtins.list[MemoryEntry]:
        where, args = _where(owner=owner, deleted=None if include_deleted else False)
        with self._cursor() as cur:
            cur.execute(f"SELECT {_ENTRY_COLS} FROM memories{where} ORDER BY id", args)
            return [_entry(r) for r in cur.fetchall()]

    def owners(self) -> builtins.list[str]:
        with self._cursor() as cur:
            cur.execute("SELECT DISTINCT owner FROM memories WHERE NOT deleted ORDER BY owner")
            return [r[0] for r in cur.fetchall()]

    def count(self, owner: str | None = None) -> int:
        where, args = _where(owner=owner, deleted=False)
        with self._cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM memories{where}", args)
            return int(cur.fetchone()[0])

    def search(self, owner: str, query_embedding: np.ndarray, k: int, *, since: datetime | None = None,
               until: datetime | None = None) -> builtins.list[ScoredMemory]:
        return self.search_many(owner, _one(query_embedding), k, since=since, until=until)[0]

    def search_many(self, owner: str, query_embeddings: np.ndarray, k: int, *, since: datetime | None = None,
                    until: datetime | None = None) -> builtins.list[builtins.list[ScoredMemory]]:
        """Exact top-k of the owner's live memories per query (ties: lower id first)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        queries = self._vectors(query_embeddings)
        if k == 0 or self._dim is None:
            return [[] for _ in queries]
        results = []
        with self._cursor() as cur:
            for q in queries:
                windowed = since is not None or until is not None  # dialogue-time window: checked here
                cur.execute(f"SELECT {_ENTRY_COLS}, -(embedding <#> %s::vector) AS score FROM memories"
                            " WHERE owner = %s AND NOT deleted ORDER BY embedding <#> %s::vector, id"
                            + ("" if windowed else " LIMIT %s"),
                            (_vec(q), owner, _vec(q)) + (() if windowed else (k,)))
                hits = [ScoredMemory(_entry(r[:-1]), float(r[-1])) for r in cur.fetchall()]
                hits = [h for h in hits if _in_window(h.entry.occurred_at, since, until)]
                results.append(hits[:k])
        return results

    def history(self, *, memory_id: int | None = None, owner: str | None = None,
                limit: int | None = None) -> builtins.list[HistoryRecord]:
        where, args = _where(memory_id=memory_id, owner=owner)
        sql = f"SELECT {_HISTORY_COLS} FROM history{where} ORDER BY id DESC"
        if limit is not None:
            sql, args = sql + " LIMIT %s", (*args, limit)
        with self._cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        return [_history(r) for r in reversed(rows)]

    # ---------------------------------------------------------------- lifetime

    def fork(self) -> MemoryStore:
        """An independent in-memory SQLite copy of the live memories (history is not copied)."""
        from memory_r1.bank.sqlite import SQLiteStore

        clone = SQLiteStore(embedding_model=self._model, dim=self._dim)
        self._copy_into(clone)
        return clone

    def save_as(self, path: str | Path) -> None:
        """A SQLite bank file with the live memories (history is not copied)."""
        from memory_r1.bank.sqlite import SQLiteStore

        if Path(path).exists():
            raise FileExistsError(f"{path} already exists; not overwriting a bank")
        with SQLiteStore(path, embedding_model=self._model, dim=self._dim) as target:
            self._copy_into(target)

    def _copy_into(self, target: MemoryStore) -> None:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_ENTRY_COLS}, embedding::text FROM memories WHERE NOT deleted ORDER BY id")
            for row in cur.fetchall():
                e = _entry(row[:-1])
                target.add(e.owner, e.text, _unvec(row[-1]), timestamp=e.timestamp, occurred_at=e.occurred_at,
                           source_turn_ids=e.source_turn_ids, provenance=Provenance("copy"))

    def close(self) -> None:
        self._close_pool()

    def _close_pool(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _vectors(self, embeddings: np.ndarray) -> np.ndarray:
        return normalised_vectors(embeddings, self._dim)

    def _live_row(self, cur: Any, memory_id: int) -> tuple[str, str, str, str | None, str, str]:
        cur.execute("SELECT owner, text, timestamp, occurred_at, source_turn_ids, embedding::text, deleted"
                    " FROM memories WHERE id = %s FOR UPDATE", (memory_id,))
        row = cur.fetchone()
        if row is None:
            raise MemoryNotFoundError(f"memory {memory_id} does not exist")
        if row[-1]:
            raise MemoryNotFoundError(f"memory {memory_id} is deleted")
        return row[:-1]

    def _history_row(self, history_id: int) -> HistoryRecord:
        with self._cursor() as cur:
            cur.execute(f"SELECT {_HISTORY_COLS} FROM history WHERE id = %s", (history_id,))
            return _history(cur.fetchone())

    def _undo_target(self, cur: Any, history_id: int | None) -> tuple[int, int, str]:
        if history_id is None:
            cur.execute(
                "SELECT id, memory_id, event, undone FROM history WHERE event = ANY(%s) AND NOT undone"
                " ORDER BY id DESC LIMIT 1",
                (list(_UNDOABLE),),
            )
            row = cur.fetchone()
            if row is None:
                raise BankError("nothing to undo: every ADD/UPDATE/DELETE is already undone")
        else:
            cur.execute("SELECT id, memory_id, event, undone FROM history WHERE id = %s", (history_id,))
            row = cur.fetchone()
            if row is None:
                raise BankError(f"no history row #{history_id}")
        hid, memory_id, event, undone = row
        if event not in _UNDOABLE:
            raise BankError(f"history #{hid} is {event}: only ADD, UPDATE and DELETE can be undone")
        if undone:
            raise BankError(f"history #{hid} ({event} of memory {memory_id}) is already undone")
        cur.execute("SELECT id, event FROM history WHERE memory_id = %s AND id > %s AND event = ANY(%s)"
                    " AND NOT undone ORDER BY id DESC LIMIT 1", (memory_id, hid, list(_UNDOABLE)))
        later = cur.fetchone()
        if later is not None:
            raise BankError(f"history #{hid} ({event} of memory {memory_id}) is followed by #{later[0]}"
                            f" ({later[1]}); undo that first")
        return hid, memory_id, event


# ---------------------------------------------------------------- helpers


def _one(embedding: np.ndarray) -> np.ndarray:
    if np.ndim(embedding) != 1:
        raise ValueError(f"expected one embedding vector (D,), got shape {np.shape(embedding)}")
    return np.asarray(embedding)[None]


def _vec(v: np.ndarray) -> str:
    """pgvector's text form; %.9g keeps every float32 exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in v.tolist()) + "]"


def _unvec(text: str) -> np.ndarray:
    return np.array(json.loads(text), dtype=np.float32)


def _where(**filters: object) -> tuple[str, tuple[object, ...]]:
    used = {c: v for c, v in filters.items() if v is not None}
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{c} = %s" for c in used), tuple(used.values())


def _entry(row: Sequence[Any]) -> MemoryEntry:
    mid, owner, text, timestamp, occurred, created, updated, sources, deleted = row
    return MemoryEntry(int(mid), owner, text, timestamp, _parse(occurred), datetime.fromisoformat(created),
                       datetime.fromisoformat(updated), tuple(json.loads(sources)), bool(deleted))


def _history(row: Sequence[Any]) -> HistoryRecord:
    hid, memory_id, owner, event, before, after, agent, model, prompt_version, reason, at, undone = row
    return HistoryRecord(int(hid), None if memory_id is None else int(memory_id), owner, event, before, after,
                         Provenance(agent, model, prompt_version), reason, datetime.fromisoformat(at),
                         bool(undone))


def _log_row(memory_id: int | None, owner: str, event: str, before_text: str | None, after_text: str | None,
             provenance: Provenance, reason: str | None, at: str, *,
             before: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
             undoes: int | None = None) -> tuple[object, ...]:
    p = provenance
    return (memory_id, owner, event, before_text, after_text, *before, p.agent, p.model, p.prompt_version,
            reason, at, undoes)


def _in_window(moment: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if since is None and until is None:
        return True
    if moment is None:
        return False
    t = _posix(moment)
    return (since is None or t >= _posix(since)) and (until is None or t <= _posix(until))


def _posix(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
