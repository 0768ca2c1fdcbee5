"""Commands on the `Memory` API (any user's messages, by scope), the REST server and the MCP server."""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from memory_r1.cli.common import BackendOpt, BaseUrlOpt, EmbedOpt, ModelOpt, app, console, user_errors
from memory_r1.memory import Memory, default_store_path
from memory_r1.pipeline import DEFAULT_MODEL, Agents, PipelineConfig

if TYPE_CHECKING:
    from memory_r1.service.keys import KeyStore

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="SQLite bank file or postgresql:// DSN (default: $MEMORY_R1_BANK or the user data dir).")]
UserOpt = Annotated[str | None, typer.Option("--user", help="user_id of the scope.")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="agent_id of the scope.")]
RunOpt = Annotated[str | None, typer.Option("--run", help="run_id of the scope.")]


def _memory(store: str | None, model: str, backend: str, base_url: str | None,
            embedding_model: str) -> Memory:
    config = PipelineConfig(model=model, backend=backend, base_url=base_url, embedding_model=embedding_model)
    location = store or str(default_store_path())
    if not location.startswith(("postgresql://", "postgres://")) and location != ":memory:":
        Path(location).parent.mkdir(parents=True, exist_ok=True)
    return Memory(location, Agents.load(config))


@app.command("add")
@user_errors
def add_command(
    text: str,
    user: UserOpt = None,
    agent: AgentOpt = None,
    run: RunOpt = None,
    infer: Annotated[
        bool, typer.Option("--infer/--no-infer", help="Run extraction + the Memory Manager.")
    ] = True,
    store: StoreOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Remember a message for a scope (user/agent/run) and show what the manager did."""
    with _memory(store, model, backend, base_url, embedding_model) as memory:
        result = memory.add(text, user_id=user, agent_id=agent, run_id=run, infer=infer)
    table = Table(title="applied operations")
    for column in ("event", "id", "memory", "previous"):
        table.add_column(column)
    for op in result.results:
        table.add_row(op.event, str(op.id or ""), op.memory or "", op.previous_memory or "")
    console.print(table)


@app.command("search")
@user_errors
def search_command(
    query: str,
    user: UserOpt = None,
    agent: AgentOpt = None,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-k", help="How many memories.")] = 10,
    store: StoreOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Semantic search in one scope's memories."""
    with _memory(store, model, "transformers", None, embedding_model) as memory:
        hits = memory.search(query, user_id=user, agent_id=agent, run_id=run, limit=limit)
    table = Table(title=f"top {limit} for {query!r}")
    for column in ("score", "id", "memory"):
        table.add_column(column)
    for h in hits:
        table.add_row(f"{h.score or 0:.3f}", str(h.id), h.memory)
    console.print(table)


@app.command("answer")
@user_errors
def answer_command(
    question: str,
    user: UserOpt = None,
    agent: AgentOpt = None,
    run: RunOpt = None,
    store: StoreOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Answer a question from one scope's memories with the Answer Agent."""
    from memory_r1.records import Scope

    with _memory(store, model, backend, base_url, embedding_model) as memory:
        answer = memory.answer(question, Scope(user, agent, run))
    console.print(f"[bold]Answer:[/] {answer.answer or '(none)'}")
    if answer.parse_error:
        console.print(f"[yellow]note:[/] {answer.parse_error}")


@app.command("serve")
@user_errors
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store: StoreOpt = None,
    keys: Annotated[
        Path | None, typer.Option(help="API key file (default: keys.db next to the store).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API keys; only allowed on a loopback host.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Serve the memory API over HTTP (OpenAPI at /docs) and the MCP tools at /mcp, on one loaded model set.
    Prints the admin key once, on first start."""
    import uvicorn

    from memory_r1.service.app import ServiceConfig, create_app

    memory, key_store = _served(host, store, keys, no_auth, model, backend, base_url, embedding_model)
    app_ = create_app(memory, key_store, ServiceConfig(auth=not no_auth), host=host)
    uvicorn.run(app_, host=host, port=port)


@app.command("mcp")
@user_errors
def mcp_command(
    transport: Annotated[
        str, typer.Option(help="stdio (for a local agent host) or http (streamable HTTP at /mcp).")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="http: interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="http: TCP port.")] = 8000,
    store: StoreOpt = None,
    keys: Annotated[
        Path | None, typer.Option(help="http: API key file (default: keys.db next to the store).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="http: no API keys; loopback hosts only.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    embedding_model: EmbedOpt = PipelineConfig.embedding_model,
) -> None:
    """Serve the memory tools over MCP: stdio (the host starts this command) or streamable HTTP with API
    keys."""
    if transport not in ("stdio", "http"):
        raise ValueError(f"--transport must be stdio or http, not {transport!r}")
    if transport == "stdio":
        from memory_r1.service.mcp import run_stdio

        with contextlib.redirect_stdout(
            sys.stderr
        ):  # stdout carries the protocol: loading must not print there
            memory = _memory(store, model, backend, base_url, embedding_model)
        run_stdio(memory)
        return
    import uvicorn

    from memory_r1.service.core import Service, ServiceConfig
    from memory_r1.service.mcp import mcp_app

    memory, key_store = _served(host, store, keys, no_auth, model, backend, base_url, embedding_model)
    uvicorn.run(
        mcp_app(Service(memory, key_store, ServiceConfig(auth=not no_auth)), host), host=host, port=port
    )


def _served(
    host: str,
    store: str | None,
    keys: Path | None,
    no_auth: bool,
    model: str,
    backend: str,
    base_url: str | None,
    embedding_model: str,
) -> tuple[Memory, KeyStore]:
    """The memory and key store of a network server; the admin key is printed once, on first start."""
    from memory_r1.service.keys import KeyStore

    if no_auth and not _loopback(host):
        raise ValueError(f"--no-auth is only allowed on a loopback host, not {host}")
    memory = _memory(store, model, backend, base_url, embedding_model)
    key_path = keys or default_store_path().with_name("keys.db")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_store = KeyStore(key_path)
    admin = key_store.ensure_admin()
    if admin and not no_auth:
        console.print(f"admin API key (shown once, stored only as a hash in {key_path}):\n  {admin}")
    return memory, key_store


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
