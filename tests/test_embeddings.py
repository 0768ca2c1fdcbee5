"""Embedders: shapes, unit norms, and that related texts score higher than unrelated ones."""

from __future__ import annotations

import numpy as np
import pytest

from memory_r1.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    UnknownEmbedderError,
    load_embedder,
)

QUERY = "When did Caroline go to the LGBTQ support group?"
RELATED = "Caroline went to an LGBTQ support group on 7 May 2023."
UNRELATED = "Melanie painted a sunrise over the lake."


def check_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_hashing_embedder_shape_norm_and_determinism() -> None:
    emb = HashingEmbedder(dim=32)
    assert isinstance(emb, Embedder) and emb.name == "hashing-32" and emb.dim == 32
    vectors = emb.embed([QUERY, RELATED, UNRELATED])
    check_unit_rows(vectors, 3, 32)
    np.testing.assert_array_equal(vectors, HashingEmbedder(dim=32).embed([QUERY, RELATED, UNRELATED]))
    assert emb.embed([]).shape == (0, 32)
    assert not emb.embed(["?!"]).any()  # no words: the zero vector


def test_hashing_embedder_ranks_shared_words_higher() -> None:
    q, related, unrelated = HashingEmbedder().embed([QUERY, RELATED, UNRELATED])
    assert q @ related > q @ unrelated
    assert HashingEmbedder().embed(["Hello, World"])[0] @ HashingEmbedder().embed(["hello world"])[0] == (
        pytest.approx(1.0)
    )


def test_load_embedder_caches_and_knows_hashing() -> None:
    assert load_embedder("hashing") is load_embedder("hashing")
    assert load_embedder("hashing-128").dim == 128


def test_unknown_embedder_offline() -> None:
    with pytest.raises(UnknownEmbedderError, match="no-such-embedder"):
        load_embedder("no-such-embedder")


@pytest.mark.slow
def test_packaged_minilm() -> None:
    emb = load_embedder(DEFAULT_EMBEDDING_MODEL)
    assert isinstance(emb, SentenceTransformerEmbedder) and emb.name == DEFAULT_EMBEDDING_MODEL
    assert emb.dim == 384 and load_embedder(DEFAULT_EMBEDDING_MODEL) is emb
    q, related, unrelated = emb.embed([QUERY, RELATED, UNRELATED])
    check_unit_rows(np.stack([q, related, unrelated]), 3, 384)
    assert q @ related > q @ unrelated + 0.2
    assert emb.embed([]).shape == (0, 384)
