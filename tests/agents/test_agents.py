"""Manager and Answer Agent on a real SQLite bank with the hashing embedder and scripted model replies."""

import json
from datetime import datetime

import pytest

from memory_r1.agents import AnswerAgent, AnswerConfig, ManagerConfig, MemoryManager, apply_operations
from memory_r1.bank import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.records import Event, Fact, Operation, Provenance, ScoredMemory

PROV = Provenance("manager", "scripted", "manage-v1")


@pytest.fixture
def bank():
    embedder = HashingEmbedder()
    store = SQLiteStore(embedding_model=embedder.name, dim=embedder.dim)
    texts = ["Alex lives in Boston.", "Alex has a dog named Biscuit.", "Alex works as a nurse.",
             "Alex likes jazz."]
    for i, text in enumerate(texts):
        store.add("c:Alex", text, embedder.embed([text])[0], timestamp=f"day {i}",
                  occurred_at=datetime(2023, 1, 1 + i), provenance=PROV)
    store.add("c:Sam", "Sam lives in Boston.", embedder.embed(["Sam lives in Boston."])[0], provenance=PROV)
    return store, embedder


def fact(text, owner="c:Alex"):
    return Fact(text, owner, "day 9", datetime(2023, 2, 1), ("D2:1",))


def test_prompt_shows_the_union_of_each_facts_neighbours_under_short_ids(bank, scripted):
    store, embedder = bank
    manager = MemoryManager(scripted(), embedder, ManagerConfig(top_k=1, prompt_version="manage-v1"))
    built = manager.build_prompt(store, "c:Alex",
                                 [fact("Alex moved from Boston."), fact("Alex has a dog now.")])
    shown = {h.entry.text for h in built.shown}
    assert shown == {"Alex lives in Boston.",
                     "Alex has a dog named Biscuit."}  # k=1 per fact, other owner never
    assert set(built.shown_ids) == {"0", "1"} and set(built.shown_ids.values()) == {
        h.entry.id for h in built.shown
    }
    assert json.loads(built.messages[-1]["content"].split("\n")[1])[0]["id"] == "0"
    capped = MemoryManager(scripted(), embedder, ManagerConfig(top_k=4, max_shown=2))
    assert len(capped.build_prompt(store, "c:Alex", [fact("Alex lives in Denver now.")]).shown) == 2


def test_apply_operations_effects_and_history(bank):
    store, embedder = bank
    boston, biscuit = store.list("c:Alex")[:2]
    ops = [
        Operation(Event.UPDATE, boston.id, "Alex moved from Boston to Denver.", old_text=boston.text),
        Operation(Event.DELETE, biscuit.id),
        Operation(Event.ADD, text="Alex plays guitar."),
        Operation(Event.NOOP, store.list("c:Alex")[2].id),  # the model's own NONE: logged, no reason
        Operation(Event.NOOP, reason="UPDATE of unknown id '7'"),
    ]
    applied = apply_operations(store, embedder, "c:Alex", ops, [fact("x")], PROV)
    assert applied == ops
    assert store.get(boston.id).text == "Alex moved from Boston to Denver."
    assert store.get(boston.id).timestamp == "day 9" and store.get(boston.id).source_turn_ids == ("D2:1",)
    assert store.get(biscuit.id).deleted
    added = store.list("c:Alex")[-1]
    assert added.text == "Alex plays guitar." and added.occurred_at == datetime(2023, 2, 1)
    tail = store.history()[-5:]
    assert [h.event for h in tail] == ["UPDATE", "DELETE", "ADD", "NOOP", "NOOP"]
    assert tail[3].reason is None and tail[3].memory_id is not None
    assert tail[4].reason == "UPDATE of unknown id '7'"


def test_an_operation_on_a_vanished_memory_becomes_a_recorded_noop(bank):
    store, embedder = bank
    target = store.list("c:Alex")[0]
    store.delete(target.id, provenance=Provenance("user"))  # gone between the decision and its application
    applied = apply_operations(store, embedder, "c:Alex", [Operation(Event.UPDATE, target.id, "new text")],
                               [], PROV)
    assert applied[0].event is Event.NOOP and "deleted" in applied[0].reason
    assert store.get(target.id).text == target.text


def test_an_unstorable_text_becomes_a_recorded_noop_and_the_rest_applies(bank):
    store, embedder = bank
    before = store.count("c:Alex")
    ops = [Operation(Event.ADD, text="!!!"),
           Operation(Event.ADD, text="Alex plays chess.")]  # "!!!" embeds to zero
    applied = apply_operations(store, embedder, "c:Alex", ops, [fact("x")], PROV)
    assert applied[0].event is Event.NOOP and "non-zero" in applied[0].reason
    assert applied[1].event is Event.ADD and store.count("c:Alex") == before + 1


def test_answer_prompt_numbers_both_speakers_oldest_first(bank, scripted):
    store, embedder = bank
    agent = AnswerAgent(scripted(lambda m: "[2] Boston\n[5] Sam\n**Answer:** Boston"), embedder,
                        AnswerConfig(top_k_per_speaker=3))
    [answer] = agent.answer(store, ["Where does Alex live?"], [("Alex", "c:Alex"), ("Sam", "c:Sam")])
    assert answer.answer == "Boston" and answer.parse_error is None
    alex = [m.entry for m in answer.retrieved if m.entry.owner == "c:Alex"]
    assert len(alex) == 3 and [m.occurred_at for m in alex] == sorted(m.occurred_at for m in alex)
    assert answer.retrieved[-1].entry.owner == "c:Sam" and len(answer.retrieved) == 4
    assert answer.selected_memory_ids == (answer.retrieved[1].entry.id,)  # [5] is out of range: ignored


# ---------------------------------------------------------------- fuzzing against a real bank

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from memory_r1.agents.manager import ManagerPrompt  # noqa: E402

_items = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["0", "1", "2", "3", "9", 1, None]) | st.text(max_size=3),
        "text": st.text(max_size=20) | st.none() | st.integers(),
        "event": st.sampled_from(["ADD", "UPDATE", "DELETE", "NONE", "noop", "Update", "MERGE", ""]),
    },
)
manager_outputs = st.text(max_size=200) | st.lists(_items,
                                                   max_size=6).map(lambda xs: json.dumps({"memory": xs})) | (
    st.tuples(st.text(max_size=20),
              st.lists(_items, max_size=4)).map(lambda t: t[0] + "```json\n" + json.dumps(t[1]) + "\n```")
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manager_outputs)
def test_fuzzed_decisions_never_lose_a_memory(bank, output):
    store, embedder = bank
    fork = store.fork()
    before = {m.id: m.text for m in fork.list(include_deleted=True)}
    history_before = len(fork.history())
    shown = fork.list("c:Alex")[:3]
    built = ManagerPrompt([], tuple(ScoredMemory(m, 1.0) for m in shown),
                          {str(i): m.id for i, m in enumerate(shown)})
    operations = MemoryManager.parse(built, output)
    applied = apply_operations(fork, embedder, "c:Alex", operations, [fact("x")], PROV)
    after = {m.id: m for m in fork.list(include_deleted=True)}
    assert set(before) <= set(after)  # no row ever disappears
    changed = {op.memory_id for op in applied if op.event in (Event.UPDATE, Event.DELETE)}
    assert changed <= {m.id for m in shown}  # only memories the model was shown
    for memory_id, text in before.items():
        if memory_id not in changed:
            assert after[memory_id].text == text and not after[memory_id].deleted
    assert fork.get(next(iter(before))).owner  # the bank still reads
    assert len(fork.history()) == history_before + len(applied)  # every decision is on record
    for entry in fork.list("c:Sam", include_deleted=True):
        assert not entry.deleted  # another owner's memories are never touched
