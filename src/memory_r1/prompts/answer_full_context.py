"""Answer prompt for the `full-context` baseline: the whole conversation (as much as fits) instead of memories."""

from __future__ import annotations

from memory_r1.llm.base import Message
from memory_r1.prompts import one_line
from memory_r1.prompts.answer import ANSWER_MARKER

VERSION = "answer-full-context-v2"

SYSTEM = f"""You answer questions about a long conversation between two people, given as dated sessions.
Write {ANSWER_MARKER} followed by a short answer of at most six words, and nothing else.
Tips: check the session dates; if two statements disagree, trust the newer one; turn relative times ("last year") into dates using the session date; do not mix up the two people."""


def render_session(timestamp: str, lines: list[str]) -> str:
    """One dated session block; each line (a rendered turn) stays one line."""
    return f"Session on {one_line(timestamp)}:\n" + "\n".join(one_line(line) for line in lines)


def render(question: str, transcript: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{transcript}\n\nQuestion: {one_line(question)}"},
    ]
