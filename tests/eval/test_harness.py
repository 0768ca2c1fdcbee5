"""The evaluation harness on a real slice of LoCoMo (conv-30, session 1) with scripted and tiny models."""

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from memory_r1.agents import AnswerAgent, AnswerConfig
from memory_r1.cli import app
from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.embeddings import HashingEmbedder
from memory_r1.eval.harness import (
    Callbacks,
    EvalConfig,
    ResultsDirError,
    load_corrections,
    read_results,
    run_eval,
)
from memory_r1.eval.judge import Judge
from memory_r1.eval.metrics import f1_score
from memory_r1.eval.records import RunSummary
from memory_r1.eval.systems import FullContextSystem, PipelineSystem, TurnRetrievalSystem
from memory_r1.records import Usage


@pytest.fixture(scope="module")
def conv30(locomo_path):
    conv = select_sessions(get_conversation(load_locomo(locomo_path), "conv-30"), {1})
    assert len(conv.qa) >= 4
    return conv


def memory_r1(make_system, generator, distill=True):
    agents = make_system(generator)
    agents.answerer.config = AnswerConfig(distill=distill)
    return PipelineSystem("memory-r1" if distill else "prompted", agents.agents)


def run(system, conv, tmp_path, config=EvalConfig(batch_size=2), **kw):
    """The summary as `summary.json` holds it: these tests pin the file format down."""
    return run_eval(system, [conv], config, tmp_path / "run", banks_dir=tmp_path / "banks", **kw).to_json()


def rows_of(path):
    """results.jsonl rows as written on disk, read back through `ResultRow`."""
    return [r.to_json() for r in read_results(path)]


def test_rows_and_summary_add_up(conv30, tmp_path, scripted, make_system):
    summary = run(memory_r1(make_system, scripted()), conv30, tmp_path)
    rows = rows_of(tmp_path / "run" / "results.jsonl")
    questions = [q for q in conv30.qa if q.answer is not None and q.category != 5]
    assert len(rows) == len(questions) == summary["questions"]
    assert {r["qa_index"] for r in rows} == {q.index for q in questions}
    for row in rows:  # every row scored against its own gold
        assert row["scores"]["f1"] == pytest.approx(f1_score(row["prediction"], row["gold"]))
        assert row["prediction"] == "7 May 2023" and row["selected_memory_ids"]
    assert summary["overall"]["f1"]["mean"] == pytest.approx(sum(r["scores"]["f1"] for r in rows) / len(rows))
    paper = summary["by_category"]["paper"]
    assert sum(e["n"] for e in paper.values()) == len(rows)
    assert paper["Temporal"] == summary["by_category"]["locomo"]["temporal"] and paper["Temporal"]["n"] > 0
    ops = summary["operations"]
    assert ops["ADD"] == ops["turns"] == len(conv30.turns) and ops["parse_failure_rate"] == 0.0
    assert ops["bank_size"]["conv-30"][-1] == [len(conv30.turns), len(conv30.turns)]
    assert {"extract", "manage", "search", "answer"} <= set(summary["latency_s"])
    assert summary["settings"]["prompts"]["answer"] == "answer-v2"
    assert summary["per_question"] == {r["key"]: r["scores"] for r in rows}  # what paired comparisons read
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["overall"] == summary["overall"] and saved["run"]["system"] == "memory-r1"
    typed = RunSummary.from_json(saved)  # the typed view reads what the file holds, and writes it back
    assert json.dumps(typed.to_json()) == json.dumps(saved)  # NaN-safe: empty categories hold NaN means
    assert typed.operations is not None and typed.operations.counts["ADD"] == ops["ADD"]


def test_interrupted_run_resumes_without_repeating_an_answer(conv30, tmp_path, scripted, make_system):
    generator = scripted()
    replies = generator.generate
    generator.generate = lambda prompts, config: [  # every call "takes" one second, to count compute
        replace(g, usage=Usage(g.usage.prompt_tokens, g.usage.completion_tokens, 1.0))
        for g in replies(prompts, config)
    ]
    system = memory_r1(make_system, generator)

    class Stop(Exception):
        pass

    answered = []

    def on_questions(n):
        answered.append(n)
        if sum(answered) >= 2:
            raise Stop

    with pytest.raises(Stop):
        run(system, conv30, tmp_path, callbacks=Callbacks(on_questions=on_questions))
    first = rows_of(tmp_path / "run" / "results.jsonl")
    assert len(first) == 2
    with (tmp_path / "run" / "results.jsonl").open("a") as f:
        f.write('{"key": "0/conv-30/9", "torn')  # a crash mid-write
    calls = generator.calls
    summary = run(system, conv30, tmp_path)
    rows = rows_of(tmp_path / "run" / "results.jsonl")
    assert len({r["key"] for r in rows}) == len(rows) == summary["questions"]
    assert generator.calls - calls == summary["questions"] - 2  # one generation per remaining question
    # compute counts both invocations (wall_s only the last): one second per question and per manager call
    assert summary["compute_s"]["answer"] == summary["questions"]
    assert summary["compute_s"]["manage"] == summary["operations"]["decisions"] > 0


def test_a_results_dir_of_another_run_is_refused(conv30, tmp_path, scripted, make_system):
    run(memory_r1(make_system, scripted()), conv30, tmp_path)
    with pytest.raises(ResultsDirError, match="system 'memory-r1'"):
        run(memory_r1(make_system, scripted(), distill=False), conv30, tmp_path)


def test_prompted_shares_the_memory_r1_bank(conv30, tmp_path, scripted, make_system):
    run(memory_r1(make_system, scripted()), conv30, tmp_path)
    generator = scripted()
    prompted = memory_r1(make_system, generator, distill=False)
    summary = run_eval(prompted, [conv30], EvalConfig(), tmp_path / "prompted",
                       banks_dir=tmp_path / "banks").to_json()
    assert (
        generator.calls == summary["questions"]
    )  # answers only: no extraction or manager call, the bank was reused
    assert summary["settings"]["prompts"]["answer"] == "answer-direct-v2"
    assert len(list((tmp_path / "banks").glob("*.db"))) == 1


def test_a_session_subset_reuses_the_full_bank_and_counts_only_its_turns(locomo_path, tmp_path, scripted,
                                                                         make_system):
    full = select_sessions(get_conversation(load_locomo(locomo_path), "conv-30"), {1, 2})
    run(memory_r1(make_system, scripted()), full, tmp_path)
    generator = scripted()
    subset = run_eval(memory_r1(make_system, generator), [full], EvalConfig(sessions="1"),
                      tmp_path / "subset", banks_dir=tmp_path / "banks").to_json()
    first = select_sessions(full, {1})
    asked = [q for q in first.qa if q.answer is not None and q.category != 5]
    assert subset["questions"] == len(asked) < len([q for q in full.qa if q.category != 5])
    assert generator.calls == len(asked)  # the bank already held session 1: answers only
    assert subset["operations"]["turns"] == len(first.turns) < len(full.turns)
    assert subset["operations"]["bank_size"]["conv-30"][-1][0] == len(first.turns)
    with pytest.raises(ResultsDirError, match="sessions"):
        run_eval(memory_r1(make_system, scripted()), [full], EvalConfig(sessions="2"), tmp_path / "subset",
                 banks_dir=tmp_path / "banks")


def test_judge_and_corrected_labels(conv30, tmp_path, scripted, make_system):
    q = next(q for q in conv30.qa if q.answer is not None)
    corrections = tmp_path / "corrections.json"
    corrections.write_text(json.dumps([{"sample_id": "conv-30", "qa_index": q.index, "question": q.question,
                                        "answer": "7 May 2023"}]))
    fixes = load_corrections(corrections, [conv30])
    judge = Judge(
        scripted(
            lambda m: (
                'Same date. {"label": "CORRECT"}'
                if "7 May 2023" in m[-1]["content"].split("Reference answer:")[1].split("\n")[0]
                else "hmm"
            )
        ),
        cache_path=tmp_path / "judge.db",
    )
    summary = run(memory_r1(make_system, scripted()), conv30, tmp_path, config=EvalConfig(corrections=fixes),
                  judge=judge)
    rows = rows_of(tmp_path / "run" / "results.jsonl")
    corrected = [r for r in rows if "corrected_gold" in r]
    assert len(corrected) == 1 and corrected[0]["corrected_scores"]["f1"] == 1.0
    assert corrected[0]["corrected_scores"]["j"] == 1.0
    assert summary["corrected"]["changed"] == 1
    assert summary["corrected"]["overall"]["f1"]["mean"] >= summary["overall"]["f1"]["mean"]
    failures = [r for r in rows if r["judge"]["label"] is None]
    assert summary["judge"]["failures"] == len(failures) and all(r["judge"]["error"] for r in failures)
    assert summary["overall"]["j"]["n"] == len(rows) - len(failures)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"sample_id": "conv-30", "qa_index": 10_000, "answer": "x"}, "points at no question"),
        ({"sample_id": "conv-30", "qa_index": 0, "answer": "x", "question": "Something else?"}, "differs"),
        ({"sample_id": "conv-30", "answer": "x"}, "lacks qa_index"),
    ],
)
def test_bad_corrections_are_refused(conv30, tmp_path, entry, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match=message):
        load_corrections(path, [conv30])


def test_rag_and_full_context_on_the_tiny_model(conv30, tmp_path, tiny_generator):
    embedder = HashingEmbedder()
    rag = TurnRetrievalSystem(embedder,
                              AnswerAgent(tiny_generator, embedder,
                                          AnswerConfig(max_new_tokens=8, distill=False)))
    summary = run_eval(rag, [conv30], EvalConfig(limit=2), tmp_path / "rag",
                       banks_dir=tmp_path / "banks").to_json()
    rows = rows_of(tmp_path / "rag" / "results.jsonl")
    assert summary["operations"] is None and len(rows) == 2
    assert all(r["retrieved"] == min(60, len(conv30.turns)) for r in rows)

    full = FullContextSystem(tiny_generator, AnswerConfig(max_new_tokens=8), context_tokens=1200)
    summary = run_eval(full, [conv30], EvalConfig(limit=2), tmp_path / "full",
                       banks_dir=tmp_path / "banks").to_json()
    assert 0 < summary["settings"]["dropped_turns"]["conv-30"] < len(conv30.turns)
    assert summary["questions"] == 2


def test_sampled_seeds_report_mean_and_spread(conv30, tmp_path, tiny_generator, make_system):
    agents = make_system(tiny_generator)
    agents.answerer.config = AnswerConfig(max_new_tokens=6, temperature=1.0)
    agents.extractor.config = replace(agents.extractor.config, max_new_tokens=4)
    agents.manager.config = replace(agents.manager.config, max_new_tokens=4)
    summary = run(PipelineSystem("memory-r1", agents.agents), conv30, tmp_path,
                  config=EvalConfig(seeds=(0, 1), limit=2))
    assert set(summary["seeds"]["per_seed"]) == {"0", "1"}
    assert summary["seeds"]["std"]["f1"] >= 0.0 and summary["questions"] == 2
    assert len(rows_of(tmp_path / "run" / "results.jsonl")) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--system", "mem0"], "unknown system"),
        (["eval", "--seeds", "3"], "--temperature"),
        (["eval", "--split", "dev2"], "dev2"),
    ],
)
def test_eval_cli_bad_input(args, message, locomo_path, tmp_path):
    result = CliRunner().invoke(app,
                                [*args, "--data", str(locomo_path), "--out", str(tmp_path / "o"), "--model",
                                 "tiny-random",
                                      "--embedding-model", "hashing", "--banks", str(tmp_path / "b")])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_report_cli_puts_runs_side_by_side(conv30, tmp_path, scripted, make_system):
    run(memory_r1(make_system, scripted()), conv30, tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "memory-r1" in markdown and (tmp_path / "report" / "per_category.png").stat().st_size > 10_000
    broken = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert broken.exit_code == 1 and "nowhere" in broken.output
