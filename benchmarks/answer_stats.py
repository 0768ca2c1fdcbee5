"""Format failures and answer length per evaluation run (the learning experiment's extra columns).

    python benchmarks/answer_stats.py RUN_DIR [RUN_DIR ...]

Reads each run's results.jsonl (which quotes LoCoMo and so stays outside the repository) and prints a
Markdown table of counts only, safe to commit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memory_r1.eval.harness import read_results


def stats(run: Path) -> tuple[int, int, float]:
    rows = read_results(run / "results.jsonl")
    failures = sum(bool(r.parse_error) for r in rows)
    words = [len(r.prediction.split()) for r in rows]
    return len(rows), failures, sum(words) / max(len(words), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | questions | format failures | mean answer length (words) |")
    print("|---|---|---|---|")
    for run in args.runs:
        n, failures, words = stats(run)
        print(f"| {run.name} | {n} | {failures} ({100 * failures / max(n, 1):.1f}%) | {words:.1f} |")


if __name__ == "__main__":
    main()
