"""Commands that build, query, inspect and repair memory banks, and the demo."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memory_r1.bank import BankError, MemoryStore
from memory_r1.cli.common import (
    BackendOpt,
    BankOpt,
    BaseUrlOpt,
    ConvOpt,
    DataArg,
    EmbedOpt,
    ModelOpt,
    SessionsOpt,
    SetOpt,
    app,
    bank_path,
    check_int,
    check_text,
    console,
    data_app,
    default_bank,
    embedding_model_of,
    ingest_with_progress,
    load_conversation,
    memories_app,
    open_existing_bank,
    print_ingest_report,
    user_errors,
)
from memory_r1.llm import is_built, trained_for
from memory_r1.pipeline import DEFAULT_MODEL, Agents, MemorySystem, PipelineConfig, answer_model_name
from memory_r1.records import Conversation, QAItem, Scope
from memory_r1.settings import apply_overrides

MAX_K = 100_000  # our choice: a bound for counts a user types (-k, --questions); far above any real use


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
    settings: SetOpt = None,
) -> None:
    """Build the speakers' memory banks from a LoCoMo conversation."""
    model, embedding_model = (
        check_text("--model", model) or "",
        check_text("--embedding-model", embedding_model) or "",
    )
    conv = load_conversation(data, conversation, sessions)
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    config = apply_overrides(config, settings or [])
    system = MemorySystem.from_config(config, bank_path(bank))
    print_ingest_report(ingest_with_progress(system, conv))


@app.command()
@user_errors
def ask(
    question: str,
    conversation: ConvOpt = "conv-26",
    bank: BankOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    settings: SetOpt = None,
) -> None:
    """Answer a question from the banks and show the memories the agent selected."""
    question = check_text("QUESTION", question) or ""
    conversation, model = check_text("--conversation", conversation) or "", check_text("--model", model) or ""
    store = open_existing_bank(bank, read_only=True)  # answering only reads; the bank is opened once
    config = PipelineConfig(model=model, backend=backend, base_url=base_url,
                            embedding_model=embedding_model_of(store))
    config = apply_overrides(config, settings or [])
    try:
        system = MemorySystem(store, Agents.load(config))  # models loaded once
    except BaseException:
        store.close()
        raise
    if not system.speakers(conversation):
        raise BankError(
            f"the bank has no memories for {conversation}; "
            f"known: {', '.join(system.store.owners()) or 'none'}"
        )
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


# ---------------------------------------------------------------- memories


ScopeUser = Annotated[
    str | None, typer.Option("--user", help="Only this scope's user_id (with --agent/--run).")
]
ScopeAgent = Annotated[str | None, typer.Option("--agent", help="agent_id of the scope.")]
ScopeRun = Annotated[str | None, typer.Option("--run", help="run_id of the scope.")]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="SQLite bank file or postgresql:// DSN (instead of --bank).")
]
UNDOABLE = ("ADD", "UPDATE", "DELETE")


def _owner(owner: str | None, user: str | None, agent: str | None, run: str | None) -> str | None:
    """The store key to filter on: --owner as given, or the key of the scope --user/--agent/--run."""
    owner = check_text("--owner", owner)
    if user is None and agent is None and run is None:
        return owner
    if owner is not None:
        raise ValueError("give --owner or a scope (--user/--agent/--run), not both")
    return Scope(user, agent, run).key


def _open(bank: Path | None, store: str | None, *, read_only: bool = False) -> MemoryStore:
    """--store (a SQLite file or a postgresql:// DSN) or --bank: an existing bank."""
    if store is not None and bank is not None:
        raise ValueError("give --store or --bank, not both")
    if store is not None and store.startswith(("postgresql://", "postgres://")):
        from memory_r1.bank.postgres import PostgresStore

        return PostgresStore(store)
    return open_existing_bank(Path(store) if store is not None else bank, read_only=read_only)


@memories_app.command("list")
@user_errors
def memories_list(
    bank: BankOpt = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner, e.g. conv-26:Caroline.")] = None,
    include_deleted: Annotated[bool, typer.Option("--all", help="Include soft-deleted memories.")] = False,
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    store: StoreOpt = None,
) -> None:
    """List memories (of one owner or scope, or all)."""
    key = _owner(owner, user, agent, run)
    with closing(_open(bank, store, read_only=True)) as opened:
        table = Table(title=f"memories in {_where(bank, store)}")
        for column in ("id", "owner", "when", "text", "deleted"):
            table.add_column(column)
        for e in opened.list(key, include_deleted=include_deleted):
            table.add_row(str(e.id), _label(e.owner), e.timestamp, e.text, "yes" if e.deleted else "")
        console.print(table)


def _where(bank: Path | None, store: str | None) -> str:
    if store is not None and store.startswith(("postgresql://", "postgres://")):
        return store.split("@")[-1].split("?")[0]  # never print a password
    return str(store or bank or default_bank())


def _label(owner: str) -> str:
    """A store key as people read it: LoCoMo owners verbatim, scopes as user/agent/run."""
    try:
        scope = Scope.from_key(owner)
    except ValueError:
        return owner
    if scope.agent_id is None and scope.run_id is None:
        return owner
    return " ".join(f"{k}={v}" for k, v in scope.to_json().items() if v is not None)


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

    query, owner = check_text("QUERY", query) or "", check_text("--owner", owner) or ""
    check_int("-k", k, 1, MAX_K)
    with open_existing_bank(bank, read_only=True) as store:
        [vector] = load_embedder(embedding_model_of(store)).embed([query])
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
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    store: StoreOpt = None,
) -> None:
    """Every change ever made: operation, before/after, who decided, why."""
    check_int("--memory", memory, 1)
    check_int("--limit", limit, 1)
    key = _owner(owner, user, agent, run)
    with closing(_open(bank, store, read_only=True)) as opened:
        rows = opened.history(memory_id=memory, owner=key, limit=limit)
        table = Table(title="history")
        for column in ("#", "event", "memory", "before", "after", "by", "reason", "undone"):
            table.add_column(column)
        for h in rows:
            by = "/".join(
                x for x in (h.provenance.agent, h.provenance.model, h.provenance.prompt_version) if x
            )
            table.add_row(
                str(h.id),
                h.event,
                str(h.memory_id or ""),
                h.before_text or "",
                h.after_text or "",
                by,
                h.reason or "",
                "yes" if h.undone else "",
            )
        console.print(table)


@memories_app.command("undo")
@user_errors
def memories_undo(
    history_id: Annotated[
        int | None, typer.Argument(help="History event to revert (default: the latest change).")
    ] = None,
    bank: BankOpt = None,
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    store: StoreOpt = None,
) -> None:
    """Revert one change (ADD, UPDATE or DELETE); with a scope, only that scope's (default: its latest).
    The undo itself is recorded."""
    check_int("HISTORY_ID", history_id, 1)
    key = _owner(None, user, agent, run)
    with closing(_open(bank, store)) as opened:
        if key is not None:
            history_id = _scoped_undo_target(opened, key, history_id)
        record = opened.undo(history_id)
        console.print(f"undone: {record.event} of memory {record.memory_id} (history #{record.id})")


def _scoped_undo_target(store: MemoryStore, key: str, history_id: int | None) -> int:
    """The scope's latest change not yet undone, or `history_id` if it belongs to the scope."""
    rows = store.history(owner=key)
    if history_id is not None:
        if not any(h.id == history_id for h in rows):
            raise BankError(f"history #{history_id} is not a change of {_label(key)}")
        return history_id
    undoable = [h.id for h in rows if h.event in UNDOABLE and not h.undone]
    if not undoable:
        raise BankError(f"nothing to undo in {_label(key)}")
    return undoable[-1]


# ---------------------------------------------------------------- data


@data_app.command("download")
@user_errors
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name: locomo, longmemeval or msc.")],
    dest: Annotated[
        Path | None, typer.Option(help="Target file or folder (default: the user data dir).")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="LongMemEval file: s (default), m (2.7 GB) or oracle.")
    ] = None,
) -> None:
    """Fetch a dataset from its public location (needs a network); its sha256 is checked before it is kept."""
    from memory_r1.data import LICENSES, download_benchmark

    path = download_benchmark(name, dest, variant)
    console.print(f"saved {path} ({LICENSES[name]})")


# ---------------------------------------------------------------- demo


def _answerable(conversation: Conversation, limit: int) -> list[QAItem]:
    """Questions (categories 1-4) whose evidence lies entirely in the ingested sessions."""
    ingested = {t.dia_id for t in conversation.turns}
    chosen = [
        q for q in conversation.qa if q.answer is not None and q.evidence and set(q.evidence) <= ingested
    ]
    return chosen[:limit]


@app.command()
@user_errors
def demo(
    data: Annotated[
        Path | None, typer.Option("--data", help="locomo10.json (default: the documented places).")
    ] = None,
    conversation: ConvOpt = "conv-26",
    sessions: SessionsOpt = "1",
    questions: Annotated[int, typer.Option(help="How many questions to answer.")] = 5,
    bank: Annotated[
        Path | None, typer.Option(help="Keep the bank in this file (default: in memory).")
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    base_answerer: Annotated[
        bool, typer.Option("--base-answerer", help="Answer with the base model even if a trained Answer "
                           "Agent is built (memory-r1 agents list).")
    ] = False,
    settings: SetOpt = None,
) -> None:
    """The main job, offline on the embedded default: ingest a few sessions, answer their questions."""
    from memory_r1.eval.metrics import f1_score

    check_int("--questions", questions, 0, MAX_K)
    model = check_text("--model", model) or ""
    config = apply_overrides(PipelineConfig(model=model, trained_answerer=not base_answerer), settings or [])
    conv = load_conversation(data, conversation, sessions)
    items = _answerable(conv, questions)
    console.print(
        f"[bold]memory-r1 demo[/]: {conv.sample_id}, sessions {sessions}, {len(conv.turns)} turns, "
        f"{len(items)} questions, model {model}, answer agent {answer_model_name(config)}"
    )
    trained = trained_for(config.model, "answer")
    if trained and not is_built(trained.name) and config.trained_answerer and not config.answer_model:
        console.print(f"(a trained Answer Agent exists for {config.model}: `memory-r1 agents build "
                      f"{trained.name}` rebuilds it from its seeded recipe, ~25 min on 2 cores)")
    system = MemorySystem.from_config(config, bank or ":memory:")
    print_ingest_report(ingest_with_progress(system, conv))
    answers = system.answer([q.question for q in items], conv.sample_id)
    table = Table(title="answers")
    for column in ("question", "gold", "answer", "F1", "memories used"):
        table.add_column(column)
    scores = []
    for item, answer in zip(items, answers, strict=True):
        scores.append(f1_score(answer.answer, item.answer or ""))
        table.add_row(
            item.question,
            item.answer,
            answer.answer,
            f"{scores[-1]:.2f}",
            str(len(answer.selected_memory_ids)),
        )
    console.print(table)
    if scores:
        console.print(f"mean F1 {sum(scores) / len(scores):.3f} over {len(scores)} questions")
