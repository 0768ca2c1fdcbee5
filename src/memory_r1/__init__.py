"""memory-r1: long-term memory for LLM agents that learns to manage itself (Memory-R1, arXiv 2508.19828)."""

__version__ = "0.1.0"
