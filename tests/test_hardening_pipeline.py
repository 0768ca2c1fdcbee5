"""Issue 10, the pipeline's classes: bounded work per input, any text and any time.

A budgeted fake stands in for a model with a small window: like a real one, it fails on a prompt longer
than its window, and it says how long a prompt is (the `PromptBudget` interface the transformers backend
implements). The tiny real model checks the same on the real path.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path as _Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location("memory_r1_conftest", _Path(__file__).parent / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_conftest)  # type: ignore[union-attr]
reference_script = _conftest.reference_script  # the shared scripted model (see tests/conftest.py)
from memory_r1.agents import AnswerAgent, FactExtractor, MemoryManager
from memory_r1.bank import SQLiteStore
from memory_r1.embeddings import HashingEmbedder
from memory_r1.llm.base import Generation, GenerationError
from memory_r1.pipeline import Agents, MemorySystem
from memory_r1.records import Conversation, Session, Turn, Usage

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class WindowedGenerator:
    """Scripted replies; a prompt of more than `window` "tokens" (characters / 4) raises, as a model would."""

    def __init__(self, window: int = 2000, real=None) -> None:
        """`real`: a TransformersGenerator whose chat template and tokenizer every prompt goes through."""
        self.name, self.window, self.longest, self.real = "windowed", window, 0, real

    @property
    def context_window(self) -> int:
        return self.window

    def prompt_tokens(self, messages) -> int:
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, prompts, config):
        out = []
        for p in prompts:
            if self.real is not None:  # what a real model does first: template and tokenize
                self.real.tokenizer(self.real.render(p), add_special_tokens=False)
            n = self.prompt_tokens(p)
            if n + config.max_new_tokens > self.window:
                raise GenerationError(f"prompt of {n} tokens exceeds the window of {self.window}")
            self.longest = max(self.longest, n + config.max_new_tokens)
            out.append(Generation(reference_script(list(p)), Usage(n, 5, 0.0), self.name))
        return out


def system_for(generator) -> MemorySystem:
    embedder = HashingEmbedder()
    store = SQLiteStore(embedding_model=embedder.name, dim=embedder.dim)
    return MemorySystem(store, Agents(embedder, FactExtractor(generator), MemoryManager(generator, embedder),
                                      AnswerAgent(generator, embedder)))


def conversation(texts: list[str], times: list[datetime | None] | None = None) -> Conversation:
    times = times or [None] * len(texts)
    turns = tuple(Turn("Ann" if i % 2 else "Bob", f"D1:{i + 1}", t, 1, "7 May 2023", times[i])
                  for i, t in enumerate(texts))
    return Conversation("c", "Bob", "Ann", (Session(1, "7 May 2023", times[0], turns),))


words = st.text(alphabet="abc defgh", min_size=1, max_size=40)


@FAST
@given(st.lists(st.one_of(words, st.integers(1, 200_000).map(lambda n: "long words " * (n // 11 + 1))),
                min_size=1, max_size=6))
def test_every_turn_is_ingested_within_the_window_whatever_its_length(texts):
    generator = WindowedGenerator()
    system = system_for(generator)
    report = system.ingest(conversation(texts))
    assert len(report.records) == len(texts)  # no turn cost its neighbours
    assert generator.longest <= generator.window  # nothing over the window reached the model
    for text, record in zip(texts, report.records, strict=True):
        if len("Bob: " + text) > 4000:  # cut, and the cut is on record
            assert record.truncated_chars > 0
        assert record.error is None or "skipped" in record.error
    logged = system.store.turn_log("c")
    assert all(r.dia_id in logged for r in report.records if r.error is None)


def test_a_huge_turn_with_the_tiny_model_is_cut_to_its_window(tiny_generator, make_system):
    system = make_system(tiny_generator)
    window = tiny_generator.context_window
    assert window == 4096
    report = system.ingest(conversation(["I like tea.", "painting " * 6000, "We went camping."]))
    assert [r.dia_id for r in report.records] == ["D1:1", "D1:2", "D1:3"]
    assert report.records[1].truncated_chars > 0 and report.records[0].truncated_chars == 0


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(alphabet=st.one_of(st.characters(), surrogates), min_size=1, max_size=30)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1))
any_time = st.one_of(st.none(), moments, st.builds(
    lambda m, h: m.replace(tzinfo=timezone(timedelta(hours=h))), moments, st.integers(-12, 14)))


@FAST
@given(st.lists(st.tuples(any_text, any_time), min_size=1, max_size=6))
def test_any_text_and_any_time_is_ingested_stored_and_answered(tiny_generator, turns):
    """Lone surrogates, control characters, aware and naive times mixed in one bank: ingest, storage,
    retrieval and the Answer Agent's chronological ordering all work; stored text is valid UTF-8."""
    system = system_for(WindowedGenerator(real=tiny_generator))
    conv = conversation(["word " + t for t, _ in turns], [m for _, m in turns])
    report = system.ingest(conv)
    assert len(report.records) == len(turns)
    for entry in system.store.list():
        entry.text.encode("utf-8")  # raises on a lone surrogate
        assert entry.occurred_at is None or entry.occurred_at.tzinfo is None
    [answer] = system.answer(["what word did they say?"], "c")
    assert answer.raw_output
