"""Loading, locating and downloading the LoCoMo benchmark (locomo10.json).

The released file has quirks (reference notes, section 3) that every consumer would otherwise
re-discover: adversarial questions without `answer`, integer answers, date keys without sessions,
malformed evidence ids. They are all resolved here, once, into the typed records of
`memory_r1.records`, so nothing downstream ever touches the raw dicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from memory_r1.data.download import (
    DatasetError,
    DatasetNotFoundError,
    data_home,
    download_verified,
    parse_unique,
    read_json,
    require_field,
    require_object,
)
from memory_r1.records import Category, Conversation, QAItem, Session, Turn

# Pinned to the commit our shared copy was taken from, so the checksum below stays valid even if
# upstream later merges answer corrections (e.g. its open PRs #28 and #40).
LOCOMO_COMMIT = "3eb6f2c585f5e1699204e3c3bdf7adc5c28cb376"
LOCOMO_URL = f"https://raw.githubusercontent.com/snap-research/locomo/{LOCOMO_COMMIT}/data/locomo10.json"
LOCOMO_SHA256 = "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4"
LOCOMO_FILENAME = "locomo10.json"
LOCOMO_ENV_VAR = "MEMORY_R1_LOCOMO"

LOCOMO_SEARCH_PATHS_DOC = (
    "LoCoMo (locomo10.json) is looked up in this order: the path given with --data; "
    f"the {LOCOMO_ENV_VAR} environment variable; "
    f"<user data dir>/memory-r1/locomo/{LOCOMO_FILENAME} (where `memory-r1 data download locomo` puts it); "
    f"../shared/data/locomo/{LOCOMO_FILENAME} relative to the current directory, "
    "then relative to the repository root."
)

# Repository root when running from a source checkout (src/memory_r1/data/locomo.py -> repo).
_REPO_ROOT = Path(__file__).resolve().parents[3]
_SHARED_RELATIVE = Path("..") / "shared" / "data" / "locomo" / LOCOMO_FILENAME


# ---------------------------------------------------------------- small parsers


_DATETIME_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


def parse_locomo_datetime(text: str) -> datetime | None:
    """Parse a LoCoMo session time such as "1:56 pm on 8 May, 2023" into a naive datetime.

    Returns None (rather than raising) for unparsable strings: the raw string is always kept on the
    record, and the agents can still show it even when we cannot order it in time.
    """
    cleaned = " ".join(text.split())
    try:
        return datetime.strptime(cleaned, _DATETIME_FORMAT)
    except ValueError:
        return None


# A dialogue id, tolerating the upstream typos "D:11:26" (extra colon) and "D30:05" (leading zero).
_DIA_ID = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)")


def normalize_evidence(raw: Iterable[str]) -> tuple[str, ...]:
    """Split and repair evidence ids into canonical "D<session>:<turn>" form.

    Upstream packs several ids into one string ("D8:6; D9:17", "D9:1 D4:4 D4:6"), has typos
    ("D:11:26", "D30:05") and one bare "D". Every id found is kept once, in order; strings that
    contain no id at all are dropped, because they cannot point at any turn.
    """
    seen: dict[str, None] = {}
    for item in raw:
        for session, turn in _DIA_ID.findall(item):
            seen.setdefault(f"D{int(session)}:{int(turn)}", None)
    return tuple(seen)


def parse_session_range(spec: str) -> set[int]:
    """Parse a 1-based session selection such as "2", "1-3" or "1,3-4" into a set of indices."""
    if not spec.strip():
        raise DatasetError("empty session range: expected e.g. '2', '1-3' or '1,3-4'")
    sessions: set[int] = set()
    for part in spec.split(","):
        sessions |= _parse_range_part(part.strip(), spec)
    return sessions


def _parse_range_part(part: str, spec: str) -> set[int]:
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
    if match is None:
        raise DatasetError(
            f"invalid session range {spec!r}: {part!r} is not a number or a range like '1-3'"
        )
    start = int(match[1])
    end = int(match[2]) if match[2] is not None else start
    if start < 1:
        raise DatasetError(f"invalid session range {spec!r}: sessions are numbered from 1")
    if end < start:
        raise DatasetError(f"invalid session range {spec!r}: {part!r} goes backwards")
    return set(range(start, end + 1))


# ---------------------------------------------------------------- loading


def load_locomo(path: str | Path) -> list[Conversation]:
    """Load locomo10.json (or any file with the same schema) into typed conversations."""
    path = Path(path)
    data = read_json(path, "LoCoMo")
    return parse_locomo(data, source=str(path))


def parse_locomo(data: Any, source: str = "<data>") -> list[Conversation]:
    """Turn already-decoded LoCoMo JSON into conversations, validating the schema as it goes."""
    return parse_unique(data, _parse_sample, source, "sample", "sample_id", "samples")


def _parse_sample(sample: Any, where: str) -> Conversation:
    sample = require_object(sample, where)
    sample_id = require_field(sample, "sample_id", str, where)
    conversation = require_field(sample, "conversation", dict, sample_id)
    speaker_a = require_field(conversation, "speaker_a", str, f"{sample_id}: conversation")
    speaker_b = require_field(conversation, "speaker_b", str, f"{sample_id}: conversation")
    raw_qa = require_field(sample, "qa", list, sample_id)
    return Conversation(
        sample_id=sample_id,
        speaker_a=speaker_a,
        speaker_b=speaker_b,
        sessions=_parse_sessions(conversation, sample_id),
        qa=tuple(_parse_qa(item, sample_id, i) for i, item in enumerate(raw_qa)),
    )


_SESSION_KEY = re.compile(r"session_(\d+)")


def _parse_sessions(conversation: Mapping[str, Any], sample_id: str) -> tuple[Session, ...]:
    """Build sessions from the `session_N` lists, in numeric order.

    Iterating over the sessions (not the date keys) matters: conv-26 has `session_20_date_time`
    .. `session_35_date_time` with no session behind them.
    """
    numbers = sorted(
        int(m[1])
        for key, value in conversation.items()
        if (m := _SESSION_KEY.fullmatch(key)) and isinstance(value, list)
    )
    return tuple(_parse_session(conversation, sample_id, n) for n in numbers)


def _parse_session(conversation: Mapping[str, Any], sample_id: str, number: int) -> Session:
    key = f"session_{number}"
    timestamp = require_field(conversation, f"{key}_date_time", str, f"{sample_id}: conversation")
    occurred_at = parse_locomo_datetime(timestamp)
    turns = tuple(
        _parse_turn(raw, f"{sample_id}: {key}[{i}]", number, timestamp, occurred_at)
        for i, raw in enumerate(conversation[key])
    )
    return Session(index=number, timestamp=timestamp, occurred_at=occurred_at, turns=turns)


def _parse_turn(
    raw: Any, where: str, session: int, timestamp: str, occurred_at: datetime | None
) -> Turn:
    raw = require_object(raw, where)
    caption = raw.get("blip_caption")
    if caption is not None and not isinstance(caption, str):
        raise DatasetError(f"{where}: 'blip_caption' must be str, got {type(caption).__name__}")
    return Turn(
        speaker=require_field(raw, "speaker", str, where),
        dia_id=require_field(raw, "dia_id", str, where),
        text=require_field(raw, "text", str, where),
        session=session,
        timestamp=timestamp,
        occurred_at=occurred_at,
        image_caption=caption or None,
    )


def _parse_qa(raw: Any, sample_id: str, index: int) -> QAItem:
    where = f"{sample_id}: qa[{index}]"
    raw = require_object(raw, where)
    question = require_field(raw, "question", str, where)
    code = require_field(raw, "category", int, where)
    try:
        category = Category(code)
    except ValueError:
        raise DatasetError(f"{where}: unknown category {code} (expected 1-5)") from None
    evidence = raw.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise DatasetError(f"{where}: 'evidence' must be a list of str")
    answer = _optional_text(raw, "answer", where)
    if answer is None and category is not Category.ADVERSARIAL:
        raise DatasetError(f"{where} has no 'answer'")
    return QAItem(
        sample_id=sample_id,
        index=index,
        question=question,
        answer=answer,
        category=category,
        evidence=normalize_evidence(evidence),
        adversarial_answer=_optional_text(raw, "adversarial_answer", where),
    )


def _optional_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    """Answers are strings except six upstream ints (years, counts): cast those to str."""
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"{where}: {key!r} must be str or a number, got {type(value).__name__}")
    return str(value)


# ---------------------------------------------------------------- selecting


def get_conversation(conversations: Sequence[Conversation], sample_id: str) -> Conversation:
    """Return the conversation with this sample_id, or say which ids exist."""
    for conv in conversations:
        if conv.sample_id == sample_id:
            return conv
    available = ", ".join(c.sample_id for c in conversations) or "none"
    raise DatasetError(f"unknown conversation {sample_id!r}; available: {available}")


def select_sessions(
    conv: Conversation,
    sessions: Iterable[int] | str,
    qa: Literal["covered", "all", "none"] = "covered",
) -> Conversation:
    """Keep only some sessions of a conversation (e.g. for quick runs on sessions "1-3").

    `qa` decides which questions survive: "covered" (default) keeps those whose evidence lies entirely
    in the kept sessions, since others cannot be answered from them; "all" keeps every question;
    "none" drops them. QAItem.index is unchanged, so results still refer to the full file.
    """
    wanted = parse_session_range(sessions) if isinstance(sessions, str) else set(sessions)
    available = {s.index for s in conv.sessions}
    missing = sorted(wanted - available)
    if missing:
        raise DatasetError(
            f"{conv.sample_id} has no session(s) {', '.join(map(str, missing))}; "
            f"it has sessions {min(available, default=0)}-{max(available, default=0)}"
        )
    kept = tuple(s for s in conv.sessions if s.index in wanted)
    if qa == "all":
        questions = conv.qa
    elif qa == "none":
        questions = ()
    elif qa == "covered":
        turn_ids = {t.dia_id for s in kept for t in s.turns}
        questions = tuple(q for q in conv.qa if q.evidence and set(q.evidence) <= turn_ids)
    else:
        raise DatasetError(f"qa must be 'covered', 'all' or 'none', got {qa!r}")
    return Conversation(conv.sample_id, conv.speaker_a, conv.speaker_b, kept, questions)


# ---------------------------------------------------------------- finding


def default_locomo_path() -> Path:
    """Where `download_locomo` puts the file by default, and the third place `find_locomo` looks."""
    return data_home() / "locomo" / LOCOMO_FILENAME


def locomo_search_paths() -> list[Path]:
    """The implicit places `find_locomo` tries, in order (after --data and the env variable)."""
    return [
        default_locomo_path(),
        Path.cwd() / _SHARED_RELATIVE,
        _REPO_ROOT / _SHARED_RELATIVE,
    ]


def _as_file(path: Path) -> Path:
    """Accept a directory holding locomo10.json as well as the file itself."""
    return path / LOCOMO_FILENAME if path.is_dir() else path


def find_locomo(explicit: str | Path | None = None) -> Path:
    """Locate locomo10.json; see LOCOMO_SEARCH_PATHS_DOC for the order.

    A path the user named (argument or environment variable) must exist: silently falling back to
    another copy would hide a typo.
    """
    if explicit is not None:
        path = _as_file(Path(explicit).expanduser())
        if not path.is_file():
            raise DatasetNotFoundError(f"LoCoMo file {path} does not exist")
        return path
    env_value = os.environ.get(LOCOMO_ENV_VAR, "").strip()
    if env_value:
        path = _as_file(Path(env_value).expanduser())
        if not path.is_file():
            raise DatasetNotFoundError(f"{LOCOMO_ENV_VAR} points to {path}, which does not exist")
        return path
    candidates = locomo_search_paths()
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    searched = "; ".join(str(c) for c in [Path(f"${LOCOMO_ENV_VAR} (unset)"), *candidates])
    raise DatasetNotFoundError(
        f"LoCoMo file {LOCOMO_FILENAME} not found (searched: {searched}); pass --data PATH, "
        f"set {LOCOMO_ENV_VAR}, or run `memory-r1 data download locomo`"
    )


# ---------------------------------------------------------------- downloading


def download_locomo(
    dest: str | Path | None = None,
    url: str = LOCOMO_URL,
    sha256: str | None = LOCOMO_SHA256,
    timeout: float = 60.0,
) -> Path:
    """Download locomo10.json to `dest` (default: `default_locomo_path()`), verified and atomic
    (`memory_r1.data.download.download_verified`: checksum, then schema, then os.replace)."""
    target = _as_file(Path(dest).expanduser()) if dest is not None else default_locomo_path()
    return download_verified(url, target, sha256, load_locomo, "LoCoMo", timeout)
