"""Markdown report and plots comparing evaluation runs (each a directory holding `summary.json`).

Scores in `summary.json` are fractions in [0, 1]; the report shows percent, with the 95% bootstrap CI over
questions that the paper never gives (reference notes, section 5). Category tables come twice: first under
the labels of the Mem0 / Memory-R1 tables, in their column order, because only those labels reproduce the
published "Overall" numbers; then under LoCoMo's own labels (section 3). Plots use matplotlib's Agg canvas
directly, without pyplot, so rendering needs no display and leaves no global figure state behind.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memory_r1.eval.records import OPERATIONS, ByCategory, CategoryScores, RunInfo, RunSummary, Stat
from memory_r1.eval.stats import mean_std, summarize
from memory_r1.records import Category

METRICS = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "j": "J"}
# Column order of the Mem0 / Memory-R1 tables: Single Hop, Multi-Hop, Open Domain, Temporal.
PAPER_ORDER = (Category.MULTI_HOP, Category.OPEN_DOMAIN, Category.SINGLE_HOP, Category.TEMPORAL)
LOCOMO_ORDER = (Category.MULTI_HOP, Category.TEMPORAL, Category.OPEN_DOMAIN, Category.SINGLE_HOP)
STAGES = ("extract", "manage", "search", "answer", "judge")
DASH = "–"

# Reference notes, section 5: LoCoMo test split, overall F1 / BLEU-1 / J, as published (not ours).
PUBLISHED = {
    "Mem0": ((30.41, 22.22, 45.68), (30.61, 23.55, 53.30)),
    "MemoryOS": ((35.04, 27.99, 48.20), (34.64, 29.36, 51.26)),
    "Memory-SFT": ((42.81, 32.98, 58.76), (39.51, 30.84, 61.13)),
    "Memory-R1-PPO": ((41.05, 32.91, 57.54), (41.72, 33.70, 59.53)),
    "Memory-R1-GRPO": ((45.02, 37.51, 62.74), (43.14, 36.44, 61.51)),
}
PUBLISHED_BACKBONES = ("LLaMA-3.1-8B-Instruct", "Qwen-2.5-7B-Instruct")


@dataclass(frozen=True)
class Run:
    name: str  # run.system plus the directory name, unique within one report
    path: Path
    summary: RunSummary

    @property
    def info(self) -> RunInfo:
        return self.summary.run or RunInfo()


# ---------------------------------------------------------------- loading


def load_summary(run_dir: Path) -> RunSummary:
    """Parse `run_dir/summary.json`; any problem is a ValueError naming the file (the CLI prints one line)."""
    path = Path(run_dir) / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (is {run_dir} an eval run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read summary ({err})") from err
    try:
        return RunSummary.from_json(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _name_runs(run_dirs: Sequence[Path], summaries: Sequence[RunSummary]) -> list[str]:
    """'system (dir)', so that two runs of one system stay apart; '#2' if even that collides."""
    names: list[str] = []
    for run_dir, summary in zip(run_dirs, summaries, strict=True):
        system = summary.run.system if summary.run else None
        base = run_dir.name if system in (None, run_dir.name) else f"{system} ({run_dir.name})"
        name, k = base, 2
        while name in names:
            name, k = f"{base} #{k}", k + 1
        names.append(name)
    return names


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    dirs = [Path(d) for d in run_dirs]
    summaries = [load_summary(d) for d in dirs]
    return [Run(n, d, s) for n, d, s in zip(_name_runs(dirs, summaries), dirs, summaries, strict=True)]


# ---------------------------------------------------------------- formatting


def _missing(value: float | None) -> bool:
    """None or NaN: nothing to show."""
    return value is None or math.isnan(value)


def _pct_ci(stat: Stat | None) -> str:
    """'41.2 [38.0, 44.5]': percent with its 95% CI; just the mean when the CI is absent."""
    if stat is None or stat.mean is None or _missing(stat.mean):
        return DASH
    text = f"{100 * stat.mean:.1f}"
    ci = stat.ci95
    if ci is not None and not any(_missing(v) for v in ci):
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def _pct(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _rate(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return DASH if value is None or math.isnan(value) else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def _count(value: float | None) -> str:
    return DASH if _missing(value) else f"{value:,.0f}"


_NUMERIC = re.compile(r"^[\d.,\s\[\]%±/()+\-–*]*$")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; columns of numbers right-aligned, text left-aligned; pipes in cells escaped."""
    rows = [[str(c) for c in row] for row in rows]
    numeric = [k > 0 and all(_NUMERIC.match(row[k]) for row in rows) for k in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    rule = "|" + "|".join("---:" if right else ":---" for right in numeric) + "|"
    return [line(header), rule, *(line(r) for r in rows), ""]


def _metrics_present(runs: Sequence[Run]) -> list[str]:
    """F1, BLEU-1, EM always; J only when some run had a judge."""
    return [m for m in METRICS if m != "j" or any("j" in r.summary.overall for r in runs)]


# ---------------------------------------------------------------- report sections


def _header(runs: Sequence[Run]) -> list[str]:
    splits = sorted({r.info.split or "?" for r in runs})
    versions = sorted({r.summary.memory_r1_version or "?" for r in runs})
    lines = ["# Memory-R1 evaluation report", "",
             f"Split: **{', '.join(splits)}** · memory-r1 {', '.join(versions)} · {len(runs)} run(s)", ""]
    if len(splits) > 1:
        lines += ["**Runs are on different splits: their scores are not comparable.**", ""]
    rows = []
    for r in runs:
        info = r.info
        rows.append([r.name, info.split or "?", _questions(r.summary),
                     ", ".join(map(str, info.seeds)) or DASH, _seconds(info.wall_s),
                     _compute_minutes(r.summary), info.finished_at or DASH])
    lines += _table(
        ["run", "split", "questions", "seeds", "last invocation (s)", "compute (min)", "finished"], rows
    )
    lines += [f"- {r.name}: `{r.info.command or '?'}`" for r in runs] + [""]
    return lines


def _questions(summary: RunSummary) -> str:
    return DASH if summary.questions is None else str(summary.questions)


def _compute_minutes(summary: RunSummary) -> str:
    """All stages of a run, across the invocations that resumed it (see the Compute section)."""
    compute = summary.compute_s
    return f"{sum(compute.values()) / 60:.1f}" if compute is not None else DASH


def _overall(runs: Sequence[Run]) -> list[str]:
    metrics = _metrics_present(runs)
    rows = [[r.name, _questions(r.summary),
             *(_pct_ci(r.summary.overall.get(m)) for m in metrics)] for r in runs]
    return _table(["run", "n", *(METRICS[m] for m in metrics)], rows)


def _paired(runs: Sequence[Run]) -> list[str]:
    """Each run minus the first on the questions both answered: the before/after view of a trained agent.

    Pairing removes the variance between questions that dominates a per-run interval, so a real change shows
    up with far fewer questions. Needs `per_question` scores in both summaries.
    """
    base = runs[0].summary.per_question if runs else None
    others = [(r, r.summary.per_question) for r in runs[1:] if r.summary.per_question is not None]
    if base is None or not others:
        return []
    metrics = [m for m in METRICS if any(m in v for v in base.values())]
    rows = []
    for run, scores in others:
        shared = [k for k in scores if k in base]
        cells = []
        for m in metrics:
            deltas = [a - b for k in shared
                      if (a := scores[k].get(m)) is not None and (b := base[k].get(m)) is not None]
            cells.append(_signed_ci(summarize(deltas)) if deltas else DASH)
        rows.append([run.name, str(len(shared)), *cells])
    return [
        "## Paired differences",
        "",
        (f"Each run minus **{runs[0].name}** on the same questions, in points, with a 95% bootstrap CI over "
         "questions; an interval that excludes 0 is a difference this sample supports."),
        "",
        *_table(["run", "shared questions", *(METRICS[m] for m in metrics)], rows),
    ]


def _signed_ci(stat: dict) -> str:
    lo, hi = stat["ci95"]
    return f"{100 * stat['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _category_stat(by_category: ByCategory, category: Category, convention: str) -> CategoryScores | None:
    """One category's record; falls back to the other convention, which holds the same numbers relabelled."""
    other = "locomo" if convention == "paper" else "paper"
    label = {"paper": category.paper_label, "locomo": category.locomo_label}
    record = (by_category.get(convention) or {}).get(label[convention])
    return record if record is not None else (by_category.get(other) or {}).get(label[other])


def _category_tables(runs: Sequence[Run], convention: str,
                     parts: dict[str, tuple[ByCategory, dict[str, Stat]]]) -> list[str]:
    """One table per metric: runs as rows, categories then Overall as columns.

    parts maps a run's name to its (by_category, overall) records: the raw or the corrected scores."""
    order = PAPER_ORDER if convention == "paper" else LOCOMO_ORDER
    labels = [(c.paper_label if convention == "paper" else c.locomo_label) + f" ({c.value})" for c in order]
    lines: list[str] = []
    for metric in _metrics_present(runs):
        rows = []
        for name, (by_cat, overall) in parts.items():
            stats = [_metric_of(_category_stat(by_cat, c, convention), metric) for c in order]
            rows.append([name, *map(_pct_ci, stats), _pct_ci(overall.get(metric))])
        lines += [f"**{METRICS[metric]}**", "", *_table(["run", *labels, "Overall"], rows)]
    count_rows = [[name, *(_n_of(_category_stat(by_cat, c, convention)) for c in order),
                   str(next((s.n for s in overall.values()), DASH))]
                  for name, (by_cat, overall) in parts.items()]
    return lines + ["**Questions**", "", *_table(["run", *labels, "Overall"], count_rows)]


def _metric_of(record: CategoryScores | None, metric: str) -> Stat | None:
    return record.scores.get(metric) if record is not None else None


def _n_of(record: CategoryScores | None) -> str:
    return DASH if record is None or record.n is None else str(record.n)


def _by_category(runs: Sequence[Run]) -> list[str]:
    parts = {r.name: (r.summary.by_category, r.summary.overall) for r in runs}
    return ["## By category, paper labels", "",
            ("Labels and column order of the Mem0 and Memory-R1 tables (LoCoMo category id in brackets). "
             "Only these labels reproduce the published Overall numbers: use them to compare with the "
             "paper."), "",
            *_category_tables(runs, "paper", parts),
            "## By category, LoCoMo labels", "",
            ("The same scores under LoCoMo's own category names, in id order (the paper's labels are "
             "permuted: LoCoMo's multi-hop is the paper's Single Hop, open-domain its Multi-Hop, single-hop "
             "its Open Domain)."), "",
            *_category_tables(runs, "locomo", parts)]


def _published(runs: Sequence[Run]) -> list[str]:
    header = ["method", *(f"{b.split('-Instruct')[0]} {m}" for b in PUBLISHED_BACKBONES
                          for m in ("F1", "BLEU-1", "J"))]
    rows = [[method, *(f"{v:.2f}" + ("*" if (method, i) == ("Mem0", 5) else "")
                       for i, v in enumerate(llama + qwen))] for method, (llama, qwen) in PUBLISHED.items()]
    off_test = sorted({r.name for r in runs if r.info.split != "test"})
    lines = ["## Published reference (not our runs)", "",
             ("Overall F1 / BLEU-1 / J in percent as published in the Memory-R1 paper, on the LoCoMo test "
              "split (8 conversations, 1,307 questions) with 7-8B backbones, judged by an unnamed LLM. "
              "These are published numbers, not ours."), "", *_table(header, rows),
             "\\* the paper's per-category values imply 58.30.", ""]
    if off_test:
        lines += [f"Not comparable with these: {', '.join(off_test)} (not on the test split).", ""]
    return lines


def _seeds(runs: Sequence[Run]) -> list[str]:
    multi = [(r, r.summary.seeds) for r in runs if r.summary.seeds and len(r.summary.seeds.per_seed) > 1]
    if not multi:
        return []
    metrics = _metrics_present(runs)
    mean_rows, seed_rows = [], []
    for r, seeds in multi:
        cells = []
        for m in metrics:
            mean, std = (seeds.mean or {}).get(m), (seeds.std or {}).get(m)
            if mean is None or _missing(mean):  # not in the summary: recompute from the per-seed scores
                spread = mean_std([v for s in seeds.per_seed.values() if (v := s.get(m)) is not None
                                   and not _missing(v)])
                mean, std = spread["mean"], spread["std"]
            cells.append(DASH if _missing(mean) else f"{_pct(mean)} ± {_pct(std)}")
        mean_rows.append([r.name, str(len(seeds.per_seed)), *cells])
        by_number = sorted(seeds.per_seed.items(), key=lambda kv: (len(kv[0]), kv[0]))  # "2" < "10"
        for seed, scores in by_number:
            seed_rows.append([r.name, seed, *(_pct(scores.get(m)) for m in metrics)])
    return ["## Seeds", "", "Mean ± sample std over seeds, in percent.", "",
            *_table(["run", "seeds", *(METRICS[m] for m in metrics)], mean_rows),
            *_table(["run", "seed", *(METRICS[m] for m in metrics)], seed_rows)]


def _corrected(runs: Sequence[Run]) -> list[str]:
    fixed = [(r, r.summary.corrected) for r in runs if r.summary.corrected]
    if not fixed:
        return []
    metrics = _metrics_present(runs)
    parts = {r.name: (c.by_category, c.overall) for r, c in fixed}
    rows = [[r.name, DASH if c.changed is None else str(c.changed),
             *(_pct_ci(c.overall.get(m)) for m in metrics)] for r, c in fixed]
    lines = ["## Corrected gold answers", "",
             ("Scores against gold answers corrected by the public audit of LoCoMo (about 6.4% of answers "
              "are wrong); `changed` counts the questions whose gold answer differs."), "",
             *_table(["run", "changed", *(METRICS[m] for m in metrics)], rows)]
    if any(by_cat for by_cat, _ in parts.values()):
        lines += ["By category, paper labels:", "", *_category_tables([r for r, _ in fixed], "paper", parts)]
    return lines


def _final_bank(bank_size: dict[str, list[list[int]]]) -> int:
    """Live memories at the end, summed over conversations."""
    return sum(points[-1][1] for points in bank_size.values() if points)


def _operations(runs: Sequence[Run]) -> list[str]:
    rows, without = [], []
    for r in runs:
        ops = r.summary.operations
        if not ops:
            without.append(r.name)
            continue
        counts = [ops.counts.get(o, 0) for o in OPERATIONS]
        total = sum(counts)
        mix = [f"{c:,} ({100 * c / total:.1f}%)" if total else DASH for c in counts]
        unparsable = f"{_count(ops.unparsable_decisions)} / {_count(ops.decisions)}"
        rows.append([r.name, *mix, _count(ops.rejected), unparsable, _rate(ops.parse_failure_rate),
                     _count(ops.extract_failures), _count(ops.turns), _count(_final_bank(ops.bank_size))])
    if not rows:
        return []
    lines = ["## Memory operations", "",
             ("Operation mix (share of ADD/UPDATE/DELETE/NOOP); `rejected`: operations the bank refused; "
              "parse failures: manager decisions whose output could not be parsed."), "",
             *_table(["run", *OPERATIONS, "rejected", "unparsable / decisions", "parse failures",
                      "extract failures", "turns", "final bank"], rows)]
    if without:
        lines += [f"No memory operations recorded for: {', '.join(without)}.", ""]
    return lines


def _costs(runs: Sequence[Run]) -> list[str]:
    latency = [[r.name, stage, _seconds(p.p50), _seconds(p.p95), _seconds(p.mean), _count(p.n)]
               for r in runs for stage in STAGES if (p := r.summary.latency_s.get(stage))]
    tokens = [[r.name, stage, _count(t.prompt_per_call), _count(t.completion_per_call), _count(t.calls)]
              for r in runs for stage in STAGES if (t := r.summary.tokens.get(stage))]
    lines = []
    if latency:
        lines += ["## Latency", "", "Seconds per call.", "",
                  *_table(["run", "stage", "p50", "p95", "mean", "calls"], latency)]
    if tokens:
        lines += ["## Tokens per call", "",
                  *_table(["run", "stage", "prompt", "completion", "calls"], tokens)]
    compute = [[r.name, *(f"{compute.get(s, 0) / 60:.1f}" for s in STAGES)]
               for r in runs if (compute := r.summary.compute_s) is not None]
    if compute:
        lines += ["## Compute", "",
                  ("Minutes in each stage, summed over all invocations of a resumed run; ingest "
                   "stages count the bank's construction, which a run reusing that bank did not repeat."), "",
                  *_table(["run", *STAGES], compute)]
    return lines


def _judge(runs: Sequence[Run]) -> list[str]:
    rows = []
    for r in runs:
        judge = r.summary.judge
        if judge:
            rows.append([r.name, judge.model or "?", judge.prompt_version or "?", _count(judge.failures)])
        else:
            rows.append([r.name, "no judge: J not computed", DASH, DASH])
    return ["## Judge", "", *_table(["run", "model", "prompt version", "failures"], rows)]


def _flatten(settings: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def _settings(runs: Sequence[Run]) -> list[str]:
    flat = [_flatten(r.summary.settings) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    if not keys:
        return []
    rows = [[f"`{k}`", *(f.get(k, DASH) for f in flat)] for k in keys]
    return ["## Settings", "", *_table(["setting", *(r.name for r in runs)], rows)]


# ---------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _color(runs: Sequence[Run], run: Run) -> str:
    """A run keeps its colour across all plots."""
    return f"C{runs.index(run) % 10}"


def _legend(ax: Axes, **kw: Any) -> None:
    """One legend entry per run, although each run drew one bar per group."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, **kw)


def _category_panel(ax: Axes, runs: Sequence[Run], scored: Sequence[Run], metric: str) -> None:
    """One metric's grouped bars; only runs that have the metric get a slot, colours stay per run."""
    groups = [*PAPER_ORDER, None]  # None: Overall
    width = 0.8 / len(scored)
    for i, run in enumerate(scored):
        by_cat = run.summary.by_category
        for g, category in enumerate(groups):
            stat = (run.summary.overall.get(metric) if category is None
                    else _metric_of(_category_stat(by_cat, category, "paper"), metric))
            x = g - 0.4 + width * (i + 0.5)
            if stat is None or stat.mean is None or _missing(stat.mean):
                ax.text(x, 1, "no questions", ha="center", va="bottom", fontsize=7, rotation=90, color="0.4")
                continue
            mean = 100 * stat.mean
            ci = stat.ci95
            err = (
                None
                if ci is None or any(_missing(v) for v in ci)
                else [[mean - 100 * ci[0]], [100 * ci[1] - mean]]
            )
            ax.bar(x, mean, width, yerr=err, capsize=3, color=_color(runs, run), label=run.name,
                   error_kw={"elinewidth": 1})
            top = mean if err is None or ci is None else 100 * ci[1]
            ax.text(x, top + 1, f"{mean:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{c.paper_label}\n(cat {c.value})" if c else "Overall\n(cat 1-4)"
                                       for c in groups])
    ax.set_ylabel(f"{METRICS[metric]} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{METRICS[metric]} by category (paper labels), 95% bootstrap CI")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="upper left")


def plot_per_category(runs: Sequence[Run], path: Path) -> Path | None:
    """Grouped bars per paper category (and Overall), one bar per run, 95% CI whiskers; F1 and, if any, J."""
    panels = [(m, scored) for m in ("f1", "j") if (scored := [r for r in runs if m in r.summary.overall])]
    if not panels:
        return None
    fig = Figure(figsize=(max(8.0, 1.5 + 5 * (0.6 + 0.35 * len(runs))), 4.2 * len(panels)))
    for row, (metric, scored) in enumerate(panels):
        _category_panel(fig.add_subplot(len(panels), 1, row + 1), runs, scored, metric)
    fig.tight_layout()
    return _save(fig, path)


def plot_operations(runs: Sequence[Run], path: Path) -> Path | None:
    """Operation mix per run (share, counts on the bars); runs without operations are left out."""
    with_ops = [(r, ops) for r in runs if (ops := r.summary.operations)]
    if not with_ops:
        return None
    fig = Figure(figsize=(max(6.0, 1.5 + len(OPERATIONS) * (0.6 + 0.35 * len(with_ops))), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(with_ops)
    for i, (run, ops) in enumerate(with_ops):
        counts = [ops.counts.get(o, 0) for o in OPERATIONS]
        total = sum(counts) or 1
        xs = [g - 0.4 + width * (i + 0.5) for g in range(len(OPERATIONS))]
        shares = [100 * c / total for c in counts]
        ax.bar(xs, shares, width, color=_color(runs, run), label=run.name)
        for x, share, count in zip(xs, shares, counts, strict=True):
            ax.text(x, share + 1, f"{count:,}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(OPERATIONS)), OPERATIONS)
    ax.set_ylabel("share of operations (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Memory operation mix (counts on bars)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_bank_size(runs: Sequence[Run], path: Path) -> Path | None:
    """Live memories over turns: one panel per run, one line per conversation."""
    with_bank = [(r, ops.bank_size) for r in runs if (ops := r.summary.operations) and ops.bank_size]
    if not with_bank:
        return None
    cols = min(3, len(with_bank))
    rows = math.ceil(len(with_bank) / cols)
    fig = Figure(figsize=(5.0 * cols, 3.6 * rows))
    for k, (run, bank_size) in enumerate(with_bank):
        ax = fig.add_subplot(rows, cols, k + 1)
        for conversation, points in bank_size.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=conversation, linewidth=1.5)
        ax.set_title(run.name, fontsize=10)
        ax.set_xlabel("turn")
        ax.set_ylabel("live memories")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Live memories over turns")
    fig.tight_layout()
    return _save(fig, path)


def plot_latency(runs: Sequence[Run], path: Path) -> Path | None:
    """p50 seconds per call per stage as bars, p95 as the whisker; log scale when stages differ 100x."""
    stages = [s for s in STAGES if any(s in r.summary.latency_s for r in runs)]
    if not stages:
        return None
    fig = Figure(figsize=(max(6.0, 1.5 + len(stages) * (0.6 + 0.35 * len(runs))), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    values: list[float] = []
    for g, stage in enumerate(stages):
        timed = [
            (r, p50, p.p95)
            for r in runs
            if (p := r.summary.latency_s.get(stage)) and (p50 := p.p50) is not None and not _missing(p50)
        ]
        for i, (run, p50, p95) in enumerate(timed):  # only timed runs get a slot: the group stays centred
            upper = 0.0 if p95 is None or _missing(p95) else max(0.0, p95 - p50)
            ax.bar(g + width * (i - (len(timed) - 1) / 2), p50, width, yerr=[[0.0], [upper]], capsize=3,
                   color=_color(runs, run), label=run.name)
            values += [v for v in (p50, p95) if v is not None and not _missing(v) and v > 0]
    log = bool(values) and max(values) / min(values) > 100
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(stages)), stages)
    ax.set_ylabel("seconds per call" + (" (log scale)" if log else ""))
    ax.set_title("Latency per stage (bar p50, whisker p95)")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- entry point


def write_report(run_dirs: Sequence[Path], out_dir: Path) -> Path:
    """Write `report.md` and its PNGs into out_dir; returns the report's path."""
    if not run_dirs:
        raise ValueError("no run directories given")
    runs = load_runs(run_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plotters = {"Scores by category": (plot_per_category, "per_category.png"),
                "Memory operations": (plot_operations, "operations.png"),
                "Memory bank size over turns": (plot_bank_size, "bank_size.png"),
                "Latency per stage": (plot_latency, "latency.png")}
    plots = {}
    for title, (plot, name) in plotters.items():
        (out_dir / name).unlink(missing_ok=True)  # a plot skipped now must not leave an older one behind
        plots[title] = plot(runs, out_dir / name)
    lines = [*_header(runs),
             "## Overall", "", ("Percent, mean over questions with a 95% percentile-bootstrap CI "
             "(questions resampled)."), "", *_overall(runs), *_paired(runs),
             *_by_category(runs), *_published(runs), *_seeds(runs), *_corrected(runs), *_operations(runs),
             *_costs(runs), *_judge(runs), *_settings(runs),
             "## Figures", "", *(f"![{title}]({p.name})\n" for title, p in plots.items() if p)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report
