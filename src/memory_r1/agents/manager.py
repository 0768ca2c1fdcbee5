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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memory_r1.agents.parsing import parse_decision_lines, parse_decisions, parse_operations
from memory_r1.bank import MemoryNotFoundError, MemoryStore
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import GenerationConfig, Generator, Message
from memory_r1.prompts import manage, manage_v2
from memory_r1.records import Event, Fact, Operation, Provenance, Rejection, ScoredMemory, Usage


@dataclass(frozen=True)
class Protocol:
    """One manager output protocol: how memories are labelled, the prompt, its parser and its JSON schema."""

    version: str
    label: Callable[[int], str]  # index of a shown memory -> the id the model sees
    render: Callable[[Sequence[tuple[str, str]], Sequence[str]], list[Message]]
    parse: Callable[[str, Mapping[str, int], Mapping[int, str], Sequence[str]], list[Operation]]
    schema: Callable[[], dict[str, Any]] | None  # the reply's JSON schema; None: not a JSON protocol


def _mem0_schema() -> dict[str, Any]:
    item = {"type": "object", "properties": {"id": {"type": "string"}, "text": {"type": "string"},
                                             "event": {"enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
                                             "old_memory": {"type": "string"}},
            "required": ["id", "text", "event"]}
    return {"type": "object", "properties": {"memory": {"type": "array", "items": item}},
            "required": ["memory"]}


PROTOCOLS: dict[str, Protocol] = {
    manage.VERSION: Protocol(
        manage.VERSION,
        str,
        manage.render,
        lambda text, ids, texts, _facts: parse_operations(text, ids, texts),
        _mem0_schema,
    ),
    manage_v2.VERSION_JSON: Protocol(
        manage_v2.VERSION_JSON,
        manage_v2.memory_label,
        manage_v2.render_json,
        parse_decisions,
        manage_v2.decisions_schema,
    ),
    manage_v2.VERSION_LINES: Protocol(
        manage_v2.VERSION_LINES, manage_v2.memory_label, manage_v2.render_lines, parse_decision_lines, None
    ),
}
DEFAULT_PROTOCOL = manage_v2.VERSION_LINES
"""manage-v3 (one line per fact naming the memory it acts on), chosen on the decision benchmark's dev split
with the packaged SmolLM2: decision accuracy 36.3% vs 30.8% for both the paper's manage-v1 and manage-v2
(paired +5.5 points [-1.1, +12.1] over v1, 91 cases), the only protocol whose ADDs survive (ADD F1 29 vs
0-5), and 3% of cases with a rejected operation vs 79% (v1) and 58% (v2). The paper's Mem0-style format
stays selectable as manage-v1 (`ManagerConfig(prompt_version="manage-v1")`, `--set
manager.prompt_version=manage-v1`). Held-out test split: benchmarks/results/manager-decisions-smollm2/."""


def get_protocol(version: str) -> Protocol:
    if version not in PROTOCOLS:
        raise ValueError(f"unknown manager prompt version {version!r}; choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[version]


@dataclass(frozen=True)
class ManagerConfig:
    top_k: int = 10
    """Memories retrieved per fact. Paper silent; Mem0 uses 10."""
    max_shown: int = 30
    """Our choice: cap on the union of retrieved memories shown in one prompt (keeps it under ~2k tokens)."""
    max_new_tokens: int = 256
    """Room for about six operations with their text."""
    prompt_version: str = DEFAULT_PROTOCOL
    """Output protocol: manage-v1 (the paper's Mem0-style format), manage-v2 (one JSON decision per fact,
    naming its memory) or manage-v3 (the same as lines). Default manage-v3, as measured: DEFAULT_PROTOCOL."""
    structured_output: bool = True
    """Ask the backend for JSON matching the protocol's schema; backends that cannot constrain decoding
    (local transformers) ignore it, the OpenAI-compatible one falls back when the server refuses."""

    def __post_init__(self) -> None:
        get_protocol(self.prompt_version)


@dataclass(frozen=True)
class ManagerPrompt:
    messages: list[Message]
    shown: tuple[ScoredMemory, ...]
    shown_ids: dict[str, int]  # short id in the prompt -> store id
    version: str = manage.VERSION
    facts: tuple[str, ...] = ()
    shown_texts: dict[int, str] | None = None  # store id -> text; default: from `shown`

    def texts(self) -> dict[int, str]:
        return (
            self.shown_texts
            if self.shown_texts is not None
            else {h.entry.id: h.entry.text for h in self.shown}
        )


def render_prompt(version: str, memories: Sequence[tuple[int, str]], facts: Sequence[str],
                  shown: tuple[ScoredMemory, ...] = ()) -> ManagerPrompt:
    """The prompt for (store id, text) memories and fact texts under one protocol, without a bank:
    what `build_prompt` uses after retrieval and what the decision benchmark uses directly."""
    protocol = get_protocol(version)
    labels = [protocol.label(i) for i in range(len(memories))]
    messages = protocol.render([(label, text) for label, (_, text) in zip(labels, memories, strict=True)],
                               list(facts))
    return ManagerPrompt(messages, shown,
                         {label: mid for label, (mid, _) in zip(labels, memories, strict=True)},
                         version, tuple(facts), dict(memories))


def parse_decision(built: ManagerPrompt, raw_output: str) -> tuple[Operation, ...]:
    protocol = get_protocol(built.version)
    return tuple(protocol.parse(raw_output, built.shown_ids, built.texts(), built.facts))


def generation_config(config: ManagerConfig, built: ManagerPrompt) -> GenerationConfig:
    """Greedy decoding; the protocol's JSON schema when structured output is on."""
    schema = get_protocol(built.version).schema
    json_schema = schema() if schema and config.structured_output else None
    return GenerationConfig(max_new_tokens=config.max_new_tokens, json_schema=json_schema)


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
        return Provenance("manager", self.generator.name, self.config.prompt_version)

    def build_prompt(self, store: MemoryStore, owner: str, facts: Sequence[Fact]) -> ManagerPrompt:
        shown: dict[int, ScoredMemory] = {}
        if facts:
            for hits in (
                store.search(owner, vector, self.config.top_k)
                for vector in self.embedder.embed([f.text for f in facts])
            ):
                for hit in hits:
                    best = shown.get(hit.entry.id)
                    if best is None or hit.score > best.score:
                        shown[hit.entry.id] = hit
        ranked = sorted(shown.values(), key=lambda h: -h.score)[: self.config.max_shown]
        ranked.sort(key=lambda h: h.entry.id)  # stable, chronological-ish order for the model
        return render_prompt(self.config.prompt_version, [(h.entry.id, h.entry.text) for h in ranked],
                             [f.text for f in facts], tuple(ranked))

    def decide(self, store: MemoryStore, owner: str, facts: Sequence[Fact]) -> ManagerDecision:
        """Generate (greedy) and parse one decision; the bank is not touched."""
        built = self.build_prompt(store, owner, facts)
        [generation] = self.generator.generate([built.messages], generation_config(self.config, built))
        return ManagerDecision(owner, tuple(facts), built, generation.text,
                               self.parse(built, generation.text), generation.usage)

    @staticmethod
    def parse(built: ManagerPrompt, raw_output: str) -> tuple[Operation, ...]:
        return parse_decision(built, raw_output)

    def step(
        self, store: MemoryStore, owner: str, facts: Sequence[Fact]
    ) -> tuple[ManagerDecision, list[Operation]]:
        decision = self.decide(store, owner, facts)
        applied = apply_operations(store, self.embedder, decision.owner, decision.operations, decision.facts,
                                   self.provenance)
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
                    store.update(op.memory_id, op.text, next(vectors), provenance=provenance,
                                 timestamp=timestamp, occurred_at=occurred_at, source_turn_ids=sources)
                elif op.event is Event.DELETE and op.memory_id is not None:
                    store.delete(op.memory_id, provenance=provenance)
                else:
                    store.record_noop(owner, provenance=provenance, memory_id=op.memory_id, reason=op.reason,
                                      proposed_text=op.text if op.reason else None)
            except (MemoryNotFoundError, ValueError) as error:  # vanished target; an unstorable embedding
                op = Operation(Event.NOOP, op.memory_id, op.text, op.old_text, reason=str(error),
                               rejection=Rejection.STORE_ERROR)
                store.record_noop(owner, provenance=provenance, memory_id=None, reason=op.reason,
                                  proposed_text=op.text)
            applied.append(op)
    return applied
