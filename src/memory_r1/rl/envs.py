"""RL environments: prompts to sample from, and the outcome reward of a sampled response (paper section 2).

Answer Agent: reward = exact match of the parsed answer against the gold answer (the paper's choice; F1
and a format bonus are selectable). Memory Manager: the sampled operations are applied to a fork of the
bank snapshot taken just before the turn; a FROZEN Answer Agent answers the questions linked to the turn
from that bank, and the reward is their mean EM (or F1). The metrics are the evaluation's own
(`eval.metrics`), so a reward can never drift from what the evaluation reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from memory_r1.agents import AnswerAgent, MemoryManager, apply_operations
from memory_r1.agents.manager import ManagerPrompt
from memory_r1.agents.parsing import parse_answer
from memory_r1.bank import SQLiteStore
from memory_r1.eval.metrics import exact_match, f1_score
from memory_r1.llm.base import Message
from memory_r1.records import Conversation, Event, Fact, Provenance, owner_id
from memory_r1.rl.datasets import DEFAULT_WINDOW, AnswerExample, ManagerExample, open_snapshot, window_filter

Reward = Literal["em", "f1"]


@dataclass(frozen=True)
class Scored:
    reward: float
    parsed: bool  # the output had the expected format
    detail: dict[str, object]


class AnswerEnv:
    """Training tuples (question, retrieved memories, gold) from `memory-r1 data build-answer`.

    `prompts` replaces the examples' stored prompts (the trainer re-renders them with fewer memories per
    speaker); the reward parses each output against its own prompt's numbers.
    """

    def __init__(self, examples: Sequence[AnswerExample], reward: Reward = "em", format_bonus: float = 0.0,
                 prompts: dict[str, tuple[list[Message], int]] | None = None):
        self.examples = list(examples)
        self.reward = reward
        self.format_bonus = format_bonus
        self.prompts = prompts or {}

    def messages(self, example: AnswerExample) -> list[Message]:
        return self.prompts[example.key][0] if example.key in self.prompts else example.messages

    def score(self, example: AnswerExample, outputs: Sequence[str]) -> list[Scored]:
        n = self.prompts[example.key][1] if example.key in self.prompts else len(example.memory_ids)
        scored = []
        for text in outputs:
            parsed = parse_answer(text, range(1, n + 1))
            metric = exact_match if self.reward == "em" else f1_score
            value = metric(parsed.answer, example.gold)
            ok = parsed.error is None
            scored.append(Scored(value + (self.format_bonus if ok else 0.0), ok, {"answer": parsed.answer}))
        return scored


class ManagerEnv:
    """Training tuples (bank before the turn, the turn's facts, linked questions) from
    `data build-manager`."""

    def __init__(
        self,
        dataset_dir: Path,
        examples: Sequence[ManagerExample],
        conversation: Conversation,
        manager: MemoryManager,
        answerer: AnswerAgent,
        *,
        window: int = DEFAULT_WINDOW,
        unparsable_penalty: float = -0.25,
        reward: Reward = "em",
    ):
        self.dataset_dir = Path(dataset_dir)
        self.examples = list(examples)
        self.conversation = conversation
        self.manager = (
            manager  # used for its prompt building and parsing only: the policy is sampled elsewhere
        )
        self.answerer = answerer  # frozen; any backend
        self.window = window
        self.unparsable_penalty = unparsable_penalty
        self.metric = exact_match if reward == "em" else f1_score
        self._prompts: dict[str, ManagerPrompt] = {}

    def _bank(self, example: ManagerExample) -> SQLiteStore:
        bank = open_snapshot(self.dataset_dir, example)
        window_filter(bank, self.conversation, example.position, self.window)
        return bank

    def _facts(self, example: ManagerExample) -> list[Fact]:
        return [Fact(text, example.owner, example.timestamp, None,
                     (example.dia_id,)) for text in example.facts]

    def prompt(self, example: ManagerExample) -> ManagerPrompt:
        key = example.dia_id
        if key not in self._prompts:
            with self._bank(example) as bank:
                self._prompts[key] = self.manager.build_prompt(bank, example.owner, self._facts(example))
        return self._prompts[key]

    def messages(self, example: ManagerExample) -> list[Message]:
        return self.prompt(example).messages

    def score(self, example: ManagerExample, outputs: Sequence[str]) -> list[Scored]:
        """Apply each sampled decision to its own fork, then let the frozen Answer Agent answer every
        (decision, question) pair through its own answer step, in one batched generation."""
        built = self.prompt(example)
        owners = [(s, owner_id(self.conversation.sample_id, s)) for s in self.conversation.speakers]
        questions = [q.question for q in example.questions]
        forks, decisions = [], []
        for text in outputs:
            operations = self.manager.parse(built, text)
            bank = self._bank(example)
            apply_operations(bank, self.manager.embedder, example.owner, operations, self._facts(example),
                             Provenance("rollout", "policy", self.manager.provenance.prompt_version))
            forks.append(bank)
            decisions.append(operations)
        prompts = [p for bank in forks for p in self.answerer.build_prompts(bank, questions, owners)]
        answers = self.answerer.answer_prompts(questions * len(forks), prompts)
        scored = []
        for i, (bank, operations) in enumerate(zip(forks, decisions, strict=True)):
            unparsable = any(op.unparsable for op in operations)
            block = [a.answer for a in answers[i * len(questions) : (i + 1) * len(questions)]]
            values = [self.metric(a, q.gold) for a, q in zip(block, example.questions, strict=True)]
            reward = self.unparsable_penalty if unparsable else sum(values) / max(len(values), 1)
            counts = {e.value: sum(op.event is e for op in operations) for e in Event}
            scored.append(Scored(reward, not unparsable, {"operations": counts, "answers": block}))
            bank.close()
        return scored
