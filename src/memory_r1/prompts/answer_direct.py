"""Answer prompt without memory distillation: the Mem0-style `prompted` baseline and the `rag` baseline.

Same memories, same numbering and the same answer marker as `answer.py`; the model answers at once
instead of first listing the memories it relies on (the paper's "without distillation" ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

from memory_r1.llm.base import Message
from memory_r1.prompts import few_shot, one_line
from memory_r1.prompts.answer import ANSWER_MARKER, EXAMPLE_USER, memory_blocks

VERSION = "answer-direct-v2"

SYSTEM = f"""You answer questions about two people from their memories. Each memory has a number and a date.
Write {ANSWER_MARKER} followed by a short answer of at most six words, and nothing else.
Tips: check the dates; if two memories disagree, trust the newer one; turn relative times ("last year") into dates using the memory's date; do not mix up the two people."""

EXAMPLE_ASSISTANT = f"{ANSWER_MARKER} Denver"


def render(question: str, memories_by_speaker: Sequence[tuple[str, Sequence[str]]]) -> list[Message]:
    user = memory_blocks(memories_by_speaker) + f"\n\nQuestion: {one_line(question)}"
    return few_shot(SYSTEM, [(EXAMPLE_USER, EXAMPLE_ASSISTANT)], user)
