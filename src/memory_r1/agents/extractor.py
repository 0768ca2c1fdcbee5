"""Fact extraction from dialogue turns (paper section 1, step 1).

The paper does not name its test-time extractor (GPT-4o-mini built its training banks); any generation
backend works here. Turns are independent, so a whole session is extracted in batched calls.
Departure, our choice: when the output has no usable structure, the turn itself is kept as one fact
(`fallback_to_turn`), so a weak extractor loses no information; the miss is reported in `error`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memory_r1.agents.parsing import parse_facts
from memory_r1.llm.base import GenerationConfig, Generator
from memory_r1.prompts import extract as prompt
from memory_r1.records import Fact, Turn, Usage


@dataclass(frozen=True)
class ExtractorConfig:
    max_new_tokens: int = 128
    """Facts are short; 128 tokens fit four or five of them."""
    max_facts: int = 8
    """Our choice: a cap against a model that loops, keeping the manager prompt bounded."""
    fallback_to_turn: bool = True
    """Our choice: keep the raw turn as a fact when the output is unparsable."""


@dataclass(frozen=True)
class Extraction:
    turn: Turn
    facts: tuple[Fact, ...]
    raw_output: str
    usage: Usage
    error: str | None = None


class FactExtractor:
    def __init__(self, generator: Generator, config: ExtractorConfig = ExtractorConfig()):
        self.generator = generator
        self.config = config

    @property
    def prompt_version(self) -> str:
        return prompt.VERSION

    def extract(self, turns: Sequence[Turn], owners: Sequence[str], previous: Sequence[Turn | None]) -> list[Extraction]:
        """One extraction per turn; `owners[i]` is the bank that will hold turn i's facts."""
        prompts = [
            prompt.render(turn.render(), turn.timestamp, prev.render() if prev else None)
            for turn, prev in zip(turns, previous, strict=True)
        ]
        outputs = self.generator.generate(prompts, GenerationConfig(max_new_tokens=self.config.max_new_tokens))
        return [self._to_extraction(t, o, g.text, g.usage) for t, o, g in zip(turns, owners, outputs, strict=True)]

    def _to_extraction(self, turn: Turn, owner: str, raw: str, usage: Usage) -> Extraction:
        parsed = parse_facts(raw)
        texts = list(dict.fromkeys(parsed.facts))[: self.config.max_facts]
        if not texts and parsed.error and self.config.fallback_to_turn:
            texts = [turn.render()]
        facts = tuple(
            Fact(text, owner, turn.timestamp, turn.occurred_at, (turn.dia_id,)) for text in texts
        )
        return Extraction(turn, facts, raw, usage, parsed.error)
