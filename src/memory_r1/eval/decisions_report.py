"""Markdown tables and confusion-matrix plots for decision-benchmark runs (`memory-r1 eval manager`).

Rates are shown in percent with their 95% bootstrap CI over cases; the first run is the reference that
paired differences are taken against. Plots use matplotlib's Agg canvas directly (no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memory_r1.eval.decisions import paired_difference


def pct_ci(stat: dict) -> str:
    if not stat.get("n", 1) or math.isnan(stat["mean"]):
        return "–"
    lo, hi = stat["ci95"]
    return f"{100 * stat['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def name(summary: dict) -> str:
    run = summary["run"]
    return f"{run['prompt_version']} ({run['model']})"


def overview_rows(summaries: Sequence[dict]) -> list[list[str]]:
    rows = []
    for s in summaries:
        rows.append([name(s), str(s["n"]), pct_ci(s["accuracy"]), pct_ci(s["event_accuracy"]),
                     pct_ci(s["macro_f1"]), pct_ci(s["target_accuracy"]), pct_ci(s["rejections"]["any"]),
                     f"{s['completion_tokens_mean']:.0f}"])
    return rows


OVERVIEW_HEADER = ["protocol (model)", "cases", "decision acc.", "event acc.", "macro-F1", "target acc.",
                   "cases with a rejection", "tokens/case"]


def confusion_table(summary: dict) -> list[str]:
    labels = summary["confusion"]["labels"]
    rows = [
        [f"**{gold}**", *(str(v) for v in row)]
        for gold, row in zip(labels, summary["confusion"]["matrix"], strict=True)
    ]
    return _table(["gold \\ predicted", *labels], rows)


def per_event_table(summary: dict) -> list[str]:
    rows = [[event, f"{100 * s['precision']:.1f}", f"{100 * s['recall']:.1f}", f"{100 * s['f1']:.1f}",
             str(s["support"]), str(s["predicted"])] for event, s in summary["per_event"].items()]
    return _table(["event", "precision", "recall", "F1", "gold", "predicted"], rows)


def rejection_table(summary: dict) -> list[str]:
    by_reason = summary["rejections"]["by_reason"]
    if not by_reason:
        return ["No operation was rejected."]
    rows = [[code, str(r["operations"]), f"{100 * r['case_rate']:.1f}"] for code, r in by_reason.items()]
    return _table(["reason", "rejected operations", "% of cases"], rows)


def write_report(summaries: Sequence[dict], out_dir: Path, title: str = "Memory Manager decisions") -> Path:
    """report.md (overview, paired differences, per-run tables) and confusion-<n>.png per run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    first = summaries[0]["run"]
    lines += [(f"Cases: `{first.get('cases_file', '?')}`, split **{first.get('split', '?')}**; backend "
               f"{first.get('backend', '?')}. Percent, 95% bootstrap CI over cases."), ""]
    lines += _table(OVERVIEW_HEADER, overview_rows(summaries)) + [""]
    if len(summaries) > 1:
        rows = []
        for s in summaries[1:]:
            d = paired_difference(summaries[0], s)
            rows.append([name(s),
                         f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]",
                         str(d["n"])])
        lines += [f"Paired difference in decision accuracy against {name(summaries[0])} (same cases):", ""]
        lines += _table(["run", "Δ decision acc. [95% CI]", "cases"], rows) + [""]
    kinds = sorted({k for s in summaries for k in s["by_kind"]})
    lines += ["Decision accuracy by kind of case:", ""]
    lines += _table(
        ["kind", *(name(s) for s in summaries)],
        [[k, *(pct_ci(s["by_kind"][k]) if k in s["by_kind"] else "–" for s in summaries)] for k in kinds],
    ) + [""]
    for i, s in enumerate(summaries):
        plot = plot_confusion(s, out_dir / f"confusion-{i + 1}.png")
        lines += [f"## {name(s)}", "", f"![confusion matrix]({plot.name})", "", *confusion_table(s), "",
                  *per_event_table(s), "", *rejection_table(s), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def plot_confusion(summary: dict, path: Path) -> Path:
    labels, matrix = summary["confusion"]["labels"], summary["confusion"]["matrix"]
    fig = Figure(figsize=(4.2, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(name(summary), fontsize=9)
    top = max((v for row in matrix for v in row), default=0)
    for r, row in enumerate(matrix):
        for c, value in enumerate(row):
            ax.text(c, r, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
