"""Issue 10: every value a user can pass is checked at the edge: one `error:` line and exit 1 for a value
out of range, never a traceback, and never a silently different command."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from memory_r1.bank import SQLiteStore
from memory_r1.cli import app
from memory_r1.embeddings import HashingEmbedder
from memory_r1.records import Provenance

runner = CliRunner()
P = Provenance("user")
FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX = 2**63 - 1


def small_bank(path: Path, *, embedding_model: str | None = "hashing-64") -> Path:
    embedder = HashingEmbedder()
    with SQLiteStore(path, embedding_model=embedding_model, dim=64) as store:
        for text in ("Alex likes tea", "Alex has a dog", "Sam moved to Oslo"):
            store.add("c:Alex", text, embedder.embed([text])[0], provenance=P)
    return path


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def assert_one_error_line(result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


ints = st.one_of(st.integers(-(10**30), 10**30), st.integers(-3, 5))


@FAST
@given(ints, ints, ints)
def test_integer_options_are_in_range_or_one_error_line(limit, memory, k):
    with tempfile.TemporaryDirectory() as tmp:
        bank = small_bank(Path(tmp) / "b.db")
        result = invoke("memories", "history", "--bank", bank, "--limit", limit)
        if not 1 <= limit <= MAX:
            assert_one_error_line(result, "--limit")
        else:
            assert result.exit_code == 0 and result.output.count("ADD") == min(limit, 3)
        result = invoke("memories", "history", "--bank", bank, "--memory", memory)
        if not 1 <= memory <= MAX:
            assert_one_error_line(result, "--memory")
        else:
            assert result.exit_code == 0
        result = invoke("memories", "undo", "--bank", bank, "--", memory)
        assert result.exit_code == 1 or (memory in (1, 2, 3) and result.exit_code == 0)
        if not 1 <= memory <= MAX:
            assert_one_error_line(result, "HISTORY_ID")
        result = invoke("memories", "search", "tea", "--owner", "c:Alex", "-k", k, "--bank", bank)
        if not 1 <= k <= 100_000:
            assert_one_error_line(result, "-k")
        else:
            assert result.exit_code == 0


@FAST
@given(st.sampled_from(["", " ", "0", "1-99999999999", "3-1", "x", ",", "1,,2"]))
def test_bad_session_ranges_are_refused_before_any_model_loads(spec):
    result = invoke("ingest", "--model", "no-such-model-anywhere", "-s", spec, "--bank", "/nonexistent/b.db")
    assert_one_error_line(result, "session")


@FAST
@given(st.sampled_from(["", "   "]), st.sampled_from(["search", "ask"]))
def test_empty_text_arguments_are_refused(text, command):
    with tempfile.TemporaryDirectory() as tmp:
        bank = small_bank(Path(tmp) / "b.db")
        args = ("memories", "search", text, "--owner", "c:Alex") if command == "search" else ("ask", text)
        assert_one_error_line(invoke(*args, "--bank", bank), "must not be empty")


def test_a_bank_without_an_embedding_model_is_one_line_for_search_and_ask(tmp_path):
    bank = small_bank(tmp_path / "b.db", embedding_model=None)
    assert_one_error_line(invoke("memories", "search", "tea", "--owner", "c:Alex", "--bank", bank),
                          "no embedding model")
    assert_one_error_line(invoke("ask", "what?", "-c", "c", "--bank", bank), "no embedding model")


def test_read_only_commands_do_not_write(tmp_path):
    bank = small_bank(tmp_path / "b.db")
    with SQLiteStore(bank) as store:  # leave a committed WAL frame behind: a writer would checkpoint it
        store.add("c:Alex", "Alex reads", np.ones(64, np.float32), provenance=P)
    before = bank.read_bytes()
    for args in (("memories", "list"), ("memories", "history"),
                 ("memories", "search", "tea", "--owner", "c:Alex")):
        assert invoke(*args, "--bank", bank).exit_code == 0
    assert bank.read_bytes() == before
