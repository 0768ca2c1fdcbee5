"""The REST service, against a real uvicorn server on loopback, on the SQLite store."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("fastapi")
import uvicorn

from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
from memory_r1.embeddings import HashingEmbedder
from memory_r1.memory import Memory
from memory_r1.pipeline import Agents
from memory_r1.service.app import ServiceConfig, create_app
from memory_r1.service.keys import KeyStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, memory: Memory, keys: KeyStore, config: ServiceConfig) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(memory, keys, config), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def service(scripted) -> Iterator[tuple[Server, str, KeyStore]]:
    embedder = HashingEmbedder()
    generator = scripted()
    agents = Agents(embedder, FactExtractor(generator), MemoryManager(generator, embedder),
                    AnswerAgent(generator, embedder))
    keys = KeyStore()
    admin = keys.ensure_admin()
    assert admin is not None and keys.ensure_admin() is None  # created once, never again
    server = Server(Memory(":memory:", agents), keys, ServiceConfig(rate_per_minute=100_000))
    yield server, admin, keys
    server.stop()


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Token {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def test_add_search_list_update_history_undo_over_http(service) -> None:
    server, admin, _ = service
    with client(server, admin) as c:
        key = c.post("/v1/keys/", json={"tenant": "acme"}).json()["key"]
    with client(server, key) as c:
        added = c.post("/v1/memories/", json={"messages": [{"role": "user", "content": "I love green tea"}],
                                              "user_id": "alice", "infer": False, "metadata": {"k": 1}})
        assert added.status_code == 200
        [op] = added.json()["results"]
        assert op["event"] == "ADD" and op["memory"] == "I love green tea"
        inferred = c.post("/v1/memories/", json={"messages": "I adopted a cat", "user_id": "alice"}).json()
        assert [r["event"] for r in inferred["results"]] == ["ADD"] and inferred["usage"]["manage"][
            "prompt_tokens"
        ]
        hits = c.post("/v1/memories/search/",
                      json={"query": "green tea", "user_id": "alice", "limit": 1}).json()
        assert [h["memory"] for h in hits["results"]] == ["I love green tea"]
        listed = c.get("/v1/memories/", params={"user_id": "alice", "page_size": 1, "page": 2}).json()
        assert len(listed["results"]) == 1
        assert c.put(f"/v1/memories/{op['id']}/",
                     json={"text": "I love black tea"}).json()["memory"] == "I love black tea"
        history = c.get(f"/v1/memories/{op['id']}/history/").json()
        assert [h["event"] for h in history] == ["ADD", "UPDATE"]
        assert c.post(f"/v1/history/{history[-1]['id']}/undo/").status_code == 200
        assert c.get(f"/v1/memories/{op['id']}/").json()["memory"] == "I love green tea"
        exported = c.get("/v1/export/", params={"user_id": "alice"}).text
        assert c.delete("/v1/memories/", params={"user_id": "alice"}).json() == {"deleted": 2}
        assert c.post("/v1/import/", content=exported).json() == {"imported": 2}
        assert c.get("/v1/export/", params={"user_id": "alice"}).text == exported
        assert c.post("/v1/purge/", json={"user_id": "alice"}).json()["purged"] == 4
        assert c.get("/openapi.json").json()["paths"]["/v1/memories/search/"]


def test_auth_is_required_and_keys_are_stored_hashed(service) -> None:
    server, admin, keys = service
    with client(server, None) as c:
        r = c.get("/v1/memories/", params={"user_id": "a"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    with client(server, "mr1_wrong") as c:
        assert c.get("/v1/memories/", params={"user_id": "a"}).status_code == 401
    with client(server, admin) as c:
        key = c.post("/v1/keys/", json={"tenant": "t"}).json()["key"]
    with client(server, key) as c:
        assert c.post("/v1/keys/", json={"tenant": "x"}).status_code == 403  # not an admin
    assert admin not in keys.hashes() and key not in keys.hashes() and len(keys.hashes()) == 2


def test_no_tenant_ever_sees_another_tenants_memories(service) -> None:
    """Randomized: many tenants, shared user ids, every route; zero cross-tenant results."""
    server, admin, _ = service
    rng = random.Random(12)
    with client(server, admin) as c:
        tenants = {f"tenant{i}": c.post("/v1/keys/",
                                        json={"tenant": f"tenant{i}"}).json()["key"] for i in range(6)}
    owned: dict[str, list[int]] = {t: [] for t in tenants}
    for tenant, key in tenants.items():
        with client(server, key) as c:
            for j in range(4):
                r = c.post("/v1/memories/",
                           json={"messages": f"{tenant} secret {j}", "user_id": rng.choice("ab"),
                                                  "infer": False})
                owned[tenant] += [op["id"] for op in r.json()["results"]]
    for _ in range(150):
        tenant = rng.choice(list(tenants))
        victim = rng.choice([t for t in tenants if t != tenant])
        target = rng.choice(owned[victim])
        user = rng.choice("ab")
        with client(server, tenants[tenant]) as c:
            route = rng.randrange(9)
            if route == 0:
                r = c.get(f"/v1/memories/{target}/")
            elif route == 1:
                r = c.put(f"/v1/memories/{target}/", json={"text": "hijacked"})
            elif route == 2:
                r = c.delete(f"/v1/memories/{target}/")
            elif route == 3:
                r = c.get(f"/v1/memories/{target}/history/")
            elif route == 4:
                r = c.post(f"/v1/memories/{target}/purge/")
            elif route == 5:
                r = c.post(f"/v1/history/{target}/undo/")
            else:
                if route == 6:
                    body = c.post("/v1/memories/search/",
                                  json={"query": f"{victim} secret", "user_id": user}).json()
                elif route == 7:
                    body = c.get("/v1/memories/", params={"user_id": user}).json()
                else:
                    body = {"results": [], "text": c.get("/v1/export/", params={"user_id": user}).text}
                assert all(tenant in m["memory"] for m in body["results"])
                assert victim not in body.get("text", "")
                continue
            assert r.status_code == 404, (route, r.text)
    for tenant, key in tenants.items():
        with client(server, key) as c:
            mine = [m for u in "ab" for m in c.get("/v1/memories/", params={"user_id": u}).json()["results"]]
            assert sorted(m["id"] for m in mine) == sorted(owned[tenant])
            assert all(m["memory"].startswith(tenant + " ") for m in mine)


def test_bad_input_gets_a_4xx_json_error_never_a_500(service) -> None:
    server, admin, _ = service
    bad = [
        ("post", "/v1/memories/", {"json": {"messages": [], "user_id": "a"}}),
        ("post", "/v1/memories/", {"json": {"messages": [{"role": "user"}], "user_id": "a"}}),
        ("post", "/v1/memories/", {"json": {"messages": "hi"}}),
        ("post", "/v1/memories/", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("post", "/v1/memories/", {"json": {"messages": "x" * 300_000, "user_id": "a"}}),
        (
            "post",
            "/v1/memories/",
            {"json": {"messages": [{"role": "user", "content": "m"}] * 101, "user_id": "a"}},
        ),
        ("post", "/v1/memories/search/", {"json": {"query": "", "user_id": "a"}}),
        ("post", "/v1/memories/search/", {"json": {"query": "q", "user_id": "a", "limit": 0}}),
        ("get", "/v1/memories/999999/", {}),
        ("get", "/v1/memories/abc/", {}),
        ("get", "/v1/memories/99999999999999999999999/", {}),
        ("get", "/v1/memories/", {"params": {"user_id": "a", "page": 0}}),
        ("get", "/v1/memories/", {}),
        ("put", "/v1/memories/1/", {"json": {"text": ""}}),
        ("post", "/v1/history/424242/undo/", {}),
        ("post", "/v1/import/", {"content": b"\xff\xfe"}),
        ("post", "/v1/import/", {"content": b'{"format": 9}'}),
    ]
    with client(server, admin) as c:
        for method, path, kw in bad:
            r = getattr(c, method)(path, **kw)
            assert 400 <= r.status_code < 500, (path, kw, r.status_code, r.text)
            assert set(r.json()) >= {"error", "detail"}, r.text
        assert c.get("/v1/memories/", params={"user_id": "a"}).json()["results"] == []  # nothing half-written
        assert c.get("/health").json() == {"status": "ok"}  # and it keeps serving


def test_body_limit_by_declared_length_and_by_streamed_bytes(service) -> None:
    """413 whether the client declares a large Content-Length or streams a body without one (chunked);
    a chunked body under the limit reaches the route whole (the middleware replays what it read)."""
    server, admin, _ = service
    limit = ServiceConfig().max_body_bytes

    def chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
        yield from (body[i : i + size] for i in range(0, len(body), size))

    big = json.dumps({"messages": "x" * (limit + 10), "user_id": "a", "infer": False}).encode()
    messages = [{"role": "user", "content": f"{i} " + "y" * 9000} for i in range(20)]  # ~180 KB
    small = json.dumps({"messages": messages, "user_id": "a", "infer": False}).encode()
    with client(server, admin) as c:
        headers = {"content-type": "application/json"}
        r = c.post("/v1/memories/", content=big, headers=headers)  # declared length
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        r = c.post("/v1/memories/", content=chunks(big), headers=headers)  # no Content-Length
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        r = c.post("/v1/memories/", content=chunks(small), headers=headers)
        assert r.status_code == 200, r.text
        stored = c.get("/v1/memories/", params={"user_id": "a"}).json()["results"]
        assert sorted(m["memory"] for m in stored) == sorted(m["content"] for m in messages)


def test_rate_limit_per_key(scripted) -> None:
    embedder = HashingEmbedder()
    agents = Agents(embedder, FactExtractor(scripted()), MemoryManager(scripted(), embedder),
                    AnswerAgent(scripted(), embedder))
    keys = KeyStore()
    admin = keys.ensure_admin()
    other = keys.create("other")
    server = Server(Memory(":memory:", agents), keys, ServiceConfig(rate_per_minute=5))
    try:
        with client(server, admin) as c:
            codes = [c.get("/v1/memories/", params={"user_id": "a"}).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
        with client(server, other) as c:  # another key has its own budget
            assert c.get("/v1/memories/", params={"user_id": "a"}).status_code == 200
    finally:
        server.stop()
