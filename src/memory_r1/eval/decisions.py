"""The Memory Manager decision benchmark: one fact, 0-3 existing memories, the correct event and target.

A case is scored on what the bank would get: the protocol's own parser turns the output into operations
(a rejected operation is a NOOP, as in ingestion), and the case's decision is the first UPDATE or DELETE
of a shown memory, else ADD if any ADD survived, else NOOP. It is correct when that event is the gold
one (or one of the case's `also` events, counted as the gold one) and, for UPDATE and DELETE, names the
gold memory. LoCoMo-derived cases store references only (CC BY-NC); their text is rebuilt here from the
user's LoCoMo file (`benchmarks/data/README.md` says how every case was built and labelled).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from memory_r1.agents.manager import ManagerConfig, generation_config, parse_decision, render_prompt
from memory_r1.data import DatasetError, load_locomo
from memory_r1.eval.stats import bootstrap_ci, summarize
from memory_r1.llm.base import Generator
from memory_r1.records import Conversation, Event, Operation

EVENTS = (Event.ADD, Event.UPDATE, Event.DELETE, Event.NOOP)
SPLITS = ("dev", "test", "all")
DEFAULT_CASES = Path("benchmarks/data/manager-decisions.jsonl")


@dataclass(frozen=True)
class DecisionCase:
    id: str
    split: str  # "dev" (choosing the protocol) or "test" (held out)
    source: str  # "locomo" (references, text rebuilt at load) or "synthetic" (our text)
    kind: str  # e.g. "add-new", "duplicate", "chatter", "refine", "contradict"
    labelled_by: str  # "hand" or "rule:<name>"
    event: Event
    also: tuple[Event, ...]  # other events counted as correct
    target: int | None  # index into `memories` of the memory the event acts on
    fact: str
    memories: tuple[str, ...]


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    kind: str
    gold: Event
    predicted: Event  # after mapping an `also` event to the gold one
    target_ok: bool | None  # None unless the gold event is UPDATE or DELETE and the event was right
    correct: bool
    rejections: tuple[str, ...]  # Rejection values of the operations the parser refused
    completion_tokens: int
    raw_output: str


# ---------------------------------------------------------------- cases


def load_cases(path: Path, locomo: Path | None = None, split: str = "all") -> list[DecisionCase]:
    """Read the benchmark; LoCoMo rows need the LoCoMo file (`locomo`), synthetic rows do not."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not JSON lines ({e})") from e
    rows = [r for r in rows if split == "all" or r.get("split") == split]
    conversations: dict[str, Conversation] = {}
    if any(r.get("source") == "locomo" for r in rows):
        if locomo is None:
            raise DatasetError(
                f"{path} has LoCoMo cases: pass the LoCoMo file (--data) to rebuild their text"
            )
        conversations = {c.sample_id: c for c in load_locomo(locomo)}
    return [_case(row, conversations, path) for row in rows]


def _case(row: dict, conversations: dict[str, Conversation], path: Path) -> DecisionCase:
    try:
        if row["source"] == "locomo":
            conversation = conversations[row["sample_id"]]
            turns = {t.dia_id: t.render() for t in conversation.turns}
            fact, memories = turns[row["fact_ref"]], tuple(turns[ref] for ref in row["memory_refs"])
        else:
            fact, memories = row["fact"], tuple(row["memories"])
        target = row.get("target")
        case = DecisionCase(row["id"], row["split"], row["source"], row["kind"], row["labelled_by"],
                            Event(row["event"]),
                            tuple(Event(e) for e in row.get("also", ())), target, fact, memories)
    except (KeyError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: bad case {str(row.get('id', '?'))[:40]}: {type(e).__name__} {e}") from e
    if target is not None and not 0 <= target < len(memories):
        raise DatasetError(f"{path}: case {case.id}: target {target} outside its {len(memories)} memories")
    return case


# ---------------------------------------------------------------- running


def decide(operations: Sequence[Operation]) -> tuple[Event, int | None]:
    """The case-level decision: first UPDATE/DELETE (with its memory), else ADD, else NOOP."""
    for op in operations:
        if op.event in (Event.UPDATE, Event.DELETE):
            return op.event, op.memory_id
    if any(op.event is Event.ADD for op in operations):
        return Event.ADD, None
    return Event.NOOP, None


def score_case(case: DecisionCase, operations: Sequence[Operation], raw_output: str,
               tokens: int) -> CaseResult:
    event, target = decide(operations)
    predicted = case.event if event in case.also else event
    target_ok = (
        (target == case.target)
        if predicted is case.event and case.event in (Event.UPDATE, Event.DELETE)
        else None
    )
    correct = predicted is case.event and target_ok is not False
    rejections = tuple(op.rejection.value for op in operations if op.rejection is not None)
    return CaseResult(case.id, case.kind, case.event, predicted, target_ok, correct, rejections, tokens,
                      raw_output)


def run_cases(
    generator: Generator,
    cases: Sequence[DecisionCase],
    config: ManagerConfig,
    *,
    batch_size: int = 16,
    on_batch: Callable[[list[CaseResult]], None] = lambda results: None,
) -> list[CaseResult]:
    """Prompt the manager once per case, `batch_size` prompts per `generate` call (the local backend pads a
    batch, so cases are sorted by prompt length first); `on_batch` sees each batch's results (resume)."""
    built = {c.id: render_prompt(config.prompt_version, list(enumerate(c.memories)), [c.fact]) for c in cases}
    ordered = sorted(cases, key=lambda c: sum(len(m["content"]) for m in built[c.id].messages))
    results: list[CaseResult] = []
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        gen_config = generation_config(config, built[batch[0].id])  # one schema per protocol
        generations = generator.generate([built[c.id].messages for c in batch], gen_config)
        batch_results = [score_case(case, parse_decision(built[case.id], g.text), g.text,
                                    g.usage.completion_tokens)
                         for case, g in zip(batch, generations, strict=True)]
        on_batch(batch_results)
        results += batch_results
    return results


# ---------------------------------------------------------------- scoring


def confusion(results: Sequence[CaseResult]) -> list[list[int]]:
    """Rows: gold event, columns: predicted event, both in `EVENTS` order."""
    index = {e: i for i, e in enumerate(EVENTS)}
    matrix = np.zeros((len(EVENTS), len(EVENTS)), dtype=int)
    for r in results:
        matrix[index[r.gold], index[r.predicted]] += 1
    return matrix.tolist()


def per_event(matrix: Sequence[Sequence[int]]) -> dict[str, dict[str, float]]:
    m = np.asarray(matrix, dtype=float)
    out = {}
    for i, event in enumerate(EVENTS):
        tp, predicted, support = m[i, i], m[:, i].sum(), m[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[event.value] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support),
                            "predicted": int(predicted)}
    return out


def macro_f1(results: Sequence[CaseResult]) -> float:
    """Mean F1 over the events that occur in the gold labels."""
    scores = per_event(confusion(results))
    present = [s["f1"] for s in scores.values() if s["support"]]
    return float(np.mean(present)) if present else float("nan")


def bootstrap_statistic(results: Sequence[CaseResult], statistic: Callable[[Sequence[CaseResult]], float],
                        resamples: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of any statistic of the cases, resampling cases."""
    if not results:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(results), size=(resamples, len(results)))
    values = [statistic([results[i] for i in row]) for row in idx]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def summarize_results(results: Sequence[CaseResult]) -> dict:
    """Every number `eval manager` reports, with 95% bootstrap CIs over cases where they are rates."""
    matrix = confusion(results)
    targeted = [r for r in results if r.target_ok is not None]
    reasons: Counter = Counter(code for r in results for code in r.rejections)
    cases_with: Counter = Counter(code for r in results for code in set(r.rejections))
    n = len(results)
    return {
        "n": n,
        "accuracy": summarize([float(r.correct) for r in results]),
        "event_accuracy": summarize([float(r.predicted is r.gold) for r in results]),
        "macro_f1": {"mean": macro_f1(results), "ci95": bootstrap_statistic(results, macro_f1)},
        "target_accuracy": summarize([float(bool(r.target_ok)) for r in targeted]),
        "per_event": per_event(matrix),
        "confusion": {"labels": [e.value for e in EVENTS], "matrix": matrix},
        "rejections": {
            "any": summarize([float(bool(r.rejections)) for r in results]),
            "by_reason": {code: {"operations": reasons[code], "case_rate": cases_with[code] / n if n else 0.0}
                          for code in sorted(reasons)},
        },
        "by_kind": {kind: summarize([float(r.correct) for r in results if r.kind == kind])
                    for kind in sorted({r.kind for r in results})},
        "completion_tokens_mean": float(np.mean([r.completion_tokens for r in results])) if results else 0.0,
        "cases": [{"id": r.case_id, "gold": r.gold.value, "predicted": r.predicted.value,
                   "correct": int(r.correct)}
                  for r in sorted(results, key=lambda r: r.case_id)],
    }


def paired_difference(a: dict, b: dict) -> dict:
    """Accuracy of run `b` minus run `a` on the cases both scored, with a paired bootstrap CI."""
    left = {c["id"]: c["correct"] for c in a["cases"]}
    diffs = [c["correct"] - left[c["id"]] for c in b["cases"] if c["id"] in left]
    lo, hi = bootstrap_ci(diffs)
    return {"mean": float(np.mean(diffs)) if diffs else float("nan"), "ci95": [lo, hi], "n": len(diffs)}


# ---------------------------------------------------------------- run directories


def evaluate_protocol(
    generator: Generator,
    cases: Sequence[DecisionCase],
    config: ManagerConfig,
    out_dir: Path,
    *,
    run_info: dict,
    batch_size: int = 16,
    on_batch: Callable[[int], None] = lambda n: None,
) -> dict:
    """Run (or resume) one protocol in `out_dir`: cases.jsonl (raw outputs, local only: they may quote
    LoCoMo) and summary.json (numbers and case ids only, safe to commit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {**run_info, "model": generator.name, "prompt_version": config.prompt_version,
            "structured_output": config.structured_output, "max_new_tokens": config.max_new_tokens}
    run_path = out_dir / "run.json"
    if run_path.exists() and json.loads(run_path.read_text()) != info:
        raise ValueError(f"{out_dir} holds another run ({run_path}); use another --out")
    run_path.write_text(json.dumps(info, indent=2))
    rows_path = out_dir / "cases.jsonl"
    wanted = {c.id for c in cases}
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from an interrupted run
                continue
            if row["case_id"] in wanted:
                done[row["case_id"]] = _result(row)
    on_batch(len(done))

    def append(batch: list[CaseResult]) -> None:
        with rows_path.open("a") as f:
            f.writelines(json.dumps(_row(r)) + "\n" for r in batch)
        on_batch(len(batch))

    start = time.perf_counter()
    todo = [c for c in cases if c.id not in done]
    results = list(done.values()) + run_cases(generator, todo, config, batch_size=batch_size, on_batch=append)
    summary = {"run": {**info, "wall_s": round(time.perf_counter() - start, 1)}, **summarize_results(results)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _row(result: CaseResult) -> dict:
    row = asdict(result)
    row.update(gold=result.gold.value, predicted=result.predicted.value, rejections=list(result.rejections))
    return row


def _result(row: dict) -> CaseResult:
    return CaseResult(**{**row, "gold": Event(row["gold"]), "predicted": Event(row["predicted"]),
                         "rejections": tuple(row["rejections"])})
