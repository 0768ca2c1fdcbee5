"""CPU thread policy for torch (embedding, generation) and BLAS (bank search), chosen once, in one place.

Two measured problems on small CPU machines (README, "Thread settings"):

1. Alternating pools. A search embeds the query with torch (OpenMP pool) and then scores it with numpy (an
   OpenBLAS pool). Both pools busy-wait after their work, so on two cores the four threads fight and a
   10 ms embed + 1 ms search took 32 ms (p95 111 ms). The search's matrix-vector product reads the bank's
   matrix once and is memory-bound, so a second BLAS thread buys little: `blas_single_thread()` runs it
   on the calling thread and the fight disappears.
2. Sharing the cores. Every parallel region ends at a barrier that waits for all threads; when another
   process holds one of the cores, the thread on it is scheduled only now and then, and generation with
   one thread per core slowed from 4 to 20 minutes on the demo. `torch_threads()` leaves half of the usable
   cores free (at least one thread), so a neighbour costs throughput, not a collapse.

Both are defaults, never overrides: an explicit OMP_NUM_THREADS or MEMORY_R1_TORCH_THREADS wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any

TORCH_THREADS_ENV = "MEMORY_R1_TORCH_THREADS"

SEARCH_BLAS_THREADS: int | None = 1
"""Our choice (measured, README): BLAS threads for the bank's scoring matmul. None leaves BLAS as it is
(the behaviour before this policy; `benchmarks/bench_bank.py --with-embedding` compares both)."""


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def torch_threads() -> int:
    """Intra-op threads for torch: the user's setting if any, else half the usable cores (at least 1).

    Half, because a machine shared with one other busy process keeps a free core for every thread; on an
    idle machine it costs at most the second half of the cores, which small models barely use."""
    for name in (TORCH_THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdecimal() and int(value) > 0:
            return int(value)
    return max(1, usable_cpus() // 2)


_applied = False


def apply_torch_threads() -> int:
    """Set torch's intra-op threads to `torch_threads()` once per process (later calls do nothing, so a
    caller that changed them on purpose afterwards is not overridden). Returns the thread count in use."""
    global _applied
    import torch

    if not _applied:
        torch.set_num_threads(torch_threads())
        _applied = True
    return torch.get_num_threads()


@cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # inspects libraries once

    return ThreadpoolController().select(user_api="blas")


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run the block with BLAS limited to SEARCH_BLAS_THREADS threads (a no-op when that is None)."""
    limit = SEARCH_BLAS_THREADS
    with _blas_controller().limit(limits=limit) if limit is not None else nullcontext():
        yield
