"""Several processes adding, updating and deleting in one scope at once, on both stores: nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory_r1 import Memory
from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
from memory_r1.embeddings import HashingEmbedder
from memory_r1.pipeline import Agents
from memory_r1.records import Scope

WORKERS, ROUNDS = 4, 15

WORKER = r"""
import json, sys
from memory_r1.bank.sqlite import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.records import Provenance
location, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
embedder = HashingEmbedder()
if location.startswith("postgresql://"):
    from memory_r1.bank.postgres import PostgresStore
    store = PostgresStore(location, embedding_model=embedder.name, dim=embedder.dim)
else:
    store = SQLiteStore(location, embedding_model=embedder.name, dim=embedder.dim)
who = Provenance("worker")
done = {"add": 0, "update": 0, "delete": 0, "live": []}
for j in range(rounds):
    text = f"worker {worker} memory {j}"
    [vector] = embedder.embed([text])
    entry = store.add("shared", text, vector, provenance=who)
    done["add"] += 1
    [vector] = embedder.embed([text + " updated"])
    store.update(entry.id, text + " updated", vector, provenance=who)
    done["update"] += 1
    if j % 3 == 0:
        store.delete(entry.id, provenance=who)
        done["delete"] += 1
    else:
        done["live"].append(text + " updated")
store.close()
print(json.dumps(done))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_dsn")
    return str(tmp_path / "shared.db")


def test_concurrent_writer_processes_lose_nothing(location: str) -> None:
    embedder = HashingEmbedder()
    agents = Agents(embedder, FactExtractor(None), MemoryManager(None, embedder),
                    AnswerAgent(None, embedder))  # type: ignore[arg-type]
    Memory(location, agents).close()  # create the schema once, as a server would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, location, str(w), str(ROUNDS)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in range(WORKERS)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    with Memory(location, agents) as memory:
        live = [e.text for e in memory.store.list("shared")]
        history = memory.store.history(owner="shared")
        everything = memory.store.list("shared", include_deleted=True)
        found = memory.get_all(Scope("shared"), page_size=1000)
    assert sorted(live) == sorted(t for r in reports for t in r["live"])
    assert len(everything) == sum(r["add"] for r in reports) == WORKERS * ROUNDS
    assert len({e.id for e in everything}) == len(everything)
    counts = {e: sum(h.event == e for h in history) for e in ("ADD", "UPDATE", "DELETE")}
    assert counts == {e: sum(r[e.lower()] for r in reports) for e in ("ADD", "UPDATE", "DELETE")}
    assert [i.memory for i in found] == live
