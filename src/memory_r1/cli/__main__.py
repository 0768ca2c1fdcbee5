"""`python -m memory_r1.cli`: the same command as the `memory-r1` entry point."""

from memory_r1.cli import app

app()
