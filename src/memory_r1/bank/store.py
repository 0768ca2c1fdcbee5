"""The one interface every memory bank implements, and the errors it raises.

Agents, retrieval and the RL environments talk to a `MemoryStore`, never to SQLite, so a bank backed by a
server (or a plain dict in a test) can be passed in instead. Stores receive embeddings as float32 vectors;
embedding text is the caller's job (memory_r1.embeddings), which keeps the store free of model weights.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from memory_r1.records import HistoryRecord, MemoryEntry, Provenance, ScoredMemory


class BankError(RuntimeError):
    """A bank cannot do what was asked: unreadable file, nothing to undo, fork inside a transaction, ..."""


class IncompatibleBankError(BankError):
    """An existing bank was written with another schema version or embedding model/dimension.

    Mixing embeddings from two models in one bank would make similarity scores meaningless, so this is
    refused at open time rather than discovered as bad retrieval later.
    """


class MemoryNotFoundError(BankError, LookupError):
    """No memory has this id, or it is soft-deleted where a live one is needed."""


@runtime_checkable
class MemoryStore(Protocol):
    """A per-owner memory bank with history, undo and cheap forks (for RL rollouts).

    Every write records a history row carrying who decided it (`Provenance`); nothing is ever
    physically removed, which is what makes `undo` exact.
    """

    @property
    def dim(self) -> int | None:
        """Embedding dimension, None until the first memory fixes it."""
        ...

    @property
    def embedding_model(self) -> str | None:
        """Name of the model the stored embeddings came from, if known."""
        ...

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
    ) -> MemoryEntry: ...

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
        """Bulk ADD (one history row per memory), for loading banks built elsewhere."""
        ...

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
        """Rewrite a live memory, same id; dialogue-time fields left as None keep their values."""
        ...

    def delete(self, memory_id: int, *, provenance: Provenance, reason: str | None = None) -> MemoryEntry:
        """Soft delete: kept for history and undo, hidden from search, list and count."""
        ...

    def record_noop(
        self,
        owner: str,
        *,
        provenance: Provenance,
        memory_id: int | None = None,
        reason: str | None = None,
        proposed_text: str | None = None,
    ) -> HistoryRecord:
        """Log a decision that changed nothing (model said NONE, or an operation was rejected).

        `proposed_text`: what a rejected ADD/UPDATE wanted to write, kept as the row's after_text so an
        audit sees it; otherwise after_text is the named memory's unchanged text (or None)."""
        ...

    def undo(
        self, history_id: int | None = None, *, provenance: Provenance = ..., reason: str | None = None
    ) -> HistoryRecord:
        """Revert one ADD/UPDATE/DELETE (default: the latest not undone); returns the UNDO row."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all; nested use is safe."""
        ...

    def log_turn(self, sample_id: str, dia_id: str, record: dict) -> None:
        """Mark a dialogue turn as ingested (inside the transaction that applied its operations)."""
        ...

    def turn_log(self, sample_id: str) -> dict[str, dict]:
        """dia_id -> record of every ingested turn of a conversation, in ingestion order."""
        ...

    def purge(self, memory_ids: Sequence[int] = (), *, owner: str | None = None) -> int:
        """Hard delete (deletion requests): entries, their history text and embeddings, their metadata;
        with `owner`, everything of that owner. Not undoable. Returns how many memories were removed."""
        ...

    def set_metadata(self, memory_id: int, metadata: dict) -> None:
        """Attach a JSON object to a memory (replacing any)."""
        ...

    def metadata(self, memory_ids: Sequence[int]) -> dict[int, dict]:
        """memory id -> metadata, for the ids that have one."""
        ...

    # ---------------------------------------------------------------- reads

    def get(self, memory_id: int) -> MemoryEntry:
        """Any memory by id, soft-deleted ones included."""
        ...

    def list(
        self, owner: str | None = None, *, include_deleted: bool = False
    ) -> builtins.list[MemoryEntry]: ...

    def owners(self) -> builtins.list[str]: ...

    def count(self, owner: str | None = None) -> int: ...

    def search(
        self,
        owner: str,
        query_embedding: np.ndarray,
        k: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[ScoredMemory]:
        """Top-k live memories of `owner` by cosine similarity, best first; optional occurred_at window.

        Ties: equal scores come back lower id first, identically from `search_many` for the same query."""
        ...

    def search_many(
        self,
        owner: str,
        query_embeddings: np.ndarray,
        k: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[builtins.list[ScoredMemory]]: ...

    def history(
        self, *, memory_id: int | None = None, owner: str | None = None, limit: int | None = None
    ) -> builtins.list[HistoryRecord]: ...

    # ---------------------------------------------------------------- lifetime

    def fork(self) -> MemoryStore:
        """An independent copy: writes to either side never reach the other."""
        ...

    def save_as(self, path: str | Path) -> None:
        """Write a consistent copy of the committed bank to a new file (RL datasets snapshot banks so)."""
        ...

    def close(self) -> None: ...


def normalised_vectors(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """(N, D) float32 rows, L2-normalised, for any store; ValueError (before any write) on a bad shape, a
    dimension other than the bank's `dim`, or zero/NaN rows."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a (N, D) array of embeddings, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"embedding dimension {matrix.shape[1]} does not match the bank's {dim}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms) & (norms > 0)):
        raise ValueError("embeddings must be finite and non-zero")
    return matrix / norms
