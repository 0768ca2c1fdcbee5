"""Fact extraction (paper section 1: Mem0-style extraction of key facts from each dialogue turn)."""

from __future__ import annotations

from memory_r1.llm.base import Message
from memory_r1.prompts import few_shot, one_line

VERSION = "extract-v2"

SYSTEM = """You turn one line of a chat into short facts worth remembering about the person who said it.
Rules:
- Each fact is one short sentence that starts with the speaker's name.
- Keep names, places, objects, feelings and plans. Turn relative times ("yesterday", "last year") into dates using the chat date.
- Skip greetings and small talk. If nothing is worth remembering, return an empty list.
- Reply with JSON only: {"facts": ["...", "..."]}"""

EXAMPLE_USER = """Chat date: 10:00 am on 3 March, 2022
Previous line: Sam: How was your weekend?
Line: Alex: Great! I adopted a puppy named Biscuit yesterday."""

EXAMPLE_ASSISTANT = (
    '{"facts": ["Alex adopted a puppy named Biscuit on 2 March 2022.", "Alex has a dog named Biscuit."]}'
)


def render(line: str, timestamp: str, previous_line: str | None = None) -> list[Message]:
    user = f"Chat date: {one_line(timestamp)}\n"
    if previous_line:
        user += f"Previous line: {one_line(previous_line)}\n"
    user += f"Line: {one_line(line)}"
    return few_shot(SYSTEM, [(EXAMPLE_USER, EXAMPLE_ASSISTANT)], user)
