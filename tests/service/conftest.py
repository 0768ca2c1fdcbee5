"""A real uvicorn server on a free loopback port for any ASGI app, and scripted agents for the service
tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread, started before the constructor returns."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def scripted_agents(scripted):
    """`scripted_agents()`: agents on the reference script and the hashing embedder (exact, fast)."""
    from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
    from memory_r1.embeddings import HashingEmbedder
    from memory_r1.pipeline import Agents

    def make(generator=None) -> Agents:
        embedder, generator = HashingEmbedder(), generator or scripted()
        return Agents(
            embedder,
            FactExtractor(generator),
            MemoryManager(generator, embedder),
            AnswerAgent(generator, embedder),
        )

    return make


@pytest.fixture
def live():
    """`live(app)`: the app served by a real uvicorn on a free loopback port; stopped after the test."""
    started: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        started.append(LiveServer(app))
        return started[-1]

    yield start
    for server in started:
        server.stop()
