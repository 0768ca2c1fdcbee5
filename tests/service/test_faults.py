"""Faults in the middle of a request, against real servers: the store goes away (SQLite file's folder moved
away, PostgreSQL server stopped) while an inference add is running, and a model backend (a real HTTP server
on loopback that never answers) times out. Each is a clear 5xx with a JSON body over REST and a tool error
over MCP, nothing of the failed add is written, and the server keeps serving."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("mcp")
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
from memory_r1.bank import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.llm.openai_backend import OpenAIGenerator
from memory_r1.memory import Memory
from memory_r1.pipeline import Agents
from memory_r1.records import Scope
from memory_r1.service.app import ServiceConfig, create_app
from memory_r1.service.keys import KeyStore

ALICE = Scope("alice")


def mcp_call(url: str, key: str, tool: str, **arguments: Any) -> Any:
    """One tool call in a fresh streamable-HTTP MCP session: the CallToolResult."""

    async def main() -> Any:
        async with (httpx2.AsyncClient(headers={"Authorization": f"Token {key}"}, timeout=30) as http,
                    streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            return await session.call_tool(tool, arguments)

    return anyio.run(main)


def on_manager_call(reference_reply: Callable[[list[dict]], str], fault: Callable[[], None],
                    is_manager_call: Callable[[list[dict]], bool]):
    """A reply function: the reference script, but the first Memory Manager call runs `fault` first."""
    fired = []

    def reply(messages: list[dict]) -> str:
        if is_manager_call(messages) and not fired:
            fired.append(True)
            fault()
        return reference_reply(messages)

    return reply


def serve(memory: Memory, live) -> tuple[Any, str]:
    keys = KeyStore()
    return live(create_app(memory, keys, ServiceConfig(rate_per_minute=10**6))), keys.create("acme")


def test_sqlite_file_gone_mid_add_is_503_nothing_written_and_serving_resumes(
    tmp_path: Path, scripted, reference_reply, manager_call, scripted_agents, live
) -> None:
    folder, moved = tmp_path / "data", tmp_path / "elsewhere"
    folder.mkdir()
    vanish = lambda: folder.rename(moved)  # noqa: E731 -- the store vanishes mid-add
    reply = on_manager_call(reference_reply, vanish, manager_call)
    memory = Memory(str(folder / "bank.db"), scripted_agents(scripted(reply)))
    server, key = serve(memory, live)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {key}"}, timeout=30) as c:
        assert (
            c.post("/v1/memories/", json={"messages": "kept", "user_id": "alice", "infer": False}).status_code
            == 200
        )
        r = c.post("/v1/memories/", json={"messages": "I adopted a cat", "user_id": "alice"})
        assert r.status_code == 503 and r.json()["error"] == "store_unavailable", r.text
        assert "removed or replaced" in r.json()["detail"]
        r = c.post("/v1/memories/search/", json={"query": "cat", "user_id": "alice"})
        assert r.status_code == 503 and r.json()["error"] == "store_unavailable"
        error = mcp_call(server.url, key, "list_memories", user_id="alice")
        assert error.is_error and "store unavailable" in error.content[0].text
        assert c.get("/health").json() == {"status": "ok"}
        with SQLiteStore(moved / "bank.db", read_only=True) as on_disk:  # the file as it was left
            assert [e.text for e in on_disk.list()] == ["kept"] and len(on_disk.history()) == 1
        moved.rename(folder)  # the store comes back: the same server serves again
        assert (
            c.post(
                "/v1/memories/", json={"messages": "again", "user_id": "alice", "infer": False}
            ).status_code
            == 200
        )
        assert [
            m["memory"] for m in c.get("/v1/memories/", params={"user_id": "alice"}).json()["results"]
        ] == ["kept", "again"]


def test_postgres_stopped_mid_add_is_503_nothing_written_and_serving_resumes(
    tmp_path: Path, scripted, reference_reply, manager_call, scripted_agents, live
) -> None:
    pgserver = pytest.importorskip("pgserver")
    from memory_r1.bank.postgres import PostgresStore

    holder = {
        "pg": pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    }  # its own server: it is stopped
    try:
        dsn = holder["pg"].get_uri()
        reply = on_manager_call(reference_reply, lambda: holder["pg"].cleanup(), manager_call)
        agents = scripted_agents(scripted(reply))
        store = PostgresStore(dsn, embedding_model=agents.embedder.name, dim=agents.embedder.dim, timeout_s=2)
        server, key = serve(Memory(store, agents), live)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {key}"}, timeout=30) as c:
            assert (
                c.post(
                    "/v1/memories/", json={"messages": "kept", "user_id": "alice", "infer": False}
                ).status_code
                == 200
            )
            r = c.post("/v1/memories/", json={"messages": "I adopted a cat", "user_id": "alice"})
            assert r.status_code == 503 and r.json()["error"] == "store_unavailable", r.text
            error = mcp_call(server.url, key, "add_memory", messages="x", user_id="alice", infer=False)
            assert error.is_error and "store unavailable" in error.content[0].text
            assert c.get("/health").json() == {"status": "ok"}
            holder["pg"] = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")  # back, same data dir
            for _ in range(3):  # the pool drops the connections the stop broke
                listed = c.get("/v1/memories/", params={"user_id": "alice"})
                if listed.status_code == 200:
                    break
            assert [m["memory"] for m in listed.json()["results"]] == ["kept"]  # the failed add left nothing
            assert (
                c.post(
                    "/v1/memories/", json={"messages": "again", "user_id": "alice", "infer": False}
                ).status_code
                == 200
            )
    finally:
        holder["pg"].cleanup()


@pytest.fixture
def hanging_backend() -> Iterator[str]:
    """A real OpenAI-compatible URL on loopback whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def silent(hanging_backend: str) -> Iterator[OpenAIGenerator]:
    """An OpenAI-compatible generator on the hanging backend, with a short timeout and no retries."""
    generator = OpenAIGenerator("any-model", base_url=hanging_backend, timeout=0.5, max_retries=0)
    yield generator
    generator.close()


def _agents(scripted: Any, *, manager: Any = None, answerer: Any = None) -> Agents:
    """Scripted extraction; the manager and answerer scripted unless a (failing) backend is given."""
    embedder = HashingEmbedder()
    return Agents(
        embedder,
        FactExtractor(scripted()),
        MemoryManager(manager or scripted(), embedder),
        AnswerAgent(answerer or scripted(), embedder),
    )


def test_a_model_backend_timeout_is_504_nothing_written_and_serving_goes_on(
    silent: OpenAIGenerator, scripted, live
) -> None:
    server, key = serve(Memory(":memory:", _agents(scripted, manager=silent)), live)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {key}"}, timeout=30) as c:
        assert (
            c.post("/v1/memories/", json={"messages": "kept", "user_id": "alice", "infer": False}).status_code
            == 200
        )
        r = c.post("/v1/memories/", json={"messages": "I adopted a cat", "user_id": "alice"})
        assert r.status_code == 504 and r.json()["error"] == "backend_timeout", r.text
        error = mcp_call(server.url, key, "add_memory", messages="I adopted a cat", user_id="alice")
        assert error.is_error and "timed out" in error.content[0].text
        assert [
            m["memory"] for m in c.get("/v1/memories/", params={"user_id": "alice"}).json()["results"]
        ] == ["kept"]
        hits = c.post("/v1/memories/search/", json={"query": "kept", "user_id": "alice"})
        assert hits.status_code == 200 and hits.json()["results"][0]["memory"] == "kept"


def test_an_answer_backend_timeout_is_504_over_rest_and_a_tool_error_over_mcp(
    silent: OpenAIGenerator, scripted, live
) -> None:
    """Not a 200 with an empty answer and a parse_error: the client must see that the model failed."""
    server, key = serve(Memory(":memory:", _agents(scripted, answerer=silent)), live)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {key}"}, timeout=30) as c:
        c.post("/v1/memories/", json={"messages": "I adopted a cat", "user_id": "alice", "infer": False})
        r = c.post("/v1/answer/", json={"question": "What did I adopt?", "user_id": "alice"})
        assert r.status_code == 504 and r.json()["error"] == "backend_timeout", r.text
        error = mcp_call(server.url, key, "answer_question", question="What did I adopt?", user_id="alice")
        assert error.is_error and "timed out" in error.content[0].text
        assert c.get("/health").json() == {"status": "ok"}
