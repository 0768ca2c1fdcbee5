"""`memory-r1 config`: every setting a command takes through `--set`, with its default and its source."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from memory_r1.cli.common import app, console, user_errors
from memory_r1.eval.harness import EvalConfig
from memory_r1.pipeline import PipelineConfig
from memory_r1.settings import describe

CONFIGS = {"pipeline": PipelineConfig, "eval": EvalConfig}
"""The configs `--set` reaches: pipeline (ingest, ask, demo, eval) and evaluation."""


@app.command("config")
@user_errors
def show_config(
    name: Annotated[str, typer.Argument(help=f"Which config: {', '.join(CONFIGS)}.")] = "pipeline",
) -> None:
    """List a config's settings: dotted path (for --set), type, default and where the default comes from."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(CONFIGS)}")
    table = Table(title=f"{name} settings (override with --set PATH=VALUE)")
    for column in ("setting", "type", "default", "why"):
        table.add_column(column, overflow="fold")
    for setting in describe(CONFIGS[name]()):
        table.add_row(setting.path, setting.type_name, repr(setting.default), setting.doc)
    console.print(table)
