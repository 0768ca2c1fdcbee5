"""The Memory Manager (paper section 1, step 2): facts of a turn -> ADD/UPDATE/DELETE/NOOP on a bank.

For each fact the k most similar memories of the speaker are retrieved (k=10 as in Mem0; the paper does
not state k); their union is shown to the policy under short ids, and ONE generation decides all the
turn's facts, as in the paper, where the whole output is the RL action. Split into `build_prompt`,
`decide` and `apply_operations` so RL rollouts can sample several decisions and apply each to a fork.

Departures, documented: DELETE is a soft delete in our store (the paper removes the entry); every
operation goes into the bank's history, NOOPs included: the model's own NONE without a reason, a rejected
operation (unknown id, missing text, unparsable output) with one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memory_r1.agents.parsing import parse_operations
from memory_r1.bank import MemoryNotFoundError, MemoryStore
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import GenerationConfig, Generator, Message
from memory_r1.prompts import manage as prompt
from memory_r1.records import Event, Fact, Operation, Provenance, ScoredMemory, Usage


@dataclass(frozen=True)
class ManagerConfig:
    top_k: int = 10
    """Memories retrieved per fact. Paper silent; Mem0 uses 10."""
    max_shown: int = 30
    """Our choice: cap on the union of retrieved memories shown in one prompt (keeps it under ~2k tokens)."""
    max_new_tokens: int = 256
    """Room for about six operations with their text."""


@dataclass(frozen=True)
class ManagerPrompt:
    messages: list[Message]
    shown: tuple[ScoredMemory, ...]
    shown_ids: dict[str, int]  # short id in the prompt -> store id


@dataclass(frozen=True)
class ManagerDecision:
    owner: str
    facts: tuple[Fact, ...]
    prompt: ManagerPrompt
    raw_output: str
    operations: tuple[Operation, ...]
    usage: Usage


class MemoryManager:
    def __init__(self, generator: Generator, embedder: Embedder, config: ManagerConfig = ManagerConfig()):
        self.generator = generator
        self.embedder = embedder
        self.config = config

    @property
    def provenance(self) -> Provenance:
        return Provenance("manager", self.generator.name, prompt.VERSION)

    def build_prompt(self, store: MemoryStore, owner: str, facts: Sequence[Fact]) -> ManagerPrompt:
        shown: dict[int, ScoredMemory] = {}
        if facts:
            for hits in (store.search(owner, vector, self.config.top_k) for vector in self.embedder.embed([f.text for f in facts])):
                for hit in hits:
                    best = shown.get(hit.entry.id)
                    if best is None or hit.score > best.score:
                        shown[hit.entry.id] = hit
        ranked = sorted(shown.values(), key=lambda h: -h.score)[: self.config.max_shown]
        ranked.sort(key=lambda h: h.entry.id)  # stable, chronological-ish order for the model
        shown_ids = {str(i): hit.entry.id for i, hit in enumerate(ranked)}
        messages = prompt.render([(str(i), h.entry.text) for i, h in enumerate(ranked)], [f.text for f in facts])
        return ManagerPrompt(messages, tuple(ranked), shown_ids)

    def decide(self, store: MemoryStore, owner: str, facts: Sequence[Fact]) -> ManagerDecision:
        """Generate (greedy) and parse one decision; the bank is not touched."""
        built = self.build_prompt(store, owner, facts)
        [generation] = self.generator.generate([built.messages], GenerationConfig(max_new_tokens=self.config.max_new_tokens))
        return ManagerDecision(owner, tuple(facts), built, generation.text, self.parse(built, generation.text), generation.usage)

    @staticmethod
    def parse(built: ManagerPrompt, raw_output: str) -> tuple[Operation, ...]:
        texts = {hit.entry.id: hit.entry.text for hit in built.shown}
        return tuple(parse_operations(raw_output, built.shown_ids, texts))

    def step(self, store: MemoryStore, owner: str, facts: Sequence[Fact]) -> tuple[ManagerDecision, list[Operation]]:
        decision = self.decide(store, owner, facts)
        applied = apply_operations(store, self.embedder, decision.owner, decision.operations, decision.facts, self.provenance)
        return decision, applied


def apply_operations(
    store: MemoryStore,
    embedder: Embedder,
    owner: str,
    operations: Sequence[Operation],
    facts: Sequence[Fact],
    provenance: Provenance,
) -> list[Operation]:
    """Apply one decision atomically; returns what was applied (a failed op becomes a NOOP with its reason).

    New and updated memories take the dialogue time of the turn that caused them, so the Answer Agent can
    prefer the most recent memory on conflict.
    """
    texts = [op.text for op in operations if op.event in (Event.ADD, Event.UPDATE) and op.text]
    vectors = iter(embedder.embed(texts)) if texts else iter(())
    timestamp = facts[-1].timestamp if facts else ""
    occurred_at = facts[-1].occurred_at if facts else None
    sources = tuple(dict.fromkeys(s for f in facts for s in f.source_turn_ids))
    applied: list[Operation] = []
    with store.transaction():
        for op in operations:
            try:
                if op.event is Event.ADD and op.text:
                    store.add(owner, op.text, next(vectors), timestamp=timestamp, occurred_at=occurred_at,
                              source_turn_ids=sources, provenance=provenance)
                elif op.event is Event.UPDATE and op.text and op.memory_id is not None:
                    store.update(op.memory_id, op.text, next(vectors), provenance=provenance, timestamp=timestamp,
                                 occurred_at=occurred_at, source_turn_ids=sources)
                elif op.event is Event.DELETE and op.memory_id is not None:
                    store.delete(op.memory_id, provenance=provenance)
                else:
                    store.record_noop(owner, provenance=provenance, memory_id=op.memory_id, reason=op.reason)
            except (MemoryNotFoundError, ValueError) as error:  # vanished target; an unstorable embedding
                op = Operation(Event.NOOP, op.memory_id, op.text, op.old_text, reason=str(error))
                store.record_noop(owner, provenance=provenance, memory_id=None, reason=op.reason)
            applied.append(op)
    return applied
