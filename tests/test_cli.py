"""Every command end to end through the real CLI, on the tiny random model and real LoCoMo data."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from memory_r1.bank import SQLiteStore
from memory_r1.cli import app
from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.embeddings import load_embedder

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def conv26_session1(locomo_path):
    return select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1})


@pytest.fixture
def filled_bank(tmp_path, conv26_session1, scripted, make_system):
    """A bank built by the pipeline with scripted model replies and the real MiniLM embedder."""
    bank = tmp_path / "bank.db"
    system = make_system(scripted(), load_embedder(), bank)
    system.ingest(conv26_session1)
    system.store.close()
    return bank


def test_ingest_with_a_real_model_records_a_decision_per_turn(tmp_path, locomo_path, conv26_session1):
    bank = tmp_path / "bank.db"
    result = run("ingest", locomo_path, "-c", "conv-26", "--sessions", "1", "--bank", bank, "--model",
                 "tiny-random")
    assert result.exit_code == 0, result.output
    assert "ingested conv-26" in result.output
    with SQLiteStore(bank) as store:
        # The random model writes no JSON: each turn's decision is a NOOP recorded with its reason.
        decisions = [h for h in store.history() if h.provenance.agent == "manager"]
        assert len(decisions) == len(conv26_session1.turns)
        assert all(h.provenance.model == "tiny-random" for h in decisions)


def test_memories_list_history_search_undo(filled_bank):
    listed = run("memories", "list", "--bank", filled_bank)
    assert listed.exit_code == 0 and "conv-26:Caroline" in listed.output
    assert run("memories", "history", "--bank", filled_bank, "--limit", "3").exit_code == 0
    found = run("memories", "search", "support group", "--owner", "conv-26:Caroline", "-k", "2", "--bank",
                filled_bank)
    assert found.exit_code == 0 and "support group" in found.output.lower()
    with SQLiteStore(filled_bank) as store:
        before = store.count()
        added = [h for h in store.history() if h.event == "ADD"]
    undone = run("memories", "undo", added[-1].id, "--bank", filled_bank)
    assert undone.exit_code == 0, undone.output
    with SQLiteStore(filled_bank) as store:
        assert store.count() == before - 1
        assert store.get(added[-1].memory_id).deleted
        assert store.history()[-1].event == "UNDO"
    again = run("memories", "undo", added[-1].id, "--bank", filled_bank)
    assert again.exit_code == 1 and "error" in again.output


def test_ask_answers_from_the_bank(filled_bank):
    result = run("ask", "What did Caroline research?", "-c", "conv-26", "--bank", filled_bank, "--model",
                 "tiny-random")
    assert result.exit_code == 0, result.output
    assert "Answer:" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ingest", "/nonexistent/locomo10.json"), "/nonexistent/locomo10.json"),
        (("ingest", "{locomo}", "-c", "conv-99"), "conv-99"),
        (("ingest", "{locomo}", "-s", "x-y"), "x-y"),
        (
            ("ingest", "{locomo}", "-s", "1", "--model", "no-such-model-anywhere", "--bank", "{tmp}/b.db"),
            "no-such-model-anywhere",
        ),
        (("ingest", "{bad}"), "qa"),
        (("ask", "hi", "--bank", "{tmp}/missing.db"), "no bank"),
        (("memories", "list", "--bank", "{notdb}"), "notdb"),
        (("data", "download", "squad"), "squad"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_1(args, message, tmp_path, locomo_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"sample_id": "x", "conversation": {"speaker_a": "A", "speaker_b": "B"}}]))
    notdb = tmp_path / "notdb.db"
    notdb.write_text("this is not a sqlite file" * 100)
    fill = {"locomo": locomo_path, "tmp": tmp_path, "bad": bad, "notdb": notdb}
    result = run(*(a.format(**fill) for a in args))
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_incompatible_banks_are_refused(tmp_path, locomo_path):
    other_embedder = tmp_path / "hashing.db"
    SQLiteStore(other_embedder, embedding_model="hashing", dim=64).close()
    result = run("ingest", locomo_path, "-s", "1", "--bank", other_embedder, "--model", "tiny-random")
    assert result.exit_code == 1 and "error:" in result.output and "hashing" in result.output

    future = tmp_path / "future.db"
    SQLiteStore(future, embedding_model="hashing", dim=64).close()
    with sqlite3.connect(future) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    result = run("memories", "list", "--bank", future)
    assert result.exit_code == 1 and "999" in result.output and "Traceback" not in result.output
    with sqlite3.connect(future) as db:  # refusing to open it changed nothing
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("999",)


def test_data_build_commands_write_datasets(tmp_path, locomo_path):
    common = ["--data", locomo_path, "-s", "1", "--embedding-model", "hashing"]
    manager = run("data", "build-manager", "--out", tmp_path / "m", "--model", "tiny-random", *common)
    assert manager.exit_code == 0, manager.output
    rows = (tmp_path / "m" / "manager.jsonl").read_text().splitlines()
    assert len(rows) > 1 and all((tmp_path / "m" / json.loads(r)["bank"]).exists() for r in rows[1:])
    answer = run("data", "build-answer", "--out", tmp_path / "a", "--manager-model", "tiny-random", *common)
    assert answer.exit_code == 0, answer.output
    assert len((tmp_path / "a" / "answer.jsonl").read_text().splitlines()) > 1


def test_answer_dataset_on_verbatim_turns(tmp_path, locomo_path):
    """--memories turns: the bank holds every turn of the session verbatim (as `rag` does), the manager
    never runs, and each example's memories are those turns."""
    common = [
        "--data",
        locomo_path,
        "-s",
        "1",
        "--embedding-model",
        "hashing",
        "--manager-model",
        "tiny-random",
    ]
    result = run("data", "build-answer", "--out", tmp_path / "t", "--memories", "turns", *common)
    assert result.exit_code == 0, result.output
    store = SQLiteStore(tmp_path / "t" / "bank.db", embedding_model="hashing-64", dim=64)
    conv = select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1})
    texts = sorted(e.text for owner in store.owners() for e in store.list(owner))
    assert texts == sorted(t.render() for t in conv.turns)
    assert {h.provenance.agent for h in store.history()} == {"rag-index"}
    rows = [json.loads(r) for r in (tmp_path / "t" / "answer.jsonl").read_text().splitlines()[1:]]
    assert rows and all(r["memory_ids"] for r in rows)
    bad = run("data", "build-answer", "--out", tmp_path / "x", "--memories", "facts", *common)
    assert bad.exit_code != 0 and "--memories must be manager or turns" in bad.output
