"""RL training tuples built from real LoCoMo turns with a scripted teacher (exact, assertable banks)."""

import json

import pytest

from memory_r1.agents.manager import DEFAULT_PROTOCOL
from memory_r1.data import get_conversation, load_locomo, questions_by_turn, select_sessions
from memory_r1.rl.datasets import (
    FORMAT,
    AnswerExample,
    ManagerExample,
    build_answer_dataset,
    build_manager_dataset,
    load_examples,
    open_snapshot,
    window_filter,
)


@pytest.fixture(scope="module")
def conv26(locomo_path):
    return select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1, 2})


def test_manager_dataset_snapshots_the_bank_before_each_linked_turn(conv26, tmp_path, scripted, make_system):
    teacher = make_system(scripted(), bank=tmp_path / "teacher.db")
    examples = build_manager_dataset(teacher, conv26, tmp_path / "ds")
    linked = {d for d, qs in questions_by_turn(conv26).items() if any(q.answer is not None for q in qs)}
    assert {e.dia_id for e in examples} == linked & {t.dia_id for t in conv26.turns}
    for example in examples:
        with open_snapshot(tmp_path / "ds", example) as bank:
            # the scripted teacher adds one memory per turn: the snapshot holds exactly the earlier turns
            assert bank.count() == example.position
            assert example.dia_id not in {s for m in bank.list() for s in m.source_turn_ids}
        assert example.facts and example.questions
    rows = load_examples(tmp_path / "ds" / "manager.jsonl", ManagerExample)
    assert rows == examples and rows[0].bank.startswith("banks/")  # read back through the typed record
    header = json.loads((tmp_path / "ds" / "manager.jsonl").read_text().splitlines()[0])
    assert header["format"] == FORMAT and header["settings"]["prompts"]["manage"] == DEFAULT_PROTOCOL


def test_window_hides_old_memories_in_the_fork_only(conv26, tmp_path, scripted, make_system):
    teacher = make_system(scripted(), bank=tmp_path / "teacher.db")
    examples = build_manager_dataset(teacher, conv26, tmp_path / "ds")
    late = max(examples, key=lambda e: e.position)
    fork = open_snapshot(tmp_path / "ds", late)
    hidden = window_filter(fork, conv26, late.position, window=10)
    assert hidden == late.position - 10 and fork.count() == 10
    with open_snapshot(tmp_path / "ds", late) as again:
        assert again.count() == late.position  # the snapshot file itself is untouched


def test_reusing_a_teacher_bank_without_snapshots_is_refused(conv26, tmp_path, scripted, make_system):
    teacher = make_system(scripted(), bank=tmp_path / "teacher.db")
    teacher.ingest(conv26)
    with pytest.raises(ValueError, match="fresh"):
        build_manager_dataset(teacher, conv26, tmp_path / "ds")


def test_answer_dataset_rows_carry_prompt_memories_and_gold(conv26, tmp_path, scripted, make_system):
    system = make_system(scripted(), bank=tmp_path / "bank.db")
    examples = build_answer_dataset(system, conv26, tmp_path / "ds")
    assert len(examples) == len([q for q in conv26.qa if q.answer is not None and q.category != 5])
    first = examples[0]
    assert first.messages[-1]["content"].endswith(f"Question: {first.question}")
    assert len(first.memory_ids) == min(60, system.store.count())
    assert load_examples(tmp_path / "ds" / "answer.jsonl", AnswerExample)[0] == first


def test_load_examples_rejects_other_files(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"format": "something-else"}\n')
    with pytest.raises(ValueError, match="not a memory-r1 dataset"):
        load_examples(path, AnswerExample)


@pytest.mark.parametrize("reward", ["em", "f1"])
def test_manager_reward_is_the_frozen_answerers_score_on_each_fork(conv26, tmp_path, scripted, make_system,
                                                                   reward):
    from memory_r1.agents import AnswerAgent, ManagerConfig, MemoryManager
    from memory_r1.embeddings import HashingEmbedder
    from memory_r1.rl.envs import ManagerEnv

    teacher = make_system(scripted(), bank=tmp_path / "teacher.db")
    build_manager_dataset(teacher, conv26, tmp_path / "ds")
    example = load_examples(tmp_path / "ds" / "manager.jsonl", ManagerExample)[0]
    golds = {q.question: q.gold for q in example.questions}

    def half_right(messages):  # the first word of the gold answer plus one wrong word
        question = next(q for q in golds if q in messages[-1]["content"])
        return f"**Answer:** {golds[question].split()[0]} zebra"

    embedder = HashingEmbedder()
    env = ManagerEnv(tmp_path / "ds", [example], conv26,
                     MemoryManager(scripted(), embedder, ManagerConfig(prompt_version="manage-v1")),
                     AnswerAgent(scripted(half_right), embedder), reward=reward)
    add = json.dumps({"memory": [{"id": "0", "text": example.facts[0], "event": "ADD"}]})
    good, garbage = env.score(example, [add, "no json here"])
    from memory_r1.eval.metrics import exact_match, f1_score

    metric = exact_match if reward == "em" else f1_score
    expected = sum(metric(f"{g.split()[0]} zebra", g) for g in golds.values()) / len(golds)
    assert good.reward == pytest.approx(expected) and good.parsed and good.detail["operations"]["ADD"] == 1
    assert garbage.reward == -0.25 and not garbage.parsed
    if reward == "f1":
        assert 0 < good.reward < 1  # partial overlap is rewarded, unlike exact match
