"""Concurrent ingestion: the same banks as one conversation after another, in fewer, larger model calls."""

from __future__ import annotations

import threading

import pytest

from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.llm.base import Generation, GenerationConfig, GenerationError
from memory_r1.llm.batching import BatchingGenerator
from memory_r1.parallel import ingest_concurrently
from memory_r1.records import Usage


class CountingScript:
    """The reference script (see conftest), recording the size of every `generate` call."""

    def __init__(self, reply, fail_on: str | None = None):
        self.reply, self.fail_on, self.name, self.sizes = reply, fail_on, "scripted", []
        self._lock = threading.Lock()

    def generate(self, prompts, config):
        with self._lock:  # the batcher must never call the model from two threads at once
            self.sizes.append(len(prompts))
            if self.fail_on and any(self.fail_on in m["content"] for p in prompts for m in p):
                raise GenerationError("server went away")
            return [Generation(self.reply(list(p)), Usage(10, 5, 0.0), self.name) for p in prompts]


def bank_contents(system, conversation):
    """Everything ingestion leaves: memories per owner, every history row, the turn log."""
    store = system.store
    memories = {
        o: [(m.text, m.timestamp, m.source_turn_ids) for m in store.list(o, include_deleted=True)]
        for o in store.owners()
    }
    history = [
        (h.event, h.owner, h.before_text, h.after_text, h.reason) for h in store.history(limit=100_000)
    ]
    log = {
        k: {f: v for f, v in row.items() if f not in ("extract", "manage")}  # latencies differ
        for k, row in store.turn_log(conversation.sample_id).items()
    }
    return memories, sorted(history, key=repr), log


@pytest.fixture
def conversations(locomo_path):
    data = load_locomo(locomo_path)
    return [select_sessions(get_conversation(data, sid), {1}) for sid in ("conv-26", "conv-30", "conv-41")]


def test_concurrent_banks_equal_sequential_ones_in_fewer_calls(conversations, make_system, scripted):
    reference_script = scripted().reply

    sequential_model = CountingScript(reference_script)
    sequential = [make_system(sequential_model) for _ in conversations]
    for system, conversation in zip(sequential, conversations, strict=True):
        system.ingest(conversation)

    concurrent_model = CountingScript(reference_script)
    concurrent = [make_system(concurrent_model) for _ in conversations]
    reports = ingest_concurrently(concurrent, conversations)

    for a, b, conversation in zip(sequential, concurrent, conversations, strict=True):
        assert bank_contents(a, conversation) == bank_contents(b, conversation)
    assert [r.turns for r in reports] == [len(c.turns) for c in conversations]
    assert sum(concurrent_model.sizes) == sum(sequential_model.sizes)  # the same prompts were generated ...
    assert len(concurrent_model.sizes) < len(sequential_model.sizes)  # ... in fewer, larger calls
    assert max(concurrent_model.sizes) > max(sequential_model.sizes)


def test_a_failing_turn_costs_only_its_own_conversation(conversations, make_system, scripted):
    """A model error on one conversation's prompt skips that turn (retried by the next ingest, see the
    pipeline's bounded-work guarantee); the batch it shared still serves every other conversation."""
    model = CountingScript(scripted().reply, fail_on=conversations[1].turns[3].text)
    systems = [make_system(model) for _ in conversations]
    ingest_concurrently(systems, conversations)
    for i in (0, 2):  # the other conversations were ingested whole
        assert len(systems[i].store.turn_log(conversations[i].sample_id)) == len(conversations[i].turns)
    assert len(systems[1].store.turn_log(conversations[1].sample_id)) < len(conversations[1].turns)


def test_shared_stores_are_refused(conversations, make_system, scripted):
    system = make_system(CountingScript(scripted().reply))
    with pytest.raises(ValueError, match="one store each"):
        ingest_concurrently([system, system], conversations[:2])


def test_batcher_serves_each_thread_its_own_outputs_in_order():
    class Echo:
        name = "echo"

        def __init__(self):
            self.sizes = []

        def generate(self, prompts, config):
            self.sizes.append(len(prompts))
            return [
                Generation(p[0]["content"] + f"@{config.max_new_tokens}", Usage(), "echo") for p in prompts
            ]

    inner = Echo()
    batcher = BatchingGenerator(inner, participants=4, max_wait_s=5.0)
    got: dict[int, list[str]] = {}

    def worker(k: int) -> None:
        outputs = []
        for step in range(k + 1):  # threads make different numbers of calls, then leave
            config = GenerationConfig(max_new_tokens=8 if step % 2 else 16)
            [g] = batcher.generate([[{"role": "user", "content": f"t{k}s{step}"}]], config)
            outputs.append(g.text)
        batcher.leave()
        got[k] = outputs

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got == {k: [f"t{k}s{s}@{8 if s % 2 else 16}" for s in range(k + 1)] for k in range(4)}
    assert sum(inner.sizes) == 1 + 2 + 3 + 4 and len(inner.sizes) < 10  # merged across threads
    assert max(inner.sizes) == 4  # the first call of every thread went as one batch
