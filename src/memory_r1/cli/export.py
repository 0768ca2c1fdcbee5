"""`memory-r1 export verl`: the RL datasets as verl parquet, and the verl launch line of a preset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from memory_r1.cli.common import app, console, user_errors

if TYPE_CHECKING:
    from memory_r1.rl.verl.presets import Preset

export_app = typer.Typer(help="Export datasets and launch lines for other trainers.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("verl")
@user_errors
def export_verl(
    agent: Annotated[str, typer.Option(help="answer or manager.")],
    dataset: Annotated[
        Path, typer.Option(help="Training folder from `memory-r1 data build-answer|build-manager`.")
    ],
    val_dataset: Annotated[Path, typer.Option(help="Validation folder (e.g. built on conv-30).")],
    out: Annotated[
        Path, typer.Option(help="Export folder: train.parquet, val.parquet, banks/, export.json.")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="locomo10.json (manager: the turn order).")
    ] = None,
    window: Annotated[int, typer.Option(help="Manager: turns of memory kept in each bank (paper: 50).")] = 50,
    preset: Annotated[
        str | None, typer.Option(help="Also write launch.sh for this preset (see `export presets`).")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="verl checkpoint folder (default: OUT/run).")] = None,
    answerer_model: Annotated[
        str | None, typer.Option(help="Manager: the frozen Answer Agent's model.")
    ] = None,
    answerer_base_url: Annotated[
        str | None,
        typer.Option(
            help="Manager: its OpenAI-compatible server; default: verl's reward-model server hosts it."
        ),
    ] = None,
    reward: Annotated[str, typer.Option(help="em (paper) or f1.")] = "em",
) -> None:
    """Write the Answer or Manager dataset as verl parquet rows (and a launch script with --preset)."""
    from memory_r1.rl.verl.export import export

    if agent not in ("answer", "manager") or reward not in ("em", "f1"):
        raise ValueError(f"expected --agent answer|manager and --reward em|f1; got {agent}, {reward}")
    if preset is not None:
        _preset(preset)  # fail before the work
    embedder, conversations = None, None
    if agent == "manager":
        from memory_r1.data import find_locomo, load_locomo
        from memory_r1.embeddings import load_embedder
        from memory_r1.rl.verl.export import dataset_header

        model = dataset_header(dataset, "manager").get("settings", {}).get("embedding_model", "")
        embedder = load_embedder(model) if model else load_embedder()
        conversations = {c.sample_id: c for c in load_locomo(find_locomo(data))}
    report = export(agent,  # type: ignore[arg-type]  # agent: checked above
                    dataset, val_dataset, out, embedder=embedder, conversations=conversations, window=window)
    console.print(f"{report.train_rows} train and {report.val_rows} validation rows in {out}")
    if preset is not None:
        _write_launch(out, preset, run_dir or out / "run", answerer_model, answerer_base_url, reward)


def _preset(name: str) -> Preset:
    from memory_r1.rl.verl.presets import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def _write_launch(out: Path, preset: str, run_dir: Path, answerer_model: str | None,
                  answerer_base_url: str | None, reward: str) -> None:
    from memory_r1.rl.verl.export import read_manifest
    from memory_r1.rl.verl.presets import Answerer, checkpoint_dir, launch_command, launch_script

    manifest = read_manifest(out)
    answerer = Answerer(answerer_model, answerer_base_url) if answerer_model else None
    command = launch_command(_preset(preset), out, manifest, run_dir, answerer, reward)
    script = out / "launch.sh"
    script.write_text(launch_script(command))
    script.chmod(0o755)
    console.print(f"launch: bash {script}   (on the GPU node, in a venv with verl and vLLM)")
    console.print(
        f"then:   memory-r1 eval --{manifest['agent']}-model "
        f"{checkpoint_dir(run_dir, 50 if 'smoke' not in preset else 2)}"
    )


@export_app.command("presets")
def export_presets() -> None:
    """The verl presets: model, GPUs, algorithm, batch, and the vLLM command that serves the model."""
    from memory_r1.rl.verl.presets import PRESETS, serve_command

    table = Table(title="verl presets (memory-r1 export verl --preset NAME)")
    for column in ("preset", "model", "GPUs", "algo", "prompts x samples", "steps",
                   "serve for eval / answerer"):
        table.add_column(column, no_wrap=column in ("preset", "algo"))
    for p in PRESETS.values():
        n = p.recipe.group_size if p.algo == "grpo" else 1
        table.add_row(p.name, p.model.hub_id, str(p.model.gpus), p.algo,
                      f"{p.recipe.rollouts_per_step // n} x {n}",
                      str(p.recipe.steps), serve_command(p.model.hub_id, p.model.tensor_parallel))
    console.print(table)
