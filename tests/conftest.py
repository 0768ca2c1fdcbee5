"""Shared fixtures. Tests never touch the network: the hub is switched off before transformers loads."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from memory_r1.llm.base import Generation
from memory_r1.llm.tiny import build_tiny_model
from memory_r1.records import Usage

# One intra-op thread: the tiny model's matrices are too small to split, and when another process is
# using the second core, OpenMP's spinning barriers make 2-thread generation ~30x slower (measured).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random chat model, built once per test session (a few seconds)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    """A `TransformersGenerator` over the tiny model, on CPU, shared by the session: don't mutate it."""
    from memory_r1.llm.transformers_backend import TransformersGenerator

    return TransformersGenerator(tiny_model_dir, device="cpu", name="tiny-random")


LOCOMO_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


@pytest.fixture(scope="session")
def locomo_path() -> Path:
    """The real LoCoMo file from ../shared (never committed: CC BY-NC 4.0)."""
    if not LOCOMO_PATH.exists():
        pytest.skip(f"LoCoMo not found at {LOCOMO_PATH}")
    return LOCOMO_PATH


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                    request) -> None:
    """Models built by name (tiny-random) go to a per-session temp cache, never the user's; slow tests
    that need the real converted SmolLM2 keep the user cache so it is converted only once."""
    if "slow" not in request.keywords:
        monkeypatch.setenv("MEMORY_R1_CACHE", str(tmp_path_factory.getbasetemp() / "model-cache"))


class ScriptedGenerator:
    """A Generator whose replies are computed from the prompt: exact, assertable model behaviour."""

    def __init__(self, reply: Callable[[list[dict]], str], name: str = "scripted"):
        self.reply, self.name, self.calls = reply, name, 0

    def generate(self, prompts, config):
        self.calls += len(prompts)
        return [Generation(self.reply(list(p)), Usage(10, 5, 0.0), self.name) for p in prompts]


def _last_user(messages) -> str:
    return messages[-1]["content"]


def is_manager_call(messages) -> bool:
    """A Memory Manager prompt, in any protocol (manage-v1's JSON block, manage-v2/v3's labelled lines)."""
    return _last_user(messages).startswith(("Current memories:", "Memories:\n"))


def reference_script(messages) -> str:
    """Extract the line as a fact; the manager ADDs every new fact unless shown memories already say it."""
    content = _last_user(messages)
    if content.startswith("Chat date:"):
        line = content.split("Line: ", 1)[1]
        return json.dumps({"facts": [line]})
    if content.startswith("Current memories:"):
        shown = json.loads(content.split("\n")[1])
        facts = json.loads(content.split("New facts:\n", 1)[1])
        known = {m["text"] for m in shown}
        return json.dumps({"memory": [{"id": str(len(shown) + i), "text": f, "event": "ADD"}
                                      for i, f in enumerate(facts) if f not in known]})
    if content.startswith("Memories:\n"):  # the per-fact protocols (manage-v2 JSON, manage-v3 lines)
        head, listed = content.split("\nNew facts:\n", 1)
        known = {line.split(": ", 1)[1] for line in head.splitlines()[1:] if ": " in line}
        facts = [line.split(": ", 1) for line in listed.splitlines()]
        new = [label for label, text in facts if text not in known]
        if "one line per fact" in messages[0]["content"]:
            return "\n".join(f"{label}: ADD" for label in new)
        return json.dumps({"decisions": [{"fact": label, "event": "ADD"} for label in new]})
    return "[1] a memory\n**Answer:** 7 May 2023"


@pytest.fixture
def scripted() -> Callable[..., ScriptedGenerator]:
    """`scripted()` follows `reference_script`; `scripted(fn)` replies with fn(messages)."""
    return lambda reply=reference_script: ScriptedGenerator(reply)


@pytest.fixture
def manager_call() -> Callable[[list[dict]], bool]:
    """`is_manager_call`: tells a Memory Manager prompt from the other agents', whatever the protocol."""
    return is_manager_call


@pytest.fixture
def reference_reply() -> Callable[[list[dict]], str]:
    """`reference_script` itself, for tests that wrap it."""
    return reference_script


@pytest.fixture
def make_system():
    """`make_system(generator, embedder=None, bank=":memory:")`: a MemorySystem on one generator."""
    from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
    from memory_r1.bank import SQLiteStore
    from memory_r1.embeddings import HashingEmbedder
    from memory_r1.pipeline import Agents, MemorySystem

    def make(generator, embedder=None, bank=":memory:"):
        embedder = embedder or HashingEmbedder()
        store = SQLiteStore(bank, embedding_model=embedder.name, dim=embedder.dim)
        agents = Agents(embedder, FactExtractor(generator), MemoryManager(generator, embedder),
                        AnswerAgent(generator, embedder))
        return MemorySystem(store, agents)

    return make


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL 16 + pgvector server (PyPI `pgserver`), one per test session."""
    try:
        import pgserver
    except ImportError:
        pytest.skip("pgserver is not installed (pip install -e '.[postgres,test]')")
    try:
        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    except Exception as error:  # noqa: BLE001 - any failure to start is a skip with its reason
        pytest.skip(f"PostgreSQL (pgserver) could not start here: {error}")
    yield server
    server.cleanup()


_DB_COUNTER = iter(range(1_000_000))


@pytest.fixture
def pg_new_db(pg_server) -> Callable[[], str]:
    """`pg_new_db()`: the DSN of a fresh, empty database on the test server."""

    def make() -> str:
        name = f"mr1_{os.getpid()}_{next(_DB_COUNTER)}"
        pg_server.psql(f'CREATE DATABASE "{name}";')
        path, _, query = pg_server.get_uri().partition("?")
        return path.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")

    return make


@pytest.fixture
def pg_dsn(pg_new_db) -> str:
    """A fresh, empty database for this test."""
    return pg_new_db()
