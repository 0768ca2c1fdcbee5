"""Versioned prompt templates, rendered by pure functions.

Each module holds one prompt: its `VERSION` (recorded in every history row and result) and a `render`
function that returns chat messages. Change the wording -> bump the version. All text is our own.
"""

from collections.abc import Sequence

from memory_r1.llm.base import Message


def few_shot(system: str, examples: Sequence[tuple[str, str]], user: str) -> list[Message]:
    """System prompt, worked examples as earlier (user, assistant) turns, then the real request: small models
    copy a format they have just seen far more reliably than one they were only told about."""
    messages: list[Message] = [{"role": "system", "content": system}]
    for example_user, example_assistant in examples:
        messages += [{"role": "user", "content": example_user}, {"role": "assistant", "content": example_assistant}]
    return messages + [{"role": "user", "content": user}]
