"""The thread policy: torch's default count, and the bank's scoring matmul kept on the calling thread."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from memory_r1 import threads
from memory_r1.bank.index import similarity


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_torch_threads_default_is_half_the_cores_and_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.TORCH_THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert threads.torch_threads() == 1
    monkeypatch.setattr(threads, "usable_cpus", lambda: 16)
    assert threads.torch_threads() == 8
    monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
    assert threads.torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.torch_threads() == 3
    monkeypatch.setenv(threads.TORCH_THREADS_ENV, "5")  # ours first: it is specific to this library
    assert threads.torch_threads() == 5
    monkeypatch.setenv(threads.TORCH_THREADS_ENV, "zero")  # not a count: ignored
    assert threads.torch_threads() == 3


def test_similarity_runs_blas_on_one_thread_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _blas_threads():
        pytest.skip("numpy is not linked to a BLAS that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine without OMP_NUM_THREADS=1
        _check_similarity(monkeypatch, outside=_blas_threads())


class _Probe(np.ndarray):
    """A matrix that records how many BLAS threads are allowed at the moment it is multiplied."""

    seen: ClassVar[list[list[int]]] = []

    def __matmul__(self, other):
        _Probe.seen.append(_blas_threads())
        return np.asarray(self) @ other


def _check_similarity(monkeypatch: pytest.MonkeyPatch, outside: list[int]) -> None:
    assert set(outside) == {2}
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((50, 8), dtype=np.float32)
    queries = rng.standard_normal((3, 8), dtype=np.float32)
    _Probe.seen = []
    np.testing.assert_allclose(similarity(matrix.view(_Probe), queries), matrix @ queries.T, rtol=1e-6)
    assert _Probe.seen == [[1] * len(outside)] and _blas_threads() == outside  # one thread inside, restored

    monkeypatch.setattr(threads, "SEARCH_BLAS_THREADS", None)  # the old behaviour: BLAS left alone
    _Probe.seen = []
    similarity(matrix.view(_Probe), queries)
    assert _Probe.seen == [outside]
