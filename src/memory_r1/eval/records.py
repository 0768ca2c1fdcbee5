"""Typed records for what an evaluation writes: one `ResultRow` per question in `results.jsonl`, one
`RunSummary` in `summary.json`. The harness builds them, the report and the CLI read them; files are only
ever read and written through `from_json` / `to_json`, so the format lives in one place.

`FORMAT` names the file format (`run.json` and `summary.json` carry it). `to_json` writes exactly the JSON
the harness has always written (same keys, same order), so files written before these records existed
re-load and re-serialise unchanged (tests prove it on the committed runs). `from_json` is tolerant of the
optional parts a summary may lack (older or hand-made ones: no run block, no CI, no seed spread) and raises
`ValueError` with a one-line reason for anything structurally wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = "memory-r1-eval/1"
OPERATIONS = ("ADD", "UPDATE", "DELETE", "NOOP")

Json = dict[str, Any]
MetricScores = dict[str, "float | None"]  # metric name -> score of one answer (None: not computed)


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object")
    return value


def _opt_obj(value: object, where: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where!r} must be an object or null")
    return value


def _num(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number")
    return float(value)


def _int(value: object, where: str) -> int | None:
    number = _num(value, where)
    return None if number is None or math.isnan(number) else int(number)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------- one question


@dataclass(frozen=True)
class JudgeRecord:
    """What the LLM judge said about one answer (label None: unreadable, a per-question failure)."""

    label: str | None
    reasoning: str | None
    raw_output: str | None
    model: str | None
    prompt_version: str | None
    cached: bool
    error: str | None

    def to_json(self) -> Json:
        return {
            "label": self.label,
            "reasoning": self.reasoning,
            "raw_output": self.raw_output,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "cached": self.cached,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JudgeRecord:
        return cls(
            d.get("label"),
            d.get("reasoning"),
            d.get("raw_output"),
            d.get("model"),
            d.get("prompt_version"),
            bool(d.get("cached", False)),
            d.get("error"),
        )


@dataclass(frozen=True)
class ResultRow:
    """One answered question, as appended to `results.jsonl` when its batch is done."""

    key: str  # "<seed>/<sample_id>/<qa_index>": what resuming skips
    seed: int
    sample_id: str
    qa_index: int
    category: int | None  # LoCoMo's category; None for LongMemEval and MSC
    question: str
    gold: str
    prediction: str
    scores: MetricScores
    selected_memory_ids: list[int]
    selected_memories: list[str]
    retrieved: int
    raw_output: str
    parse_error: str | None
    prompt_version: str
    latency_s: dict[str, float]  # search, answer, judge (seconds per question)
    tokens: dict[str, int]  # prompt, completion
    judge: JudgeRecord | None = None
    corrected_gold: str | None = None
    corrected_scores: MetricScores | None = None
    dataset: str = "locomo"  # written only for other benchmarks, so LoCoMo rows keep their exact JSON
    question_type: str | None = None  # LongMemEval's type
    abstention: bool = False  # LongMemEval "_abs" question

    def to_json(self) -> Json:
        row: Json = {
            "key": self.key,
            "seed": self.seed,
            "sample_id": self.sample_id,
            "qa_index": self.qa_index,
            "category": self.category,
            "question": self.question,
            "gold": self.gold,
            "prediction": self.prediction,
            "scores": dict(self.scores),
            "selected_memory_ids": list(self.selected_memory_ids),
            "selected_memories": list(self.selected_memories),
            "retrieved": self.retrieved,
            "raw_output": self.raw_output,
            "parse_error": self.parse_error,
            "prompt_version": self.prompt_version,
            "latency_s": dict(self.latency_s),
            "tokens": dict(self.tokens),
            "judge": self.judge.to_json() if self.judge else None,
        }
        if self.corrected_gold is not None:
            row["corrected_gold"] = self.corrected_gold
            row["corrected_scores"] = dict(self.corrected_scores or {})
        if self.dataset != "locomo":
            row.update(dataset=self.dataset, question_type=self.question_type, abstention=self.abstention)
        return row

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ResultRow:
        try:
            judge = d.get("judge")
            return cls(
                key=str(d["key"]),
                seed=int(d["seed"]),
                sample_id=str(d["sample_id"]),
                qa_index=int(d["qa_index"]),
                category=None if d["category"] is None else int(d["category"]),
                question=str(d["question"]),
                gold=str(d["gold"]),
                prediction=str(d["prediction"]),
                scores=dict(d["scores"]),
                selected_memory_ids=list(d.get("selected_memory_ids", [])),
                selected_memories=list(d.get("selected_memories", [])),
                retrieved=int(d.get("retrieved", 0)),
                raw_output=str(d.get("raw_output", "")),
                parse_error=d.get("parse_error"),
                prompt_version=str(d.get("prompt_version", "")),
                latency_s=dict(d["latency_s"]),
                tokens=dict(d["tokens"]),
                judge=JudgeRecord.from_json(judge) if isinstance(judge, Mapping) else None,
                corrected_gold=_str(d.get("corrected_gold")),
                corrected_scores=dict(d["corrected_scores"])
                if d.get("corrected_scores") is not None
                else None,
                dataset=str(d.get("dataset", "locomo")),
                question_type=_str(d.get("question_type")),
                abstention=bool(d.get("abstention", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed result row ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------- summary parts


@dataclass(frozen=True)
class Stat:
    """A mean with its 95% bootstrap interval over `n` values (`stats.summarize`)."""

    mean: float | None
    ci95: tuple[float, float] | None = None
    n: int | None = None

    def to_json(self) -> Json:
        return {"mean": self.mean, "ci95": list(self.ci95) if self.ci95 is not None else None, "n": self.n}

    @classmethod
    def from_json(cls, value: object, where: str) -> Stat:
        if not isinstance(value, Mapping) or isinstance(value.get("mean", ""), str):
            raise ValueError(f"{where} must be an object with a numeric 'mean'")
        mean = _num(value.get("mean"), f"{where}.mean")
        ci = value.get("ci95")
        pair = None
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            lo, hi = _num(ci[0], f"{where}.ci95"), _num(ci[1], f"{where}.ci95")
            pair = (math.nan if lo is None else lo, math.nan if hi is None else hi)
        return cls(mean, pair, _int(value.get("n"), f"{where}.n"))


def _scores_from(value: object, where: str) -> dict[str, Stat]:
    return {metric: Stat.from_json(stat, f"{where}.{metric}") for metric, stat in _obj(value, where).items()}


def _scores_to(scores: Mapping[str, Stat]) -> Json:
    return {metric: stat.to_json() for metric, stat in scores.items()}


@dataclass(frozen=True)
class CategoryScores:
    """One category's metrics and question count; in JSON the metrics sit beside "n"."""

    scores: dict[str, Stat]
    n: int | None

    def to_json(self) -> Json:
        return {**_scores_to(self.scores), "n": self.n}

    @classmethod
    def from_json(cls, value: object, where: str) -> CategoryScores:
        d = _obj(value, where)
        return cls(
            {k: Stat.from_json(v, f"{where}.{k}") for k, v in d.items() if k != "n"},
            _int(d.get("n"), f"{where}.n"),
        )


ByCategory = dict[str, dict[str, CategoryScores]]  # convention ("paper" | "locomo") -> label -> scores


def _by_category_from(value: object, where: str) -> ByCategory:
    tables: ByCategory = {}
    for convention, table in (_opt_obj(value, where) or {}).items():
        if table is None:
            continue
        if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
            raise ValueError(f"{where}.{convention} must map category labels to objects")
        tables[convention] = {
            label: CategoryScores.from_json(v, f"{where}.{convention}.{label}") for label, v in table.items()
        }
    return tables


def _by_category_to(tables: ByCategory) -> Json:
    return {
        convention: {label: c.to_json() for label, c in table.items()} for convention, table in tables.items()
    }


@dataclass(frozen=True)
class SeedSpread:
    """Per-seed means and their mean / sample std (None when the summary did not compute them)."""

    per_seed: dict[str, dict[str, float | None]]
    mean: dict[str, float | None] | None
    std: dict[str, float | None] | None

    def to_json(self) -> Json:
        return {"per_seed": self.per_seed, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SeedSpread:
        per_seed = _opt_obj(value.get("per_seed"), "seeds.per_seed") or {}
        return cls(
            {str(k): dict(_obj(v, f"seeds.per_seed.{k}")) for k, v in per_seed.items()},
            _opt_dict(value.get("mean"), "seeds.mean"),
            _opt_dict(value.get("std"), "seeds.std"),
        )


def _opt_dict(value: object, where: str) -> dict[str, Any] | None:
    found = _opt_obj(value, where)
    return None if found is None else dict(found)


@dataclass(frozen=True)
class Corrected:
    """Scores against hand-corrected gold answers; `changed` counts the questions whose gold differs."""

    overall: dict[str, Stat]
    by_category: ByCategory
    changed: int | None

    def to_json(self) -> Json:
        return {
            "overall": _scores_to(self.overall),
            "by_category": _by_category_to(self.by_category),
            "changed": self.changed,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Corrected:
        return cls(
            _scores_from(value.get("overall") or {}, "corrected.overall"),
            _by_category_from(value.get("by_category"), "corrected.by_category"),
            _int(value.get("changed"), "corrected.changed"),
        )


@dataclass(frozen=True)
class JudgeSummary:
    model: str | None
    prompt_version: str | None
    failures: int | None

    def to_json(self) -> Json:
        return {"model": self.model, "prompt_version": self.prompt_version, "failures": self.failures}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> JudgeSummary:
        return cls(
            _str(value.get("model")),
            _str(value.get("prompt_version")),
            _int(value.get("failures"), "judge.failures"),
        )


@dataclass(frozen=True)
class OperationStats:
    """The Memory Manager's work over the evaluated turns, from the banks' turn logs."""

    counts: dict[str, int]  # ADD / UPDATE / DELETE / NOOP as applied
    rejected: int | None = None
    decisions: int | None = None
    unparsable_decisions: int | None = None
    parse_failure_rate: float | None = None
    extract_failures: int | None = None
    turns: int | None = None
    bank_size: dict[str, list[list[int]]] = field(default_factory=dict)  # conversation -> [turn, live]

    def to_json(self) -> Json:
        return {
            **{op: self.counts.get(op, 0) for op in OPERATIONS},
            "rejected": self.rejected,
            "decisions": self.decisions,
            "unparsable_decisions": self.unparsable_decisions,
            "parse_failure_rate": self.parse_failure_rate,
            "extract_failures": self.extract_failures,
            "turns": self.turns,
            "bank_size": self.bank_size,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> OperationStats:
        def count(key: str) -> int | None:
            return _int(value.get(key), f"operations.{key}")

        bank = _opt_obj(value.get("bank_size"), "operations.bank_size") or {}
        return cls(
            {op: count(op) or 0 for op in OPERATIONS},
            count("rejected"),
            count("decisions"),
            count("unparsable_decisions"),
            _num(value.get("parse_failure_rate"), "parse_failure_rate"),
            count("extract_failures"),
            count("turns"),
            {str(k): [list(p) for p in v] for k, v in bank.items()},
        )


@dataclass(frozen=True)
class Percentiles:
    """Seconds per call of one stage (`stats.percentiles`)."""

    p50: float | None
    p95: float | None
    mean: float | None
    n: int | None

    def to_json(self) -> Json:
        return {"p50": self.p50, "p95": self.p95, "mean": self.mean, "n": self.n}

    @classmethod
    def from_json(cls, value: object, where: str) -> Percentiles:
        d = _obj(value, where)
        return cls(
            _num(d.get("p50"), where),
            _num(d.get("p95"), where),
            _num(d.get("mean"), where),
            _int(d.get("n"), where),
        )


@dataclass(frozen=True)
class StageTokens:
    prompt_per_call: float | None
    completion_per_call: float | None
    calls: int | None

    def to_json(self) -> Json:
        return {
            "prompt_per_call": self.prompt_per_call,
            "completion_per_call": self.completion_per_call,
            "calls": self.calls,
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> StageTokens:
        d = _obj(value, where)
        return cls(
            _num(d.get("prompt_per_call"), where),
            _num(d.get("completion_per_call"), where),
            _int(d.get("calls"), where),
        )


@dataclass(frozen=True)
class RunInfo:
    """What was run and when; `wall_s` covers only the last invocation of a resumed run."""

    system: str | None = None
    split: str | None = None
    seeds: list[int] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    wall_s: float | None = None
    command: str | None = None
    banks_dir: str | None = None

    def to_json(self) -> Json:
        return {
            "system": self.system,
            "split": self.split,
            "seeds": list(self.seeds),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_s": self.wall_s,
            "command": self.command,
            "banks_dir": self.banks_dir,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RunInfo:
        return cls(
            _str(value.get("system")),
            _str(value.get("split")),
            list(value.get("seeds") or []),
            _str(value.get("started_at")),
            _str(value.get("finished_at")),
            _num(value.get("wall_s"), "run.wall_s"),
            _str(value.get("command")),
            _str(value.get("banks_dir")),
        )


# ---------------------------------------------------------------- the summary


@dataclass(frozen=True)
class RunSummary:
    """`summary.json`: scores with CIs, per-category tables, seeds, costs and per-question scores."""

    overall: dict[str, Stat]
    format: str = FORMAT
    memory_r1_version: str | None = None
    settings: dict[str, Any] = field(
        default_factory=dict
    )  # the system's resolved settings, as it reports them
    questions: int | None = None
    by_category: ByCategory = field(default_factory=dict)
    seeds: SeedSpread | None = None
    corrected: Corrected | None = None
    judge: JudgeSummary | None = None
    operations: OperationStats | None = None  # None: a system without a Memory Manager
    latency_s: dict[str, Percentiles] = field(default_factory=dict)
    tokens: dict[str, StageTokens] = field(default_factory=dict)
    per_question: dict[str, MetricScores] | None = None  # row key -> scores, what paired differences read
    compute_s: dict[str, float] | None = None  # seconds per stage over every invocation
    run: RunInfo | None = None
    by_type: dict[str, CategoryScores] | None = None  # LongMemEval: per question type (and abstention)
    decisions: dict[str, Any] | None = None  # the manager on a labelled decision set (`eval --decisions`)

    def to_json(self) -> Json:
        out: Json = {
            "format": self.format,
            "memory_r1_version": self.memory_r1_version,
            "settings": self.settings,
            "questions": self.questions,
            "overall": _scores_to(self.overall),
            "by_category": _by_category_to(self.by_category),
            "seeds": self.seeds.to_json() if self.seeds else None,
            "corrected": self.corrected.to_json() if self.corrected else None,
            "judge": self.judge.to_json() if self.judge else None,
            "operations": self.operations.to_json() if self.operations else None,
            "latency_s": {stage: p.to_json() for stage, p in self.latency_s.items()},
            "tokens": {stage: t.to_json() for stage, t in self.tokens.items()},
        }
        if self.per_question is not None:
            out["per_question"] = self.per_question
        if self.compute_s is not None:
            out["compute_s"] = self.compute_s
        if self.run is not None:
            out["run"] = self.run.to_json()
        if self.by_type is not None:
            out["by_type"] = {name: c.to_json() for name, c in self.by_type.items()}
        if self.decisions is not None:
            out["decisions"] = self.decisions
        return out

    @classmethod
    def from_json(cls, value: object) -> RunSummary:
        if not isinstance(value, Mapping):
            raise ValueError("expected a JSON object")
        found = value.get("format", FORMAT)
        if found != FORMAT:
            raise ValueError(f"unsupported format {found!r} (expected {FORMAT!r})")
        parts = {
            key: _opt_obj(value.get(key), key)
            for key in (
                "run",
                "settings",
                "by_category",
                "seeds",
                "corrected",
                "judge",
                "operations",
                "latency_s",
                "tokens",
                "per_question",
                "compute_s",
                "by_type",
                "decisions",
            )
        }
        if not isinstance(value.get("overall"), Mapping):
            raise ValueError("missing 'overall' scores")
        seeds, corrected, judge, ops, run = (
            parts[k] for k in ("seeds", "corrected", "judge", "operations", "run")
        )
        per_question = parts["per_question"]
        return cls(
            overall=_scores_from(value["overall"], "overall"),
            format=FORMAT,
            memory_r1_version=_str(value.get("memory_r1_version")),
            settings=dict(parts["settings"] or {}),
            questions=_int(value.get("questions"), "questions"),
            by_category=_by_category_from(parts["by_category"], "by_category"),
            seeds=SeedSpread.from_json(seeds) if seeds is not None else None,
            corrected=Corrected.from_json(corrected) if corrected is not None else None,
            judge=JudgeSummary.from_json(judge) if judge is not None else None,
            operations=OperationStats.from_json(ops) if ops is not None else None,
            latency_s={
                k: Percentiles.from_json(v, f"latency_s.{k}") for k, v in (parts["latency_s"] or {}).items()
            },
            tokens={k: StageTokens.from_json(v, f"tokens.{k}") for k, v in (parts["tokens"] or {}).items()},
            per_question=None
            if per_question is None
            else {str(k): dict(_obj(v, f"per_question.{k}")) for k, v in per_question.items()},
            compute_s=None
            if parts["compute_s"] is None
            else {str(k): float(_num(v, f"compute_s.{k}") or 0.0) for k, v in parts["compute_s"].items()},
            run=RunInfo.from_json(run) if run is not None else None,
            by_type=None
            if parts["by_type"] is None
            else {str(k): CategoryScores.from_json(v, f"by_type.{k}") for k, v in parts["by_type"].items()},
            decisions=dict(parts["decisions"]) if parts["decisions"] is not None else None,
        )
