"""Shared pieces of the `memory-r1` command: the Typer apps, options, errors, progress bars, bank helpers.

Every error a user can cause (missing file, bad schema, unknown conversation or model, incompatible bank)
ends as one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

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
from memory_r1.pipeline import IngestReport, MemorySystem, operation_counts
from memory_r1.records import Conversation, clean_text

app = typer.Typer(help="Long-term memory for LLM agents, learned with RL (Memory-R1).", no_args_is_help=True)
memories_app = typer.Typer(help="Inspect and repair a memory bank.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
app.add_typer(memories_app, name="memories")
app.add_typer(data_app, name="data")
agents_app = typer.Typer(help="Trained agents: list them, rebuild them from their seeded recipes.",
                         no_args_is_help=True)
app.add_typer(agents_app, name="agents")

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

USER_ERRORS = (DatasetError, BankError, UnknownModelError, UnknownEmbedderError, GenerationError, ImportError,
               OSError, ValueError)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one clear line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def default_bank() -> Path:
    import platformdirs

    return Path(os.environ.get("MEMORY_R1_BANK") or Path(platformdirs.user_data_dir("memory-r1")) / "bank.db")


BankOpt = Annotated[
    Path | None, typer.Option("--bank", help="Bank file (default: $MEMORY_R1_BANK or the user data dir).")
]
DataArg = Annotated[
    Path | None,
    typer.Argument(help="locomo10.json (default: $MEMORY_R1_LOCOMO, user data dir, ../shared/data/locomo/)."),
]
ConvOpt = Annotated[str, typer.Option("--conversation", "-c", help="LoCoMo sample id, e.g. conv-26.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registered name, local path or hub id.")]
BackendOpt = Annotated[str, typer.Option(help="transformers (local) or openai (OpenAI-compatible server).")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="Server URL for --backend openai, e.g. http://localhost:8000/v1.")]
EmbedOpt = Annotated[str, typer.Option(help="sentence-transformers model id or path.")]
SessionsOpt = Annotated[
    str | None, typer.Option("--sessions", "-s", help="Session numbers, e.g. 1-3 or 1,4.")
]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Any setting by its dotted path, e.g. answer.top_k_per_speaker=10 (repeatable; "
                  "`memory-r1 config` lists them all with their defaults and sources).")]


SQLITE_MAX_INT = 2**63 - 1
MAX_SESSIONS = 1000  # our choice: LoCoMo has at most 35 sessions; a range beyond this is a typo


class ArgumentError(ValueError):
    """A command-line value out of its documented range: one line naming the option."""


def check_int(option: str, value: int | None, low: int, high: int = SQLITE_MAX_INT) -> int | None:
    """`value` unchanged if None or in [low, high], else ArgumentError naming `option` and the range."""
    if value is not None and not low <= value <= high:
        bound = f"at least {low}" if high == SQLITE_MAX_INT else f"between {low} and {high}"
        raise ArgumentError(f"{option} must be {bound}, got {value}")
    return value


def check_float(option: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:  # NaN fails both comparisons
        raise ArgumentError(f"{option} must be between {low:g} and {high:g}, got {value}")
    return value


def check_text(option: str, value: str | None, *, empty_ok: bool = False) -> str | None:
    """Text as the library will see it (lone surrogates from undecodable bytes replaced); refuses ''."""
    if value is None:
        return None
    text = clean_text(value)
    if not empty_ok and not text.strip():
        raise ArgumentError(f"{option} must not be empty")
    return text


def check_sessions(sessions: str | None) -> set[int] | None:
    """--sessions parsed and bounded: '' is refused (it used to mean every session)."""
    if sessions is None:
        return None
    if not sessions.strip():
        raise ArgumentError("--sessions must not be empty: give session numbers such as 1-3 or 1,4")
    for number in re.findall(r"\d+", sessions):
        check_int("--sessions", int(number), 1, MAX_SESSIONS)
    return parse_session_range(sessions)


def bank_path(bank: Path | None) -> Path:
    path = bank or default_bank()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def open_existing_bank(bank: Path | None, *, read_only: bool = False) -> SQLiteStore:
    """An existing bank; `read_only` for commands that only read (works on files we cannot write)."""
    path = bank or default_bank()
    if not path.exists():
        raise BankError(f"no bank at {path}: run `memory-r1 ingest` first or pass --bank")
    if path.is_dir():
        raise BankError(f"{path} is a directory, not a bank file")
    return SQLiteStore(path, read_only=read_only)


def embedding_model_of(store: SQLiteStore) -> str:
    """The embedding model a bank records; a clear error for a bank that records none."""
    if not store.embedding_model:
        raise BankError(f"{store.path} records no embedding model (was it created by memory-r1 ingest?)")
    return store.embedding_model


def load_conversation(data: Path | None, sample_id: str, sessions: str | None) -> Conversation:
    selected = check_sessions(sessions)
    conversation = get_conversation(load_locomo(find_locomo(data)),
                                    check_text("--conversation", sample_id) or "")
    return select_sessions(conversation, selected) if selected is not None else conversation


def progress_bar(*extra_columns: ProgressColumn) -> Progress:
    """The one progress-bar layout of every long command (on stderr, so stdout stays parseable)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, *extra_columns, console=err_console)


def ingest_with_progress(system: MemorySystem, conversation: Conversation) -> IngestReport:
    with progress_bar() as progress:
        task = progress.add_task(f"ingest {conversation.sample_id}", total=len(conversation.turns))
        return system.ingest(conversation, on_turn=lambda _turn: progress.advance(task))


def print_ingest_report(report: IngestReport) -> None:
    counts = operation_counts(report)
    table = Table(
        title=f"ingested {report.sample_id}: {report.turns} turns, {report.facts} facts "
        f"in {report.seconds:.0f} s"
    )
    for name in ("ADD", "UPDATE", "DELETE", "NOOP", "rejected", "unparsable extractions",
                 "unparsable decisions"):
        table.add_column(name, justify="right")
    table.add_row(*(str(counts[e]) for e in ("ADD", "UPDATE", "DELETE", "NOOP")),
                  str(report.rejected_operations), str(report.extract_failures), str(report.manager_failures))
    console.print(table)


