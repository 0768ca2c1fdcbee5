"""MSC (Multi-Session Chat, Xu et al. 2022) as memory benchmarks use it: MemGPT's MSC-Self-Instruct set.

Memory papers evaluate on MSC through the 500-conversation question set MemGPT built on it (its "deep memory
retrieval" task, later used by Zep): each line of `msc_self_instruct.jsonl` is one MSC episode plus one
question about the earlier sessions. The Memory-R1 paper names MSC without printing its loader or file; we
read it as this set (a choice, stated in the README). Schema of a line, as the file has it:

    previous_dialogs   [{"dialog": [{"id"?: "Speaker 1", "text": str}], "time_back": "7 days",
                         "time_num": int, "time_unit": str, "personas": [[str], [str]]}], oldest first
    dialog             the current session: [{"id": "Speaker 1" | "Speaker 2", "text": str, ...}]
    self_instruct      {"B": the question, "A": its answer}
    metadata           {"initial_data_id": str, "session_id": int, ...}
    personas, init_personas, personas_update1/2, summary_speaker_1/2: generated summaries, not used

Mapping (our choices): one `Conversation` per line, sample_id "msc-<line number from 0>", speakers
"Speaker 1" and "Speaker 2" (a turn without an id alternates, Speaker 1 first); the previous dialogs then
the current one as sessions 1..N. MSC has no calendar dates, only gaps: a session's timestamp reads
"session 2 (7 days before the current session)". Persona summaries are left out: they are the answer key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.data.download import (
    DatasetError,
    DatasetNotFoundError,
    RemoteFile,
    data_home,
    download_verified,
    read_json_text,
    require_field,
    require_object,
)
from memory_r1.records import Conversation, QAItem, Session, Turn

SPEAKERS = ("Speaker 1", "Speaker 2")
# Pinned to the dataset repository's revision; the checksum is the one public harnesses record for it.
MSC_FILE = RemoteFile(
    "msc_self_instruct.jsonl",
    "https://huggingface.co/datasets/MemGPT/MSC-Self-Instruct/resolve/"
    "5138f416f8fa76b75b2e080da87e8a8e346e1500/msc_self_instruct.jsonl",
    "d3dbea36848b41dc46c0f1548d0ebf74eeaf6390d6f3fe9318e8480dc984495e",
)


def load_msc(path: str | Path) -> list[Conversation]:
    """Load msc_self_instruct.jsonl (JSON Lines; blank lines are skipped) into one conversation per line."""
    path = Path(path)
    conversations: list[Conversation] = []
    for number, line in enumerate(read_json_text(path, "MSC").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: line {number + 1} is not valid JSON: {exc.msg} at column {exc.colno}"
            ) from exc
        conversations.append(parse_msc_row(row, len(conversations), f"{path}: line {number + 1}"))
    if not conversations:
        raise DatasetError(f"{path} holds no MSC rows")
    return conversations


def parse_msc_row(row: Any, index: int, where: str = "<row>") -> Conversation:
    row = require_object(row, where)
    previous = require_field(row, "previous_dialogs", list, where)
    current = require_field(row, "dialog", list, where)
    total = len(previous) + 1
    sessions = []
    for i, p in enumerate(previous):
        at = f"{where}: previous_dialogs[{i}]"
        dialog = require_field(require_object(p, at), "dialog", list, at)
        sessions.append(_session(dialog, i + 1, _label(i + 1, p), at))
    sessions.append(_session(current, total, f"session {total} (the current session)", f"{where}: dialog"))
    qa_raw = require_object(row.get("self_instruct"), f"{where}: self_instruct")
    sample_id = f"msc-{index}"
    at = f"{where}: self_instruct"
    qa = QAItem(sample_id=sample_id, index=0, question=require_field(qa_raw, "B", str, at),
                answer=require_field(qa_raw, "A", str, at), category=None, evidence=(), dataset="msc")
    return Conversation(sample_id, SPEAKERS[0], SPEAKERS[1], tuple(sessions), (qa,))


def _label(number: int, previous: Mapping[str, Any]) -> str:
    gap = previous.get("time_back")
    return (
        f"session {number} ({gap} before the current session)"
        if isinstance(gap, str) and gap
        else f"session {number}"
    )


def _session(raw: list[Any], number: int, timestamp: str, where: str) -> Session:
    turns = []
    for i, turn in enumerate(raw):
        at = f"{where}[{i}]"
        turn = require_object(turn, at)
        speaker = turn.get("id", SPEAKERS[i % 2])
        if speaker not in SPEAKERS:
            raise DatasetError(f"{at}: 'id' must be 'Speaker 1' or 'Speaker 2', got {speaker!r}")
        turns.append(Turn(speaker=speaker, dia_id=f"D{number}:{i + 1}",
                          text=require_field(turn, "text", str, at), session=number, timestamp=timestamp))
    return Session(index=number, timestamp=timestamp, occurred_at=None, turns=tuple(turns))


def default_msc_path() -> Path:
    return data_home() / "msc" / MSC_FILE.name


def find_msc(explicit: str | Path | None = None) -> Path:
    path = Path(explicit).expanduser() if explicit is not None else default_msc_path()
    if path.is_dir():
        path = path / MSC_FILE.name
    if not path.is_file():
        hint = "" if explicit is not None else "; run `memory-r1 data download msc`"
        raise DatasetNotFoundError(f"MSC file {path} does not exist{hint} or pass --data PATH")
    return path


def download_msc(dest: str | Path | None = None, *, url: str | None = None, sha256: str | None = None,
                 timeout: float = 60.0) -> Path:
    target = Path(dest).expanduser() if dest is not None else default_msc_path()
    if target.is_dir():
        target = target / MSC_FILE.name
    return download_verified(url or MSC_FILE.url, target, sha256 or MSC_FILE.sha256, load_msc, "MSC", timeout)
