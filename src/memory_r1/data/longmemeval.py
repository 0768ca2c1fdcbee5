"""LongMemEval (Wu et al., ICLR 2025): loader and download, into the records LoCoMo uses.

The release is three JSON files with one schema: `_s` (about 50 history sessions per question), `_m` (about
500) and `oracle` (only the evidence sessions). The file is a list of 500 questions; each carries its own
history ("haystack"):

    question_id           str; ends in "_abs" for abstention questions (the history lacks the answer)
    question_type         single-session-user | single-session-assistant | single-session-preference |
                          temporal-reasoning | knowledge-update | multi-session
    question, answer      str (a few answers are numbers: cast to str)
    question_date         "2023/05/30 (Tue) 23:40"
    haystack_session_ids  [str], haystack_dates [str, same format], haystack_sessions [[turn]],
                          three parallel lists; a turn is {"role": "user"|"assistant", "content": str,
                          "has_answer": true only on evidence turns}
    answer_session_ids    [str], the evidence sessions

Mapping (our choices, documented in the README): one `Conversation` per question (sample_id = question_id)
with speakers "User" and "Assistant", so each gets its own bank as in the paper; sessions in file order,
numbered from 1, dia_ids "D<session>:<turn>"; the evidence of the single QAItem is the turns flagged
`has_answer`, or every turn of an answer session that flags none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_r1.data.download import (
    DatasetError,
    DatasetNotFoundError,
    RemoteFile,
    data_home,
    download_verified,
    parse_unique,
    read_json,
    require_field,
    require_object,
)
from memory_r1.records import Conversation, QAItem, Session, Turn

QUESTION_TYPES: tuple[str, ...] = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "temporal-reasoning",
    "knowledge-update",
    "multi-session",
)
ABSTENTION_SUFFIX = "_abs"
USER, ASSISTANT = "User", "Assistant"
_ROLES = {"user": USER, "assistant": ASSISTANT}

# The authors' cleaned release (2025/09), which their README recommends over the first one. Checksums and
# sizes as recorded by several independent public benchmark harnesses (not verifiable offline here).
_BASE = "https://huggingface.co/datasets/xiaowu0162/longmemeval-cleaned/resolve/main"
LONGMEMEVAL_FILES: dict[str, RemoteFile] = {
    "s": RemoteFile("longmemeval_s_cleaned.json", f"{_BASE}/longmemeval_s_cleaned.json",
                    "d6f21ea9d60a0d56f34a05b609c79c88a451d2ae03597821ea3d5a9678c3a442", 277_383_467),
    "m": RemoteFile("longmemeval_m_cleaned.json", f"{_BASE}/longmemeval_m_cleaned.json",
                    "9d79e5524794a2e6900a3aa9cb7d9152c5a3e8319c9a87c25494ba1eacee495f", 2_737_100_077),
    "oracle": RemoteFile("longmemeval_oracle.json", f"{_BASE}/longmemeval_oracle.json",
                         "821a2034d219ab45846873dd14c14f12cfe7776e73527a483f9dac095d38620c", 15_388_478),
}

# "2023/05/30 (Tue) 23:40": the weekday is redundant, so it is not trusted (nor locale-dependent here).
_DATE = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})\s*(?:\([A-Za-z]{3}\))?\s*(\d{1,2}):(\d{2})")


def parse_longmemeval_date(text: str) -> datetime | None:
    """"2023/05/30 (Tue) 23:40" -> datetime(2023, 5, 30, 23, 40); None when unparsable (text is kept)."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    try:
        year, month, day, hour, minute = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, minute)
    except ValueError:
        return None


def load_longmemeval(path: str | Path) -> list[Conversation]:
    """Load any of the three LongMemEval files into one conversation per question."""
    path = Path(path)
    data = read_json(path, "LongMemEval")
    return parse_longmemeval(data, source=str(path))


def parse_longmemeval(data: Any, source: str = "<data>") -> list[Conversation]:
    return parse_unique(data, _parse_item, source, "item", "question_id", "questions")


def _strings(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = require_field(obj, key, list, where)
    if not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where}: {key!r} must be a list of str")
    return value


def _parse_item(item: Any, where: str) -> Conversation:
    item = require_object(item, where)
    qid = require_field(item, "question_id", str, where)
    where = f"{where} ({qid})"
    qtype = require_field(item, "question_type", str, where)
    if qtype not in QUESTION_TYPES:
        raise DatasetError(
            f"{where}: unknown question_type {qtype!r} (expected one of {', '.join(QUESTION_TYPES)})"
        )
    ids = _strings(item, "haystack_session_ids", where)
    dates = _strings(item, "haystack_dates", where)
    raw_sessions = require_field(item, "haystack_sessions", list, where)
    if not len(ids) == len(dates) == len(raw_sessions):
        raise DatasetError(f"{where}: haystack_session_ids, haystack_dates and haystack_sessions differ in "
                           f"length ({len(ids)}, {len(dates)}, {len(raw_sessions)})")
    sessions = tuple(_parse_session(raw, n, dates[n - 1], f"{where}: haystack_sessions[{n - 1}]")
                     for n, raw in enumerate(raw_sessions, start=1))
    answer_sessions = set(_strings(item, "answer_session_ids", where))
    flagged = [_flagged(raw) for raw in raw_sessions]
    evidence = tuple(
        t.dia_id
        for s, sid, marks in zip(sessions, ids, flagged, strict=True)
        for t, mark in zip(s.turns, marks, strict=True)
        if mark or (sid in answer_sessions and not any(marks))
    )
    answer = require_field(item, "answer", (str, int, float), where)
    date = require_field(item, "question_date", str, where)
    qa = QAItem(
        sample_id=qid, index=0, question=require_field(item, "question", str, where), answer=str(answer),
        category=None, evidence=evidence, dataset="longmemeval", question_type=qtype,
        abstention=qid.endswith(ABSTENTION_SUFFIX), question_date=date,
    )
    return Conversation(sample_id=qid, speaker_a=USER, speaker_b=ASSISTANT, sessions=sessions, qa=(qa,))


def _parse_session(raw: Any, number: int, date: str, where: str) -> Session:
    if not isinstance(raw, list):
        raise DatasetError(f"{where} must be a list of turns, got {type(raw).__name__}")
    occurred_at = parse_longmemeval_date(date)
    turns = []
    for i, turn in enumerate(raw, start=1):
        at = f"{where}[{i - 1}]"
        turn = require_object(turn, at)
        role = require_field(turn, "role", str, at)
        if role not in _ROLES:
            raise DatasetError(f"{at}: role must be 'user' or 'assistant', got {role!r}")
        turns.append(Turn(speaker=_ROLES[role], dia_id=f"D{number}:{i}",
                          text=require_field(turn, "content", str, at),
                          session=number, timestamp=date, occurred_at=occurred_at))
    return Session(index=number, timestamp=date, occurred_at=occurred_at, turns=tuple(turns))


def _flagged(raw: list[Any]) -> list[bool]:
    return [bool(turn.get("has_answer")) for turn in raw]


# ---------------------------------------------------------------- finding and downloading


def longmemeval_file(variant: str) -> RemoteFile:
    if variant not in LONGMEMEVAL_FILES:
        raise DatasetError(
            f"unknown LongMemEval variant {variant!r}; choose one of {', '.join(LONGMEMEVAL_FILES)}"
        )
    return LONGMEMEVAL_FILES[variant]


def default_longmemeval_path(variant: str = "s") -> Path:
    """Where `download_longmemeval` puts a variant, and where `find_longmemeval` looks without --data."""
    return data_home() / "longmemeval" / longmemeval_file(variant).name


def find_longmemeval(explicit: str | Path | None = None, variant: str = "s") -> Path:
    """The file named by --data (it must exist), else the downloaded copy of `variant`."""
    path = Path(explicit).expanduser() if explicit is not None else default_longmemeval_path(variant)
    if path.is_dir():
        path = path / longmemeval_file(variant).name
    if not path.is_file():
        hint = (
            "" if explicit is not None else f"; run `memory-r1 data download longmemeval --variant {variant}`"
        )
        raise DatasetNotFoundError(f"LongMemEval file {path} does not exist{hint} or pass --data PATH")
    return path


def download_longmemeval(
    variant: str = "s", dest: str | Path | None = None, *, url: str | None = None, sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch one variant (checksum-verified, atomic). `url`/`sha256` override the pinned ones (mirrors)."""
    remote = longmemeval_file(variant)
    target = Path(dest).expanduser() if dest is not None else default_longmemeval_path(variant)
    if target.is_dir():
        target = target / remote.name
    return download_verified(url or remote.url, target, sha256 or remote.sha256, load_longmemeval,
                             "LongMemEval", timeout)
