"""Paired effect of structured output on the manager's decisions: for each protocol, the run with the schema
(`json_object`) minus the run without it (`off`), on the same cases. Prints a Markdown table.

    python benchmarks/structured_paired.py benchmarks/results/manager-decisions-llamacpp/dev
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memory_r1.eval.decisions import paired_difference


def pct(interval: dict) -> str:
    lo, hi = interval["ci95"]
    return f"{100 * interval['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def main(folder: Path) -> None:
    print("| protocol | cases | decision acc. off | with schema | paired difference "
          "| rejected-op cases off | with schema |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for constrained in sorted((folder / "json_object").glob("manage-*.json")):
        plain = folder / "off" / constrained.name
        if not plain.exists():
            continue
        a, b = json.loads(plain.read_text()), json.loads(constrained.read_text())
        print(f"| {constrained.stem} | {b['n']} | {100 * a['accuracy']['mean']:.1f} "
              f"| {100 * b['accuracy']['mean']:.1f} | {pct(paired_difference(a, b))} "
              f"| {100 * a['rejections']['any']['mean']:.1f} "
              f"| {100 * b['rejections']['any']['mean']:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
