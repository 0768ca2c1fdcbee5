"""The systems `memory-r1 eval` compares: same backbone, same retrieval budget, one interface.

- `memory-r1`: extractor + Memory Manager + Answer Agent with memory distillation (paper section 1).
- `prompted`: the same pipeline answering without distillation: the Mem0-style baseline when run with the
  untrained base model. Its banks are the same as memory-r1's for the same models, so they are shared.
- `rag`: LoCoMo-RAG style: raw dialogue turns are the "memories" (no LLM at ingest), 30 per speaker.
- `full-context`: the whole conversation in the prompt; the oldest turns are dropped when it does not fit
  the model's context window, and how many were dropped is recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from memory_r1.agents import AnswerAgent, AnswerConfig, MemoryManager
from memory_r1.agents.parsing import parse_answer
from memory_r1.bank import MemoryStore, SQLiteStore
from memory_r1.embeddings import Embedder
from memory_r1.llm import load_generator
from memory_r1.llm.base import GenerationConfig, Generator
from memory_r1.parallel import ingest_concurrently
from memory_r1.pipeline import (
    Agents,
    MemorySystem,
    PipelineConfig,
    TurnRecord,
    answer_model_name,
    load_answerer,
)
from memory_r1.prompts import answer_full_context
from memory_r1.records import Answer, Conversation, Provenance, QAItem, Turn, owner_id

SYSTEMS = ("memory-r1", "prompted", "rag", "full-context")

OnTurn = Callable[[Turn], None]


class EvalSystem(Protocol):
    name: str

    def settings(self) -> dict: ...

    def prepare(self, conversation: Conversation, banks_dir: Path, on_turn: OnTurn | None = None) -> None:
        """Build (or resume, or reuse) this conversation's bank; must be called before `answer`."""
        ...

    def answer(self, conversation: Conversation, questions: Sequence[QAItem],
               seed: int | None) -> list[Answer]: ...

    def turn_records(self, sample_id: str) -> list[TurnRecord] | None:
        """What ingestion did, per turn, for operation statistics; None for systems without a manager."""
        ...


@runtime_checkable
class ConcurrentPreparation(Protocol):
    """A system that can build several conversations' banks at once (their model calls batched together)."""

    def prepare_many(self, conversations: Sequence[Conversation], banks_dir: Path,
                     on_turn: OnTurn | None = None) -> None: ...


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


class PipelineSystem:
    """`memory-r1` (distill=True) and `prompted` (distill=False)."""

    def __init__(self, name: str, agents: Agents):
        self.name = name
        self._agents = agents  # models loaded once, shared by every conversation's bank
        self._banks: dict[str, MemorySystem] = {}

    @property
    def manager(self) -> MemoryManager:
        """The Memory Manager that builds this system's banks (scored by `eval --decisions`)."""
        return self._agents.manager

    def settings(self) -> dict:
        return {"system": self.name, **self._agents.settings(),
                "bank": "memories per speaker, built by the manager"}

    def bank_identity(self) -> dict:
        """Everything that shapes a bank; answer settings are left out so memory-r1 and prompted share
        banks."""
        s = self._agents.settings()
        keys = ("extractor_model", "manager_model", "embedding_model", "extractor", "manager")
        return {"kind": "memories", **{k: s[k] for k in keys},
                "prompts": {k: s["prompts"][k] for k in ("extract", "manage")}}

    def _bank(self, conversation: Conversation, banks_dir: Path) -> MemorySystem:
        path = banks_dir / f"{conversation.sample_id}-memories-{_fingerprint(self.bank_identity())}.db"
        banks_dir.mkdir(parents=True, exist_ok=True)
        system = self._banks.get(conversation.sample_id) or MemorySystem(
            self._agents.open_store(path), self._agents
        )
        self._banks[conversation.sample_id] = system
        return system

    def prepare(self, conversation: Conversation, banks_dir: Path, on_turn: OnTurn | None = None) -> None:
        self._bank(conversation, banks_dir).ingest(conversation, on_turn=on_turn)

    def prepare_many(self, conversations: Sequence[Conversation], banks_dir: Path,
                     on_turn: OnTurn | None = None) -> None:
        """Every conversation's bank at once, their extraction and manager calls batched together."""
        systems = [self._bank(c, banks_dir) for c in conversations]
        ingest_concurrently(systems, conversations,
                            on_turn=(lambda _c, turn: on_turn(turn)) if on_turn else None)

    def answer(self, conversation: Conversation, questions: Sequence[QAItem],
               seed: int | None) -> list[Answer]:
        return self._banks[conversation.sample_id].answer([q.asked for q in questions],
                                                          conversation.sample_id, seed=seed)

    def turn_records(self, sample_id: str) -> list[TurnRecord] | None:
        return self._banks[sample_id].turn_records(sample_id)


class TurnRetrievalSystem:
    """`rag`: each dialogue turn is stored verbatim as a memory of its speaker, then answered like
    memories."""

    name = "rag"

    def __init__(self, embedder: Embedder, answerer: AnswerAgent):
        self.embedder, self.answerer = embedder, answerer
        self._stores: dict[str, SQLiteStore] = {}

    def settings(self) -> dict:
        return {
            "system": self.name,
            "answer_model": self.answerer.generator.name,
            "embedding_model": self.embedder.name,
            "prompts": {"answer": self.answerer.prompt_version},
            "answer": asdict(self.answerer.config),
            "bank": "raw dialogue turns per speaker (no LLM at ingest)",
        }

    def prepare(self, conversation: Conversation, banks_dir: Path, on_turn: OnTurn | None = None) -> None:
        banks_dir.mkdir(parents=True, exist_ok=True)
        path = (
            banks_dir
            / f"{conversation.sample_id}-turns-"
            f"{_fingerprint({'kind': 'turns', 'embedding': self.embedder.name})}.db"
        )
        store = self._stores.get(conversation.sample_id) or SQLiteStore(
            path, embedding_model=self.embedder.name, dim=self.embedder.dim
        )
        self._stores[conversation.sample_id] = store
        index_turns(store, self.embedder, conversation, on_turn)

    def answer(self, conversation: Conversation, questions: Sequence[QAItem],
               seed: int | None) -> list[Answer]:
        owners = [(s, owner_id(conversation.sample_id, s)) for s in conversation.speakers]
        return self.answerer.answer(self._stores[conversation.sample_id], [q.asked for q in questions],
                                    owners, seed)

    def turn_records(self, sample_id: str) -> list[TurnRecord] | None:
        return None


def index_turns(store: MemoryStore, embedder: Embedder, conversation: Conversation,
                on_turn: OnTurn | None = None) -> None:
    """Store every dialogue turn verbatim as a memory of its speaker (resumable through the turn log)."""
    done = store.turn_log(conversation.sample_id)
    provenance = Provenance("rag-index", "", "")
    for session in conversation.sessions:
        pending = [t for t in session.turns if t.dia_id not in done]
        if pending:
            vectors = embedder.embed([t.render() for t in pending])
            for turn, vector in zip(pending, vectors, strict=True):
                with store.transaction():
                    store.add(owner_id(conversation.sample_id, turn.speaker), turn.render(), vector,
                              timestamp=turn.timestamp, occurred_at=turn.occurred_at,
                              source_turn_ids=(turn.dia_id,), provenance=provenance)
                    store.log_turn(conversation.sample_id, turn.dia_id, {"indexed": True})
        for turn in session.turns:
            if on_turn:
                on_turn(turn)


class FullContextSystem:
    """`full-context`: the conversation itself, newest turns kept when it does not fit."""

    name = "full-context"

    def __init__(self, generator: Generator, answer_config: AnswerConfig, context_tokens: int | None = None):
        self.generator = generator
        self.answer_config = answer_config
        self.context_tokens = context_tokens or _context_window(generator) or 8192
        self._transcripts: dict[str, tuple[str, int]] = {}  # sample_id -> (transcript, dropped turns)

    def settings(self) -> dict:
        return {
            "system": self.name,
            "answer_model": self.generator.name,
            "prompts": {"answer": answer_full_context.VERSION},
            "context_tokens": self.context_tokens,
            "max_new_tokens": self.answer_config.max_new_tokens,
            "dropped_turns": {sid: dropped for sid, (_, dropped) in self._transcripts.items()},
            "bank": "none: the conversation itself",
        }

    def prepare(self, conversation: Conversation, banks_dir: Path, on_turn: OnTurn | None = None) -> None:
        """Keep the newest turns whose tokens fit the window (minus answer room and prompt overhead)."""
        budget = self.context_tokens - self.answer_config.max_new_tokens - 400
        turns = conversation.turns
        costs = [self._count_tokens(t.render()) + 1 for t in turns]
        total = sum(costs) + 12 * len(conversation.sessions)  # + session headers
        dropped = 0
        while total > budget and dropped < len(turns):
            total -= costs[dropped]
            dropped += 1
        kept = {t.dia_id for t in turns[dropped:]}
        sessions = [(s.timestamp,
                     [t.render() for t in s.turns if t.dia_id in kept]) for s in conversation.sessions]
        transcript = "\n\n".join(
            answer_full_context.render_session(ts, lines) for ts, lines in sessions if lines
        )
        self._transcripts[conversation.sample_id] = (transcript, dropped)
        for turn in turns:
            if on_turn:
                on_turn(turn)

    def _count_tokens(self, text: str) -> int:
        tokenizer = getattr(self.generator, "tokenizer", None)
        return len(tokenizer(text)["input_ids"]) if tokenizer is not None else len(text) // 4

    def answer(self, conversation: Conversation, questions: Sequence[QAItem],
               seed: int | None) -> list[Answer]:
        transcript, _ = self._transcripts[conversation.sample_id]
        config = GenerationConfig(max_new_tokens=self.answer_config.max_new_tokens,
                                  temperature=self.answer_config.temperature, seed=seed)
        outputs = self.generator.generate(
            [answer_full_context.render(q.asked, transcript) for q in questions], config
        )
        answers = []
        for q, g in zip(questions, outputs, strict=True):
            parsed = parse_answer(g.text, set())
            answers.append(Answer(q.question, parsed.answer, (), (), g.text, answer_full_context.VERSION,
                                  usage=g.usage, parse_error=parsed.error))
        return answers

    def turn_records(self, sample_id: str) -> list[TurnRecord] | None:
        return None


def _context_window(generator: Generator) -> int | None:
    model = getattr(generator, "model", None)
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def build_system(name: str, config: PipelineConfig, context_tokens: int | None = None) -> EvalSystem:
    """The one mapping from a system name to its constructor; models are loaded here."""
    if name in ("memory-r1", "prompted"):
        answer = replace(config.answer, distill=name == "memory-r1")
        return PipelineSystem(name, Agents.load(replace(config, answer=answer)))
    if name == "rag":
        answerer = load_answerer(replace(config, answer=replace(config.answer, distill=False)))
        return TurnRetrievalSystem(answerer.embedder, answerer)
    if name == "full-context":
        generator = load_generator(answer_model_name(config), backend=config.backend,
                                   base_url=config.base_url)
        return FullContextSystem(generator, config.answer, context_tokens)
    raise ValueError(f"unknown system {name!r}; choose one of: {', '.join(SYSTEMS)}")
