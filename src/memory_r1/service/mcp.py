"""The MCP server (official `mcp` SDK 2.x, `MCPServer`): memory tools for any agent host, stdio or HTTP.

Tools carry the names agent hosts already know (`add_memory`, `search_memories`, ...) and return pydantic
models, so each has an output schema and its results come back as structured content. Over streamable HTTP
(`/mcp`) every request is authenticated with the REST API keys and acts in its key's tenant, on the same
`core.Service` (store, models, locks) as the REST routes; over stdio the server is the local user's own
process and acts on the store as the CLI and `Memory()` see it, without a tenant. Failures the caller can
fix or must know about (unknown id, bad input, store gone, model timeout) are tool errors (`is_error`), with
one line saying what was wrong; the server keeps serving.
"""

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from memory_r1.bank import BankError, MemoryNotFoundError
from memory_r1.llm.base import GenerationError
from memory_r1.memory import AddResult, Memory, MemoryItem
from memory_r1.records import HistoryRecord, Scope, ScopeError
from memory_r1.service.core import ApiError, Service
from memory_r1.service.keys import Principal

MCP_PATH = "/mcp"
PRINCIPAL = "memory_r1.principal"  # the ASGI scope key the auth wrapper sets for the tools
INSTRUCTIONS = ("Long-term memory. Scope every call with at least one of user_id, agent_id, run_id. "
                "add_memory with infer=true lets the trained Memory Manager decide ADD/UPDATE/DELETE/NOOP.")


# ---------------------------------------------------------------- typed results (the tools' output schemas)


class MemoryRecord(BaseModel):
    id: int
    memory: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    timestamp: str = Field(description="The time the memory is about, as shown to the agents.")
    created_at: str
    updated_at: str
    deleted: bool
    score: float | None = Field(None, description="Cosine similarity to the query (search only).")

    @classmethod
    def of(cls, item: MemoryItem) -> "MemoryRecord":
        return cls.model_validate(item.to_json())


class MemoryList(BaseModel):
    results: list[MemoryRecord]


class Operation(BaseModel):
    event: str = Field(description="ADD, UPDATE, DELETE or NOOP.")
    id: int | None
    memory: str | None
    previous_memory: str | None
    history_id: int
    reason: str | None = None


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class AddOutcome(BaseModel):
    results: list[Operation]
    usage: dict[str, TokenUsage] = Field(description="Per stage (extract, manage); empty without inference.")

    @classmethod
    def of(cls, result: AddResult) -> "AddOutcome":
        return cls.model_validate(result.to_json())


class HistoryEvent(BaseModel):
    id: int
    memory_id: int | None
    event: str
    old_memory: str | None
    new_memory: str | None
    actor: str
    reason: str | None
    created_at: str
    undone: bool

    @classmethod
    def of(cls, h: HistoryRecord) -> "HistoryEvent":
        return cls(id=h.id, memory_id=h.memory_id, event=h.event, old_memory=h.before_text,
                   new_memory=h.after_text, actor=h.provenance.agent, reason=h.reason,
                   created_at=h.at.isoformat(), undone=h.undone)


class HistoryList(BaseModel):
    results: list[HistoryEvent]


class Answer(BaseModel):
    answer: str
    memory_ids: list[int]
    parse_error: str | None


class DeletedCount(BaseModel):
    deleted: int


# ---------------------------------------------------------------- the tools


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Anticipated failures become tool errors with one line; anything else is the SDK's generic error."""
    try:
        yield
    except MemoryNotFoundError as error:
        raise ToolError(f"not found: {error}") from error
    except ScopeError as error:
        raise ToolError(f"invalid request: {error}") from error
    except BankError as error:
        kind = "store unavailable" if "unavailable" in str(error) else "conflict"
        raise ToolError(f"{kind}: {error}") from error
    except TimeoutError as error:  # before GenerationError: BackendTimeoutError is both
        raise ToolError(f"the model backend timed out: {error}") from error
    except GenerationError as error:
        raise ToolError(f"the model backend failed: {error}") from error


def build_server(service: Service) -> MCPServer:
    """The MCP tools over `service`; each call acts for the principal its HTTP request authenticated."""
    # WARNING: the SDK configures the root logger; at INFO every HTTP request and embedding batch is logged
    server: MCPServer = MCPServer("memory-r1", instructions=INSTRUCTIONS, log_level="WARNING")

    def caller(ctx: Context) -> tuple[str, Memory]:
        request = ctx.request_context.request
        if request is None:  # stdio: the local user's own store, no tenant
            return "", service.memory
        who = request.scope.get(PRINCIPAL) if isinstance(request, Request) else None
        if not isinstance(who, Principal):
            raise ToolError("unauthorized: no API key on this request")
        return who.tenant, service.tenant(who)

    @server.tool()
    def add_memory(messages: str | list[dict[str, Any]], ctx: Context, user_id: str | None = None,
                   agent_id: str | None = None, run_id: str | None = None,
                   metadata: dict[str, Any] | None = None, infer: bool = True,
                   timestamp: str | None = None) -> AddOutcome:
        """Remember a message (or chat messages {role, content, name?}) for a scope. infer=true: facts are
        extracted and the Memory Manager decides ADD/UPDATE/DELETE/NOOP against what is stored; infer=false:
        the texts are stored as given. Returns the applied operations."""
        tenant, memory = caller(ctx)
        with _tool_errors():
            scope = Scope(user_id, agent_id, run_id)
            with service.writing(tenant, scope, model=infer):
                result = memory.add(messages, **scope.to_json(), metadata=metadata, infer=infer,
                                    timestamp=timestamp)
        return AddOutcome.of(result)

    @server.tool()
    def search_memories(
        query: str,
        ctx: Context,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 30,
        filters: dict[str, Any] | None = None,
        threshold: float | None = None,
    ) -> MemoryList:
        """The scope's memories most similar to the query, best first (filters: metadata key -> value)."""
        _, memory = caller(ctx)
        with _tool_errors():
            items = memory.search(
                query,
                user_id=user_id,
                agent_id=agent_id,
                run_id=run_id,
                limit=limit,
                filters=filters,
                threshold=threshold,
            )
        return MemoryList(results=[MemoryRecord.of(i) for i in items])

    @server.tool()
    def list_memories(
        ctx: Context,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        page: int = 1,
        page_size: int = 100,
    ) -> MemoryList:
        """The scope's live memories, oldest first, one page (1-based)."""
        _, memory = caller(ctx)
        with _tool_errors():
            items = memory.get_all(Scope(user_id, agent_id, run_id), page=page, page_size=page_size)
        return MemoryList(results=[MemoryRecord.of(i) for i in items])

    @server.tool()
    def get_memory(memory_id: int, ctx: Context) -> MemoryRecord:
        """One memory by id (also a deleted one, marked deleted)."""
        _, memory = caller(ctx)
        with _tool_errors():
            return MemoryRecord.of(memory.get(memory_id))

    @server.tool()
    def update_memory(memory_id: int, text: str, ctx: Context) -> MemoryRecord:
        """Replace a memory's text (recorded in its history, undoable)."""
        tenant, memory = caller(ctx)
        with _tool_errors(), service.writing(tenant, memory.get(memory_id).scope):
            return MemoryRecord.of(memory.update(memory_id, text))

    @server.tool()
    def delete_memory(memory_id: int, ctx: Context) -> MemoryRecord:
        """Delete one memory (soft: kept in its history, undoable)."""
        tenant, memory = caller(ctx)
        with _tool_errors(), service.writing(tenant, memory.get(memory_id).scope):
            return MemoryRecord.of(memory.delete(memory_id))

    @server.tool()
    def delete_all_memories(
        ctx: Context, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> DeletedCount:
        """Delete every memory of a scope (soft, one transaction); returns how many."""
        tenant, memory = caller(ctx)
        with _tool_errors():
            scope = Scope(user_id, agent_id, run_id)
            with service.writing(tenant, scope):
                return DeletedCount(deleted=memory.delete_all(scope))

    @server.tool()
    def answer_question(
        question: str,
        ctx: Context,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
    ) -> Answer:
        """Answer a question from the scope's memories with the Answer Agent (retrieve, distil, answer)."""
        _, memory = caller(ctx)
        with _tool_errors():
            scope = Scope(user_id, agent_id, run_id)
            with service.model_lock:
                result = memory.answer(question, scope)
        return Answer(
            answer=result.answer, memory_ids=list(result.selected_memory_ids), parse_error=result.parse_error
        )

    @server.tool()
    def memory_history(memory_id: int, ctx: Context) -> HistoryList:
        """Every change to one memory: event, old and new text, who decided, why."""
        _, memory = caller(ctx)
        with _tool_errors():
            return HistoryList(results=[HistoryEvent.of(h) for h in memory.history(memory_id)])

    return server


# ---------------------------------------------------------------- streamable HTTP, behind the API keys


class McpEndpoint:
    """The streamable-HTTP transport as one ASGI endpoint: API key checked first (401/429/413 with a JSON
    body, as REST), then the SDK's transport with the caller's principal in the ASGI scope."""

    def __init__(self, service: Service, host: str) -> None:
        self.service = service
        self.server = build_server(service)
        # MCP session id -> the tenant whose key opened it: a session is usable only with that tenant's
        # keys (another tenant's key gets a 404, as for an unknown session). Entries go when the client
        # ends its session (DELETE) or once the SDK has closed it for being idle (`mcp_session_idle_s`): the
        # SDK closes a session when no request has been in flight for that long, so a binding is forgotten
        # only when none is in flight and the last one ended longer ago than that (plus a margin).
        self._session_tenant: dict[str, str] = {}
        self._in_flight: dict[str, int] = {}
        self._last_end: dict[str, float] = {}
        self._next_sweep = 0.0
        self._idle_s = service.config.mcp_session_idle_s
        self._app: ASGIApp = self.server.streamable_http_app(
            streamable_http_path=MCP_PATH, host=host, max_request_body_size=service.config.max_body_bytes,
            session_idle_timeout=self._idle_s,
        )

    def _forget_closed_sessions(self, now: float) -> None:
        """Sweep at most once a tenth of the idle timeout (amortised O(1) per request)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._idle_s / 10
        for session, ended in list(self._last_end.items()):
            if not self._in_flight.get(session) and now - ended > self._idle_s * 1.1:
                self._forget(session)

    def _forget(self, session: str) -> None:
        self._session_tenant.pop(session, None)
        self._last_end.pop(session, None)
        self._in_flight.pop(session, None)

    @property
    def bound_sessions(self) -> int:
        """Sessions with a tenant binding (for tests and monitoring)."""
        return len(self._session_tenant)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The transport's session manager; run it for the life of the hosting app."""
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            who = self.service.authenticate(headers.get("authorization"))
            declared = headers.get("content-length")
            if (
                declared is not None
                and declared.isdecimal()
                and int(declared) > self.service.config.max_body_bytes
            ):
                raise ApiError(
                    413, "payload_too_large", f"body over {self.service.config.max_body_bytes} bytes"
                )
            session = headers.get("mcp-session-id")
            self._forget_closed_sessions(time.monotonic())
            owner = self._session_tenant.get(session) if session else None
            if owner is not None and owner != who.tenant:
                raise ApiError(404, "not_found", "unknown MCP session")
        except ApiError as error:
            extra = {"WWW-Authenticate": 'Token realm="memory-r1"'} if error.status == 401 else None
            response = JSONResponse(
                {"error": error.error, "detail": error.detail}, error.status, headers=extra
            )
            await response(scope, receive, send)
            return

        opened: list[str] = []
        statuses: list[int] = []

        async def bind(message: Message) -> None:  # the session id the transport hands out is this tenant's
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            if message["type"] == "http.response.start" and message["status"] < 400:
                new = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if new and new not in self._session_tenant:
                    self._session_tenant[new] = who.tenant
                    opened.append(new)
            await send(message)

        bound = session if owner is not None else None
        if bound:
            self._in_flight[bound] = self._in_flight.get(bound, 0) + 1
        try:
            await self._app({**scope, PRINCIPAL: who}, receive, bind)
        finally:
            if bound:
                self._in_flight[bound] -= 1
            for used in ([bound] if bound else []) + opened:
                self._last_end[used] = time.monotonic()
            if bound and scope["method"] == "DELETE" and statuses and statuses[0] < 400:  # client ended it
                self._forget(bound)


def mcp_endpoint(service: Service, host: str = "127.0.0.1") -> McpEndpoint:
    return McpEndpoint(service, host)


def mcp_app(service: Service, host: str = "127.0.0.1") -> Starlette:
    """A server with only the MCP endpoint (and /health): `memory-r1 mcp --transport http`."""
    endpoint = mcp_endpoint(service, host)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with endpoint.running():
            yield

    app = Starlette(routes=[Route(MCP_PATH, endpoint=endpoint), Route("/health", health)], lifespan=lifespan)
    app.state.mcp_endpoint = endpoint
    return app


def run_stdio(memory: Memory) -> None:
    """Serve the tools on stdin/stdout for a local agent host (no keys: the process is the user's own)."""
    from memory_r1.service.core import ServiceConfig
    from memory_r1.service.keys import KeyStore

    build_server(Service(memory, KeyStore(), ServiceConfig(auth=False))).run("stdio")


__all__ = ["MCP_PATH", "McpEndpoint", "build_server", "mcp_app", "mcp_endpoint", "run_stdio"]
