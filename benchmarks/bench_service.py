"""Loopback load test of `memory-r1 serve`'s app: requests/s and p50/p95 latency for search and add.

Bounded: one uvicorn server on 127.0.0.1 in this process, N client threads in a second process, a fixed
number of requests each.
Embedder: the packaged all-MiniLM-L6-v2 (the default). add with infer=True uses the tiny random model's
scripted replies (so it measures the service and the pipeline, not a real LLM). Checks that no write was
lost: every acknowledged add is in the store afterwards. Prints a Markdown table.

    flock /tmp/heavy.lock python benchmarks/bench_service.py --clients 16 --requests 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
from memory_r1.embeddings import load_embedder
from memory_r1.llm.base import Generation
from memory_r1.memory import Memory
from memory_r1.pipeline import Agents
from memory_r1.records import Scope, Usage
from memory_r1.service.app import ServiceConfig, create_app
from memory_r1.service.keys import KeyStore


class Scripted:
    """Extract the line as one fact; the manager ADDs it (fixed replies: the service is what is measured)."""

    name = "scripted"

    def generate(self, prompts, config):
        out = []
        for p in prompts:
            content = p[-1]["content"]
            if content.startswith("Chat date:"):
                reply = json.dumps({"facts": [content.split("Line: ", 1)[1]]})
            else:
                facts = json.loads(content.split("New facts:\n", 1)[1])
                reply = json.dumps({"memory": [{"id": "new", "text": f, "event": "ADD"} for f in facts]})
            out.append(Generation(reply, Usage(10, 5, 0.0), self.name))
        return out


def _percentiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return xs[len(xs) // 2] * 1000, xs[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000


def _load(
    url: str, headers: dict[str, str], kind: str, clients: int, requests: int
) -> tuple[list[float], int, list[tuple[str, str]], float]:
    """`clients` threads, `requests` calls of `kind` each: latencies, errors, acknowledged adds, wall time."""
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()

    def client(worker: int) -> tuple[list[float], int]:
        times, errors = [], 0
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            for j in range(requests):
                user = f"user{worker % 4}"
                t = time.perf_counter()
                if kind == "search":
                    r = c.post(
                        "/v1/memories/search/", json={"query": f"what does {user} like {j}?", "user_id": user}
                    )
                else:
                    text = f"{user} note {worker}-{j} ({kind})"
                    r = c.post(
                        "/v1/memories/",
                        json={"messages": text, "user_id": user, "infer": kind == "add-infer"},
                    )
                    if r.status_code == 200:  # what the server says it stored (inference rewrites the text)
                        with lock:
                            acked.extend(
                                (user, op["memory"]) for op in r.json()["results"] if op["event"] == "ADD"
                            )
                times.append(time.perf_counter() - t)
                errors += r.status_code != 200
        return times, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    return [t for ts, _ in results for t in ts], sum(e for _, e in results), acked, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=20, help="per client and kind")
    ap.add_argument(
        "--baseline", type=int, default=50, help="queries the embedder alone embeds, one at a time"
    )
    ap.add_argument("--store", default=None, help="SQLite path or postgresql:// DSN (default: a temp file)")
    ap.add_argument(
        "--postgres", action="store_true", help="start a local PostgreSQL + pgvector (pgserver) and use it"
    )
    ap.add_argument(
        "--embedder", default="all-MiniLM-L6-v2", help="'hashing' measures the service without a model"
    )
    args = ap.parse_args()
    embedder = load_embedder(args.embedder)
    gen = Scripted()
    agents = Agents(embedder, FactExtractor(gen), MemoryManager(gen, embedder), AnswerAgent(gen, embedder))  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp())
    store = args.store or str(tmp / "bench.db")
    if args.postgres:
        import pgserver

        pg = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
        store = pg.get_uri()
    print(f"store: {store.split('?')[0] if args.postgres else store}", flush=True)
    memory = Memory(store, agents)
    keys = KeyStore()
    key = keys.ensure_admin()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServiceConfig(rate_per_minute=10**9)
    server = uvicorn.Server(
        uvicorn.Config(create_app(memory, keys, config), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Token {key}"}

    # the embedder alone, one query at a time: the search target's baseline
    start = time.perf_counter()
    for i in range(args.baseline):
        embedder.embed([f"what does user {i} like to drink?"])
    embed_rps = args.baseline / (time.perf_counter() - start)
    print(f"embedder alone (1 query at a time): {embed_rps:.1f} queries/s", flush=True)

    # the clients run in a second process, as real clients do: in the server's process their 16 threads
    # would compete with the event loop for the GIL, and the benchmark would measure that contention
    rows, acked = [], []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for kind in ("add", "add-infer", "search"):
            times, errors, added, wall = pool.submit(
                _load, url, headers, kind, args.clients, args.requests
            ).result()
            acked += added
            p50, p95 = _percentiles(times)
            rows.append((kind, len(times) / wall, p50, p95, errors))
            print(
                f"{kind}: {rows[-1][1]:.1f} requests/s, p50 {p50:.0f} ms, p95 {p95:.0f} ms, errors {errors}",
                flush=True,
            )
    server.should_exit = True
    stored = {
        (f"user{u}", i.memory)
        for u in range(4)
        for p in range(1, 100)
        for i in memory.in_namespace("admin").get_all(Scope(f"user{u}"), page=p, page_size=1000)
    }
    lost = [t for t in acked if t not in stored]
    print(
        f"{args.clients} concurrent clients, {args.requests} requests each per kind; "
        f"embedder alone (1 query at a time): {embed_rps:.0f} queries/s"
    )
    print("| route | requests/s | p50 ms | p95 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for kind, rps, p50, p95, errors in rows:
        print(f"| {kind} | {rps:.0f} | {p50:.1f} | {p95:.1f} | {errors} |")
    search_rps = next(rps for kind, rps, *_ in rows if kind == "search")
    print(
        f"search requests/s at {args.clients} clients / embedder alone one query at a time: "
        f"{search_rps / embed_rps:.2f}"
    )
    print(f"acknowledged adds: {len(acked)}, missing from the store afterwards: {len(lost)}")


if __name__ == "__main__":
    main()
