"""Manager and Answer Agent on a real SQLite bank with the hashing embedder and scripted model replies."""

import json
from datetime import datetime

import pytest

from memory_r1.agents import AnswerAgent, AnswerConfig, ManagerConfig, MemoryManager, apply_operations
from memory_r1.bank import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.records import Event, Fact, Operation, Provenance

PROV = Provenance("manager", "scripted", "manage-v1")


@pytest.fixture
def bank():
    embedder = HashingEmbedder()
    store = SQLiteStore(embedding_model=embedder.name, dim=embedder.dim)
    texts = ["Alex lives in Boston.", "Alex has a dog named Biscuit.", "Alex works as a nurse.", "Alex likes jazz."]
    for i, text in enumerate(texts):
        store.add("c:Alex", text, embedder.embed([text])[0], timestamp=f"day {i}", occurred_at=datetime(2023, 1, 1 + i),
                  provenance=PROV)
    store.add("c:Sam", "Sam lives in Boston.", embedder.embed(["Sam lives in Boston."])[0], provenance=PROV)
    return store, embedder


def fact(text, owner="c:Alex"):
    return Fact(text, owner, "day 9", datetime(2023, 2, 1), ("D2:1",))


def test_prompt_shows_the_union_of_each_facts_neighbours_under_short_ids(bank, scripted):
    store, embedder = bank
    manager = MemoryManager(scripted(), embedder, ManagerConfig(top_k=1))
    built = manager.build_prompt(store, "c:Alex", [fact("Alex moved from Boston."), fact("Alex has a dog now.")])
    shown = {h.entry.text for h in built.shown}
    assert shown == {"Alex lives in Boston.", "Alex has a dog named Biscuit."}  # k=1 per fact, other owner never
    assert set(built.shown_ids) == {"0", "1"} and set(built.shown_ids.values()) == {h.entry.id for h in built.shown}
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
    applied = apply_operations(store, embedder, "c:Alex", [Operation(Event.UPDATE, target.id, "new text")], [], PROV)
    assert applied[0].event is Event.NOOP and "deleted" in applied[0].reason
    assert store.get(target.id).text == target.text


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
