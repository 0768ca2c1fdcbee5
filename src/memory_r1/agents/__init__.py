"""The three LLM roles: fact extractor, Memory Manager, Answer Agent (paper section 1)."""

from memory_r1.agents.answerer import AnswerAgent, AnswerConfig
from memory_r1.agents.extractor import Extraction, ExtractorConfig, FactExtractor
from memory_r1.agents.manager import ManagerConfig, ManagerDecision, MemoryManager, apply_operations

__all__ = [
    "AnswerAgent",
    "AnswerConfig",
    "Extraction",
    "ExtractorConfig",
    "FactExtractor",
    "ManagerConfig",
    "ManagerDecision",
    "MemoryManager",
    "apply_operations",
]
