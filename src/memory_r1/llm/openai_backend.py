"""Generation through any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, llama.cpp
server, OpenAI).

One small client instead of one adapter per provider (house style, principle 5). Plain httpx, no SDK: the
request is one JSON POST, and owning it keeps retries and error messages under our control.
"""

from __future__ import annotations

import os
import time
import typing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx

from memory_r1.llm.base import (
    BackendTimeoutError,
    Generation,
    GenerationConfig,
    GenerationError,
    Message,
    neutralise_messages,
    truncate_at_stop,
)
from memory_r1.records import Usage

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
SCHEMA_REFUSED_STATUS = frozenset({400, 422})  # what servers answer to a request field they do not support

StructuredOutput = Literal["response_format", "json_object", "guided_json", "json_schema", "off"]
STRUCTURED_OUTPUT_MODES: tuple[str, ...] = typing.get_args(StructuredOutput)


class OpenAIGenerator:
    """A `Generator` that POSTs each prompt to `{base_url}/chat/completions`, a few at a time.

    Retries connection errors, timeouts, 408/429 and 5xx `max_retries` times, sleeping
    `backoff * 2**attempt` seconds; any other 4xx fails at once (a bad key or model name won't heal).
    `usage.latency_s` is each request's own wall time; concurrent requests overlap.

    Structured output: when `GenerationConfig.json_schema` is set, the schema goes in the request as
    `structured_output` says. "response_format" (default) is OpenAI's `{"type": "json_schema", ...}` field,
    which vLLM, SGLang, llama.cpp's server and Ollama's OpenAI endpoint also accept; "json_object" is
    `response_format: {"type": "json_object", "schema": ...}`, the dialect of llama-cpp-python's server
    (which turns the schema into a grammar, and refuses OpenAI's json_schema type); "guided_json" is vLLM's
    older extra parameter; "json_schema" is llama.cpp's native top-level field; "off" never sends one.
    A server that refuses the field (HTTP 400/422) gets the request again without it, and later requests
    skip it (`schema_supported` becomes False, `schema_fallbacks` counts the refusals): the parser checks
    the reply either way, so an unconstrained server still works.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 4,
        structured_output: StructuredOutput = "response_format",
    ) -> None:
        if structured_output not in STRUCTURED_OUTPUT_MODES:
            raise ValueError(f"structured_output must be one of {', '.join(STRUCTURED_OUTPUT_MODES)}, "
                             f"got {structured_output!r}")
        self.model = model
        self.structured_output = structured_output
        self.schema_supported = structured_output != "off"
        self.schema_fallbacks = 0
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    @property
    def name(self) -> str:
        return self.model

    def close(self) -> None:
        self._client.close()

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        if len(prompts) <= 1:
            return [self._complete(p, config) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._complete(p, config), prompts))

    def payload(self, messages: Sequence[Message], config: GenerationConfig) -> dict:
        """The request body. top_k is not in OpenAI's API; vLLM, SGLang and llama.cpp accept it."""
        body: dict = {
            "model": self.model,
            "messages": neutralise_messages(messages),  # the server's template sees no forged turns
            "temperature": max(config.temperature, 0.0),
            "top_p": config.top_p,
            "max_tokens": config.max_new_tokens,
        }
        if config.top_k > 0:
            body["top_k"] = config.top_k
        if config.seed is not None:
            body["seed"] = config.seed
        if config.stop:
            body["stop"] = list(config.stop)
        if config.json_schema is not None and self.schema_supported:
            body.update(schema_fields(self.structured_output, config.json_schema))
        return body

    def _complete(self, messages: Sequence[Message], config: GenerationConfig) -> Generation:
        start = time.perf_counter()
        body = self.payload(messages, config)
        try:
            response = self._post(body)
        except SchemaRefusedError:
            self.schema_supported = False
            self.schema_fallbacks += 1
            response = self._post(self.payload(messages, config))
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
            counts = data.get("usage") or {}
            n_prompt = int(counts.get("prompt_tokens", 0))
            n_completion = int(counts.get("completion_tokens", 0))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:  # ValueError: bad JSON
            raise GenerationError(f"{self.url}: unexpected response ({e!r}): {_excerpt(response)}") from e
        usage = Usage(n_prompt, n_completion, time.perf_counter() - start)
        # Servers that ignore `stop` still get it applied here.
        return Generation(truncate_at_stop(text, config.stop), usage, self.model)

    def _post(self, body: dict) -> httpx.Response:
        problem, timed_out = "", False
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as e:  # refused, reset, timed out, ...
                problem, timed_out = f"{type(e).__name__}: {e}", isinstance(e, httpx.TimeoutException)
                continue
            timed_out = False
            if response.status_code < 400:
                return response
            problem = f"HTTP {response.status_code}: {_excerpt(response)}"
            if response.status_code in SCHEMA_REFUSED_STATUS and _has_schema(body):
                raise SchemaRefusedError(problem)
            if response.status_code not in RETRY_STATUS:
                raise GenerationError(f"{self.url} (model {self.model!r}) answered {problem}")
        raise (BackendTimeoutError if timed_out else GenerationError)(
            f"{self.url} (model {self.model!r}) failed after {self.max_retries} retries: {problem}"
        )


class SchemaRefusedError(GenerationError):
    """The server rejected a request that carried a JSON schema (internal: triggers the fallback)."""


_SCHEMA_KEYS = ("response_format", "guided_json", "json_schema")


def schema_fields(mode: str, schema: dict) -> dict:
    """The request fields that ask a server for JSON matching `schema`, in the dialect `mode` names."""
    if mode == "response_format":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": schema, "strict": False}}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if mode in ("guided_json", "json_schema"):
        return {mode: schema}
    return {}


def _has_schema(body: dict) -> bool:
    return any(key in body for key in _SCHEMA_KEYS)


def _excerpt(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
