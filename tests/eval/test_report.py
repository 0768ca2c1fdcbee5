"""The Markdown report and its plots, from two realistic run directories: Memory-R1 and a RAG baseline."""

import json
import math
from pathlib import Path

import pytest

from memory_r1.eval.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def stat(mean: float, lo: float, hi: float, n: int) -> dict:
    return {"mean": mean, "ci95": [lo, hi], "n": n}


def scores(n: int, **metrics: tuple[float, float, float]) -> dict:
    """{metric: stat(mean, lo, hi, n)}, as `summarize` writes them."""
    return {name: stat(*triple, n) for name, triple in metrics.items()}


def memory_r1_summary() -> dict:
    """Validation split (conv-30: 81 questions, no category 3), judged, two seeds, with operations."""
    single = scores(11, f1=(0.350, 0.210, 0.490), bleu1=(0.280, 0.150, 0.410), em=(0.091, 0.0, 0.273),
                    j=(0.545, 0.273, 0.818))
    temporal = scores(26, f1=(0.300, 0.200, 0.400), bleu1=(0.250, 0.160, 0.340), em=(0.077, 0.0, 0.192),
                      j=(0.462, 0.269, 0.654))
    open_domain = scores(44, f1=(0.500, 0.450, 0.550), bleu1=(0.430, 0.380, 0.480), em=(0.227, 0.114, 0.341),
                         j=(0.705, 0.568, 0.841))
    overall = scores(81, f1=(0.412, 0.380, 0.445), bleu1=(0.351, 0.320, 0.383), em=(0.160, 0.086, 0.235),
                     j=(0.605, 0.500, 0.710))
    corrected = scores(81, f1=(0.431, 0.399, 0.463), bleu1=(0.370, 0.338, 0.401), em=(0.173, 0.099, 0.247),
                       j=(0.630, 0.519, 0.728))
    return {
        "format": "memory-r1-eval/1",
        "memory_r1_version": "0.1.0",
        "run": {"system": "memory-r1", "split": "val", "seeds": [0, 1],
                "started_at": "2025-09-01T10:00:00+00:00", "finished_at": "2025-09-01T10:42:10+00:00",
                "wall_s": 2530.4,
                "command": "memory-r1 eval --system memory-r1 --split val --seeds 0 1 --judge qwen2.5-7b"},
        "settings": {"model": "SmolLM2-360M-Instruct", "embedding_model": "all-MiniLM-L6-v2", "top_k": 60,
                     "prompts": {"extract": "extract-v2", "manage": "manage-v3", "answer": "answer-v2"}},
        "questions": 81,
        "overall": overall,
        "by_category": {
            "paper": {"Single Hop": {**single, "n": 11}, "Temporal": {**temporal, "n": 26},
                      "Open Domain": {**open_domain, "n": 44}},
            "locomo": {"multi-hop": {**single, "n": 11}, "temporal": {**temporal, "n": 26},
                       "single-hop": {**open_domain, "n": 44}},
        },
        "seeds": {"per_seed": {"0": {"f1": 0.400, "bleu1": 0.340, "em": 0.148, "j": 0.593},
                               "1": {"f1": 0.424, "bleu1": 0.362, "em": 0.174, "j": 0.617}},
                  "mean": {"f1": 0.412, "bleu1": 0.351, "em": 0.161, "j": 0.605},
                  "std": {"f1": 0.017, "bleu1": 0.0156, "em": 0.0184, "j": 0.017}},
        "corrected": {"overall": corrected, "changed": 5,
                      "by_category": {"paper": {"Single Hop": {**single, "n": 11}}}},
        "judge": {"model": "qwen2.5-7b-instruct", "prompt_version": "judge-v1", "failures": 2},
        "operations": {"ADD": 120, "UPDATE": 30, "DELETE": 10, "NOOP": 40, "rejected": 3, "decisions": 200,
                       "unparsable_decisions": 6, "parse_failure_rate": 0.03, "extract_failures": 4,
                       "turns": 369, "bank_size": {"conv-30": [[0, 1], [100, 40], [200, 85], [368, 140]]}},
        "latency_s": {"extract": {"p50": 0.84, "p95": 2.10, "mean": 1.02, "n": 369},
                      "manage": {"p50": 1.30, "p95": 3.20, "mean": 1.55, "n": 200},
                      "search": {"p50": 0.004, "p95": 0.009, "mean": 0.005, "n": 162},
                      "answer": {"p50": 0.95, "p95": 1.80, "mean": 1.05, "n": 162},
                      "judge": {"p50": 0.40, "p95": 0.75, "mean": 0.45, "n": 162}},
        "tokens": {"extract": {"prompt_per_call": 412.5, "completion_per_call": 38.2, "calls": 369},
                   "manage": {"prompt_per_call": 1210.0, "completion_per_call": 95.1, "calls": 200},
                   "answer": {"prompt_per_call": 2450.0, "completion_per_call": 60.4, "calls": 162}},
    }


def rag_summary() -> dict:
    """A baseline without a memory manager or judge: one seed, nulls where it has nothing to say, only the
    paper's labels, and an explicit empty category (n = 0, nan scores) as `summarize([])` writes it."""
    single = scores(11, f1=(0.250, 0.130, 0.380), bleu1=(0.200, 0.100, 0.310), em=(0.0, 0.0, 0.0))
    temporal = scores(26, f1=(0.150, 0.080, 0.230), bleu1=(0.120, 0.060, 0.190), em=(0.038, 0.0, 0.115))
    open_domain = scores(44, f1=(0.400, 0.350, 0.450), bleu1=(0.340, 0.290, 0.390), em=(0.159, 0.068, 0.273))
    empty = scores(0, f1=(NAN, NAN, NAN), bleu1=(NAN, NAN, NAN), em=(NAN, NAN, NAN))
    return {
        "format": "memory-r1-eval/1",
        "memory_r1_version": "0.1.0",
        "run": {"system": "rag", "split": "val", "seeds": [0], "started_at": "2025-09-01T11:00:00+00:00",
                "finished_at": "2025-09-01T11:05:00+00:00", "wall_s": 300.0,
                "command": "memory-r1 eval --system rag --split val"},
        "settings": {"model": "SmolLM2-360M-Instruct", "top_k": 10},
        "questions": 81,
        "overall": scores(81, f1=(0.301, 0.270, 0.333), bleu1=(0.255, 0.226, 0.285),
                          em=(0.099, 0.037, 0.160)),
        "by_category": {"paper": {"Single Hop": {**single, "n": 11}, "Multi-Hop": {**empty, "n": 0},
                                  "Open Domain": {**open_domain, "n": 44},
                                  "Temporal": {**temporal, "n": 26}}},
        "seeds": {"per_seed": {"0": {"f1": 0.301, "bleu1": 0.255, "em": 0.099}}, "mean": None, "std": None},
        "corrected": None,
        "judge": None,
        "operations": None,
        "latency_s": {"search": {"p50": 0.003, "p95": 0.006, "mean": 0.004, "n": 81},
                      "answer": {"p50": 0.70, "p95": 1.40, "mean": 0.80, "n": 81}},
        "tokens": {"answer": {"prompt_per_call": 800.0, "completion_per_call": 55.0, "calls": 81}},
    }


def make_run(root: Path, name: str, summary: dict) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))  # nan as JSON's NaN extension
    return run_dir


@pytest.fixture
def report(tmp_path: Path) -> Path:
    runs = [make_run(tmp_path, "mr1-val", memory_r1_summary()), make_run(tmp_path, "rag-val", rag_summary())]
    return write_report(runs, tmp_path / "report")


def table_row(text: str, first_cell: str, after: str) -> str:
    """The first table line starting with `| first_cell |` after the heading line `after`."""
    tail = text[text.index(after):]
    return next(line for line in tail.splitlines() if line.startswith(f"| {first_cell} |"))


def test_overall_table_shows_percent_with_ci(report: Path):
    text = report.read_text()
    assert report.name == "report.md"
    assert "Split: **val** · memory-r1 0.1.0 · 2 run(s)" in text
    assert "`memory-r1 eval --system memory-r1 --split val --seeds 0 1 --judge qwen2.5-7b`" in text
    assert "| run | n | F1 | BLEU-1 | EM | J |\n|:---|---:|---:|---:|---:|---:|" in text  # numbers: right
    assert table_row(text, "memory-r1 (mr1-val)", "## Overall") == (
        "| memory-r1 (mr1-val) | 81 | 41.2 [38.0, 44.5] | 35.1 [32.0, 38.3] | 16.0 [8.6, 23.5] "
        "| 60.5 [50.0, 71.0] |")
    assert table_row(text, "rag (rag-val)", "## Overall") == (
        "| rag (rag-val) | 81 | 30.1 [27.0, 33.3] | 25.5 [22.6, 28.5] | 9.9 [3.7, 16.0] | – |")


def test_categories_use_paper_labels_and_order_first_then_locomo(report: Path):
    text = report.read_text()
    paper_header = "| run | Single Hop (1) | Multi-Hop (3) | Open Domain (4) | Temporal (2) | Overall |"
    locomo_header = "| run | multi-hop (1) | temporal (2) | open-domain (3) | single-hop (4) | Overall |"
    assert text.index("## By category, paper labels") < text.index(paper_header)
    assert text.index(paper_header) < text.index("## By category, LoCoMo labels") < text.index(locomo_header)
    # val has no category 3 (Multi-Hop): a dash, for the missing key and for the rag run's n = 0 entry alike
    assert table_row(text, "memory-r1 (mr1-val)", "## By category, paper labels") == (
        "| memory-r1 (mr1-val) | 35.0 [21.0, 49.0] | – | 50.0 [45.0, 55.0] | 30.0 [20.0, 40.0] "
        "| 41.2 [38.0, 44.5] |")
    assert table_row(text, "rag (rag-val)", "## By category, paper labels") == (
        "| rag (rag-val) | 25.0 [13.0, 38.0] | – | 40.0 [35.0, 45.0] | 15.0 [8.0, 23.0] "
        "| 30.1 [27.0, 33.3] |")
    # LoCoMo labels: the same numbers in id order; rag has only paper labels and falls back to them
    assert table_row(text, "memory-r1 (mr1-val)", "## By category, LoCoMo labels") == (
        "| memory-r1 (mr1-val) | 35.0 [21.0, 49.0] | 30.0 [20.0, 40.0] | – | 50.0 [45.0, 55.0] "
        "| 41.2 [38.0, 44.5] |")
    # counts: the absent key is unknown (a dash), the rag run's recorded n = 0 is shown as 0
    counts = "| memory-r1 (mr1-val) | 11 | – | 44 | 26 | 81 |"
    assert table_row(text, "memory-r1 (mr1-val)", "**Questions**") == counts
    assert table_row(text, "rag (rag-val)", "**Questions**") == "| rag (rag-val) | 11 | 0 | 44 | 26 | 81 |"


def test_published_reference_is_labelled_as_not_ours(report: Path):
    text = report.read_text()
    assert "## Published reference (not our runs)" in text
    assert "| Memory-R1-GRPO | 45.02 | 37.51 | 62.74 | 43.14 | 36.44 | 61.51 |" in text
    assert "| Mem0 | 30.41 | 22.22 | 45.68 | 30.61 | 23.55 | 53.30* |" in text
    assert "7-8B backbones" in text
    assert "Not comparable with these: memory-r1 (mr1-val), rag (rag-val) (not on the test split)." in text


def test_seeds_corrected_operations_costs_and_judge(report: Path):
    text = report.read_text()
    assert "| memory-r1 (mr1-val) | 2 | 41.2 ± 1.7 | 35.1 ± 1.6 | 16.1 ± 1.8 | 60.5 ± 1.7 |" in text
    assert "| memory-r1 (mr1-val) | 1 | 42.4 | 36.2 | 17.4 | 61.7 |" in text
    assert "rag (rag-val) | 1 |" not in text  # one seed: no spread to show
    assert "| memory-r1 (mr1-val) | 5 | 43.1 [39.9, 46.3] |" in text  # corrected labels, 5 answers changed
    assert ("| memory-r1 (mr1-val) | 120 (60.0%) | 30 (15.0%) | 10 (5.0%) | 40 (20.0%) | 3 | 6 / 200 | 3.0% "
            "| 4 | 369 | 140 |") in text
    assert "No memory operations recorded for: rag (rag-val)." in text
    assert "| memory-r1 (mr1-val) | search | 0.004 | 0.009 | 0.005 | 162 |" in text
    assert "| memory-r1 (mr1-val) | manage | 1,210 | 95 | 200 |" in text
    assert "| memory-r1 (mr1-val) | qwen2.5-7b-instruct | judge-v1 | 2 |" in text
    assert "| rag (rag-val) | no judge: J not computed | – | – |" in text
    assert "| `prompts.manage` | manage-v3 | – |" in text


def test_plots_are_valid_pngs_referenced_from_the_report(report: Path):
    text = report.read_text()
    for name in ("per_category.png", "operations.png", "bank_size.png", "latency.png"):
        png = report.parent / name
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
        assert f"]({name})" in text


def test_runs_without_operations_skip_those_plots(tmp_path: Path):
    run = make_run(tmp_path, "rag-val", rag_summary())
    report = write_report([run], tmp_path / "out")
    text = report.read_text()
    assert (tmp_path / "out" / "per_category.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "out" / "latency.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "out" / "operations.png").exists()
    assert not (tmp_path / "out" / "bank_size.png").exists()
    assert "## Memory operations" not in text and "operations.png" not in text
    assert "| run | n | F1 | BLEU-1 | EM |" in text  # no judge anywhere: no J column


def test_rewriting_a_report_drops_plots_that_no_longer_apply(tmp_path: Path):
    out = tmp_path / "out"
    write_report([make_run(tmp_path, "mr1", memory_r1_summary())], out)
    assert (out / "operations.png").exists()
    write_report([make_run(tmp_path, "rag", rag_summary())], out)
    assert not (out / "operations.png").exists() and not (out / "bank_size.png").exists()


def test_seed_spread_is_recomputed_when_the_summary_lacks_it(tmp_path: Path):
    summary = memory_r1_summary()
    summary["seeds"]["mean"] = summary["seeds"]["std"] = None
    text = write_report([make_run(tmp_path, "mr1", summary)], tmp_path / "out").read_text()
    # F1 seeds 0.400 and 0.424: mean 0.412, sample std |0.424 - 0.400| / sqrt(2) = 0.01697 -> 41.2 ± 1.7
    assert "| memory-r1 (mr1) | 2 | 41.2 ± 1.7 |" in text


def test_two_runs_of_one_system_do_not_collide(tmp_path: Path):
    runs = [make_run(tmp_path, "seed-a", memory_r1_summary()),
            make_run(tmp_path, "seed-b", memory_r1_summary()),
            make_run(tmp_path / "elsewhere", "seed-a", memory_r1_summary())]
    text = write_report(runs, tmp_path / "out").read_text()
    for name in ("memory-r1 (seed-a)", "memory-r1 (seed-b)", "memory-r1 (seed-a) #2"):
        assert f"| {name} | 81 | 41.2 [38.0, 44.5] |" in text


def test_paired_differences_use_only_shared_questions(tmp_path: Path):
    base, trained = memory_r1_summary(), memory_r1_summary()
    base["per_question"] = {"0/conv-30/1": {"f1": 0.2, "em": 0.0}, "0/conv-30/2": {"f1": 0.5, "em": 1.0},
                            "0/conv-30/3": {"f1": 0.1, "em": 0.0}}
    trained["per_question"] = {"0/conv-30/1": {"f1": 0.6, "em": 1.0}, "0/conv-30/2": {"f1": 0.5, "em": 1.0},
                               "0/conv-30/9": {"f1": 1.0, "em": 1.0}}  # question 9: not in the base run
    text = write_report([make_run(tmp_path, "base", base), make_run(tmp_path, "trained", trained)],
                        tmp_path / "out").read_text()
    # shared: questions 1 and 2; F1 deltas +0.4 and 0 -> mean +20.0, the CI spans the two values
    assert (
        "| memory-r1 (trained) | 2 | +20.0 [+0.0, +40.0] | +50.0 [+0.0, +100.0] |" in text
    )  # no BLEU-1 given
    assert "minus **memory-r1 (base)**" in text
    trained["compute_s"] = {"extract": 60.0, "manage": 600.0, "search": 0.6, "answer": 120.0, "judge": 0.0}
    text = write_report([make_run(tmp_path / "c", "trained", trained)], tmp_path / "out3").read_text()
    assert "| memory-r1 (trained) | 1.0 | 10.0 | 0.0 | 2.0 | 0.0 |" in text  # minutes, in STAGES order
    assert "| 0, 1 | 2530.4 | 13.0 |" in text  # header: last invocation's wall time, then total compute
    without = write_report([make_run(tmp_path / "b", "base", memory_r1_summary()),
                            make_run(tmp_path / "b", "trained", trained)], tmp_path / "out2").read_text()
    assert "Paired differences" not in without  # the base lacks per-question scores


def test_minimal_summary_with_absent_parts(tmp_path: Path):
    summary = {"format": "memory-r1-eval/1", "run": {"system": "rag", "split": "test"},
               "overall": {"f1": {"mean": 0.5, "ci95": None, "n": 2}}}
    text = write_report([make_run(tmp_path, "rag", summary)], tmp_path / "out").read_text()
    assert "| rag | – | 50.0 | – | – |" in text  # dir named like the system: no repetition
    assert "Not comparable" not in text  # on the test split
    del summary["run"]
    text = write_report([make_run(tmp_path, "no-run-block", summary)], tmp_path / "out2").read_text()
    assert "| no-run-block | – | 50.0 | – | – |" in text


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "cannot read summary"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "memory-r1-eval/9", "overall": {}}', "unsupported format"),
    ('{"format": "memory-r1-eval/1"}', "missing 'overall'"),
    ('{"overall": {"f1": 0.4}}', "overall.f1 must be an object"),
    ('{"overall": {"f1": {"mean": "0.4"}}}', "numeric 'mean'"),
    ('{"overall": {}, "operations": [1]}', "'operations' must be an object or null"),
])
def test_broken_summary_is_a_value_error_naming_the_file(tmp_path: Path, content: str, message: str):
    good = make_run(tmp_path, "good", rag_summary())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        write_report([good, bad], tmp_path / "out")
    assert str(bad / "summary.json") in str(err.value)


def test_missing_summary_is_a_value_error_naming_the_file(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not found") as err:
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert str(tmp_path / "empty" / "summary.json") in str(err.value)
    with pytest.raises(ValueError, match="no run directories"):
        write_report([], tmp_path / "out")


def test_fixture_is_realistic():
    """The fixture's overall n is the sum of its categories', as the harness writes it."""
    summary = memory_r1_summary()
    assert sum(c["n"] for c in summary["by_category"]["paper"].values()) == summary["questions"]
    assert math.isclose(sum(summary["operations"][o] for o in ("ADD", "UPDATE", "DELETE", "NOOP")), 200)
