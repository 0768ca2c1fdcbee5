"""Training tuples for both agents (paper section 3, "Training tuples"), written to disk for inspection
and for other trainers (each row carries its chat prompt, so a verl/TRL pipeline can read it directly).

Answer Agent: a Memory Manager runs over the training conversation; for each question, the 30+30
memories it would retrieve, rendered as the Answer Agent's prompt, and the gold answer.

Memory Manager: for each turn that some question's evidence points at, the memory bank as it stood just
before that turn (snapshotted to its own SQLite file), the turn's extracted facts, and the linked
questions. The paper builds each "temporal memory bank" from the preceding turns (24 in its prose, 50
in its algorithm); we build the bank once over the whole conversation with a teacher system and apply
the window when an environment forks a snapshot (`window_filter`): memories whose newest source turn
lies outside the window are hidden. One teacher pass instead of one per turn: ~400 manager calls, not
~10,000, which is what makes this buildable on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory_r1.bank import MemoryStore, SQLiteStore
from memory_r1.data import questions_by_turn
from memory_r1.llm.base import Message
from memory_r1.pipeline import MemorySystem
from memory_r1.records import Category, Conversation, Provenance, QAItem, Turn, owner_id

FORMAT = "memory-r1-dataset/1"  # the format version: rows read back through the records' from_json
DEFAULT_WINDOW = 50  # turns; the paper's algorithm (its prose says 24)


@dataclass(frozen=True)
class AnswerExample:
    """One Answer Agent training tuple (a row of answer.jsonl)."""

    sample_id: str
    qa_index: int
    category: int
    question: str
    gold: str
    messages: list[Message]  # the Answer Agent's chat prompt, memories included
    memory_ids: list[int]  # store ids behind the prompt's numbers 1..N, in order

    @property
    def key(self) -> str:
        return f"{self.sample_id}/{self.qa_index}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AnswerExample:
        return cls(str(row["sample_id"]), int(row["qa_index"]), int(row["category"]), str(row["question"]),
                   str(row["gold"]), [dict(m) for m in row["messages"]],
                   [int(i) for i in row["memory_ids"]])


@dataclass(frozen=True)
class LinkedQuestion:
    """A question whose evidence points at a manager example's turn."""

    qa_index: int
    question: str
    gold: str
    category: int

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> LinkedQuestion:
        return cls(int(row["qa_index"]), str(row["question"]), str(row["gold"]), int(row["category"]))


@dataclass(frozen=True)
class ManagerExample:
    """One Memory Manager training tuple (a row of manager.jsonl)."""

    sample_id: str
    dia_id: str
    position: int  # 0-based index of the turn in the conversation
    owner: str
    timestamp: str
    facts: list[str]
    bank: str  # snapshot file (relative to the dataset folder): the bank just before this turn
    questions: list[LinkedQuestion]

    @property
    def key(self) -> str:
        return f"{self.sample_id}/{self.dia_id}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> ManagerExample:
        return cls(str(row["sample_id"]), str(row["dia_id"]), int(row["position"]), str(row["owner"]),
                   str(row["timestamp"]), [str(f) for f in row["facts"]], str(row["bank"]),
                   [LinkedQuestion.from_json(q) for q in row["questions"]])


Example = AnswerExample | ManagerExample


def build_answer_dataset(system: MemorySystem, conversation: Conversation, out: Path,
                         on_turn: Callable[[Turn], None] | None = None) -> list[AnswerExample]:
    """Ingest with `system` (resumable through its bank) and write answer.jsonl into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    system.ingest(conversation, on_turn=on_turn)
    questions = _linked_questions(conversation)
    prompts = system.answerer.build_prompts(system.store, [q.question for q in questions],
                                            system.speakers(conversation.sample_id))
    examples = [
        AnswerExample(q.sample_id, q.index, _category(q), q.question, str(q.answer), p.messages,
                      [m.entry.id for m in p.numbered.values()])
        for q, p in zip(questions, prompts, strict=True)
    ]
    _write(out / "answer.jsonl", examples, system.settings())
    return examples


def build_manager_dataset(teacher: MemorySystem, conversation: Conversation, out: Path,
                          on_turn: Callable[[Turn], None] | None = None) -> list[ManagerExample]:
    """Ingest with the teacher, snapshotting the bank before every turn that has linked questions."""
    (out / "banks").mkdir(parents=True, exist_ok=True)
    linked = questions_by_turn(conversation)

    def snapshot(turn: Turn) -> None:
        path = out / "banks" / f"{turn.dia_id.replace(':', '_')}.db"
        if turn.dia_id in linked and not path.exists():
            teacher.store.save_as(path)

    teacher.ingest(conversation, on_turn=on_turn, before_turn=snapshot)
    missing = [d for d in linked if not (out / "banks" / f"{d.replace(':', '_')}.db").exists()
               and d in teacher.store.turn_log(conversation.sample_id)]
    if missing:
        raise ValueError(
            f"the teacher bank already held turns {missing[:3]}... with no snapshot taken before them: "
            f"build into a fresh dataset folder with a fresh teacher bank"
        )
    records = {r.dia_id: r for r in teacher.turn_records(conversation.sample_id)}
    positions = {t.dia_id: i for i, t in enumerate(conversation.turns)}
    examples = []
    for turn in conversation.turns:
        if turn.dia_id not in linked or turn.dia_id not in records or not records[turn.dia_id].fact_texts:
            continue
        examples.append(ManagerExample(
            conversation.sample_id, turn.dia_id, positions[turn.dia_id],
            owner_id(conversation.sample_id, turn.speaker),
            turn.timestamp, records[turn.dia_id].fact_texts, f"banks/{turn.dia_id.replace(':', '_')}.db",
            [LinkedQuestion(q.index, q.question, str(q.answer), _category(q))
             for q in linked[turn.dia_id] if q.answer is not None],
        ))
    _write(out / "manager.jsonl", examples, teacher.settings())
    return examples


def window_filter(store: MemoryStore, conversation: Conversation, position: int,
                  window: int = DEFAULT_WINDOW) -> int:
    """Hide (soft-delete, in a fork) memories whose newest source turn is more than `window` turns before
    `position`; returns how many were hidden. Memories without source turns are kept."""
    positions = {t.dia_id: i for i, t in enumerate(conversation.turns)}
    hidden = 0
    for entry in store.list():
        newest = max((positions.get(s, -1) for s in entry.source_turn_ids), default=None)
        if newest is not None and newest >= 0 and newest < position - window:
            store.delete(entry.id, provenance=Provenance("window"),
                         reason=f"outside the {window}-turn window")
            hidden += 1
    return hidden


def load_examples(path: Path, kind: type[AnswerExample | ManagerExample]) -> list[Any]:
    """Typed rows of a dataset file; the header row (format, settings) is checked and dropped."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError(f"{path} is empty")
    header = json.loads(lines[0])
    if header.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a memory-r1 dataset (format {header.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        return [kind.from_json(json.loads(line)) for line in lines[1:] if line.strip()]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: a row is not a {kind.__name__} ({error})") from None


def answer_examples(dataset: Path) -> list[AnswerExample]:
    rows: list[AnswerExample] = load_examples(Path(dataset) / "answer.jsonl", AnswerExample)
    return rows


def manager_examples(dataset: Path) -> list[ManagerExample]:
    rows: list[ManagerExample] = load_examples(Path(dataset) / "manager.jsonl", ManagerExample)
    return rows


def open_snapshot(dataset_dir: Path, example: ManagerExample) -> SQLiteStore:
    """An in-memory fork of an example's bank snapshot: rollouts never touch the file."""
    with SQLiteStore(Path(dataset_dir) / example.bank) as snapshot:
        return snapshot.fork()


def _linked_questions(conversation: Conversation) -> list[QAItem]:
    return [q for q in conversation.qa if q.category != Category.ADVERSARIAL and q.answer is not None]


def _category(q: QAItem) -> int:
    """The LoCoMo category an RL example records; other benchmarks' questions have none."""
    if q.category is None:
        raise ValueError(
            f"{q.sample_id} question {q.index} has no LoCoMo category; RL datasets are built from LoCoMo"
        )
    return int(q.category)


def _write(path: Path, examples: Sequence[Example], settings: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(json.dumps({"format": FORMAT, "settings": settings, "examples": len(examples)}) + "\n")
        for example in examples:
            f.write(json.dumps(example.to_json()) + "\n")
    tmp.replace(path)
