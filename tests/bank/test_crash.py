"""A real crash in the middle of a transaction: the process dies (os._exit or SIGKILL) with uncommitted
writes, some of them already spilled into the WAL file. Reopening must show exactly the committed state."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memory_r1.bank import SQLiteStore
from memory_r1.records import Provenance

DIM = 256
SPILL = (
    4000  # uncommitted rows: ~4 MB of embeddings, more than SQLite's 2 MB page cache, so pages hit the WAL
)

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from memory_r1.bank import SQLiteStore
    from memory_r1.records import Provenance

    path, how, dim, spill = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    p = Provenance("child", "m", "v1")
    rng = np.random.default_rng(0)
    store = SQLiteStore(path, embedding_model="fake", dim=dim)
    a = store.add("o", "committed a", rng.normal(size=dim), provenance=p)
    b = store.add("o", "committed b", rng.normal(size=dim), provenance=p)
    store.update(a.id, "committed a, edited", rng.normal(size=dim), provenance=p)
    wal = path + "-wal"
    committed_wal = os.path.getsize(wal)
    with store.transaction():
        store.add("o", "uncommitted add", rng.normal(size=dim), provenance=p)
        store.update(b.id, "uncommitted update", rng.normal(size=dim), provenance=p)
        store.delete(a.id, provenance=p)
        store.record_noop("o", provenance=p, reason="uncommitted noop")
        store.add_many("o", [f"bulk {i}" for i in range(spill)], rng.normal(size=(spill, dim)), provenance=p)
        print(committed_wal, os.path.getsize(wal), flush=True)
        if how == "exit":
            os._exit(1)
        time.sleep(60)  # the parent SIGKILLs us here
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_crash_mid_transaction_keeps_only_committed_state(tmp_path: Path, how: str) -> None:
    path = tmp_path / "bank.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), how, str(DIM), str(SPILL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line, f"child died early: {child.stderr.read()}"
        if how == "sigkill":
            child.kill()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == (1 if how == "exit" else -9)
    committed_wal, crashed_wal = map(int, line.split())
    assert crashed_wal > committed_wal  # uncommitted pages really were on disk when we died

    with sqlite3.connect(path) as conn:  # a plain connection runs WAL recovery, then checks every page
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    p = Provenance("child", "m", "v1")
    with SQLiteStore(path, embedding_model="fake", dim=DIM) as store:
        assert [(m.id, m.text, m.deleted) for m in store.list(include_deleted=True)] == [
            (1, "committed a, edited", False),
            (2, "committed b", False),
        ]
        assert [
            (h.id, h.memory_id, h.event, h.before_text, h.after_text, h.provenance, h.undone)
            for h in store.history()
        ] == [
            (1, 1, "ADD", None, "committed a", p, False),
            (2, 2, "ADD", None, "committed b", p, False),
            (3, 1, "UPDATE", "committed a", "committed a, edited", p, False),
        ]
        query = np.ones(DIM, np.float32)
        assert sorted(h.entry.text for h in store.search("o", query, k=100)) == [
            "committed a, edited",
            "committed b",
        ]
        # still usable: a new write, an exact undo of a committed event, search over both
        assert store.add("o", "after the crash", query, provenance=Provenance("parent")).id == 3
        assert store.undo(3).after_text == "committed a"
        hits = store.search("o", query, k=3)
        assert hits[0].entry.text == "after the crash" and hits[0].score == pytest.approx(1.0)
        assert sorted(h.entry.text for h in hits) == ["after the crash", "committed a", "committed b"]
