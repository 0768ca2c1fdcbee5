"""The Memory-R1 split of LoCoMo, by conversation (reference notes, section 3).

The paper trains on one conversation, validates on one and tests on the remaining eight, always
excluding category 5 (adversarial). Splitting by conversation, not by question, keeps test dialogues
unseen during training. The ids are fixed here so every run uses the same split.
"""

from __future__ import annotations

from collections.abc import Sequence

from memory_r1.data.download import DatasetError
from memory_r1.records import Category, Conversation, QAItem

TRAIN_IDS: tuple[str, ...] = ("conv-26",)
VAL_IDS: tuple[str, ...] = ("conv-30",)
TEST_IDS: tuple[str, ...] = (
    "conv-41",
    "conv-42",
    "conv-43",
    "conv-44",
    "conv-47",
    "conv-48",
    "conv-49",
    "conv-50",
)
SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_IDS, "val": VAL_IDS, "test": TEST_IDS}
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test", "all")
_ALIASES = {"validation": "val", "dev": "val"}


def split_ids(split: str) -> tuple[str, ...] | None:
    """The sample ids of a split; None for "all". Unknown names raise DatasetError."""
    name = _ALIASES.get(split, split)
    if name == "all":
        return None
    if name not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    return SPLITS[name]


def split_conversations(conversations: Sequence[Conversation], split: str) -> list[Conversation]:
    """The conversations of a split, in split order.

    A conversation of the split that is missing from `conversations` is an error rather than a
    silently smaller split, which would make scores incomparable with the paper's.
    """
    ids = split_ids(split)
    if ids is None:
        return list(conversations)
    by_id = {c.sample_id: c for c in conversations}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DatasetError(
            f"split {split!r} needs {', '.join(missing)}, not in the loaded data "
            f"(have: {', '.join(by_id) or 'none'})"
        )
    return [by_id[i] for i in ids]


def split_questions(
    conversations: Sequence[Conversation], split: str, include_adversarial: bool = False
) -> list[QAItem]:
    """All QA items of a split; category 5 is left out unless asked for, as in the paper."""
    return [
        q
        for conv in split_conversations(conversations, split)
        for q in conv.qa
        if include_adversarial or q.category is not Category.ADVERSARIAL
    ]


def questions_by_turn(
    conv: Conversation, include_adversarial: bool = False
) -> dict[str, tuple[QAItem, ...]]:
    """Map each dia_id to the questions whose evidence cites it.

    This is the link the Memory Manager's reward needs: after processing a turn, the frozen Answer
    Agent answers exactly these questions. Build it once per conversation instead of scanning the
    QA list per turn.
    """
    index: dict[str, list[QAItem]] = {}
    for q in conv.qa:
        if include_adversarial or q.category is not Category.ADVERSARIAL:
            for dia_id in q.evidence:
                index.setdefault(dia_id, []).append(q)
    return {dia_id: tuple(items) for dia_id, items in index.items()}


def questions_for_turn(
    conv: Conversation, dia_id: str, include_adversarial: bool = False
) -> tuple[QAItem, ...]:
    """The questions whose evidence points at one turn (category 5 excluded by default)."""
    return tuple(
        q
        for q in conv.qa
        if dia_id in q.evidence and (include_adversarial or q.category is not Category.ADVERSARIAL)
    )
