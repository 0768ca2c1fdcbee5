"""Ingest independent conversations at once: their model calls share batches, their banks stay apart.

`ingest_concurrently` gives every system one shared `BatchingGenerator` per distinct model and runs each
conversation's ordinary `MemorySystem.ingest` in its own thread. Inside a conversation nothing changes: its
turns go in order, each Memory Manager decision sees the bank the previous one left, and each turn commits
with its turn-log row (so a crash resumes turn by turn, as before). Across conversations the calls waiting
at the same moment become one batch, which is where a small model on a CPU (or a server) gains: SmolLM2 does
~14 tokens/s alone and ~73 at batch 8 on two cores (README, Performance).

Thread safety: generation runs in one thread at a time (the batcher serialises it); the embedder is shared
behind a lock (fast tokenizers must not be used from two threads at once); each conversation has its own
store. Conversations must not share a bank file.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from memory_r1.embeddings import Embedder
from memory_r1.llm import Generator
from memory_r1.llm.batching import BatchingGenerator
from memory_r1.pipeline import Agents, IngestReport, MemorySystem
from memory_r1.records import Conversation, Turn


class LockedEmbedder:
    """An `Embedder` that lets one thread embed at a time."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self.inner.embed(texts)


def ingest_concurrently(
    systems: Sequence[MemorySystem],
    conversations: Sequence[Conversation],
    *,
    on_turn: Callable[[Conversation, Turn], None] | None = None,
    max_wait_s: float = 0.25,
) -> list[IngestReport]:
    """`systems[i].ingest(conversations[i])` for every i at once; reports in the same order.

    The systems' extractor and manager generators are wrapped for the duration (one batcher per distinct
    generator object, so systems sharing loaded models share batches); their stores must be distinct.
    """
    if len(systems) != len(conversations):
        raise ValueError(f"{len(systems)} systems for {len(conversations)} conversations")
    if len({id(s.store) for s in systems}) != len(systems):
        raise ValueError("conversations ingested concurrently need one store each")
    if not systems:
        return []
    batchers: dict[int, BatchingGenerator] = {}
    embedders: dict[int, LockedEmbedder] = {}

    def batched(generator: Generator) -> BatchingGenerator:
        key = id(generator)
        if key not in batchers:
            batchers[key] = BatchingGenerator(generator, len(systems), max_wait_s=max_wait_s)
        return batchers[key]

    def locked(embedder: Embedder) -> LockedEmbedder:
        return embedders.setdefault(id(embedder), LockedEmbedder(embedder))

    workers = [_with_generators(s, batched, locked) for s in systems]

    def run(i: int) -> IngestReport:
        conversation = conversations[i]
        try:
            callback = (lambda turn: on_turn(conversation, turn)) if on_turn else None
            return workers[i].ingest(conversation, on_turn=callback)
        finally:
            for batcher in batchers.values():  # this thread makes no more calls
                batcher.leave()

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        return list(pool.map(run, range(len(workers))))


def _with_generators(
    system: MemorySystem,
    batched: Callable[[Generator], BatchingGenerator],
    locked: Callable[[Embedder], LockedEmbedder],
) -> MemorySystem:
    """The same agents and store (shallow copies), generators behind the shared batchers, embedder locked."""
    embedder = locked(system.embedder)
    extractor, manager, answerer = (
        copy.copy(system.extractor),
        copy.copy(system.manager),
        copy.copy(system.answerer),
    )
    extractor.generator = batched(system.extractor.generator)
    manager.generator, manager.embedder = batched(system.manager.generator), embedder
    answerer.embedder = embedder
    return MemorySystem(system.store, Agents(embedder, extractor, manager, answerer))
