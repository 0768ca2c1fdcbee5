"""The Memory-R1 conversation split and the turn -> question link used for manager rewards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from memory_r1.data import (
    TEST_IDS,
    DatasetError,
    get_conversation,
    load_locomo,
    questions_by_turn,
    questions_for_turn,
    split_conversations,
    split_questions,
)
from memory_r1.records import Category, Conversation, QAItem, Session, Turn

LOCOMO_PATH = Path(__file__).parents[2].parent / "shared/data/locomo/locomo10.json"


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    if not LOCOMO_PATH.is_file():
        pytest.skip(f"real LoCoMo file not found at {LOCOMO_PATH}")
    return load_locomo(LOCOMO_PATH)


def per_category(items: list[QAItem]) -> dict[int, int]:
    return dict(sorted(Counter(int(q.category) for q in items).items()))


def test_split_conversation_ids(convs: list[Conversation]) -> None:
    assert [c.sample_id for c in split_conversations(convs, "train")] == ["conv-26"]
    assert [c.sample_id for c in split_conversations(convs, "val")] == ["conv-30"]
    test_ids = [c.sample_id for c in split_conversations(convs, "test")]
    assert test_ids == list(TEST_IDS) and len(test_ids) == 8
    assert sorted(["conv-26", "conv-30", *test_ids]) == sorted(c.sample_id for c in convs)
    assert split_conversations(convs, "all") == convs
    assert split_conversations(convs, "validation") == split_conversations(convs, "val")


def test_split_question_counts_match_paper(convs: list[Conversation]) -> None:
    train = split_questions(convs, "train")
    val = split_questions(convs, "val")
    test = split_questions(convs, "test")
    assert (len(train), len(val), len(test)) == (152, 81, 1307)
    assert per_category(train) == {1: 32, 2: 37, 3: 13, 4: 70}
    assert per_category(test) == {1: 239, 2: 258, 3: 83, 4: 727}
    assert 3 not in per_category(val)
    assert len(split_questions(convs, "all")) == 1540


def test_include_adversarial(convs: list[Conversation]) -> None:
    train = split_questions(convs, "train", include_adversarial=True)
    assert len(train) == len(get_conversation(convs, "conv-26").qa) == 199
    assert per_category(train)[5] == 47
    splits = ("train", "val", "test")
    assert sum(len(split_questions(convs, s, include_adversarial=True)) for s in splits) == 1986


def test_unknown_split(convs: list[Conversation]) -> None:
    with pytest.raises(DatasetError, match="unknown split 'dev-2'; choose one of train, val, test, all"):
        split_questions(convs, "dev-2")


def test_split_with_missing_conversation_is_an_error(convs: list[Conversation]) -> None:
    without_train = [c for c in convs if c.sample_id != "conv-26"]
    with pytest.raises(DatasetError, match="split 'train' needs conv-26, not in the loaded data"):
        split_conversations(without_train, "train")


# ---------------------------------------------------------------- turn -> questions


def _toy() -> Conversation:
    turns = tuple(Turn("Ann", f"D1:{i}", f"t{i}", 1, "9:00 am on 1 May, 2023") for i in (1, 2, 3))
    session = Session(1, "9:00 am on 1 May, 2023", None, turns)
    qa = (
        QAItem("toy", 0, "q0", "a0", Category.SINGLE_HOP, ("D1:1", "D1:2")),
        QAItem("toy", 1, "q1", None, Category.ADVERSARIAL, ("D1:1",), adversarial_answer="x"),
        QAItem("toy", 2, "q2", "a2", Category.TEMPORAL, ("D1:2",)),
        QAItem("toy", 3, "q3", "a3", Category.OPEN_DOMAIN, ()),
    )
    return Conversation("toy", "Ann", "Bob", (session,), qa)


def test_questions_for_turn_toy() -> None:
    conv = _toy()
    assert [q.index for q in questions_for_turn(conv, "D1:1")] == [0]
    assert [q.index for q in questions_for_turn(conv, "D1:1", include_adversarial=True)] == [0, 1]
    assert [q.index for q in questions_for_turn(conv, "D1:2")] == [0, 2]
    assert questions_for_turn(conv, "D1:3") == ()
    assert questions_for_turn(conv, "D9:9") == ()


def test_questions_by_turn_agrees_with_questions_for_turn(convs: list[Conversation]) -> None:
    conv = get_conversation(convs, "conv-26")
    for adversarial in (False, True):
        index = questions_by_turn(conv, include_adversarial=adversarial)
        for turn in conv.turns:
            assert index.get(turn.dia_id, ()) == questions_for_turn(conv, turn.dia_id, adversarial)


def test_questions_for_turn_real(convs: list[Conversation]) -> None:
    conv = get_conversation(convs, "conv-26")
    assert [q.index for q in questions_for_turn(conv, "D1:3")] == [0, 32]
    assert [q.index for q in questions_for_turn(conv, "D1:12")] == [1, 15, 51]
    assert questions_for_turn(conv, "D1:1") == ()
    linked = {q.index for t in conv.turns for q in questions_for_turn(conv, t.dia_id)}
    # every training question with evidence is reachable from some turn (two have none upstream)
    assert len(linked) == 150
    assert all(conv.qa[i].category is not Category.ADVERSARIAL for i in linked)
