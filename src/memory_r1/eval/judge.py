"""LLM-as-a-Judge: the J metric (reference notes, section 4), with a cache so no judgement is paid twice.

The judge reads (question, gold, prediction) through the versioned `prompts.judge` template, greedily, and
its output is parsed tolerantly: JSON anywhere, quoted or bare labels in any case, INCORRECT read as WRONG.
A judgement that cannot be parsed comes back as a per-question failure (label None, error set) and is not
cached, so the next run retries it. A backend failure (`GenerationError`) propagates: the harness decides.

Departure from Mem0: Mem0 used gpt-4o-mini in JSON mode and averaged 10 runs; here any `Generator` judges,
once, greedily, and the cache key (model, prompt version, question, gold, prediction) makes reruns free.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memory_r1.agents.parsing import excerpt, find_json
from memory_r1.llm.base import GenerationConfig, GenerationError, Generator, Message
from memory_r1.prompts import judge as judge_prompt
from memory_r1.prompts import judge_longmemeval

Label = Literal["CORRECT", "WRONG"]

# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Judgement:
    label: Label | None
    reasoning: str
    error: str | None = None  # why no label could be read; None when `label` is set


_VERDICTS: dict[str, Label] = {
    "correct": "CORRECT",
    "wrong": "WRONG",
    "incorrect": "WRONG",
    "in correct": "WRONG",  # "in-correct"
    "not correct": "WRONG",
}
_VERDICT = r"(?:not\s+correct|in-?correct|correct|wrong)"
# `label` followed by a verdict, whatever the quoting: "label": "x", 'label': 'x', label: x, label = x.
_KEYED = re.compile(r"\blabel\b[\"']?\s*[:=]\s*[\"']?\s*(" + _VERDICT + r")\b", re.IGNORECASE)
# Without any label key, only upper-case verdict words count: prose ("not exactly correct") is too
# easy to misread. "not"/"n't" right before CORRECT makes it WRONG (no leading \b, so "cannot CORRECT"
# and "isNOT CORRECT" are negated too: a stray negation may cost a label, never invent a CORRECT).
_BARE = re.compile(r"(?:(?i:not|n't)\s+)?\b(?:INCORRECT|CORRECT|WRONG)\b")
_REASONING_KEYS = ("reasoning", "reason", "explanation")


def parse_judgement(text: str) -> Judgement:
    """Read the judge's label from `text`; never raises, whatever the model wrote.

    Order: a JSON object's "label" (any key case, any value case); else `label: x` written any other way
    (single quotes, broken JSON); else a lone upper-case CORRECT/WRONG/INCORRECT word, or an output that
    is nothing but a verdict. Two different verdicts at the same level are an error, never a guess.
    """
    value = _label_object(find_json(text))
    reasoning = _reasoning(text, value)
    keyed = {_VERDICTS[_norm(m.group(1))] for m in _KEYED.finditer(text)}
    if value is not None:
        raw = _lower_keys(value)["label"]
        label = _VERDICTS.get(_norm(raw)) if isinstance(raw, str) else None
        if label is None:
            return Judgement(None, reasoning, f"unknown label {excerpt(raw)}")
        if keyed - {label}:
            return Judgement(None, reasoning, "conflicting labels in output")
        return Judgement(label, reasoning)
    if len(keyed) == 1:
        return Judgement(keyed.pop(), reasoning)
    if keyed:
        return Judgement(None, reasoning, "conflicting labels in output")
    bare = {_bare_verdict(m.group(0)) for m in _BARE.finditer(text)}
    whole = _VERDICTS.get(_norm(text))
    if whole:
        bare.add(whole)
    if len(bare) == 1:
        return Judgement(bare.pop(), reasoning)
    if bare:
        return Judgement(None, reasoning, "ambiguous: both CORRECT and WRONG appear")
    return Judgement(None, reasoning, "no CORRECT/WRONG label in output")


def _label_object(value: Any) -> dict | None:
    """The first object with a "label" key: the value itself, or an item of a list."""
    candidates = value if isinstance(value, list) else [value]
    for candidate in candidates:
        if isinstance(candidate, dict) and "label" in _lower_keys(candidate):
            return candidate
    return None


def _lower_keys(value: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in value.items()}


def _bare_verdict(match: str) -> Label:
    """A `_BARE` match: only an unnegated CORRECT is CORRECT ("NOT WRONG" too is read as WRONG)."""
    return "CORRECT" if match == "CORRECT" else "WRONG"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def _reasoning(text: str, value: dict | None) -> str:
    """The JSON's own reasoning field if any, else the prose before the first code fence or JSON."""
    if value is not None:
        fields = _lower_keys(value)
        for key in _REASONING_KEYS:
            if isinstance(fields.get(key), str):
                return " ".join(fields[key].split())
    prose = text.split("```", 1)[0].split("{", 1)[0]
    return " ".join(prose.split())


# ---------------------------------------------------------------- judging


@dataclass(frozen=True)
class JudgeItem:
    question: str
    gold: str
    prediction: str
    task: str | None = None
    """A LongMemEval rule (`prompts.judge_longmemeval.TASKS`); None: the generous LoCoMo judge."""

    @property
    def prompt_version(self) -> str:
        return judge_prompt.VERSION if self.task is None else judge_longmemeval.prompt_version(self.task)

    def render(self) -> list[Message]:
        if self.task is None:
            return judge_prompt.render(self.question, self.gold, self.prediction)
        return judge_longmemeval.render(self.task, self.question, self.gold, self.prediction)


@dataclass(frozen=True)
class JudgeResult:
    label: Label | None
    reasoning: str
    raw_output: str
    model: str  # the judge generator's name
    prompt_version: str
    cached: bool  # True when read from the cache instead of generated in this call
    error: str | None = None  # set (and label None) when the output had no readable label

    @property
    def correct(self) -> bool | None:
        """None for a failed judgement: the harness must count failures, not score them as wrong."""
        return None if self.label is None else self.label == "CORRECT"


_SCHEMA = """CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    question TEXT NOT NULL,
    gold TEXT NOT NULL,
    prediction TEXT NOT NULL,
    label TEXT NOT NULL,
    reasoning TEXT NOT NULL,
    raw_output TEXT NOT NULL
)"""


def cache_key(model: str, prompt_version: str, item: JudgeItem) -> str:
    """sha256 of the JSON list of the five inputs (JSON, so no separator can make two inputs collide)."""
    fields = [model, prompt_version, item.question, item.gold, item.prediction]
    return hashlib.sha256(json.dumps(fields).encode("ascii")).hexdigest()


class Judge:
    """Labels predictions CORRECT/WRONG with any `Generator`, batching and caching the judgements."""

    def __init__(
        self,
        generator: Generator,
        *,
        cache_path: Path | None = None,
        max_new_tokens: int = 128,
        batch_size: int = 16,
    ) -> None:
        """`cache_path`: SQLite file of parsed judgements (None: no cache). `max_new_tokens`: one sentence
        plus the JSON fit in 128. `batch_size`: prompts per `generate` call, and per cache commit."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.generator = generator
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        self.batch_size = batch_size

    @property
    def model(self) -> str:
        return self.generator.name

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        """One result per item, in order. Cached judgements cost nothing; identical items in one call
        are generated once. Each batch's parsed judgements are committed before the next batch runs,
        so an interrupted run keeps what it paid for."""
        keys = [cache_key(self.model, item.prompt_version, item) for item in items]
        by_key = dict(zip(keys, items, strict=True))
        with self._connect() as conn:
            results = self._lookup(conn, by_key) if conn is not None else {}
            pending = [key for key in by_key if key not in results]
            for start in range(0, len(pending), self.batch_size):
                batch = pending[start : start + self.batch_size]
                fresh = dict(zip(batch, self._judge_batch([by_key[key] for key in batch]), strict=True))
                if conn is not None:
                    self._store(conn, {key: (by_key[key], r) for key, r in fresh.items()})
                results.update(fresh)
        return [results[key] for key in keys]

    def _judge_batch(self, items: list[JudgeItem]) -> list[JudgeResult]:
        prompts = [i.render() for i in items]
        generations = self.generator.generate(prompts, self.config)
        if len(generations) != len(prompts):
            raise GenerationError(f"judge backend gave {len(generations)} outputs for {len(prompts)} prompts")
        results = []
        for item, generation in zip(items, generations, strict=True):
            parsed = parse_judgement(generation.text)
            results.append(
                JudgeResult(parsed.label, parsed.reasoning, generation.text, self.model,
                            item.prompt_version, cached=False, error=parsed.error)
            )
        return results

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection | None]:
        if self.cache_path is None:
            yield None
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.cache_path)) as conn:
            conn.execute(_SCHEMA)
            conn.commit()
            yield conn

    def _lookup(self, conn: sqlite3.Connection, by_key: dict[str, JudgeItem]) -> dict[str, JudgeResult]:
        found = {}
        for key in by_key:
            row = conn.execute(
                "SELECT label, reasoning, raw_output, model, prompt_version FROM judgements WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None:
                label, reasoning, raw, model, version = row
                found[key] = JudgeResult(label, reasoning, raw, model, version, cached=True)
        return found

    def _store(self, conn: sqlite3.Connection, fresh: dict[str, tuple[JudgeItem, JudgeResult]]) -> None:
        rows = [
            (key, r.model, r.prompt_version, item.question, item.gold, item.prediction, r.label, r.reasoning,
             r.raw_output)
            for key, (item, r) in fresh.items()
            if r.label is not None  # garbage is retried next run, never frozen into the cache
        ]
        conn.executemany("INSERT OR REPLACE INTO judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
