"""`memory-r1 train` and the RL dataset builders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TextColumn

from memory_r1.cli.common import (
    BackendOpt,
    BaseUrlOpt,
    ConvOpt,
    EmbedOpt,
    ModelOpt,
    SessionsOpt,
    app,
    console,
    data_app,
    load_conversation,
    progress_bar,
    user_errors,
)
from memory_r1.pipeline import DEFAULT_MODEL, MemorySystem, PipelineConfig

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
    from memory_r1.rl.trainer import PRESETS, TrainConfig, Trainer

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
    with progress_bar(TextColumn("{task.fields[info]}")) as progress:
        task = progress.add_task(f"{algo} {agent}", total=config.steps, completed=trainer.step, info="")

        def on_step(stats: dict) -> None:
            info = f"reward {stats['reward_mean']:.3f}" if "reward_mean" in stats else f"loss {stats.get('sft_loss', 0):.3f}"
            progress.update(task, advance=1, info=info)

        final = trainer.train(on_step)
    console.print(f"trained {agent} agent: {final} (metrics in {out / 'metrics.jsonl'}, curves in {out / 'training_curves.png'})")


def _dataset_system(model: str, backend: str, base_url: str | None, embedding_model: str, bank: Path) -> MemorySystem:
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    bank.parent.mkdir(parents=True, exist_ok=True)
    return MemorySystem.from_config(config, bank)


def _build_with_progress(build, system: MemorySystem, conv, out: Path, stage: str, kind: str) -> None:
    """Run a dataset builder (it ingests turn by turn) under a progress bar and say what it wrote."""
    with progress_bar() as progress:
        task = progress.add_task(f"{stage} {conv.sample_id}", total=len(conv.turns))
        examples = build(system, conv, out, on_turn=lambda _t: progress.advance(task))
    console.print(f"{len(examples)} {kind} examples in {out / f'{kind}.jsonl'}")


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

    conv = load_conversation(data, conversation, sessions)
    teacher = _dataset_system(model, backend, base_url, embedding_model, out / "teacher.db")
    _build_with_progress(build_manager_dataset, teacher, conv, out, "teacher", "manager")


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

    conv = load_conversation(data, conversation, sessions)
    system = _dataset_system(manager_model, backend, base_url, embedding_model, out / "bank.db")
    _build_with_progress(build_answer_dataset, system, conv, out, "ingest", "answer")


