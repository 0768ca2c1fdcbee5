"""`memory-r1 export verl`: the RL datasets as verl parquet rows (RLHFDataset's schema).

verl's `RLHFDataset` reads `data.prompt_key` (default "prompt": a chat message list, rendered with the
policy's chat template by the agent loop), and its reward manager hands `data_source`,
`reward_model.ground_truth` and `extra_info` to `compute_score`. Every row carries exactly what our reward
needs, as references where the dataset holds references:

- answer rows: the Answer Agent prompt (60 retrieved memories), the gold answer, and the store ids behind
  the prompt's memory numbers (the parser needs how many there are);
- manager rows: the Memory Manager prompt, the turn's facts, owner and time, the linked questions with
  their gold answers, the speakers, and the bank snapshot as a file next to the parquet.

Our choice for manager banks: the paper's window (hide memories whose newest source turn is more than
`window` turns old) is applied HERE, once, and the windowed snapshot is what the parquet points at. The
local trainer applies the same `window_filter` when it forks a snapshot; doing it at export means the
reward workers need neither the LoCoMo file nor the turn order, and the prompt and every rollout's fork
start from the same bank, as they do locally (tested: equal rewards on the same outputs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memory_r1.agents import MemoryManager
from memory_r1.embeddings import Embedder
from memory_r1.llm.base import Generation, GenerationConfig, Message
from memory_r1.records import Conversation, Fact
from memory_r1.rl.datasets import (
    DEFAULT_WINDOW,
    FORMAT,
    AnswerExample,
    ManagerExample,
    load_examples,
    open_snapshot,
    window_filter,
)

Agent = Literal["answer", "manager"]
EXPORT_FORMAT = "memory-r1-verl/1"
DATA_SOURCES: dict[str, str] = {"answer": "memory-r1/answer", "manager": "memory-r1/manager"}
"""`data_source` of each agent's rows: what `compute_score` dispatches on."""
ABILITIES: dict[str, str] = {"answer": "memory-qa", "manager": "memory-management"}
MANIFEST = "export.json"


@dataclass(frozen=True)
class ExportReport:
    agent: str
    out: Path
    train_rows: int
    val_rows: int
    embedding_model: str
    window: int


class NotSampled:
    """The Generator slot of a MemoryManager that only builds prompts and parses: under verl the policy is
    sampled by verl's rollout server, never by us. Calling it is a bug, so it says so."""

    name = "verl-policy"

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        raise RuntimeError("the policy is sampled by verl's rollout, not through this placeholder")


def dataset_header(dataset_dir: Path, agent: Agent) -> dict[str, Any]:
    """The header row of `answer.jsonl` / `manager.jsonl` (format checked), with the builder's settings."""
    path = Path(dataset_dir) / f"{agent}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: build it with `memory-r1 data build-{agent} --out {dataset_dir}`"
        )
    header = json.loads(path.read_text().splitlines()[0] or "{}")
    if header.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a memory-r1 dataset (format {header.get('format')!r}, expected {FORMAT!r})"
        )
    return dict(header)


def answer_rows(examples: Sequence[dict], split: str) -> list[dict[str, Any]]:
    return [
        {
            "data_source": DATA_SOURCES["answer"],
            "prompt": [{"role": m["role"], "content": m["content"]} for m in ex["messages"]],
            "ability": ABILITIES["answer"],
            "reward_model": {"style": "rule", "ground_truth": ex["gold"]},
            "extra_info": {
                "index": i, "split": split, "sample_id": ex["sample_id"], "qa_index": ex["qa_index"],
                "category": ex["category"], "question": ex["question"], "memory_ids": list(ex["memory_ids"]),
            },
        }
        for i, ex in enumerate(examples)
    ]


def bank_name(example: dict) -> str:
    """Where a manager row's windowed snapshot lives, relative to the export folder (unique per turn and
    conversation, so train and validation banks never collide)."""
    return f"banks/{example['sample_id']}/{example['dia_id'].replace(':', '_')}.db"


def manager_rows(
    dataset_dir: Path, examples: Sequence[dict], conversation: Conversation, embedder: Embedder, out: Path,
    split: str, window: int = DEFAULT_WINDOW,
) -> list[dict[str, Any]]:
    """Manager rows; writes each example's windowed snapshot under `out/banks/`."""
    manager = MemoryManager(NotSampled(), embedder)
    rows = []
    for i, ex in enumerate(examples):
        target = Path(out) / bank_name(ex)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_snapshot(dataset_dir, ManagerExample.from_json(ex)) as bank:
            window_filter(bank, conversation, ex["position"], window)
            facts = [Fact(text, ex["owner"], ex["timestamp"], None, (ex["dia_id"],)) for text in ex["facts"]]
            messages = manager.build_prompt(bank, ex["owner"], facts).messages
            target.unlink(missing_ok=True)  # a re-export replaces its own earlier copy
            bank.save_as(target)
        rows.append({
            "data_source": DATA_SOURCES["manager"],
            "prompt": [{"role": m["role"], "content": m["content"]} for m in messages],
            "ability": ABILITIES["manager"],
            "reward_model": {"style": "model", "ground_truth": [q["gold"] for q in ex["questions"]]},
            "extra_info": {
                "index": i, "split": split, "sample_id": ex["sample_id"], "dia_id": ex["dia_id"],
                "position": ex["position"], "owner": ex["owner"], "timestamp": ex["timestamp"],
                "facts": list(ex["facts"]), "bank": bank_name(ex), "speakers": list(conversation.speakers),
                "questions": [{"qa_index": q["qa_index"], "question": q["question"], "gold": q["gold"],
                               "category": q["category"]} for q in ex["questions"]],
            },
        })
    return rows


def _schema(
    agent: Agent,
) -> Any:  # a pyarrow.Schema (pyarrow ships no types); explicit, so an empty list never infers type `null`
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if agent == "answer":
        truth = pa.string()
        extra = pa.struct([("index", pa.int64()), ("split", pa.string()), ("sample_id", pa.string()),
                           ("qa_index", pa.int64()), ("category", pa.int64()), ("question", pa.string()),
                           ("memory_ids", pa.list_(pa.int64()))])
    else:
        truth = pa.list_(pa.string())
        question = pa.struct([("qa_index", pa.int64()), ("question", pa.string()), ("gold", pa.string()),
                              ("category", pa.int64())])
        extra = pa.struct([("index", pa.int64()), ("split", pa.string()), ("sample_id", pa.string()),
                           ("dia_id", pa.string()), ("position", pa.int64()), ("owner", pa.string()),
                           ("timestamp", pa.string()), ("facts", pa.list_(pa.string())),
                           ("bank", pa.string()),
                           ("speakers", pa.list_(pa.string())), ("questions", pa.list_(question))])
    return pa.schema([("data_source", pa.string()), ("prompt", message), ("ability", pa.string()),
                      ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", truth)])),
                      ("extra_info", extra)])


def write_parquet(rows: Sequence[dict], path: Path, agent: Agent) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError(
            "writing parquet needs pyarrow: pip install 'memory-r1[verl]' (or pyarrow)"
        ) from error
    if not rows:
        raise ValueError(f"no rows to write to {path}: the dataset has no examples")
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(list(rows), schema=_schema(agent)), tmp)
    tmp.replace(path)


def export(
    agent: Agent, dataset: Path, val_dataset: Path, out: Path, *, embedder: Embedder | None = None,
    conversations: dict[str, Conversation] | None = None, window: int = DEFAULT_WINDOW,
) -> ExportReport:
    """Write `train.parquet`, `val.parquet` (and, for the manager, `banks/`) and `export.json` into `out`.

    Manager exports need the embedder the dataset was built with and the conversations by sample id.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    headers = {name: dataset_header(d, agent) for name, d in (("train", dataset), ("val", val_dataset))}
    model = headers["train"].get("settings", {}).get("embedding_model", "")
    counts = {}
    for split, folder in (("train", dataset), ("val", val_dataset)):
        kind = (
            AnswerExample if agent == "answer" else ManagerExample
        )  # typed rows, as JSON dicts for the export
        examples = [e.to_json() for e in load_examples(Path(folder) / f"{agent}.jsonl", kind)]
        if agent == "answer":
            rows = answer_rows(examples, split)
        else:
            if embedder is None or conversations is None:
                raise ValueError("a manager export needs the embedder and the conversations")
            sample = examples[0]["sample_id"] if examples else ""
            if sample not in conversations:
                raise ValueError(f"{folder}: conversation {sample!r} not in the LoCoMo file given")
            rows = manager_rows(Path(folder), examples, conversations[sample], embedder, out, split, window)
        write_parquet(rows, out / f"{split}.parquet", agent)
        counts[split] = len(rows)
    report = ExportReport(agent, out, counts["train"], counts["val"], model, window)
    manifest = {"format": EXPORT_FORMAT, "agent": agent, "train_rows": counts["train"],
                "val_rows": counts["val"], "embedding_model": model, "window": window,
                "datasets": {"train": str(dataset), "val": str(val_dataset)},
                "settings": headers["train"].get("settings", {})}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `memory-r1 export verl --out {out}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a memory-r1 verl export (format {manifest.get('format')!r})")
    return dict(manifest)
