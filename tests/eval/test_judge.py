"""The LLM judge: a tolerant label parser, and a Judge that batches, caches and records its judgements."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_r1.eval.judge import Judge, JudgeItem, cache_key, parse_judgement
from memory_r1.llm.base import GenerationError
from memory_r1.prompts import judge as judge_prompt

# ---------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ('Same date, other format.\n{"label": "CORRECT"}', "CORRECT"),
        ('Different city.\n```json\n{"label": "WRONG"}\n```', "WRONG"),
        ('{"label": "correct"}', "CORRECT"),
        ('{"Label": "Wrong"}', "WRONG"),
        ("{'label': 'CORRECT'}", "CORRECT"),  # single quotes: not JSON, read by the key pattern
        ('{"label": "INCORRECT"}', "WRONG"),
        ('{"label": "not correct"}', "WRONG"),
        ('{"label": "NOT_CORRECT"}', "WRONG"),
        ('[{"label": "CORRECT"}]', "CORRECT"),
        ('Reasoning first. {"label": "CORRECT", "reasoning": "x"} trailing words', "CORRECT"),
        ('{"label": "CORRECT"', "CORRECT"),  # cut off before the brace closes
        ("label: wrong", "WRONG"),
        ("Label = Correct", "CORRECT"),
        ("CORRECT", "CORRECT"),
        ("WRONG", "WRONG"),
        ("correct", "CORRECT"),  # the whole output is a verdict
        ("**Wrong.**", "WRONG"),
        ("INCORRECT", "WRONG"),
        ("The answer is INCORRECT.", "WRONG"),
        ("NOT CORRECT", "WRONG"),
        ("It is not CORRECT.", "WRONG"),
        ("It isn't CORRECT", "WRONG"),
        ("The prediction names the same place, so it is CORRECT.", "CORRECT"),
        ('The gold is WRONG in the dataset, but {"label": "CORRECT"}', "CORRECT"),  # JSON outranks prose
    ],
)
def test_parse_reads_labels(text, label):
    judgement = parse_judgement(text)
    assert (judgement.label, judgement.error) == (label, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I think the prediction is correct.",  # prose only: lower-case words are not trusted
        "CORRECT or WRONG",  # both verdicts, no key: ambiguous
        "It is CORRECT. Actually WRONG.",
        'The format is {"label": "CORRECT"} or {"label": "WRONG"}.',  # an echo of the instruction
        '{"label": "partially correct"}',
        '{"label": 1}',
        '{"answer": "Denver"}',  # JSON without a label key or verdict
        "{{{{[[[[",
        "```json\n```",
    ],
)
def test_parse_reports_unreadable_output(text):
    judgement = parse_judgement(text)
    assert judgement.label is None and judgement.error


def test_parse_keeps_reasoning():
    assert parse_judgement('Both name May 7.\n{"label": "CORRECT"}').reasoning == "Both name May 7."
    assert parse_judgement('{"label": "WRONG", "reasoning": "other city"}').reasoning == "other city"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text):
    judgement = parse_judgement(text)
    assert judgement.label in ("CORRECT", "WRONG", None)
    assert (judgement.label is None) == (judgement.error is not None)


# Fragments that can spell INCORRECT, NOT CORRECT or WRONG in many shapes, but never a bare "correct".
_NO_CORRECT = st.lists(
    st.sampled_from(
        ["INCORRECT", "incorrect", "In-correct", "NOT CORRECT", "not correct", "isn't CORRECT", "WRONG",
         "{", "}", "[", "]", '"label"', "'label'", "label", ":", "=", '"', "'", ",", ".", " ", "\n", "```",
         "json", "The prediction", "is", "NOT", "because"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_NO_CORRECT)
def test_incorrect_never_reads_as_correct(text):
    assert parse_judgement(text).label != "CORRECT"


_PROSE = st.text(st.characters(blacklist_characters="{}[]`\"'"), max_size=80).filter(
    lambda t: not re.search(r"label|correct|wrong", t, re.IGNORECASE)
)


@settings(max_examples=200, deadline=None)
@given(_PROSE, st.sampled_from(["CORRECT", "WRONG"]), st.sampled_from(["", "```json\n{}\n```", "{}"]))
def test_any_prose_around_a_json_label(prose, label, wrapper):
    body = json.dumps({"label": label})
    text = f"{prose}\n{wrapper.replace('{}', body) if wrapper else body}\n{prose}"
    assert parse_judgement(text).label == label


# ---------------------------------------------------------------- prompt


def test_prompt_is_versioned_and_carries_the_three_texts():
    messages = judge_prompt.render("When did Ana move?", "7 May 2023", "May 7, 2023")
    assert judge_prompt.VERSION == "judge-v2"
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(s in messages[-1]["content"] for s in ("When did Ana move?", "7 May 2023", "May 7, 2023"))
    assert "CORRECT" in messages[0]["content"] and "WRONG" in messages[0]["content"]
    assert messages == judge_prompt.render("When did Ana move?", "7 May 2023", "May 7, 2023")


# ---------------------------------------------------------------- Judge on a scripted generator


def _field(messages, name: str) -> str:
    return re.search(rf"^{name}: (.*)$", messages[-1]["content"], re.MULTILINE).group(1)


def grader(messages) -> str:
    """A fake judge: CORRECT when the prediction contains the gold's last word; garbage for '???'."""
    gold, prediction = _field(messages, "Reference answer"), _field(messages, "Predicted answer")
    if prediction == "???":
        return "I am not sure what to say here."
    if prediction == "boom":
        raise GenerationError("server down")
    label = "CORRECT" if gold.split()[-1].lower() in prediction.lower() else "WRONG"
    return f'Compared the two answers.\n{{"label": "{label}"}}'


ITEMS = [
    JudgeItem("Where does Alex live?", "Denver", "in Denver, Colorado"),
    JudgeItem("Where does Alex live?", "Denver", "Boston"),
    JudgeItem("When did Ana move?", "7 May 2023", "May 7, 2023"),
    JudgeItem("What pet?", "a dog", "???"),
]


def test_judge_labels_and_records_provenance(scripted, tmp_path):
    generator = scripted(grader)
    results = Judge(generator, cache_path=tmp_path / "judge.sqlite").judge(ITEMS)
    assert [r.label for r in results] == ["CORRECT", "WRONG", "CORRECT", None]
    assert [r.correct for r in results] == [True, False, True, None]
    assert all(r.model == "scripted" and r.prompt_version == "judge-v2" for r in results)
    assert not any(r.cached for r in results)
    assert results[0].reasoning == "Compared the two answers."
    assert results[3].error and results[3].raw_output == "I am not sure what to say here."
    assert generator.calls == 4


def test_judge_decodes_greedily(scripted):
    judge = Judge(scripted(grader), max_new_tokens=64)
    assert judge.config.greedy and judge.config.max_new_tokens == 64


def test_second_run_is_free_and_garbage_is_retried(scripted, tmp_path):
    path = tmp_path / "judge.sqlite"
    Judge(scripted(grader), cache_path=path).judge(ITEMS)
    again = scripted(grader)
    results = Judge(again, cache_path=path).judge(ITEMS)
    assert again.calls == 1  # only the unparsable '???' judgement is paid for again
    assert [r.cached for r in results] == [True, True, True, False]
    assert [r.label for r in results] == ["CORRECT", "WRONG", "CORRECT", None]
    assert results[0].raw_output.endswith('{"label": "CORRECT"}') and results[0].model == "scripted"
    third = scripted(grader)
    Judge(third, cache_path=path).judge(ITEMS[:3])
    assert third.calls == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone() == (3,)


def test_cache_is_keyed_by_model_and_prompt_version(scripted, tmp_path):
    path = tmp_path / "judge.sqlite"
    Judge(scripted(grader), cache_path=path).judge(ITEMS[:2])
    other = scripted(grader)
    other.name = "another-judge"
    results = Judge(other, cache_path=path).judge(ITEMS[:2])
    assert other.calls == 2 and all(r.model == "another-judge" for r in results)
    item = ITEMS[0]
    assert cache_key("m", "judge-v1", item) != cache_key("m", "judge-v2", item)
    assert cache_key("m", "v", JudgeItem("a", "b", "c")) != cache_key("m", "v", JudgeItem("a", "bc", ""))


def test_identical_items_are_judged_once(scripted):
    generator = scripted(grader)
    results = Judge(generator).judge([ITEMS[0], ITEMS[0], ITEMS[1]])
    assert generator.calls == 2
    assert [r.label for r in results] == ["CORRECT", "CORRECT", "WRONG"]


def test_backend_failure_propagates_and_keeps_earlier_batches(scripted, tmp_path):
    path = tmp_path / "judge.sqlite"
    items = [ITEMS[0], JudgeItem("Q", "gold", "boom"), ITEMS[1]]
    with pytest.raises(GenerationError):
        Judge(scripted(grader), cache_path=path, batch_size=1).judge(items)
    with sqlite3.connect(path) as conn:  # the first batch was committed, the failing one was not
        assert conn.execute("SELECT prediction FROM judgements").fetchall() == [("in Denver, Colorado",)]
    retry = scripted(grader)
    results = Judge(retry, cache_path=path).judge([ITEMS[0], ITEMS[1]])
    assert [r.label for r in results] == ["CORRECT", "WRONG"]
    assert retry.calls == 1


def test_no_items_no_calls(scripted, tmp_path):
    generator = scripted(grader)
    assert Judge(generator, cache_path=tmp_path / "j.sqlite").judge([]) == []
    assert generator.calls == 0


# ---------------------------------------------------------------- Judge on the real transformers path


def test_tiny_model_judges_end_to_end(tiny_generator, tmp_path):
    path = tmp_path / "judge.sqlite"
    results = Judge(tiny_generator, cache_path=path, max_new_tokens=16).judge(ITEMS[:3])
    assert len(results) == 3
    assert any(r.label is None for r in results)  # a random model writes no label (seeded, greedy)
    for result in results:  # gibberish is a recorded per-question failure, never an exception
        assert result.model == "tiny-random" and result.prompt_version == "judge-v2"
        assert (result.label is None) == (result.error is not None)
        assert isinstance(result.raw_output, str)
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    assert stored == sum(r.label is not None for r in results)
