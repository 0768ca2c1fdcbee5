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


def test_coalescer_batches_concurrent_calls_and_returns_each_caller_its_rows() -> None:
    import threading
    import time

    from memory_r1.embeddings import Coalescer

    calls: list[list[str]] = []

    def run(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        time.sleep(0.05)  # a model call: long enough for the other threads to queue behind it
        return np.array([[float(t.split("-")[0]), float(t.split("-")[1])] for t in texts], dtype=np.float32)

    coalesce = Coalescer(run)
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(16)

    def caller(i: int) -> None:
        barrier.wait()
        results[i] = coalesce([f"{i}-{j}" for j in range(i % 3 + 1)])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(16):  # every caller gets exactly its own rows, in its order
        np.testing.assert_array_equal(results[i], [[i, j] for j in range(i % 3 + 1)])
    assert sum(len(c) for c in calls) == sum(i % 3 + 1 for i in range(16))
    assert coalesce.batches == len(calls) < 16 // 2  # shared batches, not one model call per caller


def test_coalescer_hands_a_failure_to_every_caller_of_the_batch_and_recovers() -> None:
    import threading
    import time

    from memory_r1.embeddings import Coalescer

    fail = threading.Event()
    fail.set()

    def run(texts: list[str]) -> np.ndarray:
        time.sleep(0.05)
        if fail.is_set() and len(texts) > 1:
            raise RuntimeError("model went away")
        return np.zeros((len(texts), 2), dtype=np.float32)

    coalesce = Coalescer(run, max_texts=64)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            coalesce(["a", "b"])
        except RuntimeError as e:
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and all(str(e) == "model went away" for e in errors)
    fail.clear()
    assert coalesce(["c"]).shape == (1, 2)  # not left busy: the next call runs


def test_coalescer_splits_queued_jobs_at_max_texts_but_never_one_callers_texts() -> None:
    import threading
    import time

    from memory_r1.embeddings import Coalescer

    sizes: list[int] = []
    release = threading.Event()

    def run(texts: list[str]) -> np.ndarray:
        if not sizes:
            release.wait(10)  # hold the first call so that six more callers queue behind it
        sizes.append(len(texts))
        return np.zeros((len(texts), 1), dtype=np.float32)

    coalesce = Coalescer(run, max_texts=4)
    first = threading.Thread(target=coalesce, args=(["first"],))
    first.start()
    while not coalesce._busy:
        time.sleep(0.001)
    queued = [threading.Thread(target=coalesce, args=([f"{i}a", f"{i}b"],)) for i in range(6)]
    for t in queued:
        t.start()
    while len(coalesce._queue) < 6:
        time.sleep(0.001)
    release.set()
    for t in [first, *queued]:
        t.join(10)
    assert sizes == [1, 4, 4, 4]  # 12 queued texts in batches of at most 4, jobs kept whole
    assert coalesce(["x"] * 10).shape == (10, 1) and sizes[-1] == 10  # one caller's texts are never split
