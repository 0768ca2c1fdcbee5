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
from memory_r1.llm.base import (
    Generation,
    GenerationConfig,
    GenerationError,
    Generator,
    Message,
    PromptBudget,
    prompt_limit,
)
from memory_r1.prompts import extract as prompt
from memory_r1.records import Fact, Turn, Usage

CUT_MARK = " [...]"


@dataclass(frozen=True)
class ExtractorConfig:
    max_new_tokens: int = 128
    """Facts are short; 128 tokens fit four or five of them."""
    max_facts: int = 8
    """Our choice: a cap against a model that loops, keeping the manager prompt bounded."""
    fallback_to_turn: bool = True
    """Our choice: keep the raw turn as a fact when the output is unparsable."""
    max_turn_chars: int = 4000
    """Our choice: LoCoMo's longest turn has 454 characters. A longer turn (or previous line) is cut here,
    with the cut recorded, before any tokenizer sees it, whatever the backend; a model with a known
    window (`PromptBudget`) may cut it further so that prompt + `max_new_tokens` fit."""


@dataclass(frozen=True)
class Extraction:
    turn: Turn
    facts: tuple[Fact, ...]
    raw_output: str
    usage: Usage
    error: str | None = None
    truncated_chars: int = 0
    """Characters of the turn left out of the prompt to fit the budget (0: shown whole)."""


@dataclass(frozen=True)
class _Prepared:
    line: str  # the turn as shown to the model (possibly cut)
    messages: list[Message] | None  # None: the turn cannot fit at all (skipped, see `skipped`)
    truncated_chars: int
    skipped: str | None = None


class FactExtractor:
    def __init__(self, generator: Generator, config: ExtractorConfig = ExtractorConfig()):
        self.generator = generator
        self.config = config

    @property
    def prompt_version(self) -> str:
        return prompt.VERSION

    def extract(self, turns: Sequence[Turn], owners: Sequence[str],
                previous: Sequence[Turn | None]) -> list[Extraction]:
        """One extraction per turn; `owners[i]` is the bank that will hold turn i's facts.

        One turn never costs the others: a turn too long for the model is cut (or skipped, with the
        reason, if even its header does not fit), and a failed batch is retried turn by turn."""
        prepared = [self._prepare(turn, prev) for turn, prev in zip(turns, previous, strict=True)]
        sent = [i for i, p in enumerate(prepared) if p.messages is not None]
        outputs = dict(zip(sent, self._generate([prepared[i].messages or [] for i in sent]), strict=True))
        results = []
        for i, (turn, owner, prep) in enumerate(zip(turns, owners, prepared, strict=True)):
            out = outputs.get(i, prep.skipped or "skipped")
            if isinstance(out, str):  # no output: skipped, or generation failed
                facts = (
                    (self._fact(prep.line, owner, turn),)
                    if self.config.fallback_to_turn and i in outputs
                    else ()
                )
                results.append(Extraction(turn, facts, "", Usage(), out, prep.truncated_chars))
            else:
                results.append(self._to_extraction(turn, owner, out.text, out.usage, prep))
        return results

    def _prepare(self, turn: Turn, prev: Turn | None) -> _Prepared:
        cap = self.config.max_turn_chars
        full = turn.render()
        line, cut = _cut(full, cap)
        previous = _cut(prev.render(), cap)[0] if prev else None
        limit = prompt_limit(self.generator, self.config.max_new_tokens)
        if limit is None or self._fits(line, turn, previous, limit):
            return _Prepared(line, prompt.render(line, turn.timestamp, previous), cut)
        # Over the model's budget: the context line goes first, then the turn is cut to the longest
        # prefix that fits (binary search on characters; each probe tokenizes one short prompt).
        if not self._fits("", turn, None, limit):
            return _Prepared("", None, len(full),
                             f"skipped: even an empty turn's prompt exceeds {limit} tokens")
        lo, hi = 0, min(len(full), cap)  # lo fits, hi may not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self._fits(_cut(full, mid)[0], turn, None, limit) else (lo, mid - 1)
        line, cut = _cut(full, lo)
        return _Prepared(line, prompt.render(line, turn.timestamp, None), cut)

    def _fits(self, line: str, turn: Turn, previous: str | None, limit: int) -> bool:
        if not isinstance(self.generator, PromptBudget):
            return True
        return self.generator.prompt_tokens(prompt.render(line, turn.timestamp, previous)) <= limit

    def _generate(self, prompts: list[list[Message]]) -> list[Generation | str]:
        """One Generation per prompt, or the error that prompt alone still raised."""
        config = GenerationConfig(max_new_tokens=self.config.max_new_tokens)
        if not prompts:
            return []
        try:
            return list(self.generator.generate(prompts, config))
        except GenerationError:
            if len(prompts) == 1:
                return [self._one(prompts[0], config)]
        return [self._one(p, config) for p in prompts]

    def _one(self, messages: list[Message], config: GenerationConfig) -> Generation | str:
        try:
            return self.generator.generate([messages], config)[0]
        except GenerationError as error:
            return f"generation failed: {error}"

    def _fact(self, text: str, owner: str, turn: Turn) -> Fact:
        return Fact(text, owner, turn.timestamp, turn.occurred_at, (turn.dia_id,))

    def _to_extraction(self, turn: Turn, owner: str, raw: str, usage: Usage, prep: _Prepared) -> Extraction:
        parsed = parse_facts(raw)
        texts = list(dict.fromkeys(parsed.facts))[: self.config.max_facts]
        if not texts and parsed.error and self.config.fallback_to_turn:
            texts = [prep.line]
        facts = tuple(self._fact(text, owner, turn) for text in texts)
        return Extraction(turn, facts, raw, usage, parsed.error, prep.truncated_chars)


def _cut(text: str, keep: int) -> tuple[str, int]:
    """The first `keep` characters of `text` (marked as cut when anything was left out), and how many
    characters were left out."""
    if len(text) <= keep:
        return text, 0
    return text[:keep] + CUT_MARK, len(text) - keep
