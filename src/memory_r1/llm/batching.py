"""Merge concurrent `generate` calls from several threads into one batched call of a shared backend.

The Memory Manager decides turn by turn, so one conversation can never fill a batch: each decision sees the
bank the previous one left. But conversations (and their banks) are independent. Run each conversation's
ingestion in its own thread over one `BatchingGenerator`, and the calls that are waiting at the same moment
(one per conversation) go to the model as one batch, while every bank still sees its own decisions in order.

How a batch forms: a call joins the queue and waits until every participating thread is waiting too (or
`max_wait_s` has passed: a thread busy embedding or writing must not stall the others for long); then one
waiting thread runs the whole queue, one `generate` per distinct `GenerationConfig`, and hands each caller
its own outputs. Greedy outputs equal the sequential ones up to fp32 rounding of padded batches (the
transformers backend masks left padding); `benchmarks/bench_ingest.py` measures the agreement. When a merged
call fails, its requests are retried one by one, so one bad prompt fails only the thread that sent it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from memory_r1.llm.base import Generation, GenerationConfig, Generator, Message


@dataclass
class _Request:
    prompts: list[Sequence[Message]]
    config: GenerationConfig
    result: list[Generation] | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class BatchingGenerator:
    """A `Generator` over `inner` that batches the calls several threads make at once.

    `participants` is how many threads take part; each calls `leave()` when it has no more calls to make, so
    the others stop waiting for it. Calls from one thread are served in order (it waits for its result).
    """

    def __init__(self, inner: Generator, participants: int, *, max_wait_s: float = 0.25) -> None:
        if participants < 1:
            raise ValueError(f"participants must be >= 1, got {participants}")
        self.inner = inner
        self.max_wait_s = max_wait_s
        self._active = participants
        self._pending: list[_Request] = []
        self._running = False
        self._cond = threading.Condition()
        self.batches = 0  # inner `generate` calls made, for tests and benchmarks
        self.requests = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def leave(self) -> None:
        """This thread makes no more calls: the batch no longer waits for it."""
        with self._cond:
            self._active = max(0, self._active - 1)
            self._cond.notify_all()

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        request = _Request(list(prompts), config)
        with self._cond:
            self._pending.append(request)
            self.requests += 1
            self._cond.notify_all()
            deadline = time.monotonic() + self.max_wait_s
            while not request.done:
                remaining = deadline - time.monotonic()
                ready = len(self._pending) >= self._active or remaining <= 0
                if not self._running and ready:
                    batch, self._pending = self._pending, []
                    self._running = True
                    break
                self._cond.wait(timeout=remaining if remaining > 0 and not self._running else None)
            else:
                return self._unwrap(request)
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
        return self._unwrap(request)

    def _run(self, batch: list[_Request]) -> None:
        """One inner call per distinct config; each request gets its own slice (or the error)."""
        by_config: dict[GenerationConfig, list[_Request]] = {}
        for request in batch:
            by_config.setdefault(request.config, []).append(request)
        for config, requests in by_config.items():
            prompts = [p for r in requests for p in r.prompts]
            try:
                outputs = self.inner.generate(prompts, config) if prompts else []
                self.batches += 1
            except Exception as error:  # noqa: BLE001  # one bad request must not fail the others: serve them one by one
                if len(requests) == 1:
                    requests[0].error = error  # re-raised in the caller's own thread by `_unwrap`
                else:
                    for r in requests:
                        self._serve_alone(r, config)
            else:
                start = 0
                for r in requests:
                    r.result = outputs[start : start + len(r.prompts)]
                    start += len(r.prompts)
            with self._cond:
                for r in requests:
                    r.done = True
                self._cond.notify_all()

    def _serve_alone(self, request: _Request, config: GenerationConfig) -> None:
        try:
            request.result = self.inner.generate(request.prompts, config)
            self.batches += 1
        except Exception as error:  # noqa: BLE001  # re-raised in the caller's own thread by `_unwrap`
            request.error = error

    @staticmethod
    def _unwrap(request: _Request) -> list[Generation]:
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result
