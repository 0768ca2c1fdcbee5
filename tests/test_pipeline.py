"""The whole pipeline over real LoCoMo turns: scripted outputs (exact effects) and a tiny random model."""

from dataclasses import replace

import pytest

from memory_r1.agents.manager import DEFAULT_PROTOCOL
from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.llm import TransformersGenerator
from memory_r1.records import Event, owner_id


@pytest.fixture(scope="module")
def conv26(locomo_path):
    return select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1})


def test_ingest_applies_operations_per_speaker_with_history(conv26, scripted, make_system):
    system = make_system(scripted())
    report = system.ingest(conv26)
    turns = conv26.sessions[0].turns
    assert report.turns == len(turns) == report.facts
    assert report.operations[Event.ADD] == len(turns)
    for speaker in conv26.speakers:
        owned = system.store.list(owner_id("conv-26", speaker))
        assert len(owned) == sum(t.speaker == speaker for t in turns)
        assert all(m.timestamp == "1:56 pm on 8 May, 2023" for m in owned)
    first = system.store.list(owner_id("conv-26", turns[0].speaker))[0]
    assert first.source_turn_ids == ("D1:1",) and first.text == turns[0].render()
    history = system.store.history()
    assert len(history) == len(turns) and {h.event for h in history} == {"ADD"}
    assert (
        history[0].provenance.agent == "manager" and history[0].provenance.prompt_version == DEFAULT_PROTOCOL
    )


def test_ingest_resumes_after_an_interruption_without_repeating_a_turn(conv26, scripted, make_system):
    class Interrupt(Exception):
        pass

    seen = []

    def stop_after_five(turn):
        seen.append(turn)
        if len(seen) == 5:
            raise Interrupt

    generator = scripted()
    system = make_system(generator)
    with pytest.raises(Interrupt):
        system.ingest(conv26, on_turn=stop_after_five)
    assert len(system.store.turn_log("conv-26")) == 5
    resumed = system.ingest(conv26)
    turns = conv26.sessions[0].turns
    assert resumed.skipped == 5 and resumed.turns == len(turns) - 5
    assert list(system.store.turn_log("conv-26")) == [t.dia_id for t in turns]

    reference = make_system(scripted())
    reference.ingest(conv26)
    assert [(m.owner, m.text) for m in system.store.list()] == [(m.owner,
                                                                 m.text) for m in reference.store.list()]
    calls = generator.calls
    again = system.ingest(conv26)
    assert again.turns == 0 and again.skipped == len(turns) and generator.calls == calls


def test_turn_records_survive_reopening_the_bank(conv26, scripted, make_system, tmp_path):
    system = make_system(scripted(), bank=tmp_path / "bank.db")
    report = system.ingest(conv26)
    system.store.close()
    reopened = make_system(scripted(), bank=tmp_path / "bank.db")
    assert reopened.turn_records("conv-26") == report.records
    assert report.records[-1].bank_size == reopened.store.count(report.records[-1].owner)


def test_answer_maps_selected_numbers_to_store_ids(conv26, scripted, make_system):
    system = make_system(scripted())
    system.ingest(conv26)
    [answer] = system.answer(["When did Caroline go to the LGBTQ support group?"], "conv-26")
    assert answer.answer == "7 May 2023" and answer.parse_error is None
    assert len(answer.selected_memory_ids) == 1
    assert answer.selected_memory_ids[0] == answer.retrieved[0].entry.id
    speakers = {m.entry.owner for m in answer.retrieved}
    assert speakers == {owner_id("conv-26", s) for s in conv26.speakers}


def test_garbage_model_output_loses_nothing(locomo_path, scripted, make_system):
    conv = select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1, 2})
    system = make_system(scripted())
    system.ingest(replace(conv, sessions=conv.sessions[:1]))
    snapshot = [(m.id, m.text) for m in system.store.list()]
    # Session 2, driven by a model that writes nonsense: every decision becomes a NOOP with its reason.
    system.manager.generator = scripted(lambda m: "I would DELETE everything {not json")
    system.extractor.generator = scripted(lambda m: "just chatting")
    report = system.ingest(conv)
    assert report.skipped == len(conv.sessions[0].turns) and report.turns == len(conv.sessions[1].turns)
    assert [(m.id, m.text) for m in system.store.list()] == snapshot
    assert report.extract_failures == report.turns and report.manager_failures == report.turns
    reasons = [h.reason for h in system.store.history() if h.event == "NOOP"]
    assert len(reasons) == report.turns and all(r.startswith("unparsable") for r in reasons)


def test_tiny_random_model_runs_the_real_generation_path(conv26, tiny_model_dir, make_system):
    generator = TransformersGenerator(str(tiny_model_dir))
    short = replace(conv26, sessions=(replace(conv26.sessions[0], turns=conv26.sessions[0].turns[:3]),))
    system = make_system(generator)
    system.extractor.config = replace(system.extractor.config, max_new_tokens=8)
    system.manager.config = replace(system.manager.config, max_new_tokens=8)
    report = system.ingest(short)
    assert report.turns == 3 and report.calls["extract"] == 3 and report.calls["manage"] == 3
    assert report.usage["extract"].completion_tokens > 0
    # Random weights write no JSON: extraction keeps the raw turn, each decision is a recorded NOOP.
    assert report.facts == 3 and report.extract_failures == 3
