"""LLM-as-a-Judge prompt for the J metric (reference notes, sections 1 and 4).

Generous grading, as in the harness the paper follows: a prediction is CORRECT when it points at the same
thing as the gold answer, even if worded differently, longer, or a date written in another format. The
judge writes one sentence of reasoning, then a JSON label that `memory_r1.eval.judge` parses.
"""

from __future__ import annotations

from memory_r1.llm.base import Message
from memory_r1.prompts import one_line

VERSION = "judge-v2"

LABELS = ("CORRECT", "WRONG")

SYSTEM = """You grade answers to questions about a long conversation. You get the question, the reference answer and a predicted answer.
Grade generously:
- CORRECT if the predicted answer is about the same thing as the reference answer, even when it uses other words, adds details, or is longer.
- For dates and times: CORRECT if it names the same day, month or period, written in any format ("7 May 2023", "May 7, 2023", "2023-05-07").
- WRONG if it names something else, a different date, misses the point, or says it does not know.
Reply with exactly one sentence explaining your decision, then a JSON object on its own line: {"label": "CORRECT"} or {"label": "WRONG"}."""


def render(question: str, gold: str, prediction: str) -> list[Message]:
    user = (
        f"Question: {one_line(question)}\nReference answer: {one_line(gold)}\n"
        f"Predicted answer: {one_line(prediction)}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
