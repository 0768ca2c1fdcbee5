"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 speaking the chat-completions shape.

The request's `model` field picks the server's behaviour, so one server covers every case.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memory_r1.llm.base import GenerationConfig, GenerationError, Generator
from memory_r1.llm.openai_backend import OpenAIGenerator


class ChatServer(ThreadingHTTPServer):
    """Modes (the request's model name): ok, flaky (500 twice, then 200), unauthorized, malformed."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[tuple[str, dict, dict]] = []  # (path, headers, body)
        self.flaky_failures = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers), body))
            mode = body["model"]
            if mode == "flaky" and self.server.flaky_failures < 2:
                self.server.flaky_failures += 1
                return self.reply(500, b'{"error": "overloaded"}')
        if mode == "unauthorized":
            return self.reply(401, b'{"error": {"message": "Incorrect API key provided"}}')
        if mode == "malformed":
            return self.reply(200, b'{"choices": [{"message": ')
        last = body["messages"][-1]["content"]
        answer = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {last} END tail"}}],
            "usage": {"prompt_tokens": len(last.split()), "completion_tokens": 5, "total_tokens": 0},
        }
        self.reply(200, json.dumps(answer).encode())

    def reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def client(server: ChatServer, model: str, **kwargs) -> OpenAIGenerator:
    return OpenAIGenerator(model, base_url=server.base_url, backoff=0.01, **kwargs)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_maps_config_and_reads_usage(server: ChatServer) -> None:
    gen = client(server, "ok", api_key="sk-test")
    assert isinstance(gen, Generator) and gen.name == "ok"
    config = GenerationConfig(max_new_tokens=32, temperature=0.7, top_p=0.9, top_k=20, seed=3, stop=("END",))
    out = gen.generate([chat("hello there"), chat("second prompt here")], config)
    assert [o.text for o in out] == ["echo: hello there ", "echo: second prompt here "]  # stop applied
    assert [(o.usage.prompt_tokens, o.usage.completion_tokens) for o in out] == [(2, 5), (3, 5)]
    assert all(o.usage.latency_s > 0 and o.model == "ok" for o in out)
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "seed", "stop")} == {
        "temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_tokens": 32, "seed": 3, "stop": ["END"],
    }  # fmt: skip


def test_greedy_sends_temperature_zero_and_omits_unset_fields(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    client(server, "ok").generate([chat("hi")], GenerationConfig())
    _, headers, body = server.requests[0]
    assert body["temperature"] == 0.0
    assert not {"top_k", "seed", "stop"} & body.keys()
    assert headers["Authorization"] == "Bearer sk-from-env"


def test_keeps_prompt_order_under_concurrency(server: ChatServer) -> None:
    prompts = [chat(f"prompt {i}") for i in range(10)]
    out = client(server, "ok", concurrency=4).generate(prompts, GenerationConfig())
    assert [o.text for o in out] == [f"echo: prompt {i} END tail" for i in range(10)]


def test_retries_server_errors(server: ChatServer) -> None:
    out = client(server, "flaky", max_retries=3).generate([chat("hi")], GenerationConfig())
    assert out[0].text.startswith("echo: hi")
    assert len(server.requests) == 3


def test_gives_up_after_max_retries(server: ChatServer) -> None:
    with pytest.raises(GenerationError, match=r"after 1 retries: HTTP 500: .*overloaded"):
        client(server, "flaky", max_retries=1).generate([chat("hi")], GenerationConfig())
    assert len(server.requests) == 2


def test_client_errors_fail_at_once_with_the_body(server: ChatServer) -> None:
    with pytest.raises(GenerationError, match=r"HTTP 401: .*Incorrect API key"):
        client(server, "unauthorized").generate([chat("hi")], GenerationConfig())
    assert len(server.requests) == 1


def test_malformed_json_is_a_generation_error(server: ChatServer) -> None:
    with pytest.raises(GenerationError, match="unexpected response"):
        client(server, "malformed").generate([chat("hi")], GenerationConfig())


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = OpenAIGenerator("ok", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff=0.01)
    with pytest.raises(GenerationError, match="after 2 retries: ConnectError"):
        gen.generate([chat("hi")], GenerationConfig())
