"""Memory Manager prompt (paper section 1, step 2; output format as in the paper's Mem0-style prompt).

The model sees the speaker's most similar existing memories under short ids ("0", "1", ...) instead of
store ids: small models copy short ids far more reliably, and the agent maps them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from memory_r1.llm.base import Message
from memory_r1.prompts import few_shot

VERSION = "manage-v1"

SYSTEM = """You keep the memory of one person up to date. You get their current memories and some new facts.
For each new fact choose one event:
- ADD: the fact is new. Give it as "text".
- UPDATE: the fact adds to or changes an existing memory. Keep that memory's "id" and write the merged "text"; put the previous text in "old_memory".
- DELETE: the fact shows an existing memory is no longer true. Give that memory's "id".
- NONE: the fact is already known or not worth keeping.
Never change a memory that no fact is about.
Reply with JSON only: {"memory": [{"id": "...", "text": "...", "event": "ADD|UPDATE|DELETE|NONE", "old_memory": "..."}]}"""

EMPTY_EXAMPLE_USER = """Current memories:
[]
New facts:
["Sam works as a nurse.", "Sam has two cats."]"""

EMPTY_EXAMPLE_ASSISTANT = json.dumps(
    {
        "memory": [
            {"id": "0", "text": "Sam works as a nurse.", "event": "ADD"},
            {"id": "1", "text": "Sam has two cats.", "event": "ADD"},
        ]
    }
)

EXAMPLE_USER = """Current memories:
[{"id": "0", "text": "Alex lives in Boston."}, {"id": "1", "text": "Alex has a dog named Biscuit."}]
New facts:
["Alex moved to Denver in May 2022.", "Alex has a dog named Biscuit.", "Alex started learning guitar."]"""

EXAMPLE_ASSISTANT = json.dumps(
    {
        "memory": [
            {"id": "0", "text": "Alex moved from Boston to Denver in May 2022.", "event": "UPDATE",
             "old_memory": "Alex lives in Boston."},
            {"id": "1", "text": "Alex has a dog named Biscuit.", "event": "NONE"},
            {"id": "2", "text": "Alex started learning guitar.", "event": "ADD"},
        ]
    }
)


def render(memories: Sequence[tuple[str, str]], facts: Sequence[str]) -> list[Message]:
    """`memories` are (short id, text) pairs as shown to the model."""
    shown = json.dumps([{"id": i, "text": t} for i, t in memories], ensure_ascii=False)
    user = f"Current memories:\n{shown}\nNew facts:\n{json.dumps(list(facts), ensure_ascii=False)}"
    return few_shot(SYSTEM,
                    [(EXAMPLE_USER, EXAMPLE_ASSISTANT), (EMPTY_EXAMPLE_USER, EMPTY_EXAMPLE_ASSISTANT)], user)
