"""Memory Manager prompts that ask for one decision per fact (manage-v2: JSON, manage-v3: one line each).

Why: the paper's Mem0-style format (`manage.py`, manage-v1) asks the model to re-emit every shown memory
with an event and to invent ids for new facts; small models confuse the two (they re-ADD shown memories,
give a new fact an id and then DELETE that id). Here each new fact carries its own label (F1, F2, ...),
each memory its own (M1, M2, ...), and the model writes one decision per fact naming the memory it acts
on. Nothing is lost: ADD, UPDATE (with merged text), DELETE and NONE can target the same memories, and
ADD or UPDATE may still give their own text. The worked example shows all four events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from memory_r1.llm.base import Message
from memory_r1.prompts import few_shot

VERSION_JSON = "manage-v2"
VERSION_LINES = "manage-v3"

_RULES = """You keep the memory of one person up to date. You see their memories, each with an id (M1, M2, ...), and new facts, each with a number (F1, F2, ...).
Decide once for every fact:
- ADD: the fact is new information.
- UPDATE: the fact adds detail to or changes memory M?: name it and write the merged text.
- DELETE: the fact shows memory M? is no longer true: name it.
- NONE: memory M? already says it, or the fact is small talk not worth keeping.
Only memories you name can change."""

SYSTEM_JSON = (
    _RULES
    + """
Reply with JSON only: {"decisions": [{"fact": "F1", "event": "ADD|UPDATE|DELETE|NONE", "memory": "M1", "text": "..."}]}"""
)

SYSTEM_LINES = (
    _RULES
    + """
Reply with one line per fact and nothing else: "F1: ADD", "F2: UPDATE M1: merged text", "F3: DELETE M2", "F4: NONE M3"."""
)

_MEMORIES = ["Alex lives in Boston.", "Alex has a dog named Biscuit.", "Alex plays tennis every week."]
_FACTS = ["Alex moved to Denver in May 2022.", "Alex has a dog named Biscuit.",
          "Alex stopped playing tennis.", "Alex started learning guitar."]
_DECISIONS = [
    {
        "fact": "F1",
        "event": "UPDATE",
        "memory": "M1",
        "text": "Alex moved from Boston to Denver in May 2022.",
    },
    {"fact": "F2", "event": "NONE", "memory": "M2"},
    {"fact": "F3", "event": "DELETE", "memory": "M3"},
    {"fact": "F4", "event": "ADD"},
]
_EMPTY_FACTS = ["Sam works as a nurse.", "Thanks, see you soon!"]
_EMPTY_DECISIONS = [{"fact": "F1", "event": "ADD"}, {"fact": "F2", "event": "NONE"}]


def memory_label(index: int) -> str:
    """The id the model sees for the index-th shown memory."""
    return f"M{index + 1}"


def user_message(memories: Sequence[tuple[str, str]], facts: Sequence[str]) -> str:
    shown = "\n".join(f"{label}: {text}" for label, text in memories) or "(none)"
    listed = "\n".join(f"F{i}: {text}" for i, text in enumerate(facts, 1))
    return f"Memories:\n{shown}\nNew facts:\n{listed}"


def _line(decision: dict) -> str:
    parts = f"{decision['fact']}: {decision['event']}"
    if "memory" in decision:
        parts += f" {decision['memory']}"
    if decision["event"] == "UPDATE":
        parts += f": {decision['text']}"
    return parts


def _examples(as_json: bool) -> list[tuple[str, str]]:
    pairs = [(_MEMORIES, _FACTS, _DECISIONS), ([], _EMPTY_FACTS, _EMPTY_DECISIONS)]
    examples = []
    for memories, facts, decisions in pairs:
        user = user_message([(memory_label(i), t) for i, t in enumerate(memories)], facts)
        reply = json.dumps({"decisions": decisions}) if as_json else "\n".join(_line(d) for d in decisions)
        examples.append((user, reply))
    return examples


def render_json(memories: Sequence[tuple[str, str]], facts: Sequence[str]) -> list[Message]:
    """`memories` are (label, text) pairs as shown to the model, labels from `memory_label`."""
    return few_shot(SYSTEM_JSON, _examples(True), user_message(memories, facts))


def render_lines(memories: Sequence[tuple[str, str]], facts: Sequence[str]) -> list[Message]:
    return few_shot(SYSTEM_LINES, _examples(False), user_message(memories, facts))


def decisions_schema() -> dict:
    """JSON schema of a manage-v2 reply, for servers that constrain decoding to a schema. One schema for
    every prompt (memory ids by pattern, not by list), so batching never splits on it."""
    decision = {
        "type": "object",
        "properties": {
            "fact": {"type": "string", "pattern": "^F[0-9]+$"},
            "event": {"enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
            "memory": {"type": "string", "pattern": "^M[0-9]+$"},
            "text": {"type": "string"},
        },
        "required": ["fact", "event"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {"decisions": {"type": "array", "items": decision}},
            "required": ["decisions"], "additionalProperties": False}
