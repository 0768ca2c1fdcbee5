"""memory-r1: long-term memory for LLM agents that learns to manage itself (Memory-R1, arXiv 2508.19828)."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`from memory_r1 import Memory`, imported lazily so `import memory_r1` stays cheap."""
    if name in ("Memory", "Scope"):
        from memory_r1 import memory

        return getattr(memory, name)
    raise AttributeError(f"module 'memory_r1' has no attribute {name!r}")
