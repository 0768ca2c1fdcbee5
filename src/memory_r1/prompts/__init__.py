"""Versioned prompt templates, rendered by pure functions.

Each module holds one prompt: its `VERSION` (recorded in every history row and result) and a `render`
function that returns chat messages. Change the wording -> bump the version. All text is our own.

Structure is the template's alone: every value a template puts on one line (a memory, a turn, a question,
a speaker name, a date) goes through `one_line`, so no text can start a new memory line, speaker block,
"Question:" or "Line:" header. JSON-encoded values (the manager prompt) are safe by construction. The
chat control tokens are neutralised by the backends (`memory_r1.llm.base.neutralise_control_tokens`).
The -v2 versions of extract/answer/answer-direct/answer-full-context/judge differ from -v1 only there:
a line break inside a value is now a space (37 LoCoMo turns contain one).
"""

import re
from collections.abc import Sequence

from memory_r1.llm.base import Message
from memory_r1.records import clean_text

_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def one_line(text: str) -> str:
    """`text` as a single line: every run of whitespace holding a line break (any of those
    `str.splitlines` knows) becomes one space; text without one is returned unchanged."""
    return _LINE_BREAKS.sub(" ", clean_text(text)).strip() if _LINE_BREAKS.search(text) else clean_text(text)


def few_shot(system: str, examples: Sequence[tuple[str, str]], user: str) -> list[Message]:
    """System prompt, worked examples as earlier (user, assistant) turns, then the real request: small models
    copy a format they have just seen far more reliably than one they were only told about."""
    messages: list[Message] = [{"role": "system", "content": system}]
    for example_user, example_assistant in examples:
        messages += [{"role": "user", "content": example_user},
                     {"role": "assistant", "content": example_assistant}]
    return messages + [{"role": "user", "content": user}]
