"""End-to-end cost of the pipeline on a real model: seconds per ingested turn and per answered question,
and tokens per call for each stage.

    python benchmarks/bench_pipeline.py                      # SmolLM2-135M on conv-26 session 1, CPU
    python benchmarks/bench_pipeline.py --model tiny-random  # the plumbing alone
    python benchmarks/bench_pipeline.py --json out.json      # also save the numbers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from memory_r1.data import find_locomo, get_conversation, load_locomo, parse_session_range, select_sessions
from memory_r1.eval.metrics import f1_score
from memory_r1.pipeline import DEFAULT_MODEL, MemorySystem, PipelineConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="locomo10.json (default: the documented places)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--sessions", default="1")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()

    conversation = select_sessions(
        get_conversation(load_locomo(find_locomo(args.data)), args.conversation),
        parse_session_range(args.sessions)
    )
    items = [q for q in conversation.qa if q.answer is not None][: args.questions]

    start = time.perf_counter()
    system = MemorySystem.from_config(PipelineConfig(model=args.model))
    load_s = time.perf_counter() - start

    report = system.ingest(conversation)
    per_question = []
    answers = []
    for item in items:  # one at a time: latency per question, as a user asking would see it
        t0 = time.perf_counter()
        answers += system.answer([item.question], conversation.sample_id)
        per_question.append(time.perf_counter() - t0)

    answer_usage = [a.usage for a in answers]
    figures = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"{platform.python_version()}",
        "model": args.model,
        "conversation": args.conversation,
        "sessions": args.sessions,
        "model_load_s": round(load_s, 1),
        "turns": report.turns,
        "facts": report.facts,
        "bank_size": system.store.count(),
        "operations": {e.value: n for e, n in report.operations.items()},
        "s_per_turn": round(report.seconds / max(report.turns, 1), 2),
        "s_per_question_median": round(statistics.median(per_question), 2) if per_question else None,
        "mean_f1": (
            round(statistics.fmean(f1_score(a.answer, q.answer)
                                   for a, q in zip(answers, items, strict=True)), 3)
            if items
            else None
        ),
    }
    for stage, usage in report.usage.items():
        calls = report.calls[stage]
        figures[f"{stage}_prompt_tokens_per_call"] = round(usage.prompt_tokens / calls, 1)
        figures[f"{stage}_completion_tokens_per_call"] = round(usage.completion_tokens / calls, 1)
        figures[f"{stage}_s_per_call"] = round(usage.latency_s / calls, 2)
    if answer_usage:
        figures["answer_prompt_tokens_per_call"] = round(
            statistics.fmean(u.prompt_tokens for u in answer_usage), 1
        )
        figures["answer_completion_tokens_per_call"] = round(
            statistics.fmean(u.completion_tokens for u in answer_usage), 1
        )

    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
