"""The folder tree is the architecture: imports point downstream only, and modules stay a readable size.

Layers, upstream first (a module may import its own layer and any layer before it, never a later one):

    records, embeddings -> bank, data, llm -> prompts -> agents -> pipeline -> memory -> eval -> rl
        -> cli, service

`memory_r1/__init__.py` is the public facade: it may re-export from anywhere, lazily. A new top-level module
or subpackage must be placed in LAYERS, which is the point: whoever adds one decides where it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "memory_r1"
LAYERS: dict[str, int] = {
    "records": 0,
    "embeddings": 0,
    "settings": 0,
    "threads": 0,  # the CPU thread policy: embeddings, bank and llm all read it
    "bank": 1,
    "data": 1,
    "llm": 1,
    "prompts": 2,
    "agents": 3,
    "pipeline": 4, "parallel": 4,
    "memory": 5,
    "eval": 6,
    "rl": 7,
    "cli": 8,
    "service": 8,
}
LEAVES = {"cli", "service"}  # nothing imports them
LAUNCHERS = {("cli", "service")}  # ...except the command that starts the server (`memory-r1 serve`)
MAX_MODULE_LINES = 900
"""A module over this is doing more than one thing: split it by responsibility."""
OVER_CAP: dict[str, int] = {}
"""Known debt, each with its own (lower) ceiling so it cannot keep growing. Empty since the SQLite store's
file opening and schema checks moved to `bank/sqlite_file.py`."""


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def component(path_or_module: Path | str) -> str:
    """The top-level part under memory_r1 that a file or a dotted module name belongs to."""
    if isinstance(path_or_module, Path):
        parts = path_or_module.relative_to(PACKAGE).with_suffix("").parts
    else:
        parts = tuple(path_or_module.split(".")[1:])
    return parts[0] if parts else "__init__"


def imported(path: Path) -> set[str]:
    """Every memory_r1 module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("memory_r1"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("memory_r1"))
    return found


def test_every_component_has_a_layer():
    unplaced = sorted({component(p) for p in modules()} - set(LAYERS) - {"__init__"})
    assert not unplaced, f"place these in LAYERS (tests/test_architecture.py): {unplaced}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downstream(path: Path):
    here = component(path)
    if here == "__init__":
        return
    upstream = []
    for module in imported(path):
        there = component(module)
        if there == "__init__" and module == "memory_r1":  # `from memory_r1 import __version__`
            continue
        if there in LEAVES and there != here and (here, there) not in LAUNCHERS:
            upstream.append(f"{module} (a leaf)")
        elif LAYERS.get(there, -1) > LAYERS[here]:
            upstream.append(f"{module} (layer {LAYERS[there]} > {LAYERS[here]})")
    assert not upstream, f"{path.relative_to(PACKAGE)} imports upstream: {upstream}"


def test_the_checker_sees_an_upstream_import(tmp_path: Path):
    """The test above must be able to fail: a bank module importing the pipeline is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from memory_r1.pipeline import MemorySystem\n")
    assert {component(m) for m in imported(bad)} == {"pipeline"}
    assert LAYERS["pipeline"] > LAYERS["bank"]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_fit_in_one_head(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    cap = OVER_CAP.get(str(path.relative_to(PACKAGE)), MAX_MODULE_LINES)
    assert lines <= cap, f"{path.relative_to(PACKAGE)} has {lines} lines (cap {cap})"
