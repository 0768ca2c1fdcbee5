"""Verified, atomic downloads of benchmark files (LoCoMo, LongMemEval, MSC).

One routine for every dataset: stream to a temporary sibling while hashing, compare the sha256 pinned in
the code, check the schema with the dataset's own loader, and only then move the file into place with
os.replace. An interrupted, corrupted or wrong download (an HTML error page, another revision) never
leaves a file where the loaders would pick it up; an existing file with the right checksum is kept.
The loaders also share the reading and schema checks below, so every dataset fails with the same kind
of one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from platformdirs import user_data_path

from memory_r1.records import Conversation


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not shaped as expected. Messages are one line."""


class DatasetNotFoundError(DatasetError):
    """No dataset file could be found; the message lists where we looked and how to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives and what its bytes hash to."""

    name: str  # file name on disk, e.g. "longmemeval_s_cleaned.json"
    url: str
    sha256: str
    """Pinned from the upstream release (see each dataset module for the source); a mismatch is an error."""
    size: int | None = None  # bytes, for the message before a long download; None if unknown


def data_home() -> Path:
    """<user data dir>/memory-r1: where `memory-r1 data download` puts every dataset."""
    return user_data_path("memory-r1")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_verified(
    url: str,
    target: Path,
    sha256: str | None,
    validate: Callable[[Path], object],
    what: str,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `target`, checking `sha256` (None: skip) and then `validate(tmp_path)`.

    `validate` is the dataset's loader: it raises DatasetError when the bytes are not that dataset.
    """
    if sha256 is not None and target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = fetch(url, out, timeout)
        if sha256 is not None and actual != sha256:
            raise DatasetError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}")
        try:  # refuse to install something that is not the dataset (e.g. an HTML error page)
            validate(tmp)
        except DatasetError as exc:
            raise DatasetError(f"{url} did not return a {what} file: {exc}") from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(url: str, out: BinaryIO, timeout: float) -> str:
    """Stream `url` into `out`, returning the sha256 of what was written. Network failures -> DatasetError."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 16), b""):
                digest.update(block)
                out.write(block)
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DatasetError(f"could not download {url}: {exc.reason}") from exc
    except (TimeoutError, ConnectionError) as exc:
        raise DatasetError(f"could not download {url}: {exc}") from exc
    return digest.hexdigest()


def read_json_text(path: Path, what: str) -> str:
    """The file's text, or one clear DatasetError line (missing, a directory, not UTF-8)."""
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DatasetError(f"{what} file {path} {state}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start})") from exc


# ---------------------------------------------------------------- schema checks shared by the loaders


def read_json(path: Path, what: str) -> Any:
    """The decoded JSON of a whole file, or one DatasetError line that says where it broke."""
    try:
        return json.loads(read_json_text(path, what))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{where} must be an object, got {type(value).__name__}")
    return value


def require_field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key], type-checked (a bool is never an int here), naming the exact place when it is wrong."""
    if key not in obj:
        raise DatasetError(f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{where}: {key!r} must be {expected}, got {type(value).__name__}")
    return value


def parse_unique(
    data: Any, parse: Callable[[Any, str], Conversation], source: str, item: str, id_name: str, listed: str
) -> list[Conversation]:
    """`parse(data[i], where)` for a top-level list of `listed`, refusing anything else and repeated ids;
    `item` names a position in messages (`sample[3]`)."""
    if not isinstance(data, list):
        raise DatasetError(f"{source}: top level must be a list of {listed}, got {type(data).__name__}")
    conversations: list[Conversation] = []
    seen: set[str] = set()
    for position, raw in enumerate(data):
        conv = parse(raw, f"{source}: {item}[{position}]")
        if conv.sample_id in seen:
            raise DatasetError(f"{source}: {id_name} {conv.sample_id!r} appears more than once")
        seen.add(conv.sample_id)
        conversations.append(conv)
    return conversations
