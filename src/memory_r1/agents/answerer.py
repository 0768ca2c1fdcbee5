"""The Answer Agent (paper section 1, step 4): retrieve, distill, answer, in one generation.

30 memories per speaker are retrieved (60 in total, as in the paper). Our choice where the paper is
silent: each speaker's memories are shown oldest first (by dialogue time), which makes "the newer one
wins" readable to the model; numbering runs across both speakers so selections map back to store ids.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from memory_r1.agents.parsing import parse_answer
from memory_r1.bank import MemoryStore
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import GenerationConfig, Generator, Message
from memory_r1.prompts import answer as answer_prompt
from memory_r1.prompts import answer_direct
from memory_r1.records import Answer, ScoredMemory, Usage


@dataclass(frozen=True)
class AnswerConfig:
    top_k_per_speaker: int = 30
    """Paper: 30 memories from each speaker's bank."""
    max_new_tokens: int = 160
    """Room for a few distilled memories plus a short answer."""
    distill: bool = True
    """Paper: list the relevant memories, then answer, in one generation. False: answer at once
    (the Mem0-style baseline and the paper's "without distillation" ablation)."""
    temperature: float = 0.0
    """Paper: greedy at test time. Above 0 for sampled evaluation runs (`memory-r1 eval --seeds`)."""


@dataclass(frozen=True)
class AnswerPrompt:
    messages: list[Message]
    numbered: dict[int, ScoredMemory]  # number shown in the prompt -> memory
    search_s: float = 0.0


class AnswerAgent:
    def __init__(self, generator: Generator, embedder: Embedder, config: AnswerConfig = AnswerConfig()):
        self.generator = generator
        self.embedder = embedder
        self.config = config

    @property
    def prompt(self):
        return answer_prompt if self.config.distill else answer_direct

    @property
    def prompt_version(self) -> str:
        return self.prompt.VERSION

    def build_prompts(self, store: MemoryStore, questions: Sequence[str], owners: Sequence[tuple[str, str]]) -> list[AnswerPrompt]:
        """`owners`: (speaker name as shown, bank owner id) for each speaker of the conversation."""
        start = time.perf_counter()
        vectors = self.embedder.embed(list(questions))
        embed_s = (time.perf_counter() - start) / max(len(questions), 1)
        return [self._build(store, q, v, owners, embed_s) for q, v in zip(questions, vectors, strict=True)]

    def _build(self, store: MemoryStore, question: str, vector, owners: Sequence[tuple[str, str]], embed_s: float) -> AnswerPrompt:
        start = time.perf_counter()
        numbered: dict[int, ScoredMemory] = {}
        blocks: list[tuple[str, list[str]]] = []
        for speaker, owner in owners:
            hits = sorted(store.search(owner, vector, self.config.top_k_per_speaker), key=_chronological)
            lines = []
            for hit in hits:
                number = len(numbered) + 1
                numbered[number] = hit
                lines.append(answer_prompt.format_memory(number, hit.entry.timestamp, hit.entry.text))
            blocks.append((speaker, lines))
        search_s = embed_s + time.perf_counter() - start
        return AnswerPrompt(self.prompt.render(question, blocks), numbered, search_s)

    def answer(
        self, store: MemoryStore, questions: Sequence[str], owners: Sequence[tuple[str, str]], seed: int | None = None
    ) -> list[Answer]:
        """Answer a batch of questions (greedy unless the config sets a temperature)."""
        return self.answer_prompts(questions, self.build_prompts(store, questions, owners), seed=seed)

    def answer_prompts(self, questions: Sequence[str], built: Sequence[AnswerPrompt], seed: int | None = None) -> list[Answer]:
        """The answer step on prompts already built (from one bank or several): one batched generation."""
        config = GenerationConfig(max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature, seed=seed)
        outputs = self.generator.generate([b.messages for b in built], config)
        return [self.to_answer(q, b, g.text, g.usage) for q, b, g in zip(questions, built, outputs, strict=True)]

    def to_answer(self, question: str, built: AnswerPrompt, raw: str, usage: Usage = Usage()) -> Answer:
        parsed = parse_answer(raw, set(built.numbered))
        selected = tuple(built.numbered[n].entry.id for n in parsed.selected_numbers)
        return Answer(question, parsed.answer, selected, tuple(built.numbered.values()), raw, self.prompt_version,
                      usage=usage, parse_error=parsed.error, search_s=built.search_s)


def _chronological(hit: ScoredMemory) -> tuple[datetime, int]:
    return (hit.entry.occurred_at or datetime.min, hit.entry.id)
