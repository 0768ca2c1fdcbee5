"""`Memory`: the public Python API any agent can call (`from memory_r1 import Memory`).

One `Agents` set (the loaded models) acts on one store; scopes (user / agent / run) partition the store.
`add(infer=True)` is the paper's pipeline on the caller's own messages: extraction batched over the
messages, then the Memory Manager turn by turn; `infer=False` stores the texts as given. Every write of one
`add` commits together, so a failed add leaves the scope as it was.

Scopes (`records.Scope`) map to store keys one to one; see there for the encoding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memory_r1.bank import MemoryNotFoundError, MemoryStore, SQLiteStore
from memory_r1.pipeline import Agents, PipelineConfig
from memory_r1.records import HistoryRecord, MemoryEntry, Provenance, Scope, ScopeError, Turn, Usage

EXPORT_FORMAT = 1
_NS = "\x1e"  # between a namespace (tenant) and a scope key; ids cannot contain control characters
USER_AUTHOR = Provenance("user")


class MemoryInputError(ScopeError):
    """Input the API cannot act on: malformed messages, an empty scope, a bad page, a foreign id, ..."""


@dataclass(frozen=True)
class MemoryItem:
    """One memory as the API returns it."""

    id: int
    memory: str
    scope: Scope
    metadata: dict[str, Any]
    timestamp: str
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "memory": self.memory, **self.scope.to_json(), "metadata": self.metadata,
                "timestamp": self.timestamp, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "deleted": self.deleted, "score": self.score}


@dataclass(frozen=True)
class AppliedOperation:
    """What one `add` did to one memory: event ADD/UPDATE/DELETE/NOOP, its id, new and previous text."""

    event: str
    id: int | None
    memory: str | None
    previous_memory: str | None
    history_id: int
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AddResult:
    results: list[AppliedOperation]
    usage: dict[str, Usage] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"results": [r.to_json() for r in self.results],
                "usage": {k: asdict(v) for k, v in self.usage.items()}}


def default_store_path() -> Path:
    """The embedded default: $MEMORY_R1_BANK, else bank.db in the user data dir (as the CLI uses)."""
    import platformdirs

    return Path(os.environ.get("MEMORY_R1_BANK") or Path(platformdirs.user_data_dir("memory-r1")) / "bank.db")


def open_store(location: str | Path, agents: Agents) -> MemoryStore:
    """A `postgresql://` DSN opens the shared PostgreSQL store, anything else a SQLite file (or
    ":memory:")."""
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        from memory_r1.bank.postgres import PostgresStore

        return PostgresStore(location, embedding_model=agents.embedder.name, dim=agents.embedder.dim)
    return agents.open_store(location)


class Memory:
    """Memories of any number of scopes in one store, managed by one loaded set of agents."""

    def __init__(
        self, store: MemoryStore | str | Path | None = None, agents: Agents | None = None, *,
        namespace: str | None = None,
    ) -> None:
        """`namespace` (a tenant): every scope key is prefixed with it and ids outside it do not exist."""
        self.agents = agents or Agents.load(PipelineConfig())
        if namespace is not None and (not namespace or any(ord(c) < 32 for c in namespace)):
            raise MemoryInputError("namespace must be non-empty with no control characters")
        self._prefix = f"{namespace}{_NS}" if namespace is not None else ""
        if store is None:
            path = default_store_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            store = path
        self.store = store if isinstance(store, MemoryStore) else open_store(store, self.agents)

    @classmethod
    def from_config(
        cls, config: PipelineConfig | None = None, store: MemoryStore | str | Path | None = None,
        agents: Agents | None = None,
    ) -> Memory:
        """Models from `config` (or an already loaded `agents` set, shared), on `store` (a path, a DSN
        handled by the caller, or a store object)."""
        return cls(store, agents or Agents.load(config or PipelineConfig()))

    # ---------------------------------------------------------------- writes

    def add(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool = True,
        timestamp: datetime | str | None = None,
    ) -> AddResult:
        """Remember messages for a scope; returns the applied operations and token usage."""
        scope = Scope(user_id, agent_id, run_id)
        parsed = _messages(messages)
        meta = _metadata(metadata)
        when, occurred = _when(timestamp)
        turns = [Turn(name, f"m{i}", text, 1, when, occurred) for i, (name, text) in enumerate(parsed)]
        with self.store.transaction():  # one add commits whole or not at all
            before = self._last_history_id(scope)
            usage: dict[str, Usage] = {}
            if infer:
                usage = self._infer(scope, turns)
            else:
                vectors = self.agents.embedder.embed([t.text for t in turns])
                self.store.add_many(self._key(scope), [t.text for t in turns], vectors,
                                    timestamps=[when] * len(turns),
                                    occurred_at=[occurred] * len(turns), provenance=USER_AUTHOR)
            rows = [h for h in self.store.history(owner=self._key(scope)) if h.id > before]
            for h in rows:
                if h.event in ("ADD", "UPDATE") and h.memory_id is not None and meta is not None:
                    self.store.set_metadata(h.memory_id, meta)
        return AddResult([_applied(h) for h in rows], usage)

    def _infer(self, scope: Scope, turns: Sequence[Turn]) -> dict[str, Usage]:
        """The paper's pipeline on these turns: batched extraction, then the manager turn by turn."""
        extractor, manager = self.agents.extractor, self.agents.manager
        previous = [turns[i - 1] if i else None for i in range(len(turns))]
        extract, manage = Usage(), Usage()
        for extraction in extractor.extract(turns, [self._key(scope)] * len(turns), previous):
            extract += extraction.usage
            if extraction.facts:
                decision, _ = manager.step(self.store, self._key(scope), extraction.facts)
                manage += decision.usage
        return {"extract": extract, "manage": manage}

    def update(self, memory_id: int, text: str, *, scope: Scope | None = None) -> MemoryItem:
        text = _text(text, "text")
        self._entry(memory_id, scope, live=True)
        [vector] = self.agents.embedder.embed([text])
        self.store.update(memory_id, text, vector, provenance=USER_AUTHOR)
        return self.get(memory_id)

    def delete(self, memory_id: int, *, scope: Scope | None = None) -> MemoryItem:
        """Soft delete: hidden from search and lists, kept in history, undoable."""
        self._entry(memory_id, scope, live=True)
        self.store.delete(memory_id, provenance=USER_AUTHOR)
        return self.get(memory_id)

    def delete_all(self, scope: Scope) -> int:
        """Soft-delete every live memory of a scope (one transaction); returns how many."""
        entries = self.store.list(self._key(scope))
        with self.store.transaction():
            for e in entries:
                self.store.delete(e.id, provenance=USER_AUTHOR)
        return len(entries)

    def purge(self, target: int | Scope) -> int:
        """Hard delete for deletion requests: the entry (or the whole scope), its history text and its
        embeddings are removed from the store; this cannot be undone. Returns how many memories went."""
        if isinstance(target, Scope):
            return self.store.purge(owner=self._key(target))
        self._entry(target, None, live=False)
        return self.store.purge([target])

    def undo(self, history_id: int, *, scope: Scope | None = None) -> HistoryRecord:
        """Revert one ADD/UPDATE/DELETE of this namespace (and scope, if given)."""
        if self._prefix or scope is not None:
            row = next((h for h in self.store.history() if h.id == history_id), None)
            if row is None or row.memory_id is None:
                raise MemoryNotFoundError(f"no history row #{history_id}")
            self._entry(row.memory_id, scope, live=False)
        return self.store.undo(history_id, provenance=USER_AUTHOR)

    # ---------------------------------------------------------------- reads

    def get(self, memory_id: int, *, scope: Scope | None = None) -> MemoryItem:
        return self._items([self._entry(memory_id, scope, live=False)])[0]

    def get_all(self, scope: Scope, *, page: int = 1, page_size: int = 100) -> list[MemoryItem]:
        """Live memories of a scope, oldest first, one page (1-based)."""
        if page < 1 or not 1 <= page_size <= 1000:
            raise MemoryInputError("page must be >= 1 and page_size between 1 and 1000")
        entries = self.store.list(self._key(scope))
        return self._items(entries[(page - 1) * page_size : page * page_size])

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 30,
        filters: Mapping[str, Any] | None = None,
        threshold: float | None = None,
    ) -> list[MemoryItem]:
        """Best-first memories of a scope; `filters`: metadata key -> required value (exact: every live
        memory of the scope is scored before filtering, so k matches come back when k exist)."""
        scope = Scope(user_id, agent_id, run_id)
        query = _text(query, "query")
        if not 1 <= limit <= 1000:
            raise MemoryInputError("limit must be between 1 and 1000")
        [vector] = self.agents.embedder.embed([query])
        k = self.store.count(self._key(scope)) if filters else limit
        hits = self.store.search(self._key(scope), vector, k)
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        items = self._items([h.entry for h in hits], [h.score for h in hits])
        if filters:
            wanted = dict(filters)
            items = [i for i in items if all(i.metadata.get(key) == v for key, v in wanted.items())]
        return items[:limit]

    def history(self, memory_id: int, *, scope: Scope | None = None) -> list[HistoryRecord]:
        self._entry(memory_id, scope, live=False)
        return self.store.history(memory_id=memory_id)

    def answer(self, question: str, scope: Scope) -> Any:
        """The Answer Agent over the scope's memories (retrieval, distillation, answer). A model backend
        failure raises its `GenerationError` (`BackendTimeoutError` for a timeout), not an empty answer."""
        [result] = self.agents.answerer.answer(self.store, [_text(question, "question")],
                                               [(scope.label, self._key(scope))], raise_errors=True)
        return result

    # ---------------------------------------------------------------- export / import

    def export(self, scope: Scope) -> str:
        """Live memories of a scope as JSON Lines (text, metadata, dialogue time, sources), oldest first.
        Store ids and wall-clock times are not exported: an import gets fresh ones."""
        entries = self.store.list(self._key(scope))
        meta = self.store.metadata([e.id for e in entries])
        lines = [json.dumps({"format": EXPORT_FORMAT, **scope.to_json(), "memory": e.text,
                             "metadata": meta.get(e.id, {}), "timestamp": e.timestamp,
                             "occurred_at": e.occurred_at.isoformat() if e.occurred_at else None,
                             "source_turn_ids": list(e.source_turn_ids)}, sort_keys=True)
                 for e in entries]
        return "".join(line + "\n" for line in lines)

    def import_(self, lines: str | Path | Iterable[str]) -> int:
        """Load JSON Lines written by `export` (a path, the text, or lines), all in one transaction."""
        if isinstance(lines, Path):
            lines = lines.read_text(encoding="utf-8")
        rows = [_import_row(n, line) for n, line in enumerate(
            lines.splitlines() if isinstance(lines, str) else lines, 1) if line.strip()]
        with self.store.transaction():
            vectors: Iterable[Any] = self.agents.embedder.embed([r["memory"] for r in rows]) if rows else []
            for row, vector in zip(rows, vectors, strict=True):
                scope = Scope(row.get("user_id"), row.get("agent_id"), row.get("run_id"))
                occurred = datetime.fromisoformat(row["occurred_at"]) if row.get("occurred_at") else None
                entry = self.store.add(self._key(scope), row["memory"], vector,
                                       timestamp=row.get("timestamp", ""),
                                       occurred_at=occurred, source_turn_ids=row.get("source_turn_ids", ()),
                                       provenance=Provenance("import"))
                if row.get("metadata"):
                    self.store.set_metadata(entry.id, row["metadata"])
        return len(rows)

    def in_namespace(self, namespace: str) -> Memory:
        """The same store and agents, confined to one namespace (the service's tenants)."""
        return Memory(self.store, self.agents, namespace=namespace)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _entry(self, memory_id: int, scope: Scope | None, *, live: bool) -> MemoryEntry:
        """The entry, or MemoryNotFoundError if missing, outside `scope`, or (live) deleted."""
        if isinstance(memory_id, bool) or not isinstance(memory_id, int):
            raise MemoryInputError(f"memory id must be an integer, got {memory_id!r}")
        entry = self.store.get(memory_id)
        outside = not entry.owner.startswith(self._prefix) or (not self._prefix and _NS in entry.owner)
        if outside or (scope is not None and entry.owner != self._key(scope)):
            raise MemoryNotFoundError(f"memory {memory_id} does not exist")  # same answer as a missing id
        if live and entry.deleted:
            raise MemoryNotFoundError(f"memory {memory_id} is deleted")
        return entry

    def _items(self, entries: Sequence[MemoryEntry],
               scores: Sequence[float] | None = None) -> list[MemoryItem]:
        meta = self.store.metadata([e.id for e in entries])
        return [MemoryItem(e.id, e.text, self._scope_of(e.owner), meta.get(e.id, {}), e.timestamp,
                           e.created_at, e.updated_at, e.deleted, scores[i] if scores is not None else None)
                for i, e in enumerate(entries)]

    def _key(self, scope: Scope) -> str:
        return self._prefix + scope.key

    def _scope_of(self, key: str) -> Scope:
        return Scope.from_key(key[len(self._prefix):])

    def _last_history_id(self, scope: Scope) -> int:
        last = self.store.history(owner=self._key(scope), limit=1)
        return last[0].id if last else 0


# ---------------------------------------------------------------- input checks

MAX_MESSAGES = 100
MAX_TEXT = 10_000


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MemoryInputError(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise MemoryInputError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT}")
    return value


def _messages(messages: object) -> list[tuple[str, str]]:
    """(speaker, text) per message; a string is one user message."""
    if isinstance(messages, str):
        return [("user", _text(messages, "message"))]
    if not isinstance(messages, Sequence) or not messages:
        raise MemoryInputError("messages must be a non-empty string or list of {role, content} objects")
    if len(messages) > MAX_MESSAGES:
        raise MemoryInputError(f"{len(messages)} messages; the limit per add is {MAX_MESSAGES}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or "content" not in m:
            raise MemoryInputError(f"message {i} must be an object with string 'role' and 'content'")
        name = m.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise MemoryInputError(f"message {i}: 'name' must be a non-empty string")
        out.append((name or m["role"], _text(m["content"], f"message {i} content")))
    return out


def _metadata(metadata: object) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise MemoryInputError("metadata must be an object with string keys")
    try:
        encoded = json.dumps(dict(metadata), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise MemoryInputError(f"metadata must be JSON-serialisable: {error}") from None
    if len(encoded) > MAX_TEXT:
        raise MemoryInputError(f"metadata is {len(encoded)} characters as JSON; the limit is {MAX_TEXT}")
    return json.loads(encoded)


def _when(timestamp: datetime | str | None) -> tuple[str, datetime | None]:
    """(time string shown to the agents, parsed time); default: now, UTC."""
    if isinstance(timestamp, str):
        try:
            return timestamp, datetime.fromisoformat(timestamp)
        except ValueError:
            return timestamp, None
    moment = timestamp or datetime.now(timezone.utc)
    return moment.strftime("%H:%M on %d %B, %Y"), moment


def _applied(h: HistoryRecord) -> AppliedOperation:
    previous = h.before_text if h.event in ("UPDATE", "DELETE") else None
    memory = h.after_text if h.event != "DELETE" else h.before_text
    return AppliedOperation(h.event, h.memory_id, memory, previous, h.id, h.reason)


def _import_row(number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise MemoryInputError(f"line {number}: not JSON ({error})") from None
    if (
        not isinstance(row, dict)
        or row.get("format") != EXPORT_FORMAT
        or not isinstance(row.get("memory"), str)
    ):
        raise MemoryInputError(f"line {number}: not a memory-r1 export row (format {EXPORT_FORMAT})")
    Scope(row.get("user_id"), row.get("agent_id"), row.get("run_id"))
    _metadata(row.get("metadata"))
    return row


__all__ = ["AddResult", "AppliedOperation", "Memory", "MemoryInputError", "MemoryItem", "SQLiteStore",
           "Scope"]
