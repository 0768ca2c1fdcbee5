"""In-memory vector index of one owner's live memories: the part of search that must be fast.

A query is one matmul over a dense float32 matrix plus an argpartition; no table scan, no blob decoding.
The SQLite store keeps one index per owner in step with its own writes.
"""

from __future__ import annotations

import numpy as np

from memory_r1.threads import blas_single_thread


class OwnerIndex:
    """One owner's live memories as a dense matrix. Capacity doubles so appends are amortised O(D);
    removal swaps the last row in, so row order is arbitrary (ties are broken by id at query time)."""

    def __init__(self, dim: int, capacity: int = 64) -> None:
        self.n = 0
        self.ids = np.empty(capacity, np.int64)  # (cap,)
        self.times = np.empty(capacity, np.float64)  # (cap,) POSIX seconds of occurred_at, NaN if unknown
        self.matrix = np.empty((capacity, dim), np.float32)  # (cap, D) L2-normalised rows
        self.row_of: dict[int, int] = {}

    def append(self, ids: np.ndarray, times: np.ndarray, rows: np.ndarray) -> None:
        end = self.n + len(ids)
        if end > len(self.ids):
            capacity = max(end, 2 * len(self.ids))
            for name in ("ids", "times", "matrix"):
                old = getattr(self, name)
                grown = np.empty((capacity, *old.shape[1:]), old.dtype)
                grown[: self.n] = old[: self.n]
                setattr(self, name, grown)
        self.ids[self.n : end], self.times[self.n : end], self.matrix[self.n : end] = ids, times, rows
        self.row_of.update(zip(ids.tolist(), range(self.n, end), strict=True))
        self.n = end

    def replace(self, memory_id: int, row: np.ndarray, time: float) -> None:
        r = self.row_of[memory_id]
        self.matrix[r], self.times[r] = row, time

    def remove(self, memory_id: int) -> None:
        r, last = self.row_of.pop(memory_id), self.n - 1
        if r != last:
            self.ids[r], self.times[r], self.matrix[r] = self.ids[last], self.times[last], self.matrix[last]
            self.row_of[int(self.ids[r])] = r
        self.n = last

    def copy(self) -> OwnerIndex:
        clone = OwnerIndex(self.matrix.shape[1], capacity=0)
        clone.append(self.ids[: self.n], self.times[: self.n], self.matrix[: self.n])
        return clone


def similarity(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine scores (n, Q) of unit rows (n, D) against unit queries (Q, D), BLAS on the calling thread:
    the product is memory-bound, and BLAS worker threads would fight torch's after a query embedding
    (`memory_r1.threads`)."""
    with blas_single_thread():
        return matrix @ queries.T  # (n, Q)


SCORE_MARGIN = 1e-4
"""Candidates within this much of the k-th float32 score are re-scored exactly. Our choice: float32 dot
products of unit vectors differ between BLAS kernels (one query vs a batch) by ~1e-7; 1e-4 covers that
with room to spare and rarely adds more than a few rows."""


def top_k_exact(
    matrix: np.ndarray, ids: np.ndarray, query: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the k best memories, best first, and their exact scores.

    `scores` (n,) are the float32 matmul scores, used only to preselect; the candidates are re-scored in
    float64, row by row, so the result does not depend on how many queries shared the matmul. Order:
    higher exact score first, equal scores broken by lower id: the same rule for `search` and
    `search_many`, and for any store that follows the contract.
    """
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= kth - SCORE_MARGIN)  # (c,), c >= k
    else:
        candidates = np.arange(n)
    exact = (matrix[candidates].astype(np.float64) * query.astype(np.float64)).sum(axis=1)  # (c,)
    order = np.lexsort((ids[candidates], -exact))[:k]
    return candidates[order], exact[order]
