"""Structured output on the OpenAI-compatible backend, against real HTTP servers on 127.0.0.1.

Each stub server validates the request body the way a server of that kind would: one that understands
`response_format` json_schema (vLLM, SGLang, llama.cpp, Ollama, OpenAI), one that rejects the field with
HTTP 400 as an older server does, and one that only knows vLLM's `guided_json`. The stubs reply with JSON
that matches the schema they were sent, so the Memory Manager's whole path (prompt, schema, request,
parse, apply) runs over real HTTP. What no stub can show is how much a real server's constrained decoding
improves a model's decisions: nothing here runs vLLM or llama.cpp (README, "Structured output").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memory_r1.agents import ManagerConfig, MemoryManager, apply_operations
from memory_r1.bank import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.llm.base import GenerationConfig
from memory_r1.llm.openai_backend import OpenAIGenerator
from memory_r1.records import Event, Fact

SCHEMA = {"type": "object", "properties": {"decisions": {"type": "array"}}, "required": ["decisions"]}


class SchemaServer(ThreadingHTTPServer):
    def __init__(self, kind: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.kind = kind  # "response_format", "refuses", "guided_json", "json_object"
        self.bodies: list[dict] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def schema_problem(body: dict, kind: str) -> str | None:
    """What a server of this kind would reject in the body, or None."""
    if kind == "refuses":
        return "response_format is not supported" if "response_format" in body else None
    if kind == "guided_json":
        if "response_format" in body:
            return "unknown field response_format"
        return None if isinstance(body.get("guided_json", {}), dict) else "guided_json must be an object"
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if kind == "json_object":  # llama-cpp-python's server: type text|json_object, optional schema
        if fmt.get("type") not in ("text", "json_object"):
            return "response_format.type: Input should be 'text' or 'json_object'"
        return None if isinstance(fmt.get("schema", {}), dict) else "schema must be an object"
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("json_schema"), dict):
        return "response_format.type must be json_schema with a json_schema object"
    inner = fmt["json_schema"]
    if not isinstance(inner.get("name"), str) or not isinstance(inner.get("schema"), dict):
        return "json_schema needs a name and a schema object"
    if inner["schema"].get("type") != "object":
        return "schema must describe an object"
    return None


class Handler(BaseHTTPRequestHandler):
    server: SchemaServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        problem = schema_problem(body, self.server.kind)
        if problem:
            return self.reply(400, json.dumps({"error": {"message": problem}}).encode())
        constrained = "response_format" in body or "guided_json" in body
        # A constrained server can only emit JSON of the schema; an unconstrained one chats around it.
        decision = json.dumps({"decisions": [{"fact": "F1", "event": "ADD"}]})
        content = decision if constrained else f"Sure! Here is my answer:\n{decision}\nHope this helps."
        self.reply(200, json.dumps({"choices": [{"message": {"content": content}}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode())

    def reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    servers: list[SchemaServer] = []

    def start(kind: str) -> SchemaServer:
        srv = SchemaServer(kind)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


MESSAGES = [{"role": "user", "content": "decide"}]


def test_schema_goes_in_response_format_when_the_server_takes_it(serve) -> None:
    srv = serve("response_format")
    gen = OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01)
    [out] = gen.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert json.loads(out.text)["decisions"][0]["event"] == "ADD"
    fmt = srv.bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    assert gen.schema_supported and gen.schema_fallbacks == 0
    gen.generate([MESSAGES], GenerationConfig())  # no schema asked: none sent
    assert "response_format" not in srv.bodies[1]


def test_a_server_that_refuses_the_schema_gets_the_request_again_without_it(serve) -> None:
    srv = serve("refuses")
    gen = OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01)
    [out] = gen.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert "Hope this helps" in out.text  # answered, unconstrained
    assert ["response_format" in b for b in srv.bodies] == [True, False]
    assert not gen.schema_supported and gen.schema_fallbacks == 1
    gen.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))  # later requests skip it: one call
    assert len(srv.bodies) == 3 and "response_format" not in srv.bodies[2]


def test_guided_json_dialect_for_vllm(serve) -> None:
    srv = serve("guided_json")
    gen = OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01, structured_output="guided_json")
    gen.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert srv.bodies[0]["guided_json"] == SCHEMA and len(srv.bodies) == 1
    off = OpenAIGenerator("m", base_url=srv.base_url, structured_output="off")
    off.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert not {"guided_json", "response_format", "json_schema"} & srv.bodies[1].keys()
    with pytest.raises(ValueError, match="structured_output must be one of"):
        OpenAIGenerator("m", base_url=srv.base_url, structured_output="grammar")  # type: ignore[arg-type]


def test_json_object_dialect_for_llama_cpp_python(serve) -> None:
    srv = serve("json_object")
    gen = OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01, structured_output="json_object")
    [out] = gen.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert srv.bodies[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert json.loads(out.text)["decisions"] and gen.schema_supported and len(srv.bodies) == 1
    openai_style = OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01)  # refused, then resent bare
    openai_style.generate([MESSAGES], GenerationConfig(json_schema=SCHEMA))
    assert not openai_style.schema_supported and "response_format" not in srv.bodies[-1]


@pytest.mark.parametrize("kind", ["response_format", "refuses"])
def test_manager_decides_over_http_with_its_protocols_schema(serve, kind) -> None:
    srv = serve(kind)
    embedder = HashingEmbedder()
    store = SQLiteStore(":memory:", embedding_model=embedder.name, dim=embedder.dim)
    manager = MemoryManager(OpenAIGenerator("m", base_url=srv.base_url, backoff=0.01), embedder,
                            ManagerConfig(prompt_version="manage-v2"))
    facts = [Fact("Sam works as a nurse.", "c:Sam", "day 1")]
    decision = manager.decide(store, "c:Sam", facts)
    applied = apply_operations(store, embedder, "c:Sam", decision.operations, facts, manager.provenance)
    assert [op.event for op in applied] == [Event.ADD] and store.list("c:Sam")[
        0
    ].text == "Sam works as a nurse."
    sent = srv.bodies[0]["response_format"]["json_schema"]["schema"]
    item = sent["properties"]["decisions"]["items"]
    assert item["properties"]["event"]["enum"] == ["ADD", "UPDATE", "DELETE", "NONE"]
    assert item["properties"]["memory"]["pattern"] == "^M[0-9]+$" and item["required"] == ["fact", "event"]
