"""The Memory Manager decision benchmark: the committed cases, the scoring, and `memory-r1 eval manager`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_r1.agents import ManagerConfig
from memory_r1.agents.manager import PROTOCOLS, render_prompt
from memory_r1.cli import app
from memory_r1.eval.decisions import (
    DecisionCase,
    confusion,
    decide,
    load_cases,
    per_event,
    run_cases,
    score_case,
    summarize_results,
)
from memory_r1.records import Event, Operation, Rejection

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "benchmarks" / "data" / "manager-decisions.jsonl"


def rows() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text().splitlines()]


def test_committed_locomo_rows_hold_references_only_and_splits_are_stratified() -> None:
    data = rows()
    assert len(data) >= 250 and len({r["id"] for r in data}) == len(data)
    for row in data:
        if row["source"] == "locomo":  # CC BY-NC: no text of the file may be committed
            assert not {"fact", "memories", "text"} & row.keys() and row["labelled_by"].startswith("rule:")
        else:
            assert row["labelled_by"] == "hand" and isinstance(row["fact"], str)
    for kind in {r["kind"] for r in data}:
        group = [r for r in data if r["kind"] == kind]
        dev = sum(r["split"] == "dev" for r in group)
        assert abs(dev - len(group) / 3) <= 1, kind  # a third of every kind is held back for choosing
    events = {r["event"] for r in data}
    assert events == {"ADD", "UPDATE", "DELETE", "NOOP"}


def test_cases_rebuild_from_locomo_and_the_build_rule_reproduces_the_file(locomo_path, tmp_path) -> None:
    cases = load_cases(CASES, locomo_path)
    assert len(cases) == len(rows())
    for case in cases:
        assert case.fact and (case.target is None or 0 <= case.target < len(case.memories))
        if case.kind == "duplicate":
            assert case.memories[case.target] == case.fact
    out = tmp_path / "rebuilt.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "build_decisions.py"), "--data",
                    str(locomo_path), "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    assert out.read_text() == CASES.read_text()


def test_locomo_rows_need_the_file_and_bad_rows_are_one_clear_error(tmp_path) -> None:
    from memory_r1.data import DatasetError

    with pytest.raises(DatasetError, match="pass the LoCoMo file"):
        load_cases(CASES)
    synthetic = load_cases(_write(tmp_path, [r for r in rows() if r["source"] == "synthetic"]))
    assert synthetic and all(c.source == "synthetic" for c in synthetic)
    bad = dict(rows()[-1], target=9)
    with pytest.raises(DatasetError, match="target 9 outside"):
        load_cases(_write(tmp_path, [bad]))
    with pytest.raises(DatasetError, match="bad case"):
        load_cases(_write(tmp_path, [dict(rows()[-1], event="MERGE")]))


def _write(tmp_path: Path, data: list[dict]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def case(event: Event, target: int | None = None, also: tuple[Event, ...] = (), n: int = 2,
         kind: str = "k") -> DecisionCase:
    return DecisionCase(f"c{event.value}{target}{kind}", "dev", "synthetic", kind, "hand", event, also,
                        target, "Sam moved to Denver.", tuple(f"memory {i}" for i in range(n)))


def test_case_decision_takes_the_first_change_then_add_then_noop() -> None:
    add, upd = Operation(Event.ADD, text="x"), Operation(Event.UPDATE, 1, "y")
    assert decide([add, upd, Operation(Event.DELETE, 0)]) == (Event.UPDATE, 1)
    assert decide([Operation(Event.NOOP, 0), add]) == (Event.ADD, None)
    assert decide([Operation(Event.NOOP, reason="bad", rejection=Rejection.UNKNOWN_ID)]) == (Event.NOOP, None)


def test_scoring_checks_the_target_and_counts_also_events_as_gold() -> None:
    right = score_case(case(Event.UPDATE, 1), [Operation(Event.UPDATE, 1, "t")], "", 3)
    wrong_target = score_case(case(Event.UPDATE, 1), [Operation(Event.UPDATE, 0, "t")], "", 3)
    assert right.correct and right.target_ok
    assert (
        not wrong_target.correct
        and wrong_target.target_ok is False
        and wrong_target.predicted is Event.UPDATE
    )
    contradiction = case(Event.DELETE, 0, also=(Event.UPDATE,))
    rewritten = score_case(contradiction, [Operation(Event.UPDATE, 0, "Sam used to ...")], "", 3)
    assert rewritten.correct and rewritten.predicted is Event.DELETE
    rejected = score_case(case(Event.ADD),
                          [Operation(Event.NOOP, reason="r", rejection=Rejection.DUPLICATE_ADD)], "", 1)
    assert not rejected.correct and rejected.rejections == ("duplicate-add",)


def test_per_event_precision_recall_f1_against_a_hand_computed_matrix() -> None:
    # gold ADD x3 (predicted ADD, ADD, NOOP), gold NOOP x2 (predicted ADD, NOOP), gold UPDATE x1 (predicted
    # ADD)
    pairs = [(Event.ADD, Event.ADD), (Event.ADD, Event.ADD), (Event.ADD, Event.NOOP), (Event.NOOP, Event.ADD),
             (Event.NOOP, Event.NOOP), (Event.UPDATE, Event.ADD)]
    results = [score_case(case(g, 0 if g is Event.UPDATE else None, kind=str(i)),
                          [Operation(p, text="x") if p is Event.ADD else Operation(p)], "", 1)
               for i, (g, p) in enumerate(pairs)]
    matrix = confusion(results)
    assert matrix == [[2, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    scores = per_event(matrix)
    assert scores["ADD"]["precision"] == pytest.approx(2 / 4) and scores["ADD"]["recall"] == pytest.approx(
        2 / 3
    )
    assert scores["ADD"]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["NOOP"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert scores["UPDATE"]["recall"] == 0.0 and scores["DELETE"]["support"] == 0
    summary = summarize_results(results)
    assert summary["accuracy"]["mean"] == pytest.approx(3 / 6)
    assert summary["macro_f1"]["mean"] == pytest.approx(
        (scores["ADD"]["f1"] + 0.5 + 0.0) / 3
    )  # DELETE absent
    lo, hi = summary["accuracy"]["ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0


class Oracle:
    """Answers every case with its gold decision in the protocol's own format (or a fixed wrong one)."""

    name = "oracle"

    def __init__(self, cases: list[DecisionCase], version: str, wrong: bool = False):
        self.by_fact = {c.fact: c for c in cases}
        self.version, self.wrong = version, wrong

    def generate(self, prompts, config):
        from memory_r1.llm.base import Generation
        from memory_r1.records import Usage

        out = []
        for messages in prompts:
            c = next(v for f, v in self.by_fact.items() if f in messages[-1]["content"])
            event = Event.ADD if self.wrong else c.event
            out.append(Generation(self.reply(c, event), Usage(1, 1, 0.0), self.name))
        return out

    def reply(self, c: DecisionCase, event: Event) -> str:
        name = "NONE" if event is Event.NOOP else event.value
        if self.version == "manage-v1":
            item = {"id": str(c.target) if c.target is not None else str(len(c.memories)), "event": name,
                    "text": c.fact + " (merged)"}
            return json.dumps({"memory": [item]})
        memory = f" M{c.target + 1}" if c.target is not None else ""
        if self.version == "manage-v3":
            return f"F1: {name}{memory}" + (": merged text" if event is Event.UPDATE else "")
        decision = {"fact": "F1", "event": name, **({"memory": memory.strip()} if memory else {})}
        return json.dumps({"decisions": [decision]})


@pytest.mark.parametrize("version", sorted(PROTOCOLS))
def test_an_oracle_scores_perfectly_in_every_protocol_and_always_add_does_not(version) -> None:
    cases = [c for c in load_cases(_synthetic_file()) if c.split == "dev"]
    config = ManagerConfig(prompt_version=version)
    perfect = summarize_results(run_cases(Oracle(cases, version), cases, config, batch_size=5))
    assert perfect["accuracy"]["mean"] == 1.0 and perfect["target_accuracy"]["mean"] == 1.0
    assert all(s["f1"] == 1.0 for s in perfect["per_event"].values() if s["support"])
    always_add = summarize_results(run_cases(Oracle(cases, version, wrong=True), cases, config, batch_size=5))
    share_add = sum(c.event is Event.ADD for c in cases) / len(cases)
    assert always_add["accuracy"]["mean"] == pytest.approx(share_add)
    assert (
        always_add["per_event"]["ADD"]["recall"] == 1.0 and always_add["per_event"]["UPDATE"]["recall"] == 0.0
    )


def _synthetic_file() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "synthetic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows() if r["source"] == "synthetic"))
    return path


def test_prompts_show_every_memory_under_its_protocols_label() -> None:
    memories = [(7, "Sam lives in Boston."), (9, "Sam has a cat.")]
    v1 = render_prompt("manage-v1", memories, ["Sam moved."])
    v2 = render_prompt("manage-v2", memories, ["Sam moved."])
    assert v1.shown_ids == {"0": 7, "1": 9} and v2.shown_ids == {"M1": 7, "M2": 9}
    assert (
        "M2: Sam has a cat." in v2.messages[-1]["content"] and "F1: Sam moved." in v2.messages[-1]["content"]
    )
    with pytest.raises(ValueError, match="unknown manager prompt version"):
        ManagerConfig(prompt_version="manage-v9")


def test_eval_manager_runs_end_to_end_on_the_tiny_model_and_resumes(locomo_path, tmp_path) -> None:
    out = tmp_path / "mgr"
    args = ["eval", "manager", "--model", "tiny-random", "--data", str(locomo_path), "--split", "dev",
            "--limit", "6",
            "-p", "manage-v1", "-p", "manage-v2", "--max-new-tokens", "24", "--batch-size", "4", "--out",
            str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Memory Manager decisions" in result.output and "manage-v2" in result.output
    summary = json.loads((out / "manage-v2" / "summary.json").read_text())
    assert (
        summary["n"] == 6
        and summary["run"]["prompt_version"] == "manage-v2"
        and summary["run"]["model"] == "tiny-random"
    )
    assert sum(map(sum, summary["confusion"]["matrix"])) == 6
    report = (out / "report.md").read_text()
    assert (
        "Paired difference" in report
        and "| gold \\ predicted |" in report
        and (out / "confusion-2.png").stat().st_size > 0
    )
    lines = (out / "manage-v1" / "cases.jsonl").read_text().splitlines()
    again = CliRunner().invoke(app, args)  # resumes: nothing is generated twice
    assert again.exit_code == 0 and (out / "manage-v1" / "cases.jsonl").read_text().splitlines() == lines
    assert json.loads((out / "manage-v2" / "summary.json").read_text())["cases"] == summary["cases"]


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "manage-v9"], "unknown manager prompt version"),
    (["--split", "val"], "unknown split"),
    (["--cases", "/nonexistent/cases.jsonl"], "no decision set"),
])
def test_eval_manager_bad_input_is_one_line_and_exit_1(tmp_path, args, message) -> None:
    result = CliRunner().invoke(app,
                                ["eval", "manager", "--model", "tiny-random", "--out", str(tmp_path), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_eval_adds_the_managers_decision_scores_when_a_labelled_set_is_given(locomo_path, tmp_path) -> None:
    args = ["eval", "--split", "test", "-c", "conv-50", "--sessions", "17", "--limit", "1", "--model",
            "tiny-random",
            "--embedding-model", "hashing", "--data", str(locomo_path), "--out", str(tmp_path / "run"),
            "--banks", str(tmp_path / "banks"), "--decisions", str(_synthetic_file()), "--decisions-split",
            "dev", "--manager-prompt", "manage-v3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    decisions = json.loads((tmp_path / "run" / "summary.json").read_text())["decisions"]
    n_dev = sum(r["split"] == "dev" and r["source"] == "synthetic" for r in rows())
    assert decisions["n"] == n_dev and decisions["run"]["prompt_version"] == "manage-v3"
    assert (
        decisions["run"]["model"] == "tiny-random" and "per_event" in decisions and "cases" not in decisions
    )
    assert "Memory Manager decisions" in result.output
    rag = CliRunner().invoke(app, [*args[:-2], "--system", "rag"])
    assert rag.exit_code == 1 and "has none" in rag.output
