"""`memory-r1 eval`, `memory-r1 eval manager` (the decision benchmark) and `memory-r1 report`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import TaskID
from rich.table import Table

from memory_r1.agents.manager import DEFAULT_PROTOCOL, PROTOCOLS, ManagerConfig
from memory_r1.cli.common import (
    BackendOpt,
    BaseUrlOpt,
    EmbedOpt,
    ModelOpt,
    SessionsOpt,
    SetOpt,
    app,
    check_float,
    check_int,
    check_sessions,
    check_text,
    console,
    progress_bar,
    user_errors,
)
from memory_r1.data import DATASETS, find_locomo, load_benchmark
from memory_r1.eval.decisions import DEFAULT_CASES
from memory_r1.eval.records import RunInfo, RunSummary, Stat
from memory_r1.pipeline import DEFAULT_MODEL, PipelineConfig
from memory_r1.settings import apply_overrides

if TYPE_CHECKING:
    from memory_r1.eval.judge import Judge
    from memory_r1.eval.systems import EvalSystem

eval_app = typer.Typer(help="Evaluate on LoCoMo (and the Memory Manager's decisions).")
app.add_typer(eval_app, name="eval")


# ---------------------------------------------------------------- evaluation


@eval_app.callback(invoke_without_command=True)
@user_errors
def evaluate(
    ctx: typer.Context,
    split: Annotated[
        str | None, typer.Option(help="LoCoMo: val (default), test, train or all; other datasets: all.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="locomo, longmemeval or msc.")] = "locomo",
    variant: Annotated[str | None, typer.Option(help="LongMemEval file: s (default), m or oracle.")] = None,
    system: Annotated[str, typer.Option(help="memory-r1, prompted, rag or full-context.")] = "memory-r1",
    data: Annotated[
        Path | None, typer.Option("--data", help="The dataset file (default: the documented places).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/eval/<system>-<split>); rerun to resume.")
    ] = None,
    banks: Annotated[Path, typer.Option(help="Where banks are built and reused across runs.")] = Path(
        "runs/banks"
    ),
    model: ModelOpt = DEFAULT_MODEL,
    manager_model: Annotated[
        str | None, typer.Option(help="Memory Manager checkpoint (default --model).")
    ] = None,
    answer_model: Annotated[
        str | None, typer.Option(help="Answer Agent checkpoint (default --model).")
    ] = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
    judge_model: Annotated[
        str | None, typer.Option(help="LLM judge model (J metric); none by default.")
    ] = None,
    judge_backend: Annotated[str, typer.Option(help="Backend of the judge.")] = "transformers",
    judge_base_url: Annotated[
        str | None, typer.Option(help="Server of the judge, e.g. https://api.openai.com/v1.")
    ] = None,
    seeds: Annotated[
        int, typer.Option(help="Repeat a sampled run with seeds 0..N-1 (needs --temperature > 0).")
    ] = 1,
    temperature: Annotated[
        float, typer.Option(help="Answer sampling temperature; 0 = greedy (the paper).")
    ] = 0.0,
    limit: Annotated[
        int | None, typer.Option(help="At most N questions per conversation (smoke runs).")
    ] = None,
    conversation: Annotated[
        list[str] | None, typer.Option("--conversation", "-c", help="Only these conversations.")
    ] = None,
    sessions: SessionsOpt = None,
    corrections: Annotated[
        Path | None, typer.Option(help="JSON list of corrected gold answers (sample_id, qa_index, answer).")
    ] = None,
    context_tokens: Annotated[
        int | None, typer.Option(help="full-context: the model's window (default: its config).")
    ] = None,
    settings: SetOpt = None,
    manager_prompt: Annotated[
        str, typer.Option(help=f"Manager protocol: {', '.join(PROTOCOLS)}.")
    ] = DEFAULT_PROTOCOL,
    decisions: Annotated[
        Path | None,
        typer.Option(help=f"Also score the manager on this labelled decision set (e.g. {DEFAULT_CASES})."),
    ] = None,
    decisions_split: Annotated[
        str, typer.Option(help="Part of the decision set: dev, test or all.")
    ] = "test",
) -> None:
    """Run a system over a LoCoMo split (or LongMemEval, MSC); write results.jsonl and summary.json
    (resumable).

    --set reaches every pipeline setting (answer.top_k_per_speaker=10) and, prefixed with eval., every
    evaluation setting (eval.batch_size=16); `memory-r1 config pipeline|eval` lists them."""
    import shlex
    import sys
    from dataclasses import replace

    from memory_r1.eval.harness import Callbacks, EvalConfig, load_corrections, run_eval
    from memory_r1.eval.systems import SYSTEMS, build_system

    if ctx.invoked_subcommand is not None:
        return
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of: {', '.join(SYSTEMS)}")
    check_int("--seeds", seeds, 1, 1000)
    check_float("--temperature", temperature, 0.0, 10.0)
    check_int("--limit", limit, 1)
    check_int("--context-tokens", context_tokens, 1, 10**8)
    check_sessions(sessions)
    conversation = [check_text("--conversation", c) or "" for c in conversation] if conversation else None
    model = check_text("--model", model) or ""
    if seeds < 1 or (seeds > 1 and temperature <= 0):
        raise ValueError(
            "--seeds N > 1 repeats sampled runs: give --temperature > 0 (greedy runs are identical)"
        )
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset != "locomo" and split not in (None, "all"):
        raise ValueError(f"--split {split} is a LoCoMo split; {dataset} is evaluated whole (--split all)")
    split = split or ("val" if dataset == "locomo" else "all")
    conversations = load_benchmark(dataset, data, variant)
    config = EvalConfig(split=split, dataset=dataset, seeds=tuple(range(seeds)), limit=limit,
                        conversations=tuple(conversation) if conversation else None, sessions=sessions,
                        corrections=load_corrections(corrections, conversations) if corrections else {})
    pipeline = PipelineConfig(model=model, manager_model=manager_model, answer_model=answer_model,
                              backend=backend, base_url=base_url, embedding_model=embedding_model,
                              manager=ManagerConfig(prompt_version=manager_prompt))
    pipeline = replace(pipeline, answer=replace(pipeline.answer, temperature=temperature))
    eval_keys = [s.removeprefix("eval.") for s in settings or [] if s.startswith("eval.")]
    pipeline = apply_overrides(pipeline, [s for s in settings or [] if not s.startswith("eval.")])
    config = apply_overrides(config, eval_keys)
    if decisions is not None and system not in ("memory-r1", "prompted"):
        raise ValueError(f"--decisions scores a Memory Manager; the {system} system has none")
    judge = _load_judge(judge_model, judge_backend, judge_base_url) if judge_model else None
    out = out or Path("runs/eval") / (f"{system}-{split}" if dataset == "locomo" else f"{system}-{dataset}")
    evaluated = build_system(system, pipeline, context_tokens)
    with progress_bar() as progress:
        tasks: dict[str, TaskID] = {}

        def on_conversation(sample_id: str, turns: int, questions: int) -> None:
            tasks["ingest"] = progress.add_task(f"{sample_id} ingest", total=turns)
            tasks["answer"] = progress.add_task(f"{sample_id} questions", total=questions)

        def on_prepare(n_conversations: int, turns: int) -> None:
            tasks["ingest"] = progress.add_task(f"{n_conversations} conversations ingest", total=turns)

        callbacks = Callbacks(on_conversation, lambda: progress.advance(tasks["ingest"]),
                              lambda n: progress.advance(tasks["answer"], n), on_prepare)
        summary = run_eval(evaluated, conversations, config, out, banks_dir=banks, judge=judge,
                           command=shlex.join(["memory-r1", *sys.argv[1:]]), callbacks=callbacks)
    if decisions is not None:
        summary = replace(
            summary, decisions=_score_decisions(evaluated, decisions, data, decisions_split, out, backend)
        )
        (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    _print_summary(summary)
    if decisions is not None:
        _print_decisions([summary.decisions or {}])
    console.print(
        f"results in {out}/ (results.jsonl, summary.json); "
        f"wall {(summary.run or RunInfo()).wall_s or 0:.0f} s"
    )


def _score_decisions(evaluated: EvalSystem, cases_path: Path, data: Path | None, split: str, out: Path,
                     backend: str) -> dict[str, Any]:
    """The evaluated system's own manager (model and protocol) on the labelled decision set."""
    from memory_r1.eval.decisions import evaluate_protocol, load_cases
    from memory_r1.eval.systems import PipelineSystem

    if not isinstance(evaluated, PipelineSystem):  # `eval` rejects --decisions for other systems first
        raise ValueError(f"--decisions needs a system with a Memory Manager, not {evaluated.name}")
    manager = evaluated.manager
    cases = load_cases(cases_path, _locomo_if_needed(cases_path, data), split)
    with progress_bar() as progress:
        task = progress.add_task("manager decisions", total=len(cases))
        summary = evaluate_protocol(
            manager.generator,
            cases,
            manager.config,
            out / "decisions",
            run_info={"cases_file": str(cases_path), "split": split, "backend": backend},
            on_batch=lambda n: progress.advance(task, n),
        )
    return {k: v for k, v in summary.items() if k != "cases"}


def _locomo_if_needed(cases_path: Path, data: Path | None) -> Path | None:
    """The LoCoMo file when the decision set has LoCoMo rows (their text is rebuilt from it), else None."""
    text = Path(cases_path).read_text() if Path(cases_path).is_file() else ""
    if not text and not Path(cases_path).is_file():
        raise FileNotFoundError(f"no decision set at {cases_path}")
    return find_locomo(data) if '"source": "locomo"' in text else None


@eval_app.command("manager")
@user_errors
def evaluate_manager(
    cases: Annotated[Path, typer.Option(help="Labelled decision set (JSON lines).")] = DEFAULT_CASES,
    protocol: Annotated[
        list[str] | None,
        typer.Option(
            "--protocol",
            "-p",
            help=f"Prompt version(s): {', '.join(PROTOCOLS)}; "
            "repeat to compare (default: the default protocol).",
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="dev (for choosing a protocol), test (held out) or all.")
    ] = "test",
    data: Annotated[
        Path | None, typer.Option("--data", help="locomo10.json, to rebuild the LoCoMo cases' text.")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Run directory; one sub-directory per protocol; rerun to resume.")
    ] = Path("runs/eval/manager"),
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    structured_output: Annotated[
        str,
        typer.Option(help="openai backend: response_format, json_object, guided_json, json_schema or off."),
    ] = "response_format",
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call.")] = 16,
    limit: Annotated[int | None, typer.Option(help="At most N cases (smoke runs).")] = None,
    max_new_tokens: Annotated[
        int, typer.Option(help="Generation budget per case.")
    ] = ManagerConfig.max_new_tokens,
) -> None:
    """Score Memory Manager decisions: per-event P/R/F1, target accuracy, rejections, confusion matrix."""
    from memory_r1.eval.decisions import evaluate_protocol, load_cases
    from memory_r1.eval.decisions_report import write_report
    from memory_r1.llm import load_generator

    versions = protocol or [DEFAULT_PROTOCOL]
    configs = [ManagerConfig(prompt_version=v,
                             max_new_tokens=max_new_tokens) for v in versions]  # checks the names
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("--batch-size and --limit must be at least 1")
    selected = load_cases(cases, _locomo_if_needed(cases, data), split)[:limit]
    if not selected:
        raise ValueError(f"{cases} has no cases in split {split!r}")
    extra = {"structured_output": structured_output} if backend == "openai" else {}
    generator = load_generator(model, backend=backend, base_url=base_url, **extra)
    summaries = []
    with progress_bar() as progress:
        for config in configs:
            task = progress.add_task(config.prompt_version, total=len(selected))

            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            summaries.append(evaluate_protocol(
                generator, selected, config, out / config.prompt_version,
                run_info={"cases_file": str(cases), "split": split, "limit": limit, "backend": backend},
                batch_size=batch_size, on_batch=advance))
    _print_decisions(summaries)
    report_path = write_report(summaries, out)
    console.print(f"wrote {report_path} and one summary.json per protocol under {out}/")


def _print_decisions(summaries: list[dict]) -> None:
    from memory_r1.eval.decisions_report import OVERVIEW_HEADER, overview_rows

    table = Table(title="Memory Manager decisions (percent, 95% CI)")
    for column in OVERVIEW_HEADER:
        table.add_column(column, justify="left" if column.startswith("protocol") else "right")
    for row in overview_rows(summaries):
        table.add_row(*row)
    console.print(table)
    for s in summaries:
        f1 = ", ".join(f"{e} {100 * v['f1']:.0f}" for e, v in s["per_event"].items())
        reasons = (
            ", ".join(f"{k} {100 * v['case_rate']:.0f}%" for k, v in s["rejections"]["by_reason"].items())
            or "none"
        )
        console.print(
            f"{s['run']['prompt_version']}: F1 by event {f1}; "
            f"rejections by reason (share of cases): {reasons}"
        )


def _load_judge(model: str, backend: str, base_url: str | None) -> Judge:
    import platformdirs

    from memory_r1.eval.judge import Judge
    from memory_r1.llm import load_generator

    cache = Path(platformdirs.user_cache_dir("memory-r1")) / "judge-cache.db"
    cache.parent.mkdir(parents=True, exist_ok=True)
    return Judge(load_generator(model, backend=backend, base_url=base_url), cache_path=cache)


def _print_summary(summary: RunSummary) -> None:
    metrics = [m for m in ("f1", "bleu1", "em", "j") if m in summary.overall]
    if summary.by_type is not None:
        _print_by_type(summary, metrics)
        return
    names = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "j": "J"}
    run = summary.run or RunInfo()
    table = Table(title=f"{run.system} on {run.split}: {summary.questions} questions")
    table.add_column("category")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(names[m] + " [95% CI]", justify="right")

    def cell(s: Stat) -> str:
        if not s.n or s.mean is None or s.ci95 is None:
            return "-"
        return f"{100 * s.mean:.1f} [{100 * s.ci95[0]:.1f}, {100 * s.ci95[1]:.1f}]"

    for label in ("Single Hop", "Multi-Hop", "Open Domain", "Temporal"):
        entry = summary.by_category["paper"][label]
        table.add_row(label, str(entry.n), *(cell(entry.scores[m]) for m in metrics))
    overall = summary.overall
    table.add_row("Overall", str(overall[metrics[0]].n), *(cell(overall[m]) for m in metrics))
    console.print(table)
    if summary.operations:
        ops = summary.operations
        console.print(f"operations: {', '.join(f'{op} {ops.counts[op]}' for op in ops.counts)}; "
                      f"unparsable decisions {100 * (ops.parse_failure_rate or 0.0):.0f}%")


def _print_by_type(summary: RunSummary, metrics: Sequence[str]) -> None:
    """LongMemEval's layout: one row per question type, abstention also on its own row."""
    names = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "j": "J"}
    run = summary.run or RunInfo()
    table = Table(title=f"{run.system}: {summary.questions} questions by type")
    table.add_column("question type")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(names[m], justify="right")

    def cell(s: Stat | None) -> str:
        return f"{100 * s.mean:.1f}" if s is not None and s.n and s.mean is not None else "-"

    for name, entry in (summary.by_type or {}).items():
        table.add_row(name, str(entry.n), *(cell(entry.scores.get(m)) for m in metrics))
    table.add_row("Overall", str(summary.questions), *(cell(summary.overall.get(m)) for m in metrics))
    console.print(table)


@app.command()
@user_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `memory-r1 eval`.")],
    out: Annotated[
        Path | None, typer.Option(help="Where report.md and the plots go (default: the first run dir).")
    ] = None,
) -> None:
    """Put evaluation runs side by side: a Markdown report with tables and PNG plots."""
    from memory_r1.eval.report import write_report

    path = write_report(run_dirs, out or run_dirs[0])
    console.print(f"wrote {path}")


