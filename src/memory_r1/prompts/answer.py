"""Answer Agent prompt (paper section 1, step 4): memory distillation, then a short answer, in one generation."""

from __future__ import annotations

from collections.abc import Sequence

from memory_r1.llm.base import Message
from memory_r1.prompts import few_shot, one_line

VERSION = "answer-v2"

ANSWER_MARKER = "**Answer:**"

SYSTEM = f"""You answer questions about two people from their memories. Each memory has a number and a date.
Steps:
1. Read the memories of both people. Write the numbers and texts of the few memories that help, one per line, like "[3] ...".
2. Then write {ANSWER_MARKER} followed by a short answer of at most six words.
Tips: check the dates; if two memories disagree, trust the newer one; turn relative times ("last year") into dates using the memory's date; do not mix up the two people."""


EXAMPLE_USER = """Memories of Alex:
[1] (10:00 am on 3 March, 2022) Alex lives in Boston.
[2] (4:15 pm on 9 June, 2022) Alex moved from Boston to Denver in May 2022.

Memories of Sam:
[3] (10:00 am on 3 March, 2022) Sam visited Alex in Boston.

Question: Where does Alex live now?"""

EXAMPLE_ASSISTANT = (
    f"[2] (4:15 pm on 9 June, 2022) Alex moved from Boston to Denver in May 2022.\n{ANSWER_MARKER} Denver"
)


def format_memory(number: int, timestamp: str, text: str) -> str:
    when = f"({one_line(timestamp)}) " if timestamp else ""
    return f"[{number}] {when}{one_line(text)}"


def memory_blocks(memories_by_speaker: Sequence[tuple[str, Sequence[str]]]) -> str:
    """`memories_by_speaker`: (speaker, lines already formatted with `format_memory`)."""
    blocks = []
    for speaker, lines in memories_by_speaker:
        body = "\n".join(lines) if lines else "(no memories)"
        blocks.append(f"Memories of {one_line(speaker)}:\n{body}")
    return "\n\n".join(blocks)


def render(question: str, memories_by_speaker: Sequence[tuple[str, Sequence[str]]]) -> list[Message]:
    user = memory_blocks(memories_by_speaker) + f"\n\nQuestion: {one_line(question)}"
    return few_shot(SYSTEM, [(EXAMPLE_USER, EXAMPLE_ASSISTANT)], user)
