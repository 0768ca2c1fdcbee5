"""The tolerant parser: exact cases by hand, then fuzzing (nothing escapes, nothing invented)."""

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from memory_r1.agents.parsing import (
    find_json,
    parse_answer,
    parse_decision_lines,
    parse_decisions,
    parse_facts,
    parse_operations,
)
from memory_r1.records import Event, Rejection

SHOWN_IDS = {"0": 101, "1": 102}
SHOWN_TEXTS = {101: "Alex lives in Boston.", 102: "Alex has a dog named Biscuit."}


def ops(text):
    return parse_operations(text, SHOWN_IDS, SHOWN_TEXTS)


def test_find_json_prefers_fenced_block_and_skips_prose():
    assert find_json('Sure! ```json\n{"a": 1}\n``` and {"b": 2}') == {"a": 1}
    assert find_json('Here you go: {"memory": []} done') == {"memory": []}
    assert find_json("no json here {oops") is None
    assert find_json("[1, 2] then {}") == [1, 2]


def test_paper_format_resolves_short_ids_to_store_ids():
    out = json.dumps(
        {
            "memory": [
                {
                    "id": "0",
                    "text": "Alex moved to Denver.",
                    "event": "UPDATE",
                    "old_memory": "Alex lives in Boston.",
                },
                {"id": "1", "text": "Alex has a dog named Biscuit.", "event": "NONE"},
                {"id": "2", "text": "Alex plays guitar.", "event": "ADD"},
            ]
        }
    )
    result = ops(out)
    assert [o.event for o in result] == [Event.UPDATE, Event.NOOP, Event.ADD]
    assert result[0].memory_id == 101 and result[0].text == "Alex moved to Denver."
    assert result[0].old_text == "Alex lives in Boston."
    assert result[1].memory_id == 102 and result[1].reason is None
    assert result[2].memory_id is None and result[2].text == "Alex plays guitar."


def test_tolerates_single_object_lowercase_events_and_noop_spellings():
    assert ops('{"memory": {"id": "1", "event": "delete"}}')[0].event is Event.DELETE
    assert ops('{"id": 0, "event": "Delete"}')[0].memory_id == 101  # int id, bare object
    assert ops('[{"text": "New thing", "event": "add"}]')[0].event is Event.ADD
    for spelling in ("NONE", "noop", "No-Op", "NO_OP"):
        assert ops(json.dumps({"memory": [{"id": "0", "event": spelling}]}))[0].event is Event.NOOP


def test_strict_where_it_matters():
    unknown = ops('{"memory": [{"id": "7", "text": "x", "event": "UPDATE"}]}')[0]
    assert unknown.event is Event.NOOP and "unknown id" in unknown.reason
    deleted_unknown = ops('{"memory": [{"id": "101", "event": "DELETE"}]}')[0]  # store id, never shown
    assert deleted_unknown.event is Event.NOOP and "unknown id" in deleted_unknown.reason
    assert "without text" in ops('{"memory": [{"event": "ADD"}]}')[0].reason
    assert "without text" in ops('{"memory": [{"id": "0", "event": "UPDATE", "text": "  "}]}')[0].reason
    assert "unknown event" in ops('{"memory": [{"id": "0", "event": "MERGE"}]}')[0].reason
    assert (
        "unchanged"
        in ops('{"memory": [{"id": "0", "event": "UPDATE", "text": "alex lives in boston"}]}')[0].reason
    )
    assert "already stored" in ops('{"memory": [{"event": "ADD", "text": "Alex lives in Boston"}]}')[0].reason


def test_one_change_per_memory_and_no_duplicate_adds():
    out = ops('{"memory": [{"id": "0", "event": "DELETE"}, {"id": "0", "text": "y", "event": "UPDATE"},'
              ' {"event": "ADD", "text": "Same"}, {"event": "ADD", "text": "same."}]}')
    assert [o.event for o in out] == [Event.DELETE, Event.NOOP, Event.ADD, Event.NOOP]
    assert "second UPDATE" in out[1].reason


def test_unparsable_output_is_one_noop_with_reason():
    [only] = ops("I think Alex moved, so I would update memory 0.")
    assert only.event is Event.NOOP and only.reason.startswith("unparsable")
    assert only.rejection is Rejection.UNPARSABLE and only.unparsable  # the typed signal callers test
    [empty] = ops('{"memory": []}')
    assert empty.event is Event.NOOP and "empty" in empty.reason
    assert empty.rejection is Rejection.EMPTY and not empty.unparsable


def test_every_rejection_carries_its_code():
    codes = [ops(text)[0].rejection for text in (
        '{"memory": [{"id": "7", "text": "x", "event": "UPDATE"}]}', '{"memory": [{"event": "ADD"}]}',
        '{"memory": [{"id": "0", "event": "MERGE"}]}', '{"memory": ["x"]}',
        '{"memory": [{"id": "0", "event": "UPDATE", "text": "alex lives in boston"}]}',
        '{"memory": [{"event": "ADD", "text": "Alex lives in Boston"}]}')]
    assert codes == [Rejection.UNKNOWN_ID, Rejection.MISSING_TEXT, Rejection.UNKNOWN_EVENT,
                     Rejection.NOT_OBJECT, Rejection.UNCHANGED, Rejection.DUPLICATE_ADD]
    assert ops('{"memory": [{"id": "0", "event": "NONE"}]}')[0].rejection is None  # the model's own choice


# ---------------------------------------------------------------- per-fact protocols (manage-v2, manage-v3)

LABELLED_IDS = {"M1": 101, "M2": 102}
FACTS = ["Alex moved to Denver.", "Alex plays guitar."]


def decisions(text):
    return parse_decisions(text, LABELLED_IDS, SHOWN_TEXTS, FACTS)


def lines(text):
    return parse_decision_lines(text, LABELLED_IDS, SHOWN_TEXTS, FACTS)


def test_per_fact_decisions_name_their_memory_and_default_to_the_facts_text():
    out = decisions(json.dumps({"decisions": [
        {"fact": "F1", "event": "UPDATE", "memory": "M1", "text": "Alex moved from Boston to Denver."},
        {"fact": "F2", "event": "ADD"},
        {"fact": "F1", "event": "NONE", "memory": "2"},  # the letter dropped: still M2
    ]}))
    assert [(o.event, o.memory_id, o.text) for o in out] == [
        (Event.UPDATE, 101, "Alex moved from Boston to Denver."), (Event.ADD, None, "Alex plays guitar."),
        (Event.NOOP, 102, None)]
    replaced = decisions('{"decisions": [{"fact": "F1", "event": "UPDATE", "memory": "M1"}]}')[0]
    assert (replaced.event, replaced.text) == (Event.UPDATE, "Alex moved to Denver.")  # the fact replaces it
    assert (
        decisions('{"fact": "F2", "event": "DELETE", "memory": "M2"}')[0].event is Event.DELETE
    )  # bare object


def test_per_fact_decisions_are_as_strict_as_the_paper_format():
    bad = decisions(json.dumps({"decisions": [
        {"fact": "F1", "event": "DELETE", "memory": "M3"},  # not shown
        {"fact": "F9", "event": "ADD"},  # no such fact, no text
        {"fact": "F2", "event": "ADD"}, {"fact": "F2", "event": "ADD"},  # the same text twice
        {"fact": "F1", "event": "UPDATE", "memory": "M2", "text": "Alex has a dog named Biscuit"},
    ]}))
    assert [o.rejection for o in bad] == [Rejection.UNKNOWN_ID, Rejection.MISSING_TEXT, None,
                                          Rejection.DUPLICATE_ADD, Rejection.UNCHANGED]
    for text in ("no json",
                 '{"memory": [{"id": "0", "event": "ADD", "text": "x"}]}'):  # the other protocol's shape
        [only] = decisions(text)
        assert only.unparsable


def test_decision_lines_skip_prose_and_read_every_decision():
    out = lines(
        "Here are my decisions:\nF1: UPDATE M1: Alex moved from Boston to Denver.\n"
        "- f2: add\nF1: DELETE M2\nThanks!"
    )
    assert [(o.event, o.memory_id, o.text) for o in out] == [
        (Event.UPDATE, 101, "Alex moved from Boston to Denver."), (Event.ADD, None, "Alex plays guitar."),
        (Event.DELETE, 102, None)]
    assert lines("F2: ADD: Alex plays the guitar well.")[0].text == "Alex plays the guitar well."
    assert lines("F1: NONE M1")[0].event is Event.NOOP and lines("nothing to do")[0].unparsable


def test_parse_facts_json_list_bullets_and_failure():
    assert parse_facts('{"facts": ["A likes tea.", " B  runs. "]}').facts == ("A likes tea.", "B runs.")
    assert parse_facts('["x"]').facts == ("x",)
    assert parse_facts("Facts:\n- Alex has a dog.\n2) Alex is 30.").facts == (
        "Alex has a dog.",
        "Alex is 30.",
    )
    assert (
        parse_facts('{"facts": []}') == parse_facts('{"facts": []}')
        and parse_facts('{"facts": []}').facts == ()
    )
    assert parse_facts('{"facts": []}').error is None
    failed = parse_facts("Hello there, nice chat.")
    assert failed.facts == () and failed.error


def test_parse_facts_salvages_complete_items_from_broken_json():
    cut_off = '{"facts": ["Alex has a dog.", "Alex likes \\"jazz\\".", "Alex has a dog named Bis'
    parsed = parse_facts(cut_off)
    assert parsed.facts == ("Alex has a dog.", 'Alex likes "jazz".') and parsed.error
    stray_bracket = '{"facts": ["Alex moved to Denver."}'
    assert parse_facts(stray_bracket).facts == ("Alex moved to Denver.",)


def test_parse_answer_selected_memories_and_marker_variants():
    raw = "[3] (8 May 2023) Alex went to Denver.\n[12] Alex likes tea.\n[99] bogus\n**Answer:** Denver\nextra"
    parsed = parse_answer(raw, range(1, 61))
    assert parsed.answer == "Denver" and parsed.selected_numbers == (3, 12) and parsed.error is None
    assert parse_answer("answer: 7 May 2023", range(1, 5)).answer == "7 May 2023"
    assert parse_answer("**Answer** : **Boston**", range(1, 5)).answer == "Boston"
    no_marker = parse_answer("[1] x\nProbably Boston", range(1, 5))
    assert no_marker.answer == "Probably Boston" and no_marker.selected_numbers == (1,) and no_marker.error
    assert parse_answer("", range(1, 5)).answer == "" and parse_answer("", range(1, 5)).error


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
op_items = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["0", "1", "2", "101", 0, 1, None, "x"]) | st.text(max_size=4),
        "text": st.text(max_size=30) | st.integers() | st.none(),
        "event": st.sampled_from(["ADD", "UPDATE", "DELETE", "NONE", "noop", "merge", "", 3]),
        "old_memory": st.text(max_size=10) | st.none(),
    },
)
adversarial = (
    st.text(max_size=300)
    | json_values.map(json.dumps)
    | st.lists(op_items | json_values, max_size=6).map(lambda items: json.dumps({"memory": items}))
    | st.tuples(st.text(max_size=30), st.lists(op_items, max_size=4), st.text(max_size=30)).map(
        lambda t: f"{t[0]}```json\n{json.dumps({'memory': t[1]})}\n```{t[2]}")
)


@settings(max_examples=400, deadline=None)
@given(adversarial)
def test_fuzz_operations_never_raise_and_only_touch_shown_memories(text):
    result = ops(text)
    assert result, "always at least one operation (a NOOP with a reason)"
    for op in result:
        if op.event in (Event.UPDATE, Event.DELETE):
            assert op.memory_id in SHOWN_TEXTS
        if op.event in (Event.ADD, Event.UPDATE):
            assert isinstance(op.text, str) and op.text.strip()
        if op.event is Event.ADD:
            assert op.memory_id is None
    changed = [op.memory_id for op in result if op.event in (Event.UPDATE, Event.DELETE)]
    assert len(changed) == len(set(changed))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_fuzz_answers_and_facts_never_raise(text):
    parsed = parse_answer(text, range(1, 61))
    assert "\n" not in parsed.answer and all(1 <= n <= 60 for n in parsed.selected_numbers)
    facts = parse_facts(text)
    assert all(isinstance(f, str) and f for f in facts.facts)


per_fact_items = st.fixed_dictionaries({}, optional={
    "fact": st.sampled_from(["F1", "F2", "F3", "f1", "2", "", None]) | st.text(max_size=3),
    "event": st.sampled_from(["ADD", "UPDATE", "DELETE", "NONE", "noop", "MERGE", ""]),
    "memory": st.sampled_from(["M1", "M2", "M3", "1", "m2", None, 5]) | st.text(max_size=3),
    "text": st.text(max_size=20) | st.none() | st.integers(),
})
per_fact_outputs = (
    st.text(max_size=300)
    | st.lists(per_fact_items | json_values, max_size=6).map(lambda items: json.dumps({"decisions": items}))
    | st.lists(per_fact_items, max_size=5).map(
        lambda items: "\n".join(
            f"{i.get('fact')}: {i.get('event')} {i.get('memory')}: {i.get('text')}" for i in items
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(per_fact_outputs)
@example('[{"fact": "\u00b2"}]')  # found by this test: "²".isdigit() is True, but int("²") raises
def test_fuzz_per_fact_protocols_never_raise_and_only_touch_shown_memories(text):
    for result in (decisions(text), lines(text)):
        assert result
        changed = [op.memory_id for op in result if op.event in (Event.UPDATE, Event.DELETE)]
        assert set(changed) <= set(SHOWN_TEXTS) and len(changed) == len(set(changed))
        assert all(
            isinstance(op.text, str) and op.text.strip()
            for op in result
            if op.event in (Event.ADD, Event.UPDATE)
        )
        assert all(op.rejection is not None for op in result if op.reason)
