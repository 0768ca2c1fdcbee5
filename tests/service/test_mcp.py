"""The MCP server through a real MCP client session (the official SDK's client), never by calling the tools:
streamable HTTP against a real uvicorn server on loopback, and stdio on a `memory-r1 mcp` subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("mcp")
import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from memory_r1.memory import Memory
from memory_r1.records import Scope
from memory_r1.service.app import ServiceConfig, create_app
from memory_r1.service.core import Service
from memory_r1.service.keys import KeyStore
from memory_r1.service.mcp import mcp_app

TOOLS = {"add_memory", "search_memories", "list_memories", "get_memory", "update_memory", "delete_memory",
         "delete_all_memories", "answer_question", "memory_history"}
SRC = Path(__file__).resolve().parents[2] / "src"


@asynccontextmanager
async def http_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed: its structured content."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    assert isinstance(result.structured_content, dict), (tool, result)
    return result.structured_content


async def tool_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """A tool call that must fail as a tool error (is_error, not a protocol error or a crash): its text."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, (tool, result)
    return " ".join(getattr(c, "text", "") for c in result.content)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    anyio.run(fn)


@pytest.fixture
def served(scripted_agents, live) -> tuple[Any, KeyStore]:
    """`memory-r1 serve`'s app (REST + /mcp on one Service), on a SQLite store in memory."""
    keys = KeyStore()
    return live(
        create_app(Memory(":memory:", scripted_agents()), keys, ServiceConfig(rate_per_minute=10**6))
    ), keys


def test_tools_over_streamable_http_have_output_schemas_and_return_structured_content(served) -> None:
    server, keys = served
    key = keys.create("acme")

    async def main() -> None:
        async with http_session(server.url, key) as s:
            listed = (await s.list_tools()).tools
            assert {t.name for t in listed} == TOOLS
            assert all(t.output_schema and t.output_schema.get("type") == "object" for t in listed)
            [tea] = (
                await call(
                    s,
                    "add_memory",
                    messages="I love green tea",
                    user_id="alice",
                    infer=False,
                    metadata={"source": "mcp"},
                )
            )["results"]
            assert (
                tea["event"] == "ADD" and tea["memory"] == "I love green tea" and isinstance(tea["id"], int)
            )
            await call(s, "add_memory", messages="I love hiking", user_id="bob", infer=False)
            inferred = await call(
                s, "add_memory", messages=[{"role": "user", "content": "I adopted a cat"}], user_id="alice"
            )  # extraction + the Memory Manager (scripted replies)
            assert [op["event"] for op in inferred["results"]] == ["ADD"]
            assert inferred["usage"]["manage"]["prompt_tokens"] > 0
            hits = (await call(s, "search_memories", query="green tea", user_id="alice", limit=1))["results"]
            assert [h["memory"] for h in hits] == ["I love green tea"] and hits[0]["score"] > 0
            assert hits[0]["metadata"] == {"source": "mcp"} and hits[0]["user_id"] == "alice"
            bob = (await call(s, "search_memories", query="green tea", user_id="bob"))["results"]
            assert [h["memory"] for h in bob] == ["I love hiking"]  # scopes do not leak into each other
            alice = (await call(s, "list_memories", user_id="alice"))["results"]
            assert len(alice) == 2 and {m["user_id"] for m in alice} == {"alice"}
            updated = await call(s, "update_memory", memory_id=tea["id"], text="I love black tea")
            assert updated["memory"] == "I love black tea"
            history = (await call(s, "memory_history", memory_id=tea["id"]))["results"]
            assert [(h["event"], h["new_memory"]) for h in history] == [
                ("ADD", "I love green tea"),
                ("UPDATE", "I love black tea"),
            ]
            assert (await call(s, "delete_memory", memory_id=tea["id"]))["deleted"] is True
            assert (await call(s, "get_memory", memory_id=tea["id"]))["deleted"] is True
            assert len((await call(s, "list_memories", user_id="alice"))["results"]) == 1
            answer = await call(s, "answer_question", question="What pet?", user_id="alice")
            assert answer["answer"] == "7 May 2023" and answer["parse_error"] is None  # the scripted reply
            assert (await call(s, "delete_all_memories", user_id="bob")) == {"deleted": 1}

    run(main)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {key}"}) as rest:
        # the same Service: what MCP wrote in tenant acme is what REST reads with acme's key
        [cat] = rest.get("/v1/memories/", params={"user_id": "alice"}).json()["results"]
        assert "cat" in cat["memory"]


def test_unknown_ids_and_bad_input_are_tool_errors_and_the_session_goes_on(served) -> None:
    server, keys = served
    key = keys.create("acme")

    async def main() -> None:
        async with http_session(server.url, key) as s:
            assert "not found" in await tool_error(s, "get_memory", memory_id=999_999)
            assert "not found" in await tool_error(s, "update_memory", memory_id=999_999, text="x")
            assert "not found" in await tool_error(s, "memory_history", memory_id=999_999)
            assert "scope needs at least one" in await tool_error(s, "add_memory", messages="hi", infer=False)
            assert "invalid request" in await tool_error(
                s, "add_memory", messages=[], user_id="a", infer=False
            )
            assert "invalid request" in await tool_error(
                s, "search_memories", query="q", user_id="a", limit=0
            )
            await tool_error(s, "get_memory", memory_id="abc")  # fails the input schema
            assert (await call(s, "list_memories", user_id="a"))["results"] == []  # nothing half-written
            await call(s, "add_memory", messages="still serving", user_id="a", infer=False)

    run(main)


@pytest.mark.parametrize("which", ["serve", "mcp --transport http"])
def test_http_refuses_missing_or_unknown_keys_and_keeps_tenants_apart(which, scripted_agents, live) -> None:
    keys = KeyStore()
    memory = Memory(":memory:", scripted_agents())
    config = ServiceConfig(rate_per_minute=10**6)
    app = create_app(memory, keys, config) if which == "serve" else mcp_app(Service(memory, keys, config))
    server = live(app)
    a, b = keys.create("tenant-a"), keys.create("tenant-b")
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer mr1_wrong"}, {"Authorization": "Basic abc"}):
        r = httpx.post(f"{server.url}/mcp", json=init, headers=accept | headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    r = httpx.post(
        f"{server.url}/mcp", content=b"x" * 300_000, headers=accept | {"Authorization": f"Token {a}"}
    )
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    async def without_key() -> None:
        async with http_session(server.url, None):
            pass

    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 as its own error type
        run(without_key)

    async def main() -> None:
        async with http_session(server.url, a) as sa, http_session(server.url, b) as sb:
            [mine] = (await call(sa, "add_memory", messages="a's secret", user_id="alice", infer=False))[
                "results"
            ]
            await call(sb, "add_memory", messages="b's note", user_id="alice", infer=False)
            assert "not found" in await tool_error(sb, "get_memory", memory_id=mine["id"])
            assert "not found" in await tool_error(sb, "delete_memory", memory_id=mine["id"])
            found = (await call(sb, "search_memories", query="secret", user_id="alice"))["results"]
            assert [m["memory"] for m in found] == ["b's note"]
            assert (await call(sb, "delete_all_memories", user_id="alice")) == {"deleted": 1}
            assert [m["memory"] for m in (await call(sa, "list_memories", user_id="alice"))["results"]] == [
                "a's secret"
            ]

    run(main)

    # an MCP session belongs to the tenant whose key opened it: another tenant's key cannot use its id
    r = httpx.post(f"{server.url}/mcp", json=init, headers=accept | {"Authorization": f"Token {a}"})
    assert r.status_code == 200, r.text
    session = {"mcp-session-id": r.headers["mcp-session-id"]}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    as_b = accept | session | {"Authorization": f"Token {b}"}
    r = httpx.post(f"{server.url}/mcp", json=listing, headers=as_b)
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    other_a = keys.create("tenant-a")  # a second key of the same tenant may use it
    as_a = accept | session | {"Authorization": f"Token {other_a}"}
    r = httpx.post(f"{server.url}/mcp", json=listing, headers=as_a)
    assert r.status_code == 200 and "add_memory" in r.text, r.text


def test_sessions_that_end_or_go_idle_lose_their_tenant_binding(scripted_agents, live) -> None:
    import time

    keys = KeyStore()
    app = mcp_app(Service(Memory(":memory:", scripted_agents()), keys,
                          ServiceConfig(rate_per_minute=10**6, mcp_session_idle_s=0.3)))
    endpoint, server = app.state.mcp_endpoint, live(app)
    a = keys.create("tenant-a")
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Token {a}"}
    client = {"name": "t", "version": "0"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client}}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    def open_session() -> dict[str, str]:
        r = httpx.post(f"{server.url}/mcp", json=init, headers=headers)
        assert r.status_code == 200, r.text
        return headers | {"mcp-session-id": r.headers["mcp-session-id"]}

    ended = open_session()
    assert endpoint.bound_sessions == 1
    assert httpx.delete(f"{server.url}/mcp", headers=ended).status_code < 400  # the client ends it
    assert endpoint.bound_sessions == 0

    idle = open_session()
    assert httpx.post(f"{server.url}/mcp", json=listing, headers=idle).status_code == 200  # in use: kept
    time.sleep(1.0)  # past the idle timeout: the SDK closes the session, the next request sweeps the map
    assert httpx.post(f"{server.url}/mcp", json=listing, headers=idle).status_code == 404
    assert endpoint.bound_sessions == 0


def test_stdio_session_on_a_memory_r1_mcp_subprocess(tmp_path: Path, scripted_agents) -> None:
    """The command an agent host runs (`memory-r1 mcp`), on a store file the CLI and `Memory()` then read."""
    store = tmp_path / "bank.db"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(
        command=sys.executable,
        env=env,
        args=[
            "-m",
            "memory_r1.cli",
            "mcp",
            "--store",
            str(store),
            "--model",
            "tiny-random",
            "--embedding-model",
            "hashing",
        ],
    )

    async def main() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            for text, user in (
                ("I love green tea", "alice"),
                ("I love hiking", "bob"),
                ("I live in Porto", "alice"),
            ):
                await call(s, "add_memory", messages=text, user_id=user, infer=False)
            hits = (await call(s, "search_memories", query="green tea", user_id="alice"))["results"]
            assert hits[0]["memory"] == "I love green tea"
            assert {h["user_id"] for h in hits} == {"alice"} and len(hits) == 2
            assert "not found" in await tool_error(s, "get_memory", memory_id=424242)
            answer = await call(s, "answer_question", question="What do I love?", user_id="alice")
            assert isinstance(answer["answer"], str) and isinstance(
                answer["memory_ids"], list
            )  # tiny model: any text

    run(main)
    with Memory(str(store), scripted_agents()) as memory:  # written through, no tenant: the user's own store
        assert [i.memory for i in memory.get_all(Scope("alice"))] == ["I love green tea", "I live in Porto"]
        assert [i.memory for i in memory.get_all(Scope("bob"))] == ["I love hiking"]


def test_rest_and_mcp_share_one_postgresql_store(pg_dsn: str, scripted_agents, live) -> None:
    """`memory-r1 serve --store postgresql://...`: REST and MCP writes land in one PostgreSQL store, by
    tenant."""
    keys = KeyStore()
    memory = Memory(pg_dsn, scripted_agents())
    server = live(create_app(memory, keys, ServiceConfig(rate_per_minute=10**6)))
    a, b = keys.create("tenant-a"), keys.create("tenant-b")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {a}"}, timeout=30) as rest:
        added = rest.post(
            "/v1/memories/", json={"messages": "I love green tea", "user_id": "alice", "infer": False}
        )
        assert added.status_code == 200, added.text
        [tea] = added.json()["results"]

    async def main() -> None:
        async with http_session(server.url, a) as sa, http_session(server.url, b) as sb:
            hits = (await call(sa, "search_memories", query="green tea", user_id="alice"))["results"]
            assert [(h["id"], h["memory"]) for h in hits] == [(tea["id"], "I love green tea")]
            await call(sa, "add_memory", messages="I love hiking", user_id="bob", infer=False)
            await call(sa, "add_memory", messages="I adopted a cat", user_id="bob")  # extraction + manager
            assert "not found" in await tool_error(sb, "get_memory", memory_id=tea["id"])
            assert (await call(sb, "list_memories", user_id="alice"))["results"] == []

    run(main)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {a}"}, timeout=30) as rest:
        bob = rest.get("/v1/memories/", params={"user_id": "bob"}).json()["results"]
        assert bob[0]["memory"] == "I love hiking" and len(bob) == 2
    memory.close()
    with Memory(pg_dsn, scripted_agents()) as again:  # durable in the server, not in the process
        assert again.in_namespace("tenant-a").get_all(Scope("bob"))[0].memory == "I love hiking"
