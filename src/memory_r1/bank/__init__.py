"""Memory bank: the store interface and its embedded SQLite implementation."""

from memory_r1.bank.sqlite import SQLiteStore
from memory_r1.bank.sqlite_file import SCHEMA_VERSION
from memory_r1.bank.store import BankError, IncompatibleBankError, MemoryNotFoundError, MemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "BankError",
    "IncompatibleBankError",
    "MemoryNotFoundError",
    "MemoryStore",
    "SQLiteStore",
]
