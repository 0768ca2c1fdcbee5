"""The `memory-r1` command. A leaf: nothing in the library imports it.

`common` holds the apps and shared options; each module registers its commands on import.
"""

from typing import Annotated

import typer

from memory_r1 import __version__
from memory_r1.cli import api, config, evaluation, export, memory, training  # noqa: F401  (registers the commands)
from memory_r1.cli.common import app, console


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False) -> None:
    if version:
        console.print(f"memory-r1 {__version__}")
        raise typer.Exit()


__all__ = ["app"]
