"""`memory-r1 train` and the RL dataset builders."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import TextColumn

from memory_r1.cli.common import (
    ArgumentError,
    BackendOpt,
    BaseUrlOpt,
    ConvOpt,
    EmbedOpt,
    SessionsOpt,
    agents_app,
    app,
    console,
    data_app,
    load_conversation,
    progress_bar,
    user_errors,
)
from memory_r1.pipeline import DEFAULT_MODEL, MemorySystem, PipelineConfig
from memory_r1.settings import field_docs

if TYPE_CHECKING:
    from memory_r1.records import Conversation
    from memory_r1.rl.trainer import TrainConfig as TrainConfigT

# ---------------------------------------------------------------- training
#
# The options of `memory-r1 train` are derived from the fields of TrainConfig and its nested configs: name,
# type and help text (the field's docstring) are written once, on the dataclass. Nested fields get the
# config's prefix (--grpo-beta, --ppo-kl-coef, --sft-micro-batch-size); rollout fields have none
# (--samples-per-prompt, --max-new-tokens). A few old spellings stay as aliases.

NESTED = ("rollout", "grpo", "ppo", "sft")
POSITIONAL = ("agent",)
ALIASES = {"samples_per_prompt": ["--group-size"], "grpo.beta": ["--beta"], "lora": []}
SKIPPED = {"lora"}  # spelled --full below, as before


def _click_type(hint: object) -> tuple[type, list[str] | None]:
    """The scalar type typer should parse, and the allowed values of a Literal."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return str, [str(a) for a in typing.get_args(hint)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _click_type(args[0])
    return hint if isinstance(hint, type) else str, None


def config_options() -> list[tuple[str, str, inspect.Parameter, list[str] | None]]:
    """(dotted field, parameter name, typer parameter, choices) for every configurable field."""
    from memory_r1.rl.trainer import TrainConfig

    out = []
    for prefix, cls in [("", TrainConfig), *((n + ".", _nested(n)) for n in NESTED)]:
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in NESTED or f.name in SKIPPED or (not prefix and f.name in POSITIONAL):
                continue
            dotted = prefix + f.name
            param = (prefix.rstrip(".") + "_" if prefix and prefix != "rollout." else "") + f.name
            kind, choices = _click_type(hints[f.name])
            flag = "--" + param.replace("_", "-")
            names = [flag, *ALIASES.get(dotted, ALIASES.get(f.name, []) if prefix == "rollout." else [])]
            if dotted == "grpo.beta":
                names = [flag, "--beta"]
            required = (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                        and dotted != "algo")  # --algo defaults to grpo, as before
            help_text = docs.get(f.name, "") + (f" One of: {', '.join(choices)}." if choices else "")
            if kind is bool:
                names = [f"{flag}/--no-{flag[2:]}"]
            option = typer.Option(... if required else None, *names, help=help_text, show_default=False)
            annotation = kind if required else (kind | None)  # None: the config's (or preset's) value
            out.append((dotted, param, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY,
                                                        default=option, annotation=annotation), choices))
    return out


def _nested(name: str) -> type:
    from memory_r1.rl.trainer import TrainConfig

    return typing.get_type_hints(TrainConfig)[name]


def build_config(agent: str, values: dict[str, object], preset: str | None, full: bool) -> TrainConfigT:
    """TrainConfig from the CLI's values: a preset first (dataclasses.replace), then every option given."""
    from memory_r1.rl.trainer import PRESETS, TrainConfig

    specs = {dotted: (param, choices) for dotted, param, _, choices in config_options()}
    for param, choices in specs.values():
        value = values.get(param)
        if choices and value is not None and value not in choices:
            flag = "--" + param.replace("_", "-")
            raise ValueError(f"{flag}: expected {'|'.join(choices)}; got {value}")
    if agent not in ("answer", "manager"):
        raise ValueError(
            f"expected agent answer|manager, --algo grpo|ppo|sft; got {agent}, {values.get('algo')}"
        )
    top: dict[str, Any] = {
        d: values[p] for d, (p, _) in specs.items() if "." not in d and values.get(p) is not None
    }
    top.setdefault("algo", "grpo")
    config = TrainConfig(agent=agent, lora=not full, **top)  # type: ignore[arg-type]  # agent: checked above
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        config = dataclasses.replace(PRESETS[preset](config), **top)  # explicit options win over the preset
    for name in NESTED:
        given = {d.split(".", 1)[1]: values[p] for d, (p, _) in specs.items()
                 if d.startswith(name + ".") and values.get(p) is not None}
        if given:
            config = dataclasses.replace(config,
                                         **{name: dataclasses.replace(getattr(config, name), **given)})
    return config


def train(agent: str, preset: str | None, full: bool, resume: bool, **values: object) -> None:
    """Train the Answer Agent or the Memory Manager with GRPO, PPO or SFT."""
    from memory_r1.rl.trainer import Trainer

    config = build_config(agent, values, preset, full)
    trainer = Trainer(config)
    if resume and not trainer.resume():
        raise ValueError(f"--resume: no checkpoint in {config.out / 'checkpoint'}")
    with progress_bar(TextColumn("{task.fields[info]}")) as progress:
        task = progress.add_task(f"{config.algo} {agent}", total=config.steps, completed=trainer.step,
                                 info="")

        def on_step(stats: dict[str, float]) -> None:
            info = (f"reward {stats['reward_mean']:.3f}" if "reward_mean" in stats
                    else f"loss {stats.get('sft_loss', 0):.3f}")
            progress.update(task, advance=1, info=info)

        final = trainer.train(on_step)
    console.print(f"trained {agent} agent: {final} (metrics in {config.out / 'metrics.jsonl'}, "
                  f"curves in {config.out / 'training_curves.png'})")


def _register_train() -> None:
    fixed = [
        inspect.Parameter("agent", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="answer or manager.")),
        inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                          default=typer.Option(None, help="cpu-small: a short run sized for a 2-core CPU.")),
        inspect.Parameter("full", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--full", help="Full fine-tuning instead of LoRA.")),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--resume", help="Continue from out/checkpoint.")),
    ]
    params = fixed + [p for _, _, p, _ in config_options()]

    @functools.wraps(train)
    def command(*args: object, **kwargs: object) -> None:
        agent, preset, full, resume = (kwargs.pop(k) for k in ("agent", "preset", "full", "resume"))
        # typer parsed and typed the values from the signature below
        train(str(agent), preset, bool(full), bool(resume), **kwargs)  # type: ignore[arg-type]

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # read by typer (inspect)
    command.__annotations__ = {p.name: p.annotation for p in params}
    app.command("train")(user_errors(command))


_register_train()


def _dataset_system(model: str, backend: str, base_url: str | None, embedding_model: str,
                    bank: Path) -> MemorySystem:
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    bank.parent.mkdir(parents=True, exist_ok=True)
    return MemorySystem.from_config(config, bank)


def _build_with_progress(build: Callable[..., Sequence[object]], system: MemorySystem, conv: Conversation,
                         out: Path, stage: str, kind: str) -> None:
    """Run a dataset builder (it ingests turn by turn) under a progress bar and say what it wrote."""
    with progress_bar() as progress:
        task = progress.add_task(f"{stage} {conv.sample_id}", total=len(conv.turns))
        examples = build(system, conv, out, on_turn=lambda _t: progress.advance(task))
    console.print(f"{len(examples)} {kind} examples in {out / f'{kind}.jsonl'}")


@data_app.command("build-manager")
@user_errors
def data_build_manager(
    out: Annotated[Path, typer.Option(help="Dataset folder: manager.jsonl and banks/ snapshots.")] = Path(
        "runs/data/manager"
    ),
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json.")] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Teacher that builds the temporal banks.")
    ] = DEFAULT_MODEL,
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
    out: Annotated[Path, typer.Option(help="Dataset folder: answer.jsonl and the bank.")] = Path(
        "runs/data/answer"
    ),
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json.")] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = None,
    manager_model: Annotated[
        str, typer.Option(help="Memory Manager whose banks the answers are trained on.")
    ] = DEFAULT_MODEL,
    memories: Annotated[
        str,
        typer.Option(
            help="manager: the bank the Memory Manager builds; turns: every dialogue turn stored verbatim "
            "(the `rag` system's bank), which trains the Answer Agent apart from the manager's quality."
        ),
    ] = "manager",
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Answer Agent training tuples: question, the memories it would retrieve, gold answer."""
    from memory_r1.rl.datasets import build_answer_dataset

    if memories not in ("manager", "turns"):
        raise ArgumentError(f"--memories must be manager or turns, got {memories!r}")
    conv = load_conversation(data, conversation, sessions)
    system = _dataset_system(manager_model, backend, base_url, embedding_model, out / "bank.db")
    if memories == "turns":  # every turn is in the turn log afterwards, so the pipeline ingests nothing
        from memory_r1.eval.systems import index_turns

        index_turns(system.store, system.agents.embedder, conv)
    _build_with_progress(build_answer_dataset, system, conv, out, "ingest", "answer")




# ---------------------------------------------------------------- shipped trained agents


@agents_app.command("list")
@user_errors
def agents_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The trained agents the project ships as seeded recipes, and whether each is built here."""
    import json

    from rich.table import Table

    from memory_r1.rl.ship import RECIPES, describe

    rows = [describe(r) for r in RECIPES.values()]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="trained agents")
    for column in ("name", "role", "base model", "recipe", "built", "measured"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["name"]), str(row["role"]), str(row["base_model"]),
                      f"{row['algo']}, seed {row['seed']}, {row['steps']} steps",
                      "yes" if row["built"] else "no", str(row["measured"]))
    console.print(table)


@agents_app.command("build")
@user_errors
def agents_build(
    name: Annotated[str, typer.Argument(help="A trained agent (memory-r1 agents list).")],
    data: Annotated[Path | None, typer.Option("--data", help="locomo10.json.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if it is built.")] = False,
) -> None:
    """Rebuild a trained agent on this machine from its seeded recipe (the run whose numbers the README
    reports); the pipeline then uses it by default (--base-answerer, or --set trained_answerer=false,
    keeps the base model)."""
    from memory_r1.llm import is_built
    from memory_r1.rl.ship import RECIPES, build_agent

    if name not in RECIPES:
        raise ArgumentError(f"unknown trained agent {name!r}; choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if is_built(name) and not force:
        console.print(f"{name} is already built (--force rebuilds it)")
        return
    with progress_bar(TextColumn("{task.fields[info]}")) as progress:
        task = progress.add_task(f"{recipe.config.algo} {name}", total=recipe.config.steps, info="")

        def on_step(stats: dict[str, float]) -> None:
            loss = stats.get("sft_loss", stats.get("loss", 0.0))
            progress.update(task, advance=1, info=f"loss {loss:.3f}")

        dest = build_agent(recipe, data, force=force, on_step=on_step)
    console.print(f"built {name}: {dest}")
