"""Trained agents, shipped as seeded recipes: the exact run that was measured, rebuilt on the user's machine.

Why a recipe and not weights in the package: the agents are fine-tuned on LoCoMo, whose licence
(CC BY-NC 4.0) keeps its derivatives out of this repository, and the user already holds the file the
recipe needs. A recipe is the committed experiment's configuration (benchmarks/run_answer_turns.sh,
seed 0): the same datasets (every turn of the training conversation stored verbatim, ten memories per
speaker), the same trainer and seed, so the rebuilt agent is the one whose numbers the README reports.

`build_agent` writes into a temporary folder beside the target and renames it when training is done, so
a crash or a Ctrl-C never leaves a half-built agent that the pipeline would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from memory_r1.data import find_locomo, get_conversation, load_locomo, select_sessions
from memory_r1.llm import TRAINED, is_built, trained_dir
from memory_r1.pipeline import MemorySystem, PipelineConfig
from memory_r1.rl.trainer import TrainConfig, Trainer, cpu_small


@dataclass(frozen=True)
class Recipe:
    """How one trained agent in `memory_r1.llm.TRAINED` is rebuilt."""

    name: str
    config: TrainConfig
    """The training run; its dataset, val_dataset and out are filled in by `build_agent`."""
    train_conversation: str = "conv-26"
    """The paper's training conversation (1 of 10; the split's train part)."""
    val_conversation: str = "conv-30"
    """The validation conversation (the split's val part); it only produces the logged val reward."""
    sessions: frozenset[int] | None = None
    """Sessions of both conversations to use (None: all, as measured; tests use a prefix)."""
    embedding_model: str = "all-MiniLM-L6-v2"
    measured: str = ""
    """What the agent gained where it was measured, for `agents list` and the recipe file."""


def _answer_sft() -> Recipe:
    base = TrainConfig(agent="answer", algo="sft", dataset=Path(), out=Path(), model="smollm2-135m-instruct",
                       seed=0, sft_target="gold", reward="f1", memories_per_speaker=10, val_every=20,
                       val_limit=20)
    return Recipe(
        "smollm2-135m-answer-sft",
        cpu_small(base),
        measured="gold-target SFT, 20 steps: F1 vs base +7.4 [+2.9, +12.0] on 64 test-split questions "
        "(verbatim-turn retrieval; seeds 1, 2: +7.0, +6.2); format failures 15.6% -> 6.2%",
    )


RECIPES: dict[str, Recipe] = {r.name: r for r in (_answer_sft(),)}
assert set(RECIPES) == set(TRAINED), "every shipped agent has exactly one recipe"


def _turns_dataset(recipe: Recipe, locomo: Path, sample_id: str, out: Path) -> Path:
    """Answer Agent examples over a bank that holds every turn of the conversation verbatim."""
    from memory_r1.eval.systems import index_turns
    from memory_r1.rl.datasets import build_answer_dataset

    conversation = get_conversation(load_locomo(locomo), sample_id)
    if recipe.sessions is not None:
        conversation = select_sessions(conversation, recipe.sessions)
    model, embedding_model = recipe.config.model, recipe.embedding_model
    config = PipelineConfig(model=model, embedding_model=embedding_model, trained_answerer=False)
    out.mkdir(parents=True, exist_ok=True)
    system = MemorySystem.from_config(config, out / "bank.db")
    index_turns(system.store, system.agents.embedder, conversation)
    build_answer_dataset(system, conversation, out)
    return out


def build_agent(recipe: Recipe, locomo: Path | None = None, *, force: bool = False,
                on_step: Callable[[dict[str, float]], None] | None = None) -> Path:
    """Build `recipe`'s agent into `trained_dir(name)` (kept if already built, unless `force`); `locomo`:
    locomo10.json (None: the documented places)."""
    locomo = find_locomo(locomo)
    dest = trained_dir(recipe.name)
    if is_built(recipe.name) and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{recipe.name}-", dir=dest.parent) as tmp:
        work = Path(tmp)
        config = replace(
            recipe.config,
            dataset=_turns_dataset(recipe, locomo, recipe.train_conversation, work / "train-data"),
            val_dataset=_turns_dataset(recipe, locomo, recipe.val_conversation, work / "val-data"),
            embedding_model=recipe.embedding_model,
            out=work / "run",
        )
        final = Trainer(config).train(on_step)
        for name in ("metrics.jsonl", "training_curves.png"):
            if (config.out / name).exists():
                shutil.copy(config.out / name, final / name)
        record = {"name": recipe.name, "measured": recipe.measured,
                  "train_conversation": recipe.train_conversation,
                  "val_conversation": recipe.val_conversation,
                  "config": {k: v for k, v in json.loads((config.out / "config.json").read_text()).items()
                             if k not in ("dataset", "val_dataset", "out")}}
        (final / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
        if dest.exists():  # --force: the old agent goes only once the new one is complete
            shutil.rmtree(dest)
        os.replace(final, dest)
    return dest


def describe(recipe: Recipe) -> dict[str, object]:
    """One row of `memory-r1 agents list`."""
    agent = TRAINED[recipe.name]
    return {"name": recipe.name, "base_model": agent.base_model, "role": agent.role,
            "algo": recipe.config.algo, "seed": recipe.config.seed, "steps": recipe.config.steps,
            "built": is_built(recipe.name), "path": str(trained_dir(recipe.name)),
            "measured": recipe.measured, "config": asdict(recipe.config)}
