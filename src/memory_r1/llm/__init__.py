"""Text generation: one `Generator` interface, a local transformers backend, an OpenAI-compatible client,
and the registry that maps model names to them.

The two backends are loaded on first access (PEP 562), so `import memory_r1.llm` (which every prompt and
agent module does through `memory_r1.llm.base`) stays cheap: no torch, transformers or httpx until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memory_r1.llm.base import (
    Generation,
    GenerationConfig,
    GenerationError,
    Generator,
    Message,
    truncate_at_stop,
)
from memory_r1.llm.registry import (
    REGISTERED,
    TRAINED,
    TrainedAgent,
    UnknownModelError,
    cache_dir,
    is_built,
    load_generator,
    resolve_model,
    trained_dir,
    trained_for,
)

if TYPE_CHECKING:
    from memory_r1.llm.openai_backend import OpenAIGenerator
    from memory_r1.llm.transformers_backend import TransformersGenerator

_LAZY = {
    "OpenAIGenerator": "memory_r1.llm.openai_backend",
    "TransformersGenerator": "memory_r1.llm.transformers_backend",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REGISTERED",
    "TRAINED",
    "Generation",
    "GenerationConfig",
    "GenerationError",
    "Generator",
    "Message",
    "OpenAIGenerator",
    "TrainedAgent",
    "TransformersGenerator",
    "UnknownModelError",
    "cache_dir",
    "is_built",
    "load_generator",
    "resolve_model",
    "trained_dir",
    "trained_for",
    "truncate_at_stop",
]
