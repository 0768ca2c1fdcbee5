"""Ingestion throughput: conversations one after another (today's path) against all at once (their model
calls batched together), with the same model, in one run; and how far the banks agree.

    python benchmarks/bench_ingest.py                              # SmolLM2-135M, 4 test conversations
    python benchmarks/bench_ingest.py --conversations 8 --turns 12
    python benchmarks/bench_ingest.py --model tiny-random          # the plumbing alone

Agreement: for each conversation, the applied operations (event and text, in order, per owner) of the two
paths are compared turn by turn; greedy decoding of a left-padded batch may differ from batch 1 by fp32
rounding, which can flip a rare token, and a flipped decision changes every later prompt of that bank.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace

from memory_r1.data import find_locomo, load_locomo, split_conversations
from memory_r1.parallel import ingest_concurrently
from memory_r1.pipeline import DEFAULT_MODEL, MemorySystem, PipelineConfig
from memory_r1.records import Conversation


def prefix(conversation: Conversation, turns: int) -> Conversation:
    """The first `turns` turns of session 1 (what fits a benchmark on two cores)."""
    first = conversation.sessions[0]
    return replace(conversation, sessions=(replace(first, turns=first.turns[:turns]),), qa=())


def decisions(system: MemorySystem) -> list[tuple[str, str, str | None]]:
    return [(h.owner, h.event, h.after_text) for h in system.store.history()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6, help="turns of session 1 per conversation")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    chosen = split_conversations(load_locomo(find_locomo(args.data)), "test")[: args.conversations]
    conversations = [prefix(c, args.turns) for c in chosen]
    agents = MemorySystem.from_config(PipelineConfig(model=args.model))
    turns = sum(len(c.turns) for c in conversations)

    sequential = [agents.with_bank(":memory:") for _ in conversations]
    t0, c0 = time.perf_counter(), time.process_time()
    for system, conversation in zip(sequential, conversations, strict=True):
        system.ingest(conversation)
    sequential_s, sequential_cpu = time.perf_counter() - t0, time.process_time() - c0

    concurrent = [agents.with_bank(":memory:") for _ in conversations]
    t0, c0 = time.perf_counter(), time.process_time()
    ingest_concurrently(concurrent, conversations)
    concurrent_s, concurrent_cpu = time.perf_counter() - t0, time.process_time() - c0

    same_banks = sum(decisions(a) == decisions(b) for a, b in zip(sequential, concurrent, strict=True))
    pairs = [
        (x, y)
        for a, b in zip(sequential, concurrent, strict=True)
        for x, y in zip(decisions(a), decisions(b), strict=False)
    ]
    agree = sum(x == y for x, y in pairs) / len(pairs) if pairs else 1.0
    figures = {
        "model": args.model,
        "conversations": len(conversations),
        "turns": turns,
        "sequential_turns_per_s": turns / sequential_s,
        "concurrent_turns_per_s": turns / concurrent_s,
        "speedup": sequential_s / concurrent_s,
        "cpu_s": {"sequential": sequential_cpu, "concurrent": concurrent_cpu},
        "cpu_speedup": sequential_cpu / concurrent_cpu,
        "identical_banks": same_banks,
        "history_rows_agreeing": agree,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {os.environ.get('OMP_NUM_THREADS', '?')}",
    }
    print(f"{turns} turns over {len(conversations)} conversations, model {args.model}")
    print(f"  sequential  {figures['sequential_turns_per_s']:.3f} turns/s ({sequential_s:.0f} s)")
    print(f"  concurrent  {figures['concurrent_turns_per_s']:.3f} turns/s ({concurrent_s:.0f} s)")
    print(
        f"  speedup {figures['speedup']:.2f}x; identical banks {same_banks}/{len(conversations)}; "
        f"history rows agreeing {100 * agree:.1f}%"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
