"""LongMemEval's task-specific judge criteria, in our own words (Wu et al., ICLR 2025, section 5 / appendix).

LongMemEval grades with an LLM and a different rule per question type: most types need the response to
contain the reference (or every step to reach it); temporal questions forgive an off-by-one day count;
knowledge-update questions accept old facts beside the updated one; preference questions are graded
against a rubric of what a personalised reply should do; abstention questions are correct only when the
response says the history does not hold the answer. The criteria follow the benchmark; the wording and the
output format are ours: the same one-sentence-then-JSON label as `prompts.judge`, so one tolerant parser
(`eval.judge.parse_judgement`) reads every judge.
"""

from __future__ import annotations

from memory_r1.llm.base import Message

VERSION = "judge-longmemeval-v1"

ABSTENTION = "abstention"

_COMMON = (
    "You check a chat assistant's answer to a question about its long conversation history with a user. "
    "You get the question, a reference and the assistant's response."
)
_FORMAT = (
    'Reply with one sentence explaining your decision, then a JSON object on its own line: '
    '{"label": "CORRECT"} or {"label": "WRONG"}.'
)
_RULES = {
    "default": (
        "CORRECT if the response states the reference answer, says something equivalent, or gives every "
        "step needed to arrive at it. WRONG if it gives only part of what the reference requires, another "
        "answer, or no answer."
    ),
    "temporal-reasoning": (
        "CORRECT if the response states the reference answer, says something equivalent, or gives every "
        "step needed to arrive at it. A count of days, weeks or months that is off by one from the "
        "reference still counts as CORRECT. WRONG if it gives only part of the answer, another answer, "
        "or no answer."
    ),
    "knowledge-update": (
        "The user's information changed over time and the reference is the latest value. CORRECT if the "
        "response gives that latest value, even when it also mentions older values. WRONG if it gives "
        "only an outdated value, another answer, or no answer."
    ),
    "single-session-preference": (
        "The reference is a rubric describing what a reply tailored to this user should do. CORRECT if "
        "the response follows the rubric and uses what it knows about the user; it need not cover every "
        "point. WRONG if it ignores the user's known preferences or contradicts the rubric."
    ),
    ABSTENTION: (
        "The history does NOT contain the information asked for; the reference explains what is missing. "
        "CORRECT if the response says it cannot answer, that the information was never given, or that "
        "only related but different information is known. WRONG if it answers the question as if the "
        "information were known."
    ),
}
TASKS: tuple[str, ...] = tuple(_RULES)


def task_for(question_type: str | None, abstention: bool) -> str:
    """Which rule grades a question: abstention first (it cuts across the types), then the type."""
    if abstention:
        return ABSTENTION
    return question_type if question_type in _RULES else "default"


def prompt_version(task: str) -> str:
    """Recorded with (and part of the cache key of) every judgement: one version per rule."""
    return f"{VERSION}/{task}"


def render(task: str, question: str, reference: str, response: str) -> list[Message]:
    rule = _RULES.get(task)
    if rule is None:
        raise ValueError(f"unknown LongMemEval judge task {task!r}; choose one of {', '.join(TASKS)}")
    reference_label = "Rubric" if task == "single-session-preference" else "Reference"
    system = f"{_COMMON}\n{rule}\n{_FORMAT}"
    user = f"Question: {question}\n{reference_label}: {reference}\nResponse: {response}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
