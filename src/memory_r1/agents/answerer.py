"""The Answer Agent (paper section 1, step 4): retrieve, distill, answer, in one generation.

30 memories per speaker are retrieved (60 in total, as in the paper). Our choice where the paper is
silent: each speaker's memories are shown oldest first (by dialogue time), which makes "the newer one
wins" readable to the model; numbering runs across both speakers so selections map back to store ids.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import ModuleType

import numpy as np

from memory_r1.agents.parsing import parse_answer
from memory_r1.bank import MemoryStore
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import (
    Generation,
    GenerationConfig,
    GenerationError,
    Generator,
    Message,
    PromptBudget,
    prompt_limit,
)
from memory_r1.prompts import answer as answer_prompt
from memory_r1.prompts import answer_direct
from memory_r1.records import Answer, ScoredMemory, Usage, normalise_time


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
    max_memory_chars: int = 1000
    """Our choice: a memory longer than this is shown cut (memories the manager writes are one sentence;
    a bank filled by other means may hold anything). Bounds the prompt on every backend."""
    max_question_chars: int = 2000
    """Our choice: a question longer than this is shown cut."""


@dataclass(frozen=True)
class AnswerPrompt:
    messages: list[Message]
    numbered: dict[int, ScoredMemory]  # number shown in the prompt -> memory
    search_s: float = 0.0
    dropped: int = 0  # retrieved memories left out (lowest scores first) to fit the model's window


class AnswerAgent:
    def __init__(self, generator: Generator, embedder: Embedder, config: AnswerConfig = AnswerConfig()):
        self.generator = generator
        self.embedder = embedder
        self.config = config

    @property
    def prompt(self) -> ModuleType:
        """The prompt module (`VERSION`, `render`): with or without the distillation step."""
        return answer_prompt if self.config.distill else answer_direct

    @property
    def prompt_version(self) -> str:
        return self.prompt.VERSION

    def build_prompts(self, store: MemoryStore, questions: Sequence[str],
                      owners: Sequence[tuple[str, str]]) -> list[AnswerPrompt]:
        """`owners`: (speaker name as shown, bank owner id) for each speaker of the conversation."""
        start = time.perf_counter()
        vectors = self.embedder.embed(list(questions))
        embed_s = (time.perf_counter() - start) / max(len(questions), 1)
        return [self._build(store, q, v, owners, embed_s) for q, v in zip(questions, vectors, strict=True)]

    def _build(self, store: MemoryStore, question: str, vector: np.ndarray, owners: Sequence[tuple[str, str]],
               embed_s: float) -> AnswerPrompt:
        start = time.perf_counter()
        retrieved = [
            (speaker, store.search(owner, vector, self.config.top_k_per_speaker)) for speaker, owner in owners
        ]
        search_s = embed_s + time.perf_counter() - start
        question = _cut(question, self.config.max_question_chars)
        built = self._render(question, retrieved, None)
        limit = prompt_limit(self.generator, self.config.max_new_tokens)
        if limit is None or not isinstance(self.generator, PromptBudget):
            return replace(built, search_s=search_s)
        if self.generator.prompt_tokens(built.messages) <= limit:
            return replace(built, search_s=search_s)
        # Over the window: keep the best-scoring memories that fit (binary search on how many).
        scores = sorted((h.score for _, hits in retrieved for h in hits), reverse=True)
        lo, hi = 0, len(scores)  # keeping lo memories fits (or lo == 0), keeping hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            fits = self.generator.prompt_tokens(self._render(question, retrieved, mid).messages) <= limit
            lo, hi = (mid, hi) if fits else (lo, mid)
        return replace(self._render(question, retrieved, lo), search_s=search_s)

    def _render(
        self, question: str, retrieved: list[tuple[str, list[ScoredMemory]]], keep: int | None
    ) -> AnswerPrompt:
        """The prompt with the `keep` best-scoring memories (ties: lower id), or all of them."""
        pool = [h for _, hits in retrieved for h in hits]
        best = sorted(pool, key=lambda h: (-h.score, h.entry.id))[: len(pool) if keep is None else keep]
        kept = {h.entry.id for h in best}
        numbered: dict[int, ScoredMemory] = {}
        blocks: list[tuple[str, list[str]]] = []
        for speaker, hits in retrieved:
            lines = []
            for hit in sorted((h for h in hits if h.entry.id in kept), key=_chronological):
                number = len(numbered) + 1
                numbered[number] = hit
                text = _cut(hit.entry.text, self.config.max_memory_chars)
                lines.append(answer_prompt.format_memory(number, hit.entry.timestamp, text))
            blocks.append((speaker, lines))
        return AnswerPrompt(self.prompt.render(question, blocks), numbered, 0.0, len(pool) - len(numbered))

    def answer(
        self, store: MemoryStore, questions: Sequence[str], owners: Sequence[tuple[str, str]],
        seed: int | None = None, *, raise_errors: bool = False
    ) -> list[Answer]:
        """Answer a batch of questions (greedy unless the config sets a temperature)."""
        return self.answer_prompts(questions, self.build_prompts(store, questions, owners), seed=seed,
                                   raise_errors=raise_errors)

    def answer_prompts(self, questions: Sequence[str], built: Sequence[AnswerPrompt],
                       seed: int | None = None, *, raise_errors: bool = False) -> list[Answer]:
        """The answer step on prompts already built (from one bank or several): one batched generation.
        A backend failure becomes that question's `parse_error` (an evaluation scores it and goes on), or
        with `raise_errors` the `GenerationError` itself (the API and service: the caller must see it)."""
        config = GenerationConfig(max_new_tokens=self.config.max_new_tokens,
                                  temperature=self.config.temperature, seed=seed)
        messages = [b.messages for b in built]
        outputs: list[Generation | str] = (
            list(self.generator.generate(messages, config))
            if raise_errors
            else self._generate(messages, config)
        )
        return [self.to_answer(q, b, g.text, g.usage) if isinstance(g, Generation)
                else replace(self.to_answer(q, b, ""), parse_error=g)
                for q, b, g in zip(questions, built, outputs, strict=True)]

    def _generate(self, prompts: list[list[Message]], config: GenerationConfig) -> list[Generation | str]:
        """One Generation per prompt; if the batch fails, prompt by prompt, so one bad question never
        costs the others (its error is returned in its place)."""
        try:
            return list(self.generator.generate(prompts, config))
        except GenerationError as error:
            if len(prompts) == 1:
                return [f"generation failed: {error}"]
        results: list[Generation | str] = []
        for messages in prompts:
            try:
                results.append(self.generator.generate([messages], config)[0])
            except GenerationError as error:
                results.append(f"generation failed: {error}")
        return results

    def to_answer(self, question: str, built: AnswerPrompt, raw: str, usage: Usage = Usage()) -> Answer:
        parsed = parse_answer(raw, set(built.numbered))
        selected = tuple(built.numbered[n].entry.id for n in parsed.selected_numbers)
        return Answer(question, parsed.answer, selected, tuple(built.numbered.values()), raw,
                      self.prompt_version, usage=usage, parse_error=parsed.error, search_s=built.search_s,
                      dropped_memories=built.dropped)


def _chronological(hit: ScoredMemory) -> tuple[datetime, int]:
    """Oldest first, unknown times first; times are naive UTC (records.normalise_time), so they compare."""
    return (normalise_time(hit.entry.occurred_at) or datetime.min, hit.entry.id)


def _cut(text: str, keep: int) -> str:
    return text if len(text) <= keep else text[:keep] + " [...]"
