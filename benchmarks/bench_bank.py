"""Memory bank benchmark: SQLiteStore search latency and write throughput.

    python benchmarks/bench_bank.py                      # 1k, 10k, 100k memories per owner; ~1 min
    python benchmarks/bench_bank.py --with-embedding     # also time query embedding with the real embedder
    python benchmarks/bench_bank.py --sizes 10000 --with-embedding --contention  # + threads beside a busy one

Search numbers are the store alone (query vectors are given, as the agents pass them in): one owner of N
random normalised 384-d float32 vectors plus a second, small owner. "cold" is the first query, which builds
the owner's in-memory matrix from the file. Write throughput is measured on a file bank (WAL,
synchronous=NORMAL) with its search index built, so cache maintenance is included.

On few cores, embed+search used to cost far more than embed plus search: torch's OpenMP threads and
numpy's OpenBLAS threads spun against each other when the calls alternated. `memory_r1.threads` now runs the
search's matmul on the calling thread; --with-embedding measures end to end both ways in the same run
("before" = BLAS left alone, SEARCH_BLAS_THREADS=None). --contention times embedding (and, with --generate
MODEL, generation) at the default torch thread count and at one thread per core, alone and beside a
busy-looping process. Run it under `flock /tmp/heavy.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from memory_r1 import threads
from memory_r1.bank import SQLiteStore
from memory_r1.records import Provenance

DIM = 384  # all-MiniLM-L6-v2 and friends
SMALL_OWNER = 500
PROV = Provenance("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="memories per owner"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size and k")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[10, 30], help="k values (paper: 30 per speaker)"
    )
    parser.add_argument("--write-ops", type=int, default=1_000, help="operations per write measurement")
    parser.add_argument(
        "--with-embedding", action="store_true", help="also embed each query text (real model)"
    )
    parser.add_argument("--contention", action="store_true", help="threads alone vs beside a busy process")
    parser.add_argument("--generate", default=None, help="with --contention: also time generation with MODEL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    console = Console(width=160)  # the search table is wide; don't let a pipe's 80 columns wrap it
    console.print(
        f"[bold]machine[/]: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, numpy {np.__version__}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    embed = _load_embedder(console) if args.with_embedding or args.contention else None
    console.print(f"torch threads {_torch_threads()} (policy: {threads.torch_threads()}), load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.contention and embed is not None:
        console.print(_contention_table(embed, args.generate))
    if not args.with_embedding:
        embed = None
    if embed is not None:
        embed_ms = _p50_p95([_ms(embed, [t]) for t in _query_texts(args.queries)])
        console.print(f"query embedding alone, one text per call: p50 {embed_ms[0]} ms, p95 {embed_ms[1]} ms")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        console.print(_search_table(Path(tmp), args, rng, embed))
        console.print(_write_table(Path(tmp) / "writes.db", args.write_ops, rng))


def _search_table(
    tmp: Path, args: argparse.Namespace, rng: np.random.Generator, embed: _Embed | None
) -> Table:
    table = Table(
        title=f"search latency in ms ({args.queries} queries, {DIM}-d; one owner of N, one of {SMALL_OWNER};"
        " batched = search_many of all queries, per query)"
    )
    k_last = args.ks[-1]
    columns = [
        "N",
        "bulk load s",
        "cold query",
        *(f"k={k} {p}" for k in args.ks for p in ("p50", "p95")),
        f"k={k_last} batched",
        f"small owner k={k_last} p50",
    ]
    if embed is not None:
        columns += [f"embed+search k={k_last} before p50", "p95", "after p50", "p95"]
    for column in columns:
        table.add_column(column, justify="right")
    for n in args.sizes:
        path = tmp / f"search-{n}.db"
        started = time.perf_counter()
        with SQLiteStore(path, dim=DIM) as store:
            store.add_many("big", [f"memory {i}" for i in range(n)], _unit(rng, n), provenance=PROV)
            store.add_many(
                "small", [f"small {i}" for i in range(SMALL_OWNER)], _unit(rng, SMALL_OWNER), provenance=PROV
            )
        load_s = time.perf_counter() - started
        queries = _unit(rng, args.queries)
        with SQLiteStore(path) as store:  # reopen: the first query pays for building the index
            cold = _ms(store.search, "big", queries[0], args.ks[0])
            row = [f"{n:,}", f"{load_s:.2f}", f"{cold:.1f}"]
            for k in args.ks:
                row += _p50_p95([_ms(store.search, "big", q, k) for q in queries])
            batch = _ms(store.search_many, "big", queries, k_last) / len(queries)  # per query
            row.append(f"{batch:.3f}")
            row += _p50_p95([_ms(store.search, "small", q, k_last) for q in queries])[:1]
            if embed is not None:
                row += _before_after(store, embed, args.queries, k_last)
        table.add_row(*row)
    return table


def _before_after(store: SQLiteStore, embed: _Embed, n: int, k: int) -> list[str]:
    """End-to-end search with BLAS left alone (before) and on the calling thread (after), interleaved in
    blocks of 10 so both see the same machine load."""
    texts, timings = _query_texts(n), {None: [], 1: []}
    policy = threads.SEARCH_BLAS_THREADS
    try:
        for start in range(0, n, 10):
            for setting in (None, 1):
                threads.SEARCH_BLAS_THREADS = setting
                timings[setting] += [_ms(_embed_and_search, store, embed, t,
                                         k) for t in texts[start : start + 10]]
    finally:
        threads.SEARCH_BLAS_THREADS = policy
    return _p50_p95(timings[None]) + _p50_p95(timings[1])


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _contention_table(embed: _Embed, model: str | None) -> Table:
    """Median ms per call of an embedding batch (and a short greedy generation) at the policy's thread
    count and at one thread per core, alone and beside a busy-looping process, in one run."""
    import torch

    generate = _load_generate(model) if model else None
    table = Table(title="thread settings alone vs beside a busy process (median ms per call)")
    for column in ("work", "torch threads", "alone", "beside a busy process", "slowdown"):
        table.add_column(column, justify="right")
    texts = _query_texts(16)
    work: list[tuple[str, Callable[[], object], int]] = [("embed 16 texts", lambda: embed(texts), 20)]
    if generate is not None:
        work.append((f"generate 16 tokens ({model})", generate, 5))
    before = torch.get_num_threads()
    for name, fn, reps in work:
        for n in sorted({threads.torch_threads(), threads.usable_cpus()}):
            torch.set_num_threads(n)
            fn()  # warm-up at this setting
            alone = float(np.median([_ms(fn) for _ in range(reps)]))
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                shared = float(np.median([_ms(fn) for _ in range(reps)]))
            finally:
                busy.kill()
                busy.wait()
            table.add_row(name, str(n), f"{alone:.1f}", f"{shared:.1f}", f"{shared / alone:.1f}x")
    torch.set_num_threads(before)
    return table


def _load_generate(model: str) -> Callable[[], object]:
    from memory_r1.llm import load_generator
    from memory_r1.llm.base import GenerationConfig

    generator = load_generator(model)
    prompt = [{"role": "user", "content": "Name three things people bring on a hike."}]
    config = GenerationConfig(max_new_tokens=16, temperature=0.0)
    return lambda: generator.generate([prompt], config)


def _write_table(path: Path, ops: int, rng: np.random.Generator) -> Table:
    table = Table(title=f"writes per second (file bank, WAL, synchronous=NORMAL, {ops} ops each)")
    for column in ("operation", "1 op per transaction", "100 ops per transaction"):
        table.add_column(column, justify="right")
    with SQLiteStore(path, dim=DIM) as store:
        store.add_many("o", [f"seed {i}" for i in range(2 * ops)], _unit(rng, 2 * ops), provenance=PROV)
        store.search("o", _unit(rng, 1)[0], 1)  # build the index: writes now also maintain it
        vectors = _unit(rng, ops)
        single = _write_rates(store, vectors, ids=list(range(1, ops + 1)), batch=1)
        batched = _write_rates(store, vectors, ids=list(range(ops + 1, 2 * ops + 1)), batch=100)
    for name in single:
        table.add_row(name, f"{single[name]:,.0f}", f"{batched[name]:,.0f}")
    return table


def _write_rates(store: SQLiteStore, vectors: np.ndarray, ids: list[int], batch: int) -> dict[str, float]:
    """Operations per second for add, update and delete; `ids` are live memories, updated then deleted."""
    ops: dict[str, Callable[[int], object]] = {
        "add": lambda i: store.add("o", f"new {i}", vectors[i], provenance=PROV),
        "update": lambda i: store.update(ids[i], f"edit {i}", vectors[i], provenance=PROV),
        "delete": lambda i: store.delete(ids[i], provenance=PROV),
    }
    rates = {}
    for name, op in ops.items():
        started = time.perf_counter()
        for start in range(0, len(ids), batch):
            with store.transaction():
                for i in range(start, min(start + batch, len(ids))):
                    op(i)
        rates[name] = len(ids) / (time.perf_counter() - started)
    return rates


_Embed = Callable[[list[str]], np.ndarray]


def _load_embedder(console: Console) -> _Embed | None:
    """The real embedder, imported lazily: the benchmark must run without it (or its weights)."""
    try:
        from memory_r1.embeddings import load_embedder
    except ImportError as error:
        console.print(f"[yellow]skipping the embedding column: memory_r1.embeddings unavailable ({error})[/]")
        return None
    try:
        embedder = load_embedder()
    except (
        OSError,
        LookupError,
        ValueError,
        RuntimeError,
    ) as error:  # no weights, unknown name, backend failure
        console.print(f"[yellow]skipping the embedding column: cannot load the embedder ({error})[/]")
        return None
    if embedder.dim != DIM:
        console.print(
            f"[yellow]skipping the embedding column: embedder is {embedder.dim}-d, bank is {DIM}-d[/]"
        )
        return None
    console.print(f"embedder: {embedder.name} ({embedder.dim}-d)")
    embedder.embed(["warm-up"])
    return embedder.embed


def _query_texts(n: int) -> list[str]:
    return [f"What did speaker {i} say about the trip in week {i % 52}?" for i in range(n)]


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)  # (n, D)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _embed_and_search(store: SQLiteStore, embed: _Embed, text: str, k: int) -> object:
    return store.search("big", embed([text])[0], k)


def _ms(fn: Callable[..., object], *args: object) -> float:
    """Wall time of one call, in milliseconds."""
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def _p50_p95(ms: list[float]) -> list[str]:
    return [f"{np.percentile(ms, 50):.3f}", f"{np.percentile(ms, 95):.3f}"]


if __name__ == "__main__":
    main()
