"""The one generation interface every backend implements.

Agents build chat messages and call `generate`; they never know whether a local transformers model or an
OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server, OpenAI) answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from memory_r1.records import Usage

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": ...}, as in HF and OpenAI


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 means greedy decoding (paper: greedy for validation/test, 1.0 for RL rollouts)."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k. Sampling must not silently inherit a model's generation_config (often top_k=50),
    or rollouts would not come from the policy's own distribution (reference notes, section 6)."""
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict | None = field(default=None, hash=False)  # a dict: left out of the hash, kept in ==
    """Our choice: a JSON schema the reply should match. Backends that can constrain decoding to it (the
    OpenAI-compatible one, when the server supports it) do; others ignore it and the parser still checks."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Generation:
    text: str
    usage: Usage
    model: str


class GenerationError(RuntimeError):
    """A backend could not produce text (server down after retries, bad model, ...)."""


@runtime_checkable
class Generator(Protocol):
    @property
    def name(self) -> str:
        """Model identifier recorded in history and results."""
        ...

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        """Generate one completion per chat prompt; batching is the backend's business."""
        ...


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string, the one rule every backend applies to `config.stop`."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
