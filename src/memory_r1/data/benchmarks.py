"""The one mapping from a benchmark name to its loader, for `memory-r1 eval --dataset` and `data download`."""

from __future__ import annotations

from pathlib import Path

from memory_r1.data.download import DatasetError
from memory_r1.data.locomo import download_locomo, find_locomo, load_locomo
from memory_r1.data.longmemeval import (
    LONGMEMEVAL_FILES,
    download_longmemeval,
    find_longmemeval,
    load_longmemeval,
)
from memory_r1.data.msc import download_msc, find_msc, load_msc
from memory_r1.records import Conversation

DATASETS: tuple[str, ...] = ("locomo", "longmemeval", "msc")
LICENSES = {
    "locomo": "CC BY-NC 4.0: non-commercial use, credit Maharana et al., ACL 2024",
    "longmemeval": "MIT: credit Wu et al., ICLR 2025",
    "msc": "Apache-2.0 (MemGPT's MSC-Self-Instruct); MSC itself: Xu et al., ACL 2022",
}


def _check(name: str, variant: str | None) -> None:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if variant is not None and name != "longmemeval":
        raise DatasetError(f"--variant is for longmemeval ({', '.join(LONGMEMEVAL_FILES)}), not {name}")


def load_benchmark(name: str, data: Path | None = None, variant: str | None = None) -> list[Conversation]:
    """Conversations of a benchmark from `data` (a file or folder) or its default place."""
    _check(name, variant)
    if name == "locomo":
        return load_locomo(find_locomo(data))
    if name == "longmemeval":
        return load_longmemeval(find_longmemeval(data, variant or "s"))
    return load_msc(find_msc(data))


def download_benchmark(name: str, dest: Path | None = None, variant: str | None = None) -> Path:
    _check(name, variant)
    if name == "locomo":
        return download_locomo(dest)
    if name == "longmemeval":
        return download_longmemeval(variant or "s", dest)
    return download_msc(dest)
