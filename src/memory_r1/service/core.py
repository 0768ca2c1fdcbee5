"""What the REST and MCP servers share: one `Memory` (one store, one loaded model set) served to many tenants.

API keys (`keys.KeyStore`) map to tenants; a tenant is a namespace in the store (`Memory.in_namespace`), so
an id or scope of one tenant does not exist for another. Writes to one scope are serialised by a per-scope
lock, and model calls (inference adds, answers) by one lock per loaded model set, because a local generator
is not thread-safe. Both servers hold the same `Service`, so a REST add and an MCP add to one scope queue on
the same lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from memory_r1.memory import Memory
from memory_r1.records import Scope
from memory_r1.service.keys import KeyStore, Principal


@dataclass(frozen=True)
class ServiceConfig:
    max_body_bytes: int = 256 * 1024
    """Our choice: 100 messages of a few KB each fit; anything larger is refused with 413."""
    rate_per_minute: int = 600
    """Per API key; our choice: 10 requests/s sustained, bursts up to the same number."""
    auth: bool = True
    """False only with the explicit loopback-only no-auth flag: every request is tenant "local"."""
    mcp_session_idle_s: float = 1800.0
    """An MCP session with no request for this long is closed (the MCP SDK's default, 30 minutes), and its
    tenant binding forgotten with it, so sessions clients never end do not pile up."""


class ApiError(Exception):
    """An error a client caused or must see: HTTP status, short code, one-line detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class RateLimiter:
    """Token bucket per key: `rate` tokens a minute, bucket size `rate`."""

    def __init__(self, rate: int) -> None:
        self.rate, self._lock = rate, threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - last) * self.rate / 60.0)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True


class ScopeLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, tenant: str, scope: Scope) -> Iterator[None]:
        with self._lock:
            lock = self._locks.setdefault((tenant, scope.key), threading.Lock())
        with lock:
            yield


class Service:
    """One `Memory` served to the tenants of one key store, with the limits and locks of `config`."""

    def __init__(self, memory: Memory, keys: KeyStore, config: ServiceConfig = ServiceConfig()) -> None:
        self.memory, self.keys, self.config = memory, keys, config
        self.limiter = RateLimiter(config.rate_per_minute)
        self.scope_locks = ScopeLocks()
        self.model_lock = threading.Lock()

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Token <key>` (or `Bearer <key>`) header, or ApiError
        401/429."""
        if not self.config.auth:
            return Principal("local", True)
        if not authorization:
            raise ApiError(401, "unauthorized", "missing Authorization header (use 'Token <api key>')")
        scheme, _, key = authorization.partition(" ")
        found = self.keys.lookup(key.strip()) if scheme.lower() in ("token", "bearer") else None
        if found is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        if not self.limiter.allow(key.strip()):
            raise ApiError(
                429, "rate_limited", f"more than {self.config.rate_per_minute} requests a minute for this key"
            )
        return found

    def tenant(self, who: Principal) -> Memory:
        return self.memory.in_namespace(who.tenant)

    @contextmanager
    def writing(self, tenant: str, scope: Scope, *, model: bool = False) -> Iterator[None]:
        """Hold the scope's write lock, and the model lock too when the write runs a model."""
        with self.scope_locks.hold(tenant, scope), self.model_lock if model else nullcontext():
            yield


__all__ = ["ApiError", "RateLimiter", "ScopeLocks", "Service", "ServiceConfig"]
