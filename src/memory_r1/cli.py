"""The `memory-r1` command. A leaf: nothing imports it.

Every error a user can cause (missing file, bad schema, unknown conversation or model, incompatible bank)
ends as one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memory_r1 import __version__
from memory_r1.bank import BankError, SQLiteStore
from memory_r1.data import (
    DatasetError,
    find_locomo,
    get_conversation,
    load_locomo,
    parse_session_range,
    select_sessions,
)
from memory_r1.embeddings import UnknownEmbedderError
from memory_r1.llm import GenerationError, UnknownModelError
from memory_r1.pipeline import DEFAULT_MODEL, IngestReport, MemorySystem, PipelineConfig, operation_counts
from memory_r1.records import Conversation, QAItem

app = typer.Typer(help="Long-term memory for LLM agents, learned with RL (Memory-R1).", no_args_is_help=True)
memories_app = typer.Typer(help="Inspect and repair a memory bank.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
app.add_typer(memories_app, name="memories")
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

USER_ERRORS = (DatasetError, BankError, UnknownModelError, UnknownEmbedderError, GenerationError, ImportError, OSError, ValueError)


def user_errors(command: F) -> F:
    """Turn the errors a user can cause into one clear line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def default_bank() -> Path:
    import platformdirs

    return Path(os.environ.get("MEMORY_R1_BANK") or Path(platformdirs.user_data_dir("memory-r1")) / "bank.db")


BankOpt = Annotated[Path | None, typer.Option("--bank", help="Bank file (default: $MEMORY_R1_BANK or the user data dir).")]
DataArg = Annotated[Path | None, typer.Argument(help="locomo10.json (default: $MEMORY_R1_LOCOMO, user data dir, ../shared/data/locomo/).")]
ConvOpt = Annotated[str, typer.Option("--conversation", "-c", help="LoCoMo sample id, e.g. conv-26.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered name, local path or hub id.")]
BackendOpt = Annotated[str, typer.Option(help="transformers (local) or openai (OpenAI-compatible server).")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="Server URL for --backend openai, e.g. http://localhost:8000/v1.")]
EmbedOpt = Annotated[str, typer.Option(help="sentence-transformers model id or path.")]
SessionsOpt = Annotated[str | None, typer.Option("--sessions", "-s", help="Session numbers, e.g. 1-3 or 1,4.")]


def _bank_path(bank: Path | None) -> Path:
    path = bank or default_bank()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _open_existing_bank(bank: Path | None) -> SQLiteStore:
    path = bank or default_bank()
    if not path.exists():
        raise BankError(f"no bank at {path}: run `memory-r1 ingest` first or pass --bank")
    return SQLiteStore(path)


def _conversation(data: Path | None, sample_id: str, sessions: str | None) -> Conversation:
    conversation = get_conversation(load_locomo(find_locomo(data)), sample_id)
    return select_sessions(conversation, parse_session_range(sessions)) if sessions else conversation


def _progress(*extra_columns) -> Progress:
    """The one progress-bar layout of every long command (on stderr, so stdout stays parseable)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, *extra_columns, console=err_console)


def _ingest_with_progress(system: MemorySystem, conversation: Conversation) -> IngestReport:
    with _progress() as progress:
        task = progress.add_task(f"ingest {conversation.sample_id}", total=len(conversation.turns))
        return system.ingest(conversation, on_turn=lambda _turn: progress.advance(task))


def _print_report(report: IngestReport) -> None:
    counts = operation_counts(report)
    table = Table(title=f"ingested {report.sample_id}: {report.turns} turns, {report.facts} facts in {report.seconds:.0f} s")
    for name in ("ADD", "UPDATE", "DELETE", "NOOP", "rejected", "unparsable extractions", "unparsable decisions"):
        table.add_column(name, justify="right")
    table.add_row(*(str(counts[e]) for e in ("ADD", "UPDATE", "DELETE", "NOOP")), str(report.rejected_operations),
                  str(report.extract_failures), str(report.manager_failures))
    console.print(table)


@app.command()
@user_errors
def ingest(
    data: DataArg = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = None,
    bank: BankOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Build the speakers' memory banks from a LoCoMo conversation."""
    conv = _conversation(data, conversation, sessions)
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    system = MemorySystem.from_config(config, _bank_path(bank))
    _print_report(_ingest_with_progress(system, conv))


@app.command()
@user_errors
def ask(
    question: str,
    conversation: ConvOpt = "conv-26",
    bank: BankOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
) -> None:
    """Answer a question from the banks and show the memories the agent selected."""
    store = _open_existing_bank(bank)
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=store.embedding_model)
    store.close()
    system = MemorySystem.from_config(config, _bank_path(bank))
    if not system.speakers(conversation):
        raise BankError(f"the bank has no memories for {conversation}; known: {', '.join(system.store.owners()) or 'none'}")
    [answer] = system.answer([question], conversation)
    console.print(f"[bold]Answer:[/] {answer.answer or '(none)'}")
    if answer.parse_error:
        console.print(f"[yellow]note:[/] {answer.parse_error}")
    table = Table(title="selected memories")
    for column in ("id", "owner", "when", "text"):
        table.add_column(column)
    for memory_id in answer.selected_memory_ids:
        entry = system.store.get(memory_id)
        table.add_row(str(entry.id), entry.owner, entry.timestamp, entry.text)
    console.print(table)


# ---------------------------------------------------------------- evaluation


@app.command("eval")
@user_errors
def evaluate(
    split: Annotated[str, typer.Option(help="val, test, train or all.")] = "val",
    system: Annotated[str, typer.Option(help="memory-r1, prompted, rag or full-context.")] = "memory-r1",
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json (default: the documented places).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/eval/<system>-<split>); rerun to resume.")] = None,
    banks: Annotated[Path, typer.Option(help="Where banks are built and reused across runs.")] = Path("runs/banks"),
    model: ModelOpt = DEFAULT_MODEL,
    manager_model: Annotated[str | None, typer.Option(help="Memory Manager checkpoint (default --model).")] = None,
    answer_model: Annotated[str | None, typer.Option(help="Answer Agent checkpoint (default --model).")] = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
    judge_model: Annotated[str | None, typer.Option(help="LLM judge model (J metric); none by default.")] = None,
    judge_backend: Annotated[str, typer.Option(help="Backend of the judge.")] = "transformers",
    judge_base_url: Annotated[str | None, typer.Option(help="Server of the judge, e.g. https://api.openai.com/v1.")] = None,
    seeds: Annotated[int, typer.Option(help="Repeat a sampled run with seeds 0..N-1 (needs --temperature > 0).")] = 1,
    temperature: Annotated[float, typer.Option(help="Answer sampling temperature; 0 = greedy (the paper).")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="At most N questions per conversation (smoke runs).")] = None,
    conversation: Annotated[list[str] | None, typer.Option("--conversation", "-c", help="Only these conversations.")] = None,
    corrections: Annotated[Path | None, typer.Option(help="JSON list of corrected gold answers (sample_id, qa_index, answer).")] = None,
    context_tokens: Annotated[int | None, typer.Option(help="full-context: the model's window (default: its config).")] = None,
) -> None:
    """Run a system over a LoCoMo split; write results.jsonl and summary.json (resumable)."""
    import shlex
    import sys
    from dataclasses import replace

    from memory_r1.eval.harness import Callbacks, EvalConfig, load_corrections, run_eval
    from memory_r1.eval.systems import SYSTEMS, build_system

    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of: {', '.join(SYSTEMS)}")
    if seeds < 1 or (seeds > 1 and temperature <= 0):
        raise ValueError("--seeds N > 1 repeats sampled runs: give --temperature > 0 (greedy runs are identical)")
    conversations = load_locomo(find_locomo(data))
    config = EvalConfig(split=split, seeds=tuple(range(seeds)), limit=limit,
                        conversations=tuple(conversation) if conversation else None,
                        corrections=load_corrections(corrections, conversations) if corrections else {})
    pipeline = PipelineConfig(model=model, manager_model=manager_model, answer_model=answer_model, backend=backend,
                              base_url=base_url, embedding_model=embedding_model)
    pipeline = replace(pipeline, answer=replace(pipeline.answer, temperature=temperature))
    judge = _load_judge(judge_model, judge_backend, judge_base_url) if judge_model else None
    out = out or Path("runs/eval") / f"{system}-{split}"
    evaluated = build_system(system, pipeline, context_tokens)
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def on_conversation(sample_id: str, turns: int, questions: int) -> None:
            tasks["ingest"] = progress.add_task(f"{sample_id} ingest", total=turns)
            tasks["answer"] = progress.add_task(f"{sample_id} questions", total=questions)

        callbacks = Callbacks(on_conversation, lambda: progress.advance(tasks["ingest"]),
                              lambda n: progress.advance(tasks["answer"], n))
        summary = run_eval(evaluated, conversations, config, out, banks_dir=banks, judge=judge,
                           command=shlex.join(["memory-r1", *sys.argv[1:]]), callbacks=callbacks)
    _print_summary(summary)
    console.print(f"results in {out}/ (results.jsonl, summary.json); wall {summary['run']['wall_s']:.0f} s")


def _load_judge(model: str, backend: str, base_url: str | None):
    import platformdirs

    from memory_r1.eval.judge import Judge
    from memory_r1.llm import load_generator

    cache = Path(platformdirs.user_cache_dir("memory-r1")) / "judge-cache.db"
    cache.parent.mkdir(parents=True, exist_ok=True)
    return Judge(load_generator(model, backend=backend, base_url=base_url), cache_path=cache)


def _print_summary(summary: dict) -> None:
    metrics = [m for m in ("f1", "bleu1", "em", "j") if m in summary["overall"]]
    names = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "j": "J"}
    table = Table(title=f"{summary['run']['system']} on {summary['run']['split']}: {summary['questions']} questions")
    table.add_column("category")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(names[m] + " [95% CI]", justify="right")

    def cell(s: dict) -> str:
        return f"{100 * s['mean']:.1f} [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]" if s["n"] else "-"

    for label in ("Single Hop", "Multi-Hop", "Open Domain", "Temporal"):
        entry = summary["by_category"]["paper"][label]
        table.add_row(label, str(entry["n"]), *(cell(entry[m]) for m in metrics))
    table.add_row("Overall", str(summary["overall"][metrics[0]]["n"]), *(cell(summary["overall"][m]) for m in metrics))
    console.print(table)
    if summary.get("operations"):
        ops = summary["operations"]
        console.print(f"operations: ADD {ops['ADD']}, UPDATE {ops['UPDATE']}, DELETE {ops['DELETE']}, NOOP {ops['NOOP']}; "
                      f"unparsable decisions {100 * ops['parse_failure_rate']:.0f}%")


@app.command()
@user_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `memory-r1 eval`.")],
    out: Annotated[Path | None, typer.Option(help="Where report.md and the plots go (default: the first run dir).")] = None,
) -> None:
    """Put evaluation runs side by side: a Markdown report with tables and PNG plots."""
    from memory_r1.eval.report import write_report

    path = write_report(run_dirs, out or run_dirs[0])
    console.print(f"wrote {path}")


# ---------------------------------------------------------------- training


@app.command()
@user_errors
def train(
    agent: Annotated[str, typer.Argument(help="answer or manager.")],
    dataset: Annotated[Path, typer.Option(help="Folder from `memory-r1 data build-answer|build-manager`.")],
    out: Annotated[Path, typer.Option(help="Run folder: metrics.jsonl, training_curves.png, checkpoint/, final/.")],
    algo: Annotated[str, typer.Option(help="grpo, ppo or sft.")] = "grpo",
    model: ModelOpt = DEFAULT_MODEL,
    preset: Annotated[str | None, typer.Option(help="cpu-small: a short run sized for a 2-core CPU.")] = None,
    steps: Annotated[int | None, typer.Option(help="Update steps.")] = None,
    prompts_per_step: Annotated[int | None, typer.Option(help="Prompts per step.")] = None,
    group_size: Annotated[int | None, typer.Option(help="Samples per prompt (GRPO's G).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the algorithm's).")] = None,
    beta: Annotated[float | None, typer.Option(help="GRPO KL coefficient.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Longest sampled response.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from out/checkpoint.")] = False,
    val_dataset: Annotated[Path | None, typer.Option(help="Dataset folder on the validation conversation.")] = None,
    val_every: Annotated[int, typer.Option(help="Validate every N steps (0: never).")] = 0,
    reward: Annotated[str, typer.Option(help="em (paper) or f1.")] = "em",
    answer_model: Annotated[str | None, typer.Option(help="Manager training: the frozen Answer Agent.")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="SFT: the teacher model.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json (manager training).")] = None,
) -> None:
    """Train the Answer Agent or the Memory Manager with GRPO, PPO or SFT."""
    from memory_r1.rl.trainer import PRESETS, Trainer, TrainConfig

    if agent not in ("answer", "manager") or algo not in ("grpo", "ppo", "sft") or reward not in ("em", "f1"):
        raise ValueError(f"expected agent answer|manager, --algo grpo|ppo|sft, --reward em|f1; got {agent}, {algo}, {reward}")
    config = TrainConfig(agent=agent, algo=algo, dataset=dataset, out=out, model=model, seed=seed, lora=not full,
                         val_dataset=val_dataset, val_every=val_every, reward=reward, answer_model=answer_model,
                         teacher_model=teacher_model, data=data)
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        config = PRESETS[preset](config)
    for name, value in (("steps", steps), ("prompts_per_step", prompts_per_step), ("lr", lr), ("max_new_tokens", max_new_tokens)):
        if value is not None:
            setattr(config, name, value)
    if group_size is not None:
        config.grpo.group_size = group_size
    if beta is not None:
        config.grpo.beta = beta
    trainer = Trainer(config)
    if resume and not trainer.resume():
        raise ValueError(f"--resume: no checkpoint in {out / 'checkpoint'}")
    with _progress(TextColumn("{task.fields[info]}")) as progress:
        task = progress.add_task(f"{algo} {agent}", total=config.steps, completed=trainer.step, info="")

        def on_step(stats: dict) -> None:
            info = f"reward {stats['reward_mean']:.3f}" if "reward_mean" in stats else f"loss {stats.get('sft_loss', 0):.3f}"
            progress.update(task, advance=1, info=info)

        final = trainer.train(on_step)
    console.print(f"trained {agent} agent: {final} (metrics in {out / 'metrics.jsonl'}, curves in {out / 'training_curves.png'})")


# ---------------------------------------------------------------- memories


@memories_app.command("list")
@user_errors
def memories_list(
    bank: BankOpt = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner, e.g. conv-26:Caroline.")] = None,
    include_deleted: Annotated[bool, typer.Option("--all", help="Include soft-deleted memories.")] = False,
) -> None:
    """List memories."""
    with _open_existing_bank(bank) as store:
        table = Table(title=f"memories in {bank or default_bank()}")
        for column in ("id", "owner", "when", "text", "deleted"):
            table.add_column(column)
        for e in store.list(owner, include_deleted=include_deleted):
            table.add_row(str(e.id), e.owner, e.timestamp, e.text, "yes" if e.deleted else "")
        console.print(table)


@memories_app.command("search")
@user_errors
def memories_search(
    query: str,
    owner: Annotated[str, typer.Option(help="Owner to search, e.g. conv-26:Caroline.")],
    k: Annotated[int, typer.Option("-k", help="How many memories.")] = 10,
    bank: BankOpt = None,
) -> None:
    """Semantic search in one owner's memories."""
    from memory_r1.embeddings import load_embedder

    with _open_existing_bank(bank) as store:
        [vector] = load_embedder(store.embedding_model).embed([query])
        table = Table(title=f"top {k} for {query!r} in {owner}")
        for column in ("score", "id", "when", "text"):
            table.add_column(column)
        for hit in store.search(owner, vector, k):
            table.add_row(f"{hit.score:.3f}", str(hit.entry.id), hit.entry.timestamp, hit.entry.text)
        console.print(table)


@memories_app.command("history")
@user_errors
def memories_history(
    bank: BankOpt = None,
    memory: Annotated[int | None, typer.Option("--memory", help="Only this memory id.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the last N events.")] = None,
) -> None:
    """Every change ever made: operation, before/after, who decided, why."""
    with _open_existing_bank(bank) as store:
        rows = store.history(memory_id=memory, owner=owner)
        table = Table(title="history")
        for column in ("#", "event", "memory", "before", "after", "by", "reason", "undone"):
            table.add_column(column)
        for h in rows[-limit:] if limit else rows:
            by = "/".join(x for x in (h.provenance.agent, h.provenance.model, h.provenance.prompt_version) if x)
            table.add_row(str(h.id), h.event, str(h.memory_id or ""), h.before_text or "", h.after_text or "", by,
                          h.reason or "", "yes" if h.undone else "")
        console.print(table)


@memories_app.command("undo")
@user_errors
def memories_undo(
    history_id: Annotated[int | None, typer.Argument(help="History event to revert (default: the latest change).")] = None,
    bank: BankOpt = None,
) -> None:
    """Revert one change (ADD, UPDATE or DELETE). The undo itself is recorded."""
    with _open_existing_bank(bank) as store:
        record = store.undo(history_id)
        console.print(f"undone: {record.event} of memory {record.memory_id} (history #{record.id})")


# ---------------------------------------------------------------- data


@data_app.command("download")
@user_errors
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name: locomo.")],
    dest: Annotated[Path | None, typer.Option(help="Target file (default: the user data dir).")] = None,
) -> None:
    """Fetch a dataset from its public location (needs a network)."""
    from memory_r1.data import default_locomo_path, download_locomo

    if name != "locomo":
        raise DatasetError(f"unknown dataset {name!r}; available: locomo")
    path = download_locomo(dest or default_locomo_path())
    console.print(f"saved {path} (CC BY-NC 4.0: non-commercial use, credit Maharana et al., ACL 2024)")


def _dataset_system(model: str, backend: str, base_url: str | None, embedding_model: str, bank: Path) -> MemorySystem:
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    bank.parent.mkdir(parents=True, exist_ok=True)
    return MemorySystem.from_config(config, bank)


@data_app.command("build-manager")
@user_errors
def data_build_manager(
    out: Annotated[Path, typer.Option(help="Dataset folder: manager.jsonl and banks/ snapshots.")] = Path("runs/data/manager"),
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json.")] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Teacher that builds the temporal banks.")] = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Memory Manager training tuples: bank before each linked turn, the turn's facts, its questions."""
    from memory_r1.rl.datasets import build_manager_dataset

    conv = _conversation(data, conversation, sessions)
    teacher = _dataset_system(model, backend, base_url, embedding_model, out / "teacher.db")
    with _progress() as progress:
        task = progress.add_task(f"teacher {conv.sample_id}", total=len(conv.turns))
        examples = build_manager_dataset(teacher, conv, out, on_turn=lambda _t: progress.advance(task))
    console.print(f"{len(examples)} manager examples in {out / 'manager.jsonl'}")


@data_app.command("build-answer")
@user_errors
def data_build_answer(
    out: Annotated[Path, typer.Option(help="Dataset folder: answer.jsonl and the bank.")] = Path("runs/data/answer"),
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json.")] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = None,
    manager_model: Annotated[str, typer.Option(help="Memory Manager whose banks the answers are trained on.")] = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Answer Agent training tuples: question, the memories it would retrieve, gold answer."""
    from memory_r1.rl.datasets import build_answer_dataset

    conv = _conversation(data, conversation, sessions)
    system = _dataset_system(manager_model, backend, base_url, embedding_model, out / "bank.db")
    with _progress() as progress:
        task = progress.add_task(f"ingest {conv.sample_id}", total=len(conv.turns))
        examples = build_answer_dataset(system, conv, out, on_turn=lambda _t: progress.advance(task))
    console.print(f"{len(examples)} answer examples in {out / 'answer.jsonl'}")


# ---------------------------------------------------------------- demo


def _answerable(conversation: Conversation, limit: int) -> list[QAItem]:
    """Questions (categories 1-4) whose evidence lies entirely in the ingested sessions."""
    ingested = {t.dia_id for t in conversation.turns}
    chosen = [q for q in conversation.qa if q.answer is not None and q.evidence and set(q.evidence) <= ingested]
    return chosen[:limit]


@app.command()
@user_errors
def demo(
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json (default: the documented places).")] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = "1",
    questions: Annotated[int, typer.Option(help="How many questions to answer.")] = 5,
    bank: Annotated[Path | None, typer.Option(help="Keep the bank in this file (default: in memory).")] = None,
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """The main job, offline on the embedded default: ingest a few sessions, answer their questions."""
    from memory_r1.eval.metrics import f1_score

    conv = _conversation(data, conversation, sessions)
    items = _answerable(conv, questions)
    console.print(f"[bold]memory-r1 demo[/]: {conv.sample_id}, sessions {sessions}, {len(conv.turns)} turns, "
                  f"{len(items)} questions, model {model}")
    system = MemorySystem.from_config(PipelineConfig(model=model), bank or ":memory:")
    _print_report(_ingest_with_progress(system, conv))
    answers = system.answer([q.question for q in items], conv.sample_id)
    table = Table(title="answers")
    for column in ("question", "gold", "answer", "F1", "memories used"):
        table.add_column(column)
    scores = []
    for item, answer in zip(items, answers, strict=True):
        scores.append(f1_score(answer.answer, item.answer or ""))
        table.add_row(item.question, item.answer, answer.answer, f"{scores[-1]:.2f}", str(len(answer.selected_memory_ids)))
    console.print(table)
    if scores:
        console.print(f"mean F1 {sum(scores) / len(scores):.3f} over {len(scores)} questions")


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False) -> None:
    if version:
        console.print(f"memory-r1 {__version__}")
        raise typer.Exit()
