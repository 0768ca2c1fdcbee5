"""SQLiteStore: primitives and their history rows, undo, transactions, forks, search, reopening.

Vectors are hand-made (4-d) so every expected score is worked out by hand, e.g. cos(e1, e1+e2) = 1/sqrt(2).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from memory_r1.bank import (
    SCHEMA_VERSION,
    BankError,
    IncompatibleBankError,
    MemoryNotFoundError,
    MemoryStore,
    SQLiteStore,
)
from memory_r1.records import HistoryRecord, MemoryEntry, Provenance

P = Provenance("manager", "qwen-3b", "manage-v1")
E1, E2, E3, E4 = np.eye(4, dtype=np.float32)


def v(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


@pytest.fixture
def store() -> SQLiteStore:
    with SQLiteStore(dim=4, embedding_model="fake-4d") as s:
        yield s


def ids(hits) -> list[int]:
    return [h.entry.id for h in hits]


def texts(hits) -> list[str]:
    return [h.entry.text for h in hits]


# ---------------------------------------------------------------- primitives and history rows


def test_store_satisfies_protocol(store: SQLiteStore) -> None:
    assert isinstance(store, MemoryStore)


def test_add_returns_entry_and_writes_add_row(store: SQLiteStore) -> None:
    when = datetime(2023, 5, 8, 13, 56)
    entry = store.add(
        "conv-26:Caroline",
        "Caroline likes hiking",
        v(2, 0, 0, 0),
        timestamp="1:56 pm on 8 May, 2023",
        occurred_at=when,
        source_turn_ids=("D1:3",),
        provenance=P,
        reason="new fact",
    )
    assert isinstance(entry, MemoryEntry)
    assert (
        entry.id,
        entry.owner,
        entry.text,
        entry.timestamp,
        entry.occurred_at,
        entry.source_turn_ids,
        entry.deleted,
    ) == (1, "conv-26:Caroline", "Caroline likes hiking", "1:56 pm on 8 May, 2023", when, ("D1:3",), False)
    assert entry.created_at == entry.updated_at and entry.created_at.tzinfo is not None
    assert store.get(1) == entry
    [row] = store.history()
    assert isinstance(row, HistoryRecord)
    assert (
        row.id,
        row.memory_id,
        row.owner,
        row.event,
        row.before_text,
        row.after_text,
        row.provenance,
        row.reason,
        row.undone,
    ) == (1, 1, "conv-26:Caroline", "ADD", None, "Caroline likes hiking", P, "new fact", False)


def test_embeddings_are_normalised_on_write(store: SQLiteStore) -> None:
    store.add("a", "x", v(3, 4, 0, 0), provenance=P)
    [hit] = store.search("a", v(0.6, 0.8, 0, 0) * 10, k=1)
    assert hit.score == pytest.approx(1.0, abs=1e-6)


def test_update_keeps_id_and_records_before_and_after(store: SQLiteStore) -> None:
    old = store.add("a", "lives in Paris", E1, timestamp="t1", occurred_at=datetime(2023, 1, 1), provenance=P)
    new = store.update(old.id, "lives in Rome", E2, provenance=P, reason="moved")
    assert (new.id, new.text, new.timestamp, new.occurred_at, new.created_at) == (
        old.id,
        "lives in Rome",
        "t1",
        datetime(2023, 1, 1),
        old.created_at,
    )
    assert new.updated_at >= old.updated_at
    row = store.history()[-1]
    assert (row.memory_id, row.event, row.before_text, row.after_text, row.reason) == (
        old.id,
        "UPDATE",
        "lives in Paris",
        "lives in Rome",
        "moved",
    )
    assert ids(store.search("a", E2, k=1)) == [old.id]
    assert store.search("a", E2, k=1)[0].score == pytest.approx(1.0)
    dated = store.update(
        old.id,
        "lives in Oslo",
        E3,
        provenance=P,
        timestamp="t2",
        occurred_at=datetime(2023, 6, 1),
        source_turn_ids=["D9:1"],
    )
    assert (dated.timestamp, dated.occurred_at, dated.source_turn_ids) == (
        "t2",
        datetime(2023, 6, 1),
        ("D9:1",),
    )


def test_delete_is_soft_and_hidden_by_default(store: SQLiteStore) -> None:
    keep = store.add("a", "keep", E1, provenance=P)
    gone = store.add("a", "gone", E2, provenance=P)
    store.add("b", "other", E3, provenance=P)
    deleted = store.delete(gone.id, provenance=P, reason="contradicted")
    assert deleted.deleted and deleted.text == "gone"
    assert store.get(gone.id).deleted
    assert [m.id for m in store.list("a")] == [keep.id]
    assert [m.id for m in store.list("a", include_deleted=True)] == [keep.id, gone.id]
    assert (store.count("a"), store.count(), store.owners()) == (1, 2, ["a", "b"])
    assert ids(store.search("a", E2, k=10)) == [keep.id]
    row = store.history()[-1]
    assert (row.memory_id, row.event, row.before_text, row.after_text, row.reason) == (
        gone.id,
        "DELETE",
        "gone",
        None,
        "contradicted",
    )
    store.delete(keep.id, provenance=P)
    assert store.owners() == ["b"]


def test_record_noop(store: SQLiteStore) -> None:
    m = store.add("a", "likes tea", E1, provenance=P)
    plain = store.record_noop("a", provenance=P, reason="already known")
    on_memory = store.record_noop("a", provenance=P, memory_id=m.id, reason="model chose NONE")
    assert (plain.memory_id, plain.event, plain.before_text, plain.after_text, plain.reason) == (
        None,
        "NOOP",
        None,
        None,
        "already known",
    )
    assert (on_memory.memory_id, on_memory.before_text, on_memory.after_text) == (
        m.id,
        "likes tea",
        "likes tea",
    )
    assert store.history()[-2:] == [plain, on_memory]
    with pytest.raises(MemoryNotFoundError, match="belongs to 'a'"):
        store.record_noop("b", provenance=P, memory_id=m.id)
    with pytest.raises(MemoryNotFoundError):
        store.record_noop("a", provenance=P, memory_id=99)


def test_unknown_and_deleted_ids_raise_and_write_nothing(store: SQLiteStore) -> None:
    m = store.add("a", "x", E1, provenance=P)
    store.delete(m.id, provenance=P)
    before = store.history()
    for call in (
        lambda: store.update(42, "y", E2, provenance=P),
        lambda: store.delete(42, provenance=P),
        lambda: store.update(m.id, "y", E2, provenance=P),
        lambda: store.delete(m.id, provenance=P),
        lambda: store.get(42),
    ):
        with pytest.raises(MemoryNotFoundError):
            call()
    assert isinstance(MemoryNotFoundError("x"), LookupError)
    with pytest.raises(MemoryNotFoundError) as deleted:
        store.delete(m.id, provenance=P)
    assert str(deleted.value) == "memory 1 is deleted"
    assert store.history() == before


def test_bad_embeddings_raise_before_writing(store: SQLiteStore) -> None:
    m = store.add("a", "x", E1, provenance=P)
    for bad in (np.ones(3), np.ones((1, 4)), np.zeros(4), v(np.nan, 1, 0, 0)):
        with pytest.raises(ValueError):
            store.add("a", "y", bad, provenance=P)
        with pytest.raises(ValueError):
            store.update(m.id, "y", bad, provenance=P)
    with pytest.raises(ValueError, match="dimension 3"):
        store.search("a", np.ones(3), k=1)
    assert [e.text for e in store.list(include_deleted=True)] == ["x"] and len(store.history()) == 1


def test_dimension_is_fixed_by_first_add_when_not_given() -> None:
    with SQLiteStore() as s:
        assert s.dim is None and s.search("a", E1, k=3) == []
        s.add("a", "x", np.ones(8), provenance=P)
        assert s.dim == 8
        with pytest.raises(ValueError):
            s.add("a", "y", E1, provenance=P)


def test_add_many_matches_add(store: SQLiteStore) -> None:
    entries = store.add_many(
        "a",
        ["one", "two"],
        np.stack([E1, E2]),
        timestamps=["t1", "t2"],
        occurred_at=[None, datetime(2023, 1, 2)],
        source_turn_ids=[["D1:1"], []],
        provenance=P,
    )
    assert [store.get(e.id) for e in entries] == entries
    assert [(h.event, h.memory_id, h.after_text) for h in store.history()] == [
        ("ADD", 1, "one"),
        ("ADD", 2, "two"),
    ]
    assert store.add_many("a", [], np.empty((0, 4)), provenance=P) == []
    with pytest.raises(ValueError, match="same length"):
        store.add_many("a", ["x"], np.stack([E1, E2]), provenance=P)


def test_history_filters_and_limit(store: SQLiteStore) -> None:
    a = store.add("a", "a1", E1, provenance=P)
    store.add("b", "b1", E2, provenance=P)
    store.update(a.id, "a2", E1, provenance=P)
    store.record_noop("b", provenance=P)
    assert [h.id for h in store.history()] == [1, 2, 3, 4]
    assert [h.id for h in store.history(memory_id=a.id)] == [1, 3]
    assert [h.id for h in store.history(owner="b")] == [2, 4]
    assert [h.id for h in store.history(limit=2)] == [3, 4]  # the most recent, oldest first


# ---------------------------------------------------------------- undo


def test_undo_add_hides_the_memory(store: SQLiteStore) -> None:
    m = store.add("a", "x", E1, provenance=P)
    undo = store.undo()
    assert (undo.event, undo.memory_id, undo.before_text, undo.after_text, undo.provenance, undo.reason) == (
        "UNDO",
        m.id,
        "x",
        None,
        Provenance("user"),
        "undo of #1 ADD",
    )
    assert store.get(m.id).deleted and store.search("a", E1, k=5) == [] and store.count() == 0
    assert store.history()[0].undone and not undo.undone


def test_undo_update_restores_text_embedding_and_dialogue_time(store: SQLiteStore) -> None:
    m = store.add("a", "lives in Paris", E1, timestamp="t1", occurred_at=datetime(2023, 1, 1), provenance=P)
    store.add("a", "other", v(1, 1, 0, 0), provenance=P)
    before = store.search("a", E1, k=2)
    store.update(m.id, "lives in Rome", E3, provenance=P, timestamp="t2", occurred_at=datetime(2024, 1, 1))
    assert ids(store.search("a", E1, k=2))[0] != m.id
    undo = store.undo(3, provenance=Provenance("undo"), reason="user said no")
    assert (undo.before_text, undo.after_text, undo.provenance, undo.reason) == (
        "lives in Rome",
        "lives in Paris",
        Provenance("undo"),
        "user said no",
    )
    restored = store.get(m.id)
    assert (restored.text, restored.timestamp, restored.occurred_at) == (
        "lives in Paris",
        "t1",
        datetime(2023, 1, 1),
    )
    after = store.search("a", E1, k=2)
    assert [(h.entry.id, h.entry.text, h.score) for h in after] == [
        (h.entry.id, h.entry.text, h.score) for h in before
    ]


def test_undo_delete_brings_the_memory_back(store: SQLiteStore) -> None:
    m = store.add("a", "x", E1, provenance=P)
    store.search("a", E1, k=1)  # build the cached index first, so undo must maintain it
    store.delete(m.id, provenance=P)
    undo = store.undo()
    assert (undo.before_text, undo.after_text) == (None, "x")
    assert not store.get(m.id).deleted
    assert [(h.entry.id, h.score) for h in store.search("a", E1, k=1)] == [(m.id, pytest.approx(1.0))]


def test_undo_walks_back_in_order(store: SQLiteStore) -> None:
    m = store.add("a", "v1", E1, provenance=P)
    store.update(m.id, "v2", E2, provenance=P)
    store.record_noop("a", provenance=P)  # skipped by the default undo
    store.update(m.id, "v3", E3, provenance=P)
    assert [store.undo().after_text for _ in range(2)] == ["v2", "v1"]
    store.undo()
    assert store.get(m.id).deleted
    with pytest.raises(BankError, match="nothing to undo"):
        store.undo()
    assert [h.undone for h in store.history()] == [True, True, False, True, False, False, False]


def test_undo_refusals(store: SQLiteStore) -> None:
    m = store.add("a", "v1", E1, provenance=P)  # 1
    store.update(m.id, "v2", E2, provenance=P)  # 2
    store.record_noop("a", provenance=P)  # 3
    with pytest.raises(BankError, match=r"#3 is NOOP"):
        store.undo(3)
    with pytest.raises(BankError, match=r"followed by #2 \(UPDATE\); undo that first"):
        store.undo(1)
    with pytest.raises(BankError, match="no history row #99"):
        store.undo(99)
    store.undo(2)  # 4 = UNDO
    with pytest.raises(BankError, match="already undone"):
        store.undo(2)
    with pytest.raises(BankError, match="#4 is UNDO"):
        store.undo(4)
    assert len(store.history()) == 4


def test_nothing_is_physically_removed(store: SQLiteStore) -> None:
    m = store.add("a", "x", E1, provenance=P)
    store.delete(m.id, provenance=P)
    store.undo()
    store.undo(1)
    assert [e.id for e in store.list(include_deleted=True)] == [m.id]
    assert [h.event for h in store.history()] == ["ADD", "DELETE", "UNDO", "UNDO"]


# ---------------------------------------------------------------- transactions


def _snapshot(s: SQLiteStore) -> tuple:
    return s.list(include_deleted=True), s.history(), [(h.entry, h.score) for h in s.search("a", E1, k=10)]


def test_rollback_leaves_no_trace_and_cache_stays_consistent(store: SQLiteStore) -> None:
    keep = store.add("a", "keep", E1, provenance=P)
    other = store.add("a", "other", v(1, 1, 0, 0), provenance=P)
    before = _snapshot(store)  # also builds the cached index for "a"
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.add("a", "new", E1, provenance=P)
        store.update(keep.id, "changed", E4, provenance=P)
        store.delete(other.id, provenance=P)
        store.record_noop("a", provenance=P)
        assert texts(store.search("a", E1, k=10)) == ["new", "changed"]  # writes are visible inside
        raise RuntimeError("boom")
    assert _snapshot(store) == before
    assert store.add("a", "next", E2, provenance=P).id == 3  # ids of rolled-back rows were never real


def test_rollback_drops_an_index_built_inside_the_transaction(store: SQLiteStore) -> None:
    store.add("a", "keep", E1, provenance=P)
    with pytest.raises(KeyError), store.transaction():
        store.add("a", "new", E1, provenance=P)
        assert len(store.search("a", E1, k=10)) == 2  # index built from uncommitted rows
        raise KeyError("abort")
    assert texts(store.search("a", E1, k=10)) == ["keep"]


def test_rollback_restores_unset_dimension() -> None:
    with SQLiteStore() as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.add("a", "x", np.ones(8), provenance=P)
            raise RuntimeError
        assert s.dim is None
        s.add("a", "x", E1, provenance=P)
        assert s.dim == 4


def test_nested_transactions(store: SQLiteStore) -> None:
    with store.transaction():
        store.add("a", "outer", E1, provenance=P)
        with pytest.raises(ValueError), store.transaction():
            store.add("a", "inner, rolled back", E2, provenance=P)
            raise ValueError
        with store.transaction():
            store.add("a", "inner, kept", E3, provenance=P)
    assert [m.text for m in store.list()] == ["outer", "inner, kept"]
    assert [h.after_text for h in store.history()] == ["outer", "inner, kept"]
    assert sorted(texts(store.search("a", E1, k=10))) == ["inner, kept", "outer"]


def test_only_the_outermost_transaction_commits(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with SQLiteStore(path, dim=4) as writer, SQLiteStore(path, dim=4) as reader:
        with writer.transaction():
            with writer.transaction():
                writer.add("a", "x", E1, provenance=P)
            assert reader.count() == 0 and reader.search("a", E1, k=1) == []
        assert reader.count() == 1
        assert texts(reader.search("a", E1, k=1)) == ["x"]  # reader's cache noticed the other connection


def test_other_connection_writes_invalidate_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with SQLiteStore(path, dim=4) as a, SQLiteStore(path, dim=4) as b:
        a.add("o", "first", E1, provenance=P)
        assert texts(b.search("o", E1, k=5)) == ["first"]
        a.update(1, "first, edited", E2, provenance=P)
        a.add("o", "second", E1, provenance=P)
        assert texts(b.search("o", E1, k=5)) == ["second", "first, edited"]


def test_concurrent_writers_from_threads(store: SQLiteStore) -> None:
    def work(owner: str) -> None:
        for i in range(50):
            with store.transaction():
                store.add(owner, f"{owner}{i}", E1 + 0.01 * i, provenance=P)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [store.count(f"t{n}") for n in range(4)] == [50] * 4
    assert len({m.id for m in store.list()}) == 200 and len(store.history()) == 200


# ---------------------------------------------------------------- fork


def test_fork_is_isolated_both_ways(store: SQLiteStore) -> None:
    m = store.add("a", "shared", E1, provenance=P)
    store.search("a", E1, k=1)  # the fork copies a built index
    fork = store.fork()
    assert fork.list() == store.list() and fork.history() == store.history()
    fork.update(m.id, "fork edit", E2, provenance=P)
    fork.add("a", "fork only", E1, provenance=P)
    assert texts(store.search("a", E1, k=5)) == ["shared"] and len(store.history()) == 1
    store.delete(m.id, provenance=P)
    store.add("b", "original only", E3, provenance=P)
    assert texts(fork.search("a", E1, k=5)) == ["fork only", "fork edit"]
    assert fork.owners() == ["a"] and [h.event for h in fork.history()] == ["ADD", "UPDATE", "ADD"]
    assert store.fork().fork().list() == store.list()
    fork.close()


def test_fork_and_save_inside_a_transaction_are_refused(store: SQLiteStore, tmp_path: Path) -> None:
    with store.transaction():
        with pytest.raises(BankError, match="inside a transaction"):
            store.fork()
        with pytest.raises(BankError, match="inside a transaction"):
            store.save_as(tmp_path / "x.db")


def test_save_as_writes_a_reopenable_copy(store: SQLiteStore, tmp_path: Path) -> None:
    store.add("a", "x", E1, provenance=P)
    target = tmp_path / "copy.db"
    store.save_as(target)
    with SQLiteStore(target, embedding_model="fake-4d", dim=4) as copy:
        assert copy.list() == store.list() and copy.history() == store.history()
    with pytest.raises(FileExistsError):
        store.save_as(target)


# ---------------------------------------------------------------- search


@pytest.fixture
def geometry(store: SQLiteStore) -> SQLiteStore:
    """Cosines to E1: 1, 1/sqrt(2), 0, -1; plus an identical twin of E1 owned by someone else."""
    store.add("a", "e1", E1, provenance=P)
    store.add("a", "diag", v(1, 1, 0, 0), provenance=P)
    store.add("a", "e2", E2, provenance=P)
    store.add("a", "minus e1", -E1, provenance=P)
    store.add("b", "b's e1", E1, provenance=P)
    return store


def test_search_orders_by_cosine(geometry: SQLiteStore) -> None:
    hits = geometry.search("a", E1, k=10)  # k larger than the bank: all of them
    assert texts(hits) == ["e1", "diag", "e2", "minus e1"]
    assert [h.score for h in hits] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0, -1.0], abs=1e-6)
    assert texts(geometry.search("a", E1, k=2)) == ["e1", "diag"]
    assert geometry.search("a", E1, k=0) == []
    with pytest.raises(ValueError):
        geometry.search("a", E1, k=-1)


def test_search_is_per_owner(geometry: SQLiteStore) -> None:
    assert texts(geometry.search("b", E1, k=10)) == ["b's e1"]
    assert geometry.search("nobody", E1, k=10) == []


def test_search_excludes_deleted(geometry: SQLiteStore) -> None:
    geometry.delete(1, provenance=P)
    assert texts(geometry.search("a", E1, k=2)) == ["diag", "e2"]


def test_search_ties_break_by_id(store: SQLiteStore) -> None:
    for i in range(5):
        store.add("a", f"same{i}", E1, provenance=P)
    assert ids(store.search("a", E1, k=3)) == [1, 2, 3]


def test_search_many_equals_search(geometry: SQLiteStore) -> None:
    queries = np.stack([E1, E2, v(1, 1, 1, 0)])
    assert geometry.search_many("a", queries, k=2) == [geometry.search("a", q, k=2) for q in queries]


def test_time_filters_on_occurred_at(store: SQLiteStore) -> None:
    day = datetime(2023, 5, 1)
    for i in range(4):
        store.add("a", f"day{i}", E1, occurred_at=day + timedelta(days=i), provenance=P)
    store.add("a", "undated", E1, provenance=P)
    assert len(store.search("a", E1, k=10)) == 5
    assert texts(store.search("a", E1, k=10, since=day + timedelta(days=1))) == ["day1", "day2", "day3"]
    assert texts(store.search("a", E1, k=10, until=day + timedelta(days=1))) == ["day0", "day1"]
    assert texts(
        store.search("a", E1, k=1, since=day + timedelta(days=1), until=day + timedelta(days=2))
    ) == ["day1"]
    aware = (day + timedelta(days=3)).replace(tzinfo=timezone.utc)  # naive values count as UTC
    assert texts(store.search("a", E1, k=10, since=aware)) == ["day3"]
    store.update(4, "day3 moved", E1, occurred_at=day, provenance=P)
    assert texts(store.search("a", E1, k=10, until=day)) == ["day0", "day3 moved"]


def test_cached_index_matches_brute_force_under_random_writes(store: SQLiteStore) -> None:
    """Appends past the initial capacity, swap-removes and undos, checked against numpy over our own copy."""
    rng = np.random.default_rng(0)
    live: dict[int, np.ndarray] = {}
    done: list[tuple[str, int, np.ndarray | None]] = []  # mirrors the undoable history rows not yet undone
    store.add("a", "seed", E1, provenance=P)
    live[1], done = E1, [("ADD", 1, None)]
    store.search("a", E1, k=1)  # build the index so every later write maintains it
    for step in range(400):
        x = rng.normal(size=4).astype(np.float32)
        x /= np.linalg.norm(x)
        roll = rng.random()
        if roll < 0.5 or not live:
            memory_id = store.add("a", f"m{step}", x, provenance=P).id
            live[memory_id] = x
            done.append(("ADD", memory_id, None))
        elif roll < 0.7:
            target = int(rng.choice(list(live)))
            store.update(target, f"u{step}", x, provenance=P)
            done.append(("UPDATE", target, live[target]))
            live[target] = x
        elif roll < 0.9:
            target = int(rng.choice(list(live)))
            store.delete(target, provenance=P)
            done.append(("DELETE", target, live.pop(target)))
        elif done:
            event, target, old = done.pop()
            assert store.undo().memory_id == target
            if event == "ADD":
                del live[target]
            else:
                live[target] = old
        q = rng.normal(size=4).astype(np.float32)
        q /= np.linalg.norm(q)
        expect = sorted(live, key=lambda i: (-float(live[i] @ q), i))[:7]
        got = store.search("a", q, k=7)
        assert [h.score for h in got] == pytest.approx([float(live[i] @ q) for i in expect], abs=1e-5)
    assert sorted(live) == [m.id for m in store.list("a")]


# ---------------------------------------------------------------- files: reopen and compatibility


def test_reopen_preserves_everything(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with SQLiteStore(path, embedding_model="fake-4d", dim=4) as s:
        m = s.add(
            "a",
            "x",
            E1,
            timestamp="t",
            occurred_at=datetime(2023, 1, 1),
            source_turn_ids=["D1:1"],
            provenance=P,
        )
        s.add("b", "y", E2, provenance=P)
        s.update(m.id, "x2", v(1, 1, 0, 0), provenance=P, reason="r")
        s.delete(2, provenance=P)
        s.record_noop("a", provenance=P, reason="nothing new")
        before = (s.list(include_deleted=True), s.history(), s.search("a", E1, k=5))
    with SQLiteStore(path) as s:
        assert (s.list(include_deleted=True), s.history(), s.search("a", E1, k=5)) == before
        assert (s.dim, s.embedding_model) == (4, "fake-4d")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with SQLiteStore(path) as s:
        s.undo()  # undo still exact after a reopen
        assert s.get(2).deleted is False


def test_reopen_with_other_dimension_or_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    SQLiteStore(path, embedding_model="fake-4d", dim=4).close()
    with pytest.raises(IncompatibleBankError, match="dim 4, asked for 8"):
        SQLiteStore(path, dim=8)
    with pytest.raises(IncompatibleBankError, match="'fake-4d', asked for 'other'"):
        SQLiteStore(path, embedding_model="other")


def test_reopen_with_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    SQLiteStore(path, dim=4).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(IncompatibleBankError) as error:
        SQLiteStore(path)
    assert str(error.value) == f"{path}: bank schema version 99, this memory-r1 expects {SCHEMA_VERSION}"


def test_files_that_are_not_banks(tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(BankError, match=r"notes\.db"):
        SQLiteStore(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(IncompatibleBankError, match="not a memory bank"):
        SQLiteStore(other)
    with pytest.raises(BankError, match="cannot open"):
        SQLiteStore(tmp_path / "missing-dir" / "bank.db")
