"""The one generation interface every backend implements.

Agents build chat messages and call `generate`; they never know whether a local transformers model or an
OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server, OpenAI) answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from memory_r1.records import Usage, clean_text

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


class BackendTimeoutError(GenerationError, TimeoutError):
    """The backend did not answer in time, on the last of its retries (a `GenerationError` and a
    `TimeoutError`)."""


@runtime_checkable
class Generator(Protocol):
    @property
    def name(self) -> str:
        """Model identifier recorded in history and results."""
        ...

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        """Generate one completion per chat prompt; batching is the backend's business."""
        ...


@runtime_checkable
class PromptBudget(Protocol):
    """Optional for a `Generator`: how long a prompt may be, so agents can cut or skip an input instead of
    sending the model more than its window (the transformers backend implements it)."""

    @property
    def context_window(self) -> int | None:
        """Tokens the model attends to (prompt + completion), None if unknown."""
        ...

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of `messages` as rendered for the model."""
        ...


def prompt_limit(generator: object, max_new_tokens: int) -> int | None:
    """The most prompt tokens `generator` can take while leaving room for `max_new_tokens`, if it says."""
    if isinstance(generator, PromptBudget) and generator.context_window is not None:
        return max(generator.context_window - max_new_tokens, 0)
    return None


# Control tokens of the common chat formats, for backends that cannot see the tokenizer (a server):
# ChatML / Llama 3 / Phi style <|...|>, Llama 2 [INST] and <<SYS>>, Gemma <start_of_turn>, <s> and </s>.
_CONTROL = re.compile(r"<\|[^\s<>|]{0,64}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|</?s>")
_BREAK = "\u200b"  # zero-width space: the text still reads the same, but no longer matches the token


def neutralise_control_tokens(text: str, tokens: Iterable[str] = ()) -> str:
    """`text` with every chat control token in it broken by a zero-width space after its first character,
    so a memory or turn can never open or close a turn of the chat template. `tokens`: the tokenizer's
    own special tokens, when known; the common formats' tokens are always neutralised. Ordinary text
    (no such token) is returned unchanged."""
    text = clean_text(text)
    specials = sorted({t for t in tokens if len(t) >= 2}, key=len, reverse=True)
    for _ in range(8):  # a replacement cannot create a new token, but check to a fixed point anyway
        before = text
        for token in specials:
            if token in text:
                text = text.replace(token, token[0] + _BREAK + token[1:])
        text = _CONTROL.sub(lambda m: m.group(0)[0] + _BREAK + m.group(0)[1:], text)
        if text == before:
            break
    return text


def neutralise_messages(messages: Sequence[Message], tokens: Iterable[str] = ()) -> list[Message]:
    """Messages with the same roles and every content passed through `neutralise_control_tokens`."""
    known = tuple(tokens)
    return [{**m, "content": neutralise_control_tokens(m["content"], known)} for m in messages]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest stop string, the one rule every backend applies to `config.stop`."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
