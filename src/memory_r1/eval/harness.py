"""`memory-r1 eval`: run one system over a LoCoMo split and score it the way the field does.

Per conversation: build (or resume, or reuse) the bank, answer the questions in batches, score each answer
(F1, BLEU-1, EM; the judge when given), and append one row per question to `results.jsonl` as soon as its
batch is done. A rerun with the same output directory skips every row already written, so an interrupted
evaluation resumes where it stopped and never pays twice for an answer (the judge has its own cache).
`summary.json` is computed from all rows at the end: micro-averages over categories 1-4 with bootstrap 95%
confidence intervals, per-category tables under both label conventions, per-seed means and their spread,
operation statistics from the banks' turn logs, latency percentiles and tokens per call per stage.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from memory_r1 import __version__
from memory_r1.data import select_sessions, split_conversations
from memory_r1.eval.judge import Judge, JudgeItem, JudgeResult
from memory_r1.eval.metrics import score_answer
from memory_r1.eval.records import (
    FORMAT,
    OPERATIONS,
    ByCategory,
    CategoryScores,
    Corrected,
    JudgeRecord,
    JudgeSummary,
    MetricScores,
    OperationStats,
    Percentiles,
    ResultRow,
    RunInfo,
    RunSummary,
    SeedSpread,
    StageTokens,
    Stat,
)
from memory_r1.eval.stats import mean_std, percentiles, summarize
from memory_r1.eval.systems import ConcurrentPreparation, EvalSystem
from memory_r1.pipeline import TurnRecord
from memory_r1.prompts import judge_longmemeval
from memory_r1.records import Category, Conversation, QAItem

METRICS = ("f1", "bleu1", "em")
T = TypeVar("T")


class ResultsDirError(ValueError):
    """An output directory holds another run (other system, split or format): resuming would mix them."""


@dataclass(frozen=True)
class EvalConfig:
    split: str = "val"
    """The paper's split: train (conv-26), val (conv-30), test (the other eight), or all."""
    seeds: tuple[int, ...] = (0,)
    """Several seeds repeat a sampled run (needs temperature > 0 in the answer config); greedy needs one."""
    batch_size: int = 8
    """Questions answered per generation call."""
    limit: int | None = None
    """At most this many questions per conversation (smoke runs)."""
    conversations: tuple[str, ...] | None = None
    """A subset of the split's conversations."""
    sessions: str | None = None
    """Only these sessions ("1-4") and the questions whose evidence they hold. Ingestion is in turn order, so
    the bank is a prefix of the full one and is shared with (and resumed by) a full run."""
    corrections: dict[tuple[str, int], str] = field(default_factory=dict)
    """(sample_id, qa index) -> corrected gold answer, for the corrected-labels view."""
    dataset: str = "locomo"
    """"locomo", "longmemeval" or "msc" (`memory_r1.data.DATASETS`); only LoCoMo has the paper's split."""
    concurrent_conversations: int = 8
    """Banks of this many conversations are built at once, their model calls batched together (each bank
    still sees its own decisions in order). Our choice: 8, the test split's size and the transformers
    backend's batch; 1 ingests one conversation after another."""


@dataclass
class Callbacks:
    """Progress hooks for a UI; the harness itself prints nothing."""

    on_conversation: Callable[[str, int, int], None] = lambda sample_id, turns, questions: None
    on_turn: Callable[[], None] = lambda: None
    on_questions: Callable[[int], None] = lambda n: None
    on_prepare: Callable[[int, int], None] = lambda conversations, turns: None
    """Before banks are built concurrently: how many conversations and turns."""


def run_eval(
    system: EvalSystem,
    conversations: Sequence[Conversation],
    config: EvalConfig,
    out_dir: Path,
    *,
    banks_dir: Path,
    judge: Judge | None = None,
    command: str = "",
    callbacks: Callbacks | None = None,
) -> RunSummary:
    callbacks = callbacks or Callbacks()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat()
    _check_or_write_run(out_dir, system, config)
    results_path = out_dir / "results.jsonl"
    _drop_torn_tail(results_path)
    done = {row.key for row in read_results(results_path)}
    start = time.perf_counter()

    selected = _select(conversations, config)
    if isinstance(system,
                  ConcurrentPreparation) and config.concurrent_conversations > 1 and len(selected) > 1:
        callbacks.on_prepare(len(selected), sum(len(c.turns) for c in selected))
        for i in range(0, len(selected), config.concurrent_conversations):
            system.prepare_many(selected[i : i + config.concurrent_conversations], banks_dir,
                                on_turn=lambda _turn: callbacks.on_turn())
    for conversation in selected:
        questions = _questions(conversation, config)
        callbacks.on_conversation(conversation.sample_id, len(conversation.turns),
                                  len(questions) * len(config.seeds))
        system.prepare(conversation, banks_dir, on_turn=lambda _turn: callbacks.on_turn())
        for seed in config.seeds:
            todo = [q for q in questions if _key(seed, q) not in done]
            callbacks.on_questions(len(questions) - len(todo))
            for batch in _batches(todo, config.batch_size):
                rows = _answer_batch(system, conversation, batch, seed, config, judge)
                _append(results_path, rows)
                callbacks.on_questions(len(batch))

    rows = read_results(results_path)
    summary = summarize_run(rows, system, config, judge, conversations=_select(conversations, config))
    summary = replace(summary, run=RunInfo(
        system=system.name,
        split=config.split,
        seeds=list(config.seeds),
        started_at=started,
        finished_at=datetime.now(timezone.utc).isoformat(),
        wall_s=round(time.perf_counter() - start, 1),
        command=command,
        banks_dir=str(banks_dir),
    ))
    (out_dir / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    return summary


# ---------------------------------------------------------------- answering and scoring


def _answer_batch(
    system: EvalSystem, conversation: Conversation, batch: list[QAItem], seed: int, config: EvalConfig,
    judge: Judge | None,
) -> list[ResultRow]:
    answers = system.answer(conversation, batch, seed if len(config.seeds) > 1 else None)
    golds = [str(q.answer) for q in batch]
    corrected = [config.corrections.get((q.sample_id, q.index)) for q in batch]
    judged: list[JudgeResult | None] = [None] * len(batch)
    judged_corrected: list[JudgeResult | None] = [None] * len(batch)
    judge_s = 0.0
    if judge is not None:
        t0 = time.perf_counter()
        items = [
            JudgeItem(q.question, g, a.answer, _judge_task(q))
            for q, g, a in zip(batch, golds, answers, strict=True)
        ]
        fixes = [
            (i, JudgeItem(q.question, c, answers[i].answer))
            for i, (q, c) in enumerate(zip(batch, corrected, strict=True))
            if c
        ]
        results = judge.judge(items + [item for _, item in fixes])
        judged = list(results[: len(batch)])
        for (i, _), result in zip(fixes, results[len(batch):], strict=True):
            judged_corrected[i] = result
        judge_s = (time.perf_counter() - t0) / len(batch)
    rows = []
    for i, (q, answer) in enumerate(zip(batch, answers, strict=True)):
        scores: MetricScores = _lexical(q, answer.answer, golds[i])
        if judged[i] is not None:
            scores["j"] = _j(judged[i])
        corrected_scores: MetricScores | None = None
        fixed = corrected[i]
        if fixed:
            corrected_scores = dict(score_answer(answer.answer, fixed))
            if judged_corrected[i] is not None:
                corrected_scores["j"] = _j(judged_corrected[i])
        rows.append(
            ResultRow(
                key=_key(seed, q),
                seed=seed,
                sample_id=q.sample_id,
                qa_index=q.index,
                category=int(q.category) if q.category is not None else None,
                question=q.question,
                gold=golds[i],
                prediction=answer.answer,
                scores=scores,
                selected_memory_ids=list(answer.selected_memory_ids),
                selected_memories=[
                    m.entry.text for m in answer.retrieved if m.entry.id in answer.selected_memory_ids
                ],
                retrieved=len(answer.retrieved),
                raw_output=answer.raw_output,
                parse_error=answer.parse_error,
                prompt_version=answer.prompt_version,
                latency_s={"search": answer.search_s, "answer": answer.usage.latency_s, "judge": judge_s},
                tokens={"prompt": answer.usage.prompt_tokens, "completion": answer.usage.completion_tokens},
                judge=_judge_record(judged[i]),
                corrected_gold=fixed or None,
                corrected_scores=corrected_scores,
                dataset=q.dataset,
                question_type=q.question_type,
                abstention=q.abstention,
            )
        )
    return rows


def _judge_task(q: QAItem) -> str | None:
    """LongMemEval questions are judged by their type's rule; LoCoMo and MSC by the generous judge."""
    return judge_longmemeval.task_for(q.question_type, q.abstention) if q.dataset == "longmemeval" else None


def _lexical(q: QAItem, prediction: str, gold: str) -> MetricScores:
    """F1 / BLEU-1 / EM against the gold answer. An abstention question's "answer" explains why nothing can
    be answered, so token overlap with it means nothing: those get no lexical scores (the judge grades
    them)."""
    if q.abstention:
        return dict.fromkeys(METRICS)
    return dict(score_answer(prediction, gold))


def _j(result: JudgeResult | None) -> float | None:
    return None if result is None or result.label is None else float(result.label == "CORRECT")


def _judge_record(result: JudgeResult | None) -> JudgeRecord | None:
    if result is None:
        return None
    return JudgeRecord(result.label, result.reasoning, result.raw_output, result.model, result.prompt_version,
                       result.cached, result.error)


# ---------------------------------------------------------------- summary


def summarize_run(rows: list[ResultRow], system: EvalSystem, config: EvalConfig, judge: Judge | None,
                  conversations: Sequence[Conversation]) -> RunSummary:
    metrics = METRICS + (("j",) if judge is not None else ())
    records = {c.sample_id: _records_of(system, c) for c in conversations}  # read each turn log once
    corrected = None
    if config.corrections:
        fixed = [replace(r, scores=r.corrected_scores) if r.corrected_scores is not None else r for r in rows]
        corrected = Corrected(overall=_scores(fixed, metrics), by_category=_by_category(fixed, metrics),
                              changed=sum(r.corrected_gold is not None for r in rows))
    judged = None
    if judge is not None:
        judged = JudgeSummary(model=judge.model, prompt_version=_judge_version(rows),
                              failures=sum(1 for r in rows if r.judge and r.judge.label is None))
    latency, tokens = _costs(rows, records, judged=judge is not None)
    return RunSummary(
        memory_r1_version=__version__,
        settings=system.settings(),
        questions=len({(r.sample_id, r.qa_index) for r in rows}),
        overall=_scores(rows, metrics),
        by_category=_by_category(rows, metrics),
        seeds=_seeds(rows, metrics),
        corrected=corrected,
        judge=judged,
        operations=_operations(records),
        latency_s=latency,
        tokens=tokens,
        per_question={r.key: {m: r.scores.get(m) for m in metrics} for r in rows},
        compute_s=_compute(rows, records),
        by_type=_by_type(rows, metrics) if any(r.question_type for r in rows) else None,
    )


def _by_type(rows: Sequence[ResultRow], metrics: Sequence[str]) -> dict[str, CategoryScores]:
    """LongMemEval's table: scores per question type, abstention questions also as their own row (they
    belong to a type too, as in the benchmark's own report)."""
    groups: dict[str, list[ResultRow]] = {}
    for r in rows:
        groups.setdefault(r.question_type or "unknown", []).append(r)
        if r.abstention:
            groups.setdefault("abstention", []).append(r)
    return {
        name: CategoryScores(_scores(subset, metrics), len(subset)) for name, subset in sorted(groups.items())
    }


def _compute(
    rows: list[ResultRow], records_by_conversation: dict[str, list[TurnRecord] | None]
) -> dict[str, float]:
    """Seconds spent per stage, summed over every row and turn on record: unlike `run.wall_s` (the last
    invocation only) it counts all the work of a run resumed across sessions. Ingest stages describe the
    bank, which a run that reuses a bank did not pay for."""
    records = [r for found in records_by_conversation.values() for r in (found or [])]
    totals = {stage: sum(r.latency_s[stage] for r in rows) for stage in ("search", "answer", "judge")}
    totals["extract"] = sum(r.extract.latency_s for r in records)
    totals["manage"] = sum(r.manage.latency_s for r in records if r.manage is not None)
    return {k: round(v, 1) for k, v in totals.items()}


def _records_of(system: EvalSystem, conversation: Conversation) -> list[TurnRecord] | None:
    """The turn log restricted to the evaluated turns (a shared bank may hold more of the conversation)."""
    found = system.turn_records(conversation.sample_id)
    if found is None:
        return None
    wanted = {t.dia_id for t in conversation.turns}
    return [r for r in found if r.dia_id in wanted]


def _scores(rows: Sequence[ResultRow], metrics: Sequence[str]) -> dict[str, Stat]:
    out = {}
    for metric in metrics:
        values = [v for r in rows if (v := r.scores.get(metric)) is not None]
        out[metric] = _stat(values)
    return out


def _stat(values: Sequence[float]) -> Stat:
    found = summarize(values)
    lo, hi = found["ci95"]
    return Stat(found["mean"], (lo, hi), found["n"])


def _by_category(rows: Sequence[ResultRow], metrics: Sequence[str]) -> ByCategory:
    tables: ByCategory = {"paper": {}, "locomo": {}}
    for category in (Category(c) for c in (1, 2, 3, 4)):
        subset = [r for r in rows if r.category == category]
        entry = CategoryScores(_scores(subset, metrics), len(subset))
        tables["paper"][category.paper_label] = entry
        tables["locomo"][category.locomo_label] = entry
    return tables


def _seeds(rows: Sequence[ResultRow], metrics: Sequence[str]) -> SeedSpread:
    per_seed: dict[str, dict[str, float | None]] = {}
    for seed in sorted({r.seed for r in rows}):
        subset = [r for r in rows if r.seed == seed]
        per_seed[str(seed)] = {m: _scores(subset, [m])[m].mean for m in metrics}
    spread = {m: mean_std([v for s in per_seed.values() if (v := s[m]) is not None]) for m in metrics}
    return SeedSpread(per_seed, {m: v["mean"] for m, v in spread.items()},
                      {m: v["std"] for m, v in spread.items()})


def _operations(records: dict[str, list[TurnRecord] | None]) -> OperationStats | None:
    if any(found is None for found in records.values()):
        return None  # a system without a Memory Manager
    every = [r for rs in records.values() for r in (rs or [])]
    ops: Counter[str] = Counter()
    for r in every:
        ops.update(r.operations)
    decisions = sum(r.manage is not None for r in every)
    unparsable = sum(r.unparsable for r in every)
    return OperationStats(
        counts={event: ops.get(event, 0) for event in OPERATIONS},
        rejected=sum(r.rejected for r in every),
        decisions=decisions,
        unparsable_decisions=unparsable,
        parse_failure_rate=unparsable / decisions if decisions else 0.0,
        extract_failures=sum(r.extract_error is not None for r in every),
        turns=len(every),
        bank_size={sid: _bank_sizes(rs or []) for sid, rs in records.items()},
    )


def _bank_sizes(records: list[TurnRecord]) -> list[list[int]]:
    """Total live memories (both speakers) after each turn."""
    latest: dict[str, int] = {}
    sizes = []
    for i, record in enumerate(records):
        latest[record.owner] = record.bank_size
        sizes.append([i + 1, sum(latest.values())])
    return sizes


def _costs(rows: list[ResultRow], records_by_conversation: dict[str, list[TurnRecord] | None],
           judged: bool) -> tuple[dict[str, Percentiles], dict[str, StageTokens]]:
    def timing(values: Sequence[float]) -> Percentiles:
        p = percentiles(values)
        return Percentiles(p["p50"], p["p95"], p["mean"], p["n"])

    latency = {"search": timing([r.latency_s["search"] for r in rows]),
               "answer": timing([r.latency_s["answer"] for r in rows])}
    tokens = {"answer": _per_call([(r.tokens["prompt"], r.tokens["completion"]) for r in rows])}
    if judged:
        latency["judge"] = timing([r.latency_s["judge"] for r in rows])
    records = [r for found in records_by_conversation.values() for r in (found or [])]
    usages = {"extract": [r.extract for r in records],
              "manage": [r.manage for r in records if r.manage is not None]}
    for stage, used in usages.items():
        if used:
            latency[stage] = timing([u.latency_s for u in used])
            tokens[stage] = _per_call([(u.prompt_tokens, u.completion_tokens) for u in used])
    return latency, tokens


def _per_call(pairs: list[tuple[int, int]]) -> StageTokens:
    n = len(pairs)
    return StageTokens(sum(p for p, _ in pairs) / n if n else 0.0, sum(c for _, c in pairs) / n if n else 0.0,
                       n)


def _judge_version(rows: list[ResultRow]) -> str:
    versions = {str(r.judge.prompt_version) for r in rows if r.judge}
    return ",".join(sorted(versions))


# ---------------------------------------------------------------- files


def read_results(path: Path) -> list[ResultRow]:
    """Rows of a results.jsonl; a torn last line (a crash mid-write) is ignored and will be redone."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            rows.append(ResultRow.from_json(data))
        except ValueError as error:
            raise ResultsDirError(f"{path}:{n}: {error}; use another --out directory") from None
    return rows


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left half-written by a crash, so the next append starts on a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _append(path: Path, rows: list[ResultRow]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row.to_json()) + "\n")
        f.flush()


def _check_or_write_run(out_dir: Path, system: EvalSystem, config: EvalConfig) -> None:
    """Refuse to resume into a directory written by another system, split, seeds or format."""
    path = out_dir / "run.json"
    identity: dict[str, object] = {"format": FORMAT, "system": system.name, "split": config.split,
                                   "seeds": list(config.seeds), "sessions": config.sessions}
    if config.dataset != "locomo":  # LoCoMo runs written before --dataset existed still resume
        identity["dataset"] = config.dataset
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultsDirError(
                f"{path} is not valid JSON ({error}); use another --out directory"
            ) from None
        mismatched = {k: (found.get(k), v) for k, v in identity.items() if found.get(k) != v}
        if mismatched:
            what = ", ".join(f"{k} {a!r} (asked {b!r})" for k, (a, b) in mismatched.items())
            raise ResultsDirError(f"{out_dir} holds another run: {what}; use another --out directory")
        return
    path.write_text(json.dumps({**identity, "memory_r1_version": __version__, "argv": sys.argv}, indent=2))


def _select(conversations: Sequence[Conversation], config: EvalConfig) -> list[Conversation]:
    chosen = split_conversations(conversations, config.split)
    if config.conversations:
        known = {c.sample_id for c in chosen}
        unknown = [c for c in config.conversations if c not in known]
        if unknown:
            raise ValueError(
                f"conversations {unknown} are not in split {config.split!r} ({', '.join(sorted(known))})"
            )
        chosen = [c for c in chosen if c.sample_id in config.conversations]
    if config.sessions:
        chosen = [select_sessions(c, config.sessions) for c in chosen]
    return chosen


def _questions(conversation: Conversation, config: EvalConfig) -> list[QAItem]:
    if conversation.qa and conversation.qa[0].dataset != "locomo":  # every question counts, abstention too
        return [q for q in conversation.qa if q.answer is not None][: config.limit or None]
    items = [q for q in conversation.qa if q.category != Category.ADVERSARIAL and q.answer is not None]
    return items[: config.limit] if config.limit else items


def _key(seed: int, q: QAItem) -> str:
    return f"{seed}/{q.sample_id}/{q.index}"


def _batches(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_corrections(path: Path, conversations: Sequence[Conversation]) -> dict[tuple[str, int], str]:
    """A JSON list of {"sample_id", "qa_index", "answer", "question"?}: corrected gold answers, reviewed by
    hand (never applied blindly from an audit). Each entry must name a category 1-4 question that exists;
    when "question" is given it must match the dataset's text, which catches off-by-one indices."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read corrections {path}: {error}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{path}: expected a JSON list of objects with sample_id, qa_index, answer")
    by_id = {c.sample_id: c for c in conversations}
    out = {}
    for i, d in enumerate(data):
        missing = [k for k in ("sample_id", "qa_index", "answer") if k not in d]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {', '.join(missing)}")
        conversation = by_id.get(str(d["sample_id"]))
        index = d["qa_index"]
        item = next((q for q in conversation.qa if q.index == index), None) if conversation else None
        if item is None:
            raise ValueError(
                f"{path}: entry {i} points at no question ({d['sample_id']!r}, qa_index {index!r})"
            )
        if "question" in d and d["question"] != item.question:
            raise ValueError(f"{path}: entry {i}: question text differs from {d['sample_id']} qa[{index}]")
        if item.category == Category.ADVERSARIAL:
            raise ValueError(f"{path}: entry {i}: {d['sample_id']} qa[{index}] is adversarial (category 5)")
        out[(item.sample_id, index)] = str(d["answer"])
    return out
