"""The typed evaluation records read every committed run and write it back byte for byte (as JSON)."""

import json
import math
from pathlib import Path

import pytest

from memory_r1.eval.records import ResultRow, RunSummary

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
COMMITTED = sorted(RESULTS.rglob("summary.json"))


def same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN (empty categories hold NaN means)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return (a == b and type(a) is type(b)) or (isinstance(a, (int, float)) and a == b)


def test_there_are_committed_runs_to_check():
    assert len(COMMITTED) >= 8


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_summaries_round_trip(path: Path):
    data = json.loads(path.read_text())
    typed = RunSummary.from_json(data)
    assert same(typed.to_json(), data)  # same keys in the same order, same values
    assert typed.questions == len({k.split("/", 1)[1] for k in typed.per_question or {}})
    assert typed.overall["f1"].n == typed.questions


def test_a_result_row_round_trips_and_keeps_the_corrected_view_optional():
    row = {
        "key": "0/conv-30/4",
        "seed": 0,
        "sample_id": "conv-30",
        "qa_index": 4,
        "category": 2,
        "question": "q?",
        "gold": "g",
        "prediction": "p",
        "scores": {"f1": 0.5, "bleu1": 0.2, "em": 0.0},
        "selected_memory_ids": ["m1"],
        "selected_memories": ["text"],
        "retrieved": 60,
        "raw_output": "raw",
        "parse_error": None,
        "prompt_version": "answer-v1",
        "latency_s": {"search": 0.01, "answer": 1.5, "judge": 0.0},
        "tokens": {"prompt": 900, "completion": 12},
        "judge": None,
    }
    assert ResultRow.from_json(row).to_json() == row
    fixed = {**row, "corrected_gold": "p", "corrected_scores": {"f1": 1.0, "bleu1": 1.0, "em": 1.0}}
    assert ResultRow.from_json(fixed).to_json() == fixed
    with pytest.raises(ValueError, match="malformed result row"):
        ResultRow.from_json({k: v for k, v in row.items() if k != "scores"})
