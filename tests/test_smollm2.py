"""The whole pipeline with the real packaged models (SmolLM2-135M-Instruct + all-MiniLM-L6-v2), on a few
turns."""

from dataclasses import replace

import pytest

from memory_r1.data import get_conversation, load_locomo
from memory_r1.pipeline import MemorySystem, PipelineConfig
from memory_r1.records import Event

pytestmark = pytest.mark.slow


def test_smollm2_pipeline_ingests_and_answers(locomo_path, tmp_path):
    conv = get_conversation(load_locomo(locomo_path), "conv-26")
    session = conv.sessions[0]
    conv = replace(conv, sessions=(replace(session, turns=session.turns[2:5]),))
    bank = tmp_path / "bank.db"
    system = MemorySystem.from_config(PipelineConfig(), bank)

    report = system.ingest(conv)

    assert report.turns == 3 and report.calls["extract"] == 3
    assert report.facts >= 3  # a fact per turn at least: parsed, salvaged, or the raw turn kept
    assert report.calls["manage"] == 3 and report.usage["manage"].completion_tokens > 0
    decisions = [h for h in system.store.history() if h.provenance.agent == "manager"]
    applied = sum(n for e, n in report.operations.items() if e is not Event.NOOP)
    assert len(decisions) >= applied  # every change is in the history
    assert all(h.provenance.model == "smollm2-135m-instruct" for h in decisions)

    [answer] = system.answer(["When did Caroline go to the LGBTQ support group?"], "conv-26")
    assert answer.raw_output.strip() and answer.prompt_version == "answer-v2"
    assert answer.usage.prompt_tokens > 100
    assert set(answer.selected_memory_ids) <= {m.entry.id for m in answer.retrieved}
    system.store.close()
