"""Issue 10, the bank's classes: several connections, storage errors, deterministic ties, rejected text.

Each test is property-based (hypothesis) and small enough to run in CI in seconds.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_r1.agents.manager import apply_operations
from memory_r1.agents.parsing import parse_operations
from memory_r1.bank import BankError, MemoryNotFoundError, SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.records import Event, Provenance

P = Provenance("manager", "m", "manage-v1")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- several connections

op = st.tuples(st.integers(0, 1), st.sampled_from(["add", "update", "delete", "undo", "search"]),
               st.integers(0, 50))


@FAST
@given(st.lists(op, min_size=1, max_size=25))
def test_two_connections_always_see_each_others_commits(ops):
    """Random writes through two connections to one file: no KeyError, and after every step both
    connections' searches return exactly the live memories the table holds (checked by a third)."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.db"
        stores = [SQLiteStore(path, embedding_model="fake", dim=4) for _ in range(2)]
        try:
            expected: dict[int, str] = {}
            for who, kind, n in ops:
                store = stores[who]
                live = [e.id for e in stores[1 - who].list("o")]  # ids the *other* side may have made
                try:
                    if kind == "add":
                        store.add("o", f"m{n}", rng.normal(size=4).astype(np.float32), provenance=P)
                    elif kind == "update" and live:
                        store.update(live[n % len(live)], f"u{n}", rng.normal(size=4).astype(np.float32),
                                     provenance=P)
                    elif kind == "delete" and live:
                        store.delete(live[n % len(live)], provenance=P)
                    elif kind == "undo":
                        store.undo()
                except BankError as error:  # e.g. nothing to undo / undo order: allowed, but no KeyError
                    assert not isinstance(error, MemoryNotFoundError), error  # noqa: PT017  # allowed, not expected
                with SQLiteStore(path) as truth:
                    expected = {e.id: e.text for e in truth.list("o")}
                hits = store.search("o", np.ones(4, np.float32), 100)  # the other side keeps its cache
                assert {h.entry.id: h.entry.text for h in hits} == expected
            for side in stores:
                hits = side.search("o", np.ones(4, np.float32), 100)
                assert {h.entry.id: h.entry.text for h in hits} == expected
        finally:
            for store in stores:
                store.close()


# ---------------------------------------------------------------- storage errors

foreign_sqlite = st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=3, unique=True)


@FAST
@given(st.one_of(st.binary(min_size=1, max_size=3000).map(lambda b: ("bytes", b)),
                 foreign_sqlite.map(lambda t: ("sqlite", t))))
def test_a_file_that_is_not_a_bank_is_refused_and_left_byte_for_byte_unchanged(spec):
    """Random bytes, or another app's SQLite database (rollback journal, any tables, even one called
    'meta' with the wrong columns): BankError, and not one byte of the file changes (no WAL switch)."""
    kind, content = spec
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "other.db"
        if kind == "bytes":
            if content[:16] == b"SQLite format 3\x00":
                content = b"x" + content
            path.write_bytes(content)
        else:
            with sqlite3.connect(path) as db:
                for name in content:
                    db.execute(f"CREATE TABLE {name} (x)")
            db.close()
        before = digest(path)
        with pytest.raises(BankError):
            SQLiteStore(path, embedding_model="fake", dim=4)
        assert digest(path) == before
        assert not Path(f"{path}-wal").exists() or kind == "bytes"


@FAST
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
def test_read_only_bank_reads_everything_and_never_writes(texts):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.db"
        with SQLiteStore(path, embedding_model="fake", dim=4) as store:
            for i, text in enumerate(texts):
                store.add("o", text, np.eye(4, dtype=np.float32)[i % 4] + 0.1, provenance=P)
        before = digest(path)
        with SQLiteStore(path, read_only=True) as ro:
            assert [e.text for e in ro.list("o")] == [e.text for e in SQLiteStore(path).list("o")]
            assert len(ro.search("o", np.ones(4, np.float32), 10)) == len(texts)
            assert len(ro.history()) == len(texts)
            with pytest.raises(BankError, match="read-only"):
                ro.add("o", "x", np.ones(4, np.float32), provenance=P)
            with pytest.raises(BankError, match="read-only"):
                ro.undo()
        assert digest(path) == before


def test_a_bank_locked_past_the_busy_timeout_is_a_bank_error(tmp_path):
    path = tmp_path / "bank.db"
    SQLiteStore(path, embedding_model="fake", dim=4).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = SQLiteStore(path, busy_timeout=0.1)
        with pytest.raises(BankError, match="locked by another process"):
            store.add("o", "x", np.ones(4, np.float32), provenance=P)
        assert store.count() == 0  # reads still work beside the writer (WAL)
        store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ---------------------------------------------------------------- deterministic ties

@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 6))
def test_search_and_search_many_agree_exactly_and_break_ties_by_id(seed, k, n_queries):
    """Memories built to tie (duplicates, coordinate permutations of one vector, under queries that are
    symmetric in those coordinates): `search` and `search_many` return the same ids, the same scores and
    the same order, which is score descending then id ascending."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=16).astype(np.float32)
    rows = [base[rng.permutation(16)] for _ in range(10)] + [base] * 4 + list(rng.normal(size=(6, 16)))
    queries = np.stack([np.ones(16, np.float32)] + [rng.normal(size=16).astype(np.float32)
                                                    for _ in range(n_queries - 1)])
    with SQLiteStore(dim=16) as store:
        store.add_many("o", [f"m{i}" for i in range(len(rows))], np.stack(rows), provenance=P)
        many = store.search_many("o", queries, k)
        for j, query in enumerate(queries):
            one = store.search("o", query, k)
            assert [(h.entry.id, h.score) for h in one] == [(h.entry.id, h.score) for h in many[j]]
            keys = [(-h.score, h.entry.id) for h in one]
            assert keys == sorted(keys)


# ---------------------------------------------------------------- rejected operations keep their text

proposal = st.tuples(st.sampled_from(["ADD", "UPDATE", "DELETE"]),
                     st.sampled_from(["0", "1", "7", "x", None]),
                     st.sampled_from(["Alex likes tea.", "Alex has a dog.", "Sam moved to Oslo.", ""]))


@FAST
@given(st.lists(proposal, min_size=1, max_size=6))
def test_history_keeps_the_text_of_every_rejected_add_or_update(proposals):
    import json

    embedder = HashingEmbedder()
    with SQLiteStore(embedding_model=embedder.name, dim=embedder.dim) as store:
        a = store.add("o", "Alex has a dog.", embedder.embed(["Alex has a dog."])[0], provenance=P)
        b = store.add("o", "Alex likes coffee.", embedder.embed(["Alex likes coffee."])[0], provenance=P)
        output = json.dumps({"memory": [{"event": e, "id": i, "text": t} for e, i, t in proposals]})
        ops = parse_operations(output, {"0": a.id, "1": b.id}, {a.id: a.text, b.id: b.text})
        applied = apply_operations(store, embedder, "o", ops, [], P)
        noops = [h for h in store.history() if h.event == "NOOP" and h.reason]
        rejected = [o for o in applied if o.event is Event.NOOP and o.reason and o.text]
        assert len(noops) == sum(o.event is Event.NOOP and o.reason is not None for o in applied)
        for o in rejected:
            assert any(h.after_text == o.text and h.reason == o.reason for h in noops), (o, noops)
        for event, _, text in proposals:  # every refused ADD/UPDATE with text is findable in history
            if event in ("ADD", "UPDATE") and text:
                stored = {e.text for e in store.list("o")}
                assert text in stored or any(h.after_text == text for h in store.history()), text
