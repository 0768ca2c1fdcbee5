"""One tolerant parser for everything the models write.

Tolerant about form (code fences, prose around the JSON, a single object instead of a list, lowercase
events, NOOP spelled NONE), strict about meaning: an operation that names an id the model was not shown,
or lacks the text it needs, becomes a NOOP with a reason. Nothing here raises on model output: every
failure is returned as data, so a bad generation can never crash an ingest or lose a memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memory_r1.prompts.answer import ANSWER_MARKER
from memory_r1.records import Event, Operation, Rejection

_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def find_json(text: str) -> Any | None:
    """The first JSON object or array in `text` (inside code fences first), or None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char not in "{[":
                continue
            try:
                value, _ = _DECODER.raw_decode(candidate, start)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, (dict, list)):
                return value
    return None


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class ParsedFacts:
    facts: tuple[str, ...]
    error: str | None = None  # set when the output had no usable structure


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


def parse_facts(text: str) -> ParsedFacts:
    """Facts from `{"facts": [...]}`, a bare JSON list, or a bulleted/numbered list."""
    value = find_json(text)
    if isinstance(value, dict):
        value = value.get("facts", value.get("fact"))
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        facts = tuple(_clean(item) for item in value if isinstance(item, str) and _clean(item))
        return ParsedFacts(facts)
    salvaged = _salvage_strings(text, key="facts")
    if salvaged:
        return ParsedFacts(salvaged, error="malformed JSON: kept the complete facts")
    bullets = tuple(m.group(1) for line in text.splitlines() if (m := _BULLET.match(line)))
    if bullets:
        return ParsedFacts(bullets)
    return ParsedFacts((), error="no JSON facts list or bulleted list in output")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _salvage_strings(text: str, key: str) -> tuple[str, ...]:
    """Complete string items of a `"key": [...]` list whose JSON is broken (cut off at the token limit,
    a stray bracket): small models often get the content right and the syntax wrong."""
    start = text.find(f'"{key}"')
    bracket = text.find("[", start) if start >= 0 else -1
    if bracket < 0:
        return ()
    items = []
    for match in _JSON_STRING.finditer(text, bracket):
        try:
            item = _clean(json.loads(match.group(0)))
        except json.JSONDecodeError:
            continue
        if item:
            items.append(item)
    return tuple(items)


def _clean(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- memory operations

_EVENT_ALIASES = {
    "ADD": Event.ADD,
    "UPDATE": Event.UPDATE,
    "DELETE": Event.DELETE,
    "NONE": Event.NOOP,
    "NOOP": Event.NOOP,
    "NO-OP": Event.NOOP,
    "NO_OP": Event.NOOP,
}


def parse_operations(text: str, shown_ids: Mapping[str, int],
                     shown_texts: Mapping[int, str]) -> list[Operation]:
    """Resolve the manager's output to operations on store ids.

    `shown_ids` maps the short ids the model saw to store ids; `shown_texts` maps store ids to their text.
    The result is never empty: an output with nothing usable yields one NOOP carrying the reason.
    """
    items = _operation_items(find_json(text))
    if items is None:
        return [Operation(Event.NOOP, reason="unparsable output: no JSON with a 'memory' list",
                          rejection=Rejection.UNPARSABLE)]
    return _resolve_all(items, shown_ids, shown_texts)


def _resolve_all(items: list[Any], shown_ids: Mapping[str, int],
                 shown_texts: Mapping[int, str]) -> list[Operation]:
    if not items:
        return [Operation(Event.NOOP, reason="model returned an empty memory list",
                          rejection=Rejection.EMPTY)]
    operations: list[Operation] = []
    touched: set[int] = set()
    known_texts = {_key(t) for t in shown_texts.values()}
    for item in items:
        op = _resolve(item, shown_ids, shown_texts, known_texts, touched)
        if op.event is not Event.NOOP and op.memory_id is not None:
            touched.add(op.memory_id)
        if op.event is Event.ADD and op.text:
            known_texts.add(_key(op.text))
        operations.append(op)
    return operations


def _operation_items(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        if "memory" in value:
            inner = value["memory"]
            return inner if isinstance(inner, list) else [inner]
        if "event" in value:
            return [value]
        return None
    if isinstance(value, list):
        return value
    return None


def _resolve(
    item: Any,
    shown_ids: Mapping[str, int],
    shown_texts: Mapping[int, str],
    known_texts: set[str],
    touched: set[int],
) -> Operation:
    if not isinstance(item, dict):
        return Operation(Event.NOOP, reason=f"operation is not an object: {excerpt(item)}",
                         rejection=Rejection.NOT_OBJECT)
    event = _EVENT_ALIASES.get(str(item.get("event", "")).strip().upper())
    if event is None:
        return Operation(Event.NOOP, reason=f"unknown event {excerpt(item.get('event'))}",
                         rejection=Rejection.UNKNOWN_EVENT)
    text = item.get("text")
    text = _clean(text) if isinstance(text, str) else ""
    old = item.get("old_memory")
    old = old if isinstance(old, str) else None
    raw_id = item.get("id")
    memory_id = shown_ids.get(str(raw_id).strip()) if raw_id is not None else None

    if event is Event.ADD:
        if not text:
            return Operation(Event.NOOP, reason="ADD without text", rejection=Rejection.MISSING_TEXT)
        if _key(text) in known_texts:
            return Operation(Event.NOOP, text=text, reason="ADD of a memory already stored",
                             rejection=Rejection.DUPLICATE_ADD)
        return Operation(Event.ADD, text=text)
    if event is Event.NOOP:
        return Operation(Event.NOOP, memory_id=memory_id)
    if memory_id is None:
        return Operation(Event.NOOP, text=text or None,
                         reason=f"{event.value} of unknown id {excerpt(raw_id)}",
                         rejection=Rejection.UNKNOWN_ID)
    if memory_id in touched:
        return Operation(Event.NOOP, memory_id=memory_id, text=text or None,
                         reason=f"second {event.value} of the same memory", rejection=Rejection.SECOND_CHANGE)
    if event is Event.DELETE:
        return Operation(Event.DELETE, memory_id=memory_id, old_text=old)
    if not text:
        return Operation(Event.NOOP, memory_id=memory_id, reason="UPDATE without text",
                         rejection=Rejection.MISSING_TEXT)
    if _key(text) == _key(shown_texts[memory_id]):
        return Operation(Event.NOOP, memory_id=memory_id, reason="UPDATE leaves the text unchanged",
                         rejection=Rejection.UNCHANGED)
    return Operation(Event.UPDATE, memory_id=memory_id, text=text, old_text=old)


def parse_decisions(
    text: str, shown_ids: Mapping[str, int], shown_texts: Mapping[int, str], facts: Sequence[str]
) -> list[Operation]:
    """Resolve a per-fact decision list (manage-v2): `{"decisions": [{"fact": "F1", "event": ..., "memory":
    "M2", "text": ...}]}`. A decision names the fact it is about and the memory it acts on; ADD takes the
    fact's own text unless it gives one, UPDATE likewise (the fact replaces the memory's text). The
    same rules as `parse_operations` then apply, so both protocols can express exactly the same operations.
    """
    value = find_json(text)
    if isinstance(value, dict):
        value = value.get("decisions", value.get("decision", [value] if "event" in value else None))
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [Operation(Event.NOOP, reason="unparsable output: no JSON with a 'decisions' list",
                          rejection=Rejection.UNPARSABLE)]
    items = [_as_operation_item(item, facts) if isinstance(item, dict) else item for item in value]
    return _resolve_all(items, shown_ids, shown_texts)


_DECISION_LINE = re.compile(
    r"^\W*(?:F(?P<fact>\d+)\W+)?(?P<event>ADD|UPDATE|DELETE|NONE|NOOP|NO-OP)\b"
    r"(?:\W+(?P<memory>M\d+)\b)?\s*[:\-=]?\s*(?P<text>.*?)\s*$",
    re.IGNORECASE,
)


def parse_decision_lines(
    text: str, shown_ids: Mapping[str, int], shown_texts: Mapping[int, str], facts: Sequence[str]
) -> list[Operation]:
    """Resolve one decision per line (manage-v3): `F1: ADD`, `F2: UPDATE M1: merged text`, `F3: DELETE M2`,
    `F4: NONE M3`. Lines that are not decisions are skipped; an output with no decision line is unparsable."""
    items: list[Any] = []
    for line in text.splitlines():
        match = _DECISION_LINE.match(line)
        if match:
            items.append(_as_operation_item({"fact": match["fact"], "event": match["event"],
                                             "memory": match["memory"], "text": match["text"]}, facts))
    if not items:
        return [Operation(Event.NOOP, reason="unparsable output: no decision line",
                          rejection=Rejection.UNPARSABLE)]
    return _resolve_all(items, shown_ids, shown_texts)


def _as_operation_item(item: Mapping[str, Any], facts: Sequence[str]) -> dict[str, Any]:
    """A per-fact decision in the shape `_resolve` reads: the memory label becomes the id, and a missing
    text for ADD or UPDATE is the fact's own."""
    label = str(item.get("fact", "") or "").strip().upper().lstrip("F")
    fact = facts[int(label) - 1] if label.isdecimal() and 1 <= int(label) <= len(facts) else None
    given = item.get("text")
    text = given if isinstance(given, str) and given.strip() else fact
    memory = item.get("memory", item.get("id"))
    memory = str(memory).strip().upper() if memory not in (None, "") else None
    if memory and memory.isdigit():  # "1" for "M1": the label's letter is the part small models drop
        memory = f"M{memory}"
    return {"event": item.get("event", ""), "id": memory, "text": text}


def _key(text: str) -> str:
    return _clean(text).lower().rstrip(".")


def excerpt(value: Any, limit: int = 40) -> str:
    """A short repr for error messages: model output can be arbitrarily long."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class ParsedAnswer:
    answer: str
    selected_numbers: tuple[int, ...]  # memory numbers as shown in the prompt, in order, unique
    error: str | None = None


_MARKER = re.compile(r"\*{0,2}\s*\banswer(?:\s+is)?\s*\*{0,2}\s*:\s*\*{0,2}", re.IGNORECASE)
_NUMBER = re.compile(r"\[(\d{1,4})\]")


def parse_answer(text: str, valid_numbers: range | set[int]) -> ParsedAnswer:
    """Split the Answer Agent's single generation into distilled memories and the final answer.

    The answer follows the last "**Answer:**" (bold optional, any case) and ends at the line's end.
    Without a marker the last non-empty line is taken as the answer and the miss is reported.
    """
    matches = list(_MARKER.finditer(text))
    if matches:
        head, tail = text[: matches[-1].start()], text[matches[-1].end() :]
        answer, error = _first_line(tail), None
        if not answer:
            error = f"empty answer after {ANSWER_MARKER}"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        head = "\n".join(lines[:-1])
        answer = _first_line(lines[-1]) if lines else ""
        error = f"no {ANSWER_MARKER} marker in output"
    numbers: list[int] = []
    for match in _NUMBER.finditer(head):
        number = int(match.group(1))
        if number in valid_numbers and number not in numbers:
            numbers.append(number)
    return ParsedAnswer(answer, tuple(numbers), error)


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip().strip("*").strip()
        if line:
            return line
    return ""
