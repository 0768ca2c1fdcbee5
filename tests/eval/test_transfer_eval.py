"""Transfer evaluation: LongMemEval's per-type judge rules and abstention scoring, and `memory-r1 eval
--dataset longmemeval|msc` end to end on the fixture files with the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_r1.agents import AnswerConfig
from memory_r1.cli import app
from memory_r1.data import load_longmemeval, load_msc
from memory_r1.eval.harness import EvalConfig, read_results, run_eval
from memory_r1.eval.judge import Judge, JudgeItem
from memory_r1.eval.systems import PipelineSystem
from memory_r1.prompts import judge_longmemeval

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"
LME = FIXTURES / "longmemeval_fixture.json"
MSC = FIXTURES / "msc_fixture.jsonl"


def test_each_task_gets_its_own_rule_and_version() -> None:
    assert judge_longmemeval.task_for("temporal-reasoning", False) == "temporal-reasoning"
    assert judge_longmemeval.task_for("temporal-reasoning",
                                      True) == "abstention"  # abstention cuts across types
    assert judge_longmemeval.task_for("multi-session", False) == "default"
    systems = {t: judge_longmemeval.render(t, "q", "r", "a")[0]["content"] for t in judge_longmemeval.TASKS}
    assert len(set(systems.values())) == len(systems)
    assert "off by one" in systems["temporal-reasoning"] and "off by one" not in systems["default"]
    assert "latest value" in systems["knowledge-update"]
    assert "cannot answer" in systems["abstention"]
    assert judge_longmemeval.render("single-session-preference", "q", "r",
                                    "a")[1]["content"].startswith("Question: q\nRubric: r")
    with pytest.raises(ValueError, match="unknown LongMemEval judge task"):
        judge_longmemeval.render("trivia", "q", "r", "a")


def test_judge_caches_per_rule(tmp_path: Path, scripted) -> None:
    generator = scripted(lambda m: 'Fine.\n{"label": "CORRECT"}')
    judge = Judge(generator, cache_path=tmp_path / "cache.db")
    items = [JudgeItem("q", "g", "p"), JudgeItem("q", "g", "p", "temporal-reasoning"),
             JudgeItem("q", "g", "p", "abstention")]
    results = judge.judge(items)
    assert generator.calls == 3  # same texts, three rules: three judgements
    assert [r.prompt_version for r in results] == ["judge-v2", "judge-longmemeval-v1/temporal-reasoning",
                                                   "judge-longmemeval-v1/abstention"]
    assert all(r.cached for r in judge.judge(items)) and generator.calls == 3


def _abstention_only_judge(messages) -> str:
    """CORRECT exactly when graded by the abstention rule: shows which rule each question reached."""
    return '{"label": "CORRECT"}' if "does NOT contain" in messages[0]["content"] else '{"label": "WRONG"}'


def test_longmemeval_rows_scores_and_table(tmp_path: Path, scripted, make_system) -> None:
    seen: list[str] = []
    base = scripted().reply  # conftest's reference script: extracts each line, ADDs every new fact

    def reply(messages) -> str:
        content = messages[-1]["content"]
        if content.startswith(("Chat date:", "Current memories:", "Memories:\n")):
            return base(messages)
        seen.append(content)
        return "[1] a memory\n**Answer:** Teal"

    agents = make_system(scripted(reply))
    agents.answerer.config = AnswerConfig(distill=True)
    conversations = load_longmemeval(LME)
    judge = Judge(scripted(_abstention_only_judge))
    summary = run_eval(PipelineSystem("memory-r1", agents.agents), conversations,
                       EvalConfig(split="all", dataset="longmemeval"),
                       tmp_path / "run", banks_dir=tmp_path / "banks", judge=judge)
    rows = {r.sample_id: r for r in read_results(tmp_path / "run" / "results.jsonl")}
    assert set(rows) == {"fx0001", "fx0002", "fx0003_abs", "fx0004"}  # the abstention question is evaluated
    assert rows["fx0001"].scores == {"f1": 1.0, "bleu1": pytest.approx(1.0), "em": 1.0, "j": 0.0}
    assert rows["fx0003_abs"].scores == {"f1": None, "bleu1": None, "em": None, "j": 1.0}
    assert rows["fx0003_abs"].judge.prompt_version == "judge-longmemeval-v1/abstention"
    assert rows["fx0002"].judge.prompt_version == "judge-longmemeval-v1/temporal-reasoning"
    assert rows["fx0003_abs"].abstention and rows["fx0001"].question_type == "single-session-user"
    assert rows["fx0001"].category is None
    assert summary.overall["f1"].n == 3 and summary.overall["j"].n == 4
    by_type = summary.by_type or {}
    assert {k: v.n for k, v in by_type.items()} == {"abstention": 1, "knowledge-update": 1,
                                                       "single-session-user": 2, "temporal-reasoning": 1}
    assert (
        by_type["abstention"].scores["j"].mean == 1.0
        and by_type["single-session-user"].scores["j"].mean == 0.5
    )
    assert any("(Asked on 2023/06/12 (Mon) 09:15) What colour is my new bicycle?" in p for p in seen)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dataset"] == "longmemeval"


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(("dataset", "data", "questions"), [("longmemeval", LME, 4), ("msc", MSC, 2)])
def test_eval_cli_end_to_end_on_fixture_with_tiny_model(dataset, data, questions, tmp_path: Path) -> None:
    result = cli("eval", "--dataset", dataset, "--data", data, "--model", "tiny-random", "--embedding-model",
                 "hashing", "--out", tmp_path / "run", "--banks", tmp_path / "banks")
    assert result.exit_code == 0, result.output
    rows = read_results(tmp_path / "run" / "results.jsonl")
    assert len(rows) == questions and all(r.dataset == dataset for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["questions"] == questions and summary["run"]["split"] == "all"
    loaded = load_longmemeval(data) if dataset == "longmemeval" else load_msc(data)
    assert summary["operations"]["turns"] == sum(
        len(c.turns) for c in loaded
    )  # every turn went through the manager
    if dataset == "longmemeval":
        assert "by type" in result.output and "abstention" in result.output
    again = cli("eval", "--dataset", dataset, "--data", data, "--model", "tiny-random", "--embedding-model",
                "hashing", "--out", tmp_path / "run", "--banks", tmp_path / "banks")
    assert (
        again.exit_code == 0 and len(read_results(tmp_path / "run" / "results.jsonl")) == questions
    )  # resumed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "squad"], "unknown dataset 'squad'"),
        (["--dataset", "longmemeval", "--data", str(LME), "--split", "test"], "is a LoCoMo split"),
        (["--dataset", "msc", "--data", str(MSC), "--variant", "s"], "--variant is for longmemeval"),
        (["--dataset", "longmemeval", "--data", "/nonexistent/lme.json"], "/nonexistent/lme.json"),
    ],
)
def test_eval_cli_transfer_bad_input(args, message, tmp_path: Path) -> None:
    result = cli("eval", *args, "--model", "tiny-random", "--embedding-model", "hashing", "--out",
                 tmp_path / "o")
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
