"""The Answer Agent (paper section 1, step 4): retrieve, distill, answer, in one generation.

30 memories per speaker are retrieved (60 in total, as in the paper). Our choice where the paper is
silent: each speaker's memories are shown oldest first (by dialogue time), which makes "the newer one
wins" readable to the model; numbering runs across both speakers so selections map back to store ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from memory_r1.agents.parsing import parse_answer
from memory_r1.bank import MemoryStore
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import GenerationConfig, Generator, Message
from memory_r1.prompts import answer as prompt
from memory_r1.records import Answer, ScoredMemory


@dataclass(frozen=True)
class AnswerConfig:
    top_k_per_speaker: int = 30
    """Paper: 30 memories from each speaker's bank."""
    max_new_tokens: int = 160
    """Room for a few distilled memories plus a short answer."""


@dataclass(frozen=True)
class AnswerPrompt:
    messages: list[Message]
    numbered: dict[int, ScoredMemory]  # number shown in the prompt -> memory


class AnswerAgent:
    def __init__(self, generator: Generator, embedder: Embedder, config: AnswerConfig = AnswerConfig()):
        self.generator = generator
        self.embedder = embedder
        self.config = config

    @property
    def prompt_version(self) -> str:
        return prompt.VERSION

    def build_prompts(self, store: MemoryStore, questions: Sequence[str], owners: Sequence[tuple[str, str]]) -> list[AnswerPrompt]:
        """`owners`: (speaker name as shown, bank owner id) for each speaker of the conversation."""
        vectors = self.embedder.embed(list(questions))
        return [self._build(store, q, v, owners) for q, v in zip(questions, vectors, strict=True)]

    def _build(self, store: MemoryStore, question: str, vector, owners: Sequence[tuple[str, str]]) -> AnswerPrompt:
        numbered: dict[int, ScoredMemory] = {}
        blocks: list[tuple[str, list[str]]] = []
        for speaker, owner in owners:
            hits = sorted(store.search(owner, vector, self.config.top_k_per_speaker), key=_chronological)
            lines = []
            for hit in hits:
                number = len(numbered) + 1
                numbered[number] = hit
                lines.append(prompt.format_memory(number, hit.entry.timestamp, hit.entry.text))
            blocks.append((speaker, lines))
        return AnswerPrompt(prompt.render(question, blocks), numbered)

    def answer(self, store: MemoryStore, questions: Sequence[str], owners: Sequence[tuple[str, str]]) -> list[Answer]:
        """Answer a batch of questions greedily (paper: greedy decoding at test time)."""
        built = self.build_prompts(store, questions, owners)
        outputs = self.generator.generate([b.messages for b in built], GenerationConfig(max_new_tokens=self.config.max_new_tokens))
        return [self.to_answer(q, b, g.text, g.usage) for q, b, g in zip(questions, built, outputs, strict=True)]

    def to_answer(self, question: str, built: AnswerPrompt, raw: str, usage=None) -> Answer:
        parsed = parse_answer(raw, set(built.numbered))
        selected = tuple(built.numbered[n].entry.id for n in parsed.selected_numbers)
        kwargs = {"usage": usage} if usage is not None else {}
        return Answer(question, parsed.answer, selected, tuple(built.numbered.values()), raw, prompt.VERSION,
                      parse_error=parsed.error, **kwargs)


def _chronological(hit: ScoredMemory) -> tuple[datetime, int]:
    return (hit.entry.occurred_at or datetime.min, hit.entry.id)
