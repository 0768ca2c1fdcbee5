"""API keys: only SHA-256 hashes are stored (keys are 32 random bytes, so no salt or slow hash is needed).

Each key maps to a tenant; admin keys may also create keys. The table lives in its own SQLite file.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

PREFIX = "mr1_"


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                           " admin INTEGER NOT NULL, created_at TEXT NOT NULL)")

    def create(self, tenant: str, *, admin: bool = False) -> str:
        """A new key for `tenant`; the plain key is returned once and never stored."""
        key = PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?)",
                               (_hash(key), tenant, int(admin), datetime.now(timezone.utc).isoformat()))
        return key

    def ensure_admin(self) -> str | None:
        """On first start: create the admin key and return it (to print once); None if one exists."""
        with self._lock:
            exists = self._conn.execute("SELECT 1 FROM api_keys WHERE admin = 1").fetchone()
        return None if exists else self.create("admin", admin=True)

    def lookup(self, key: str) -> Principal | None:
        with self._lock:
            row = self._conn.execute("SELECT tenant, admin FROM api_keys WHERE hash = ?",
                                     (_hash(key),)).fetchone()
        return Principal(row[0], bool(row[1])) if row else None

    def hashes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT hash FROM api_keys")]
