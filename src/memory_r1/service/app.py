"""The REST app: Mem0-shaped routes over `Memory`, API-key tenancy, limits, JSON errors; the MCP tools at
/mcp.

Handlers are plain functions, so Starlette runs them in its worker thread pool; locks and tenancy are the
`core.Service` the MCP tools share. Every error a client can cause is a 4xx with a JSON body
{"error": ..., "detail": ...}; a store that went away is a 503, a model backend timeout a 504 and any other
backend failure a 502; none of them leaves a half-written add (one add is one transaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as Scope_

from memory_r1.bank import BankError, MemoryNotFoundError
from memory_r1.llm.base import GenerationError
from memory_r1.memory import Memory, MemoryInputError
from memory_r1.records import Scope, ScopeError
from memory_r1.service.core import ApiError, Service, ServiceConfig
from memory_r1.service.keys import KeyStore, Principal
from memory_r1.service.mcp import MCP_PATH, mcp_endpoint

MemoryId = Annotated[int, Path(ge=1, le=2**62)]


class ScopeBody(BaseModel):
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None


class AddBody(ScopeBody):
    messages: str | list[dict[str, Any]]
    metadata: dict[str, Any] | None = None
    infer: bool = True
    timestamp: str | None = None


class SearchBody(ScopeBody):
    query: str
    limit: int = Field(30, ge=1, le=1000)
    filters: dict[str, Any] | None = None
    threshold: float | None = None


class UpdateBody(BaseModel):
    text: str


class AnswerBody(ScopeBody):
    question: str


class KeyBody(BaseModel):
    tenant: str = Field(min_length=1, max_length=128)
    admin: bool = False


def _scope(body: ScopeBody | None = None, **ids: str | None) -> Scope:
    values = body.model_dump(include={"user_id", "agent_id", "run_id"}) if body else ids
    return Scope(values.get("user_id"), values.get("agent_id"), values.get("run_id"))


def create_app(
    memory: Memory,
    keys: KeyStore,
    config: ServiceConfig = ServiceConfig(),
    *,
    mcp: bool = True,
    host: str = "127.0.0.1",
) -> FastAPI:
    """The app over one `Memory` (one store, one loaded model set); tenants are namespaces in it.
    `mcp`: also serve the MCP tools (streamable HTTP) at /mcp on the same `Service`; `host`: the interface
    served, for the MCP transport's DNS-rebinding protection on loopback."""
    service = Service(memory, keys, config)
    mounted = mcp_endpoint(service, host) if mcp else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mounted.running() if mounted else nullcontext():
            yield

    app = FastAPI(
        title="memory-r1",
        version="1",
        description="Long-term memory with a trained Memory Manager.",
        lifespan=lifespan,
    )
    if mounted:
        app.router.routes.append(Route(MCP_PATH, endpoint=mounted))

    # async on purpose: both are microseconds (a hash and an indexed lookup), and a sync dependency costs
    # a worker-thread hop each, which at 16 concurrent clients was most of a search's latency
    async def principal(authorization: str | None = Header(None)) -> Principal:
        return service.authenticate(authorization)

    async def tenant_memory(who: Principal = Depends(principal)) -> tuple[Principal, Memory]:
        return who, service.tenant(who)

    Ctx = tuple[Principal, Memory]

    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    _handlers(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/memories/")
    def add(body: AddBody, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        scope = _scope(body)
        with service.writing(ctx[0].tenant, scope, model=body.infer):
            result = ctx[1].add(
                body.messages,
                **scope.to_json(),
                metadata=body.metadata,
                infer=body.infer,
                timestamp=body.timestamp,
            )
        return result.to_json()

    @app.get("/v1/memories/")
    def list_memories(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        page: int = 1,
        page_size: int = 100,
        ctx: Ctx = Depends(tenant_memory),
    ) -> dict[str, Any]:
        items = ctx[1].get_all(
            _scope(user_id=user_id, agent_id=agent_id, run_id=run_id), page=page, page_size=page_size
        )
        return {"results": [i.to_json() for i in items], "page": page, "page_size": page_size}

    @app.post("/v1/memories/search/")
    def search(body: SearchBody, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        items = ctx[1].search(
            body.query,
            **_scope(body).to_json(),
            limit=body.limit,
            filters=body.filters,
            threshold=body.threshold,
        )
        return {"results": [i.to_json() for i in items]}

    @app.get("/v1/memories/{memory_id}/")
    def get(memory_id: MemoryId, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        return ctx[1].get(memory_id).to_json()

    @app.put("/v1/memories/{memory_id}/")
    def update(memory_id: MemoryId, body: UpdateBody, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        scope = ctx[1].get(memory_id).scope
        with service.writing(ctx[0].tenant, scope):
            return ctx[1].update(memory_id, body.text).to_json()

    @app.delete("/v1/memories/{memory_id}/")
    def delete(memory_id: MemoryId, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        scope = ctx[1].get(memory_id).scope
        with service.writing(ctx[0].tenant, scope):
            return ctx[1].delete(memory_id).to_json()

    @app.delete("/v1/memories/")
    def delete_all(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        ctx: Ctx = Depends(tenant_memory),
    ) -> dict[str, int]:
        scope = _scope(user_id=user_id, agent_id=agent_id, run_id=run_id)
        with service.writing(ctx[0].tenant, scope):
            return {"deleted": ctx[1].delete_all(scope)}

    @app.post("/v1/memories/{memory_id}/purge/")
    def purge_one(memory_id: MemoryId, ctx: Ctx = Depends(tenant_memory)) -> dict[str, int]:
        return {"purged": ctx[1].purge(memory_id)}

    @app.post("/v1/purge/")
    def purge_scope(body: ScopeBody, ctx: Ctx = Depends(tenant_memory)) -> dict[str, int]:
        scope = _scope(body)
        with service.writing(ctx[0].tenant, scope):
            return {"purged": ctx[1].purge(scope)}

    @app.get("/v1/memories/{memory_id}/history/")
    def history(memory_id: MemoryId, ctx: Ctx = Depends(tenant_memory)) -> list[dict[str, Any]]:
        return [_history_json(h) for h in ctx[1].history(memory_id)]

    @app.post("/v1/history/{history_id}/undo/")
    def undo(history_id: MemoryId, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        return _history_json(ctx[1].undo(history_id))

    @app.post("/v1/answer/")
    def answer(body: AnswerBody, ctx: Ctx = Depends(tenant_memory)) -> dict[str, Any]:
        with service.model_lock:
            result = ctx[1].answer(body.question, _scope(body))
        return {
            "answer": result.answer,
            "memory_ids": list(result.selected_memory_ids),
            "parse_error": result.parse_error,
        }

    @app.get("/v1/export/")
    def export(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        ctx: Ctx = Depends(tenant_memory),
    ) -> PlainTextResponse:
        text = ctx[1].export(_scope(user_id=user_id, agent_id=agent_id, run_id=run_id))
        return PlainTextResponse(text, media_type="application/x-ndjson")

    @app.post("/v1/import/")
    async def import_(request: Request, ctx: Ctx = Depends(tenant_memory)) -> dict[str, int]:
        text = (await request.body()).decode("utf-8", errors="strict")
        return {"imported": ctx[1].import_(text)}

    @app.post("/v1/keys/")
    def create_key(body: KeyBody, who: Principal = Depends(principal)) -> dict[str, str]:
        if not who.admin:
            raise ApiError(403, "forbidden", "only an admin key can create keys")
        return {"key": keys.create(body.tenant, admin=body.admin), "tenant": body.tenant}

    return app


def _history_json(h: Any) -> dict[str, Any]:
    return {
        "id": h.id,
        "memory_id": h.memory_id,
        "event": h.event,
        "old_memory": h.before_text,
        "new_memory": h.after_text,
        "actor": h.provenance.agent,
        "reason": h.reason,
        "created_at": h.at.isoformat(),
        "undone": h.undone,
    }


class BodyLimit:
    """413 for a body over `limit` bytes, by its Content-Length or, when that is absent or false, by what
    arrives; the body is read before the route runs, so nothing is half-handled. A plain ASGI middleware
    (Starlette's `BaseHTTPMiddleware` costs a task and a stream copy per request). The MCP transport at
    /mcp enforces the same limit itself."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == MCP_PATH:
            await self.app(scope, receive, send)
            return
        def too_large() -> JSONResponse:
            return _error(413, "payload_too_large", f"body over {self.limit} bytes")

        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await too_large()(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large()(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _handlers(app: FastAPI) -> None:
    """Map every error a request can cause to a 4xx (or 503/504) JSON body."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(MemoryNotFoundError)
    async def not_found(_: Request, exc: MemoryNotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ScopeError)
    async def bad_input(_: Request, exc: ScopeError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(UnicodeDecodeError)
    async def bad_text(_: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return _error(400, "invalid_request", "body is not UTF-8")

    @app.exception_handler(BankError)
    async def bank(_: Request, exc: BankError) -> JSONResponse:
        unavailable = "unavailable" in str(exc)
        return _error(
            503 if unavailable else 409, "store_unavailable" if unavailable else "conflict", str(exc)
        )

    @app.exception_handler(TimeoutError)
    async def timeout(_: Request, exc: TimeoutError) -> JSONResponse:
        return _error(504, "backend_timeout", f"the model backend timed out: {exc}")

    @app.exception_handler(GenerationError)
    async def backend(_: Request, exc: GenerationError) -> JSONResponse:
        if isinstance(exc, TimeoutError):  # BackendTimeoutError: its MRO finds this handler first
            return _error(504, "backend_timeout", f"the model backend timed out: {exc}")
        return _error(502, "backend_error", f"the model backend failed: {exc}")


__all__ = ["ApiError", "MemoryInputError", "ServiceConfig", "create_app"]
