"""Shipped trained agents: named before they exist, rebuilt by their seeded recipe, used by default once
built, and never half-built. On the tiny model, with a one-step recipe."""

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from memory_r1 import llm
from memory_r1.cli import app
from memory_r1.llm import TrainedAgent, UnknownModelError, is_built, resolve_model, trained_dir
from memory_r1.pipeline import Agents, PipelineConfig, answer_model_name
from memory_r1.rl import ship

TINY = "tiny-answer-sft"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own model cache: a built (or fake) agent must not change other tests' defaults."""
    monkeypatch.setenv("MEMORY_R1_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny_recipe(monkeypatch) -> ship.Recipe:
    """A trained agent for tiny-random: the real recipe's settings, one SFT step, hashing embeddings."""
    monkeypatch.setitem(llm.registry.TRAINED, TINY, TrainedAgent(TINY, "tiny-random", "answer"))
    real = ship.RECIPES["smollm2-135m-answer-sft"]
    recipe = replace(real, name=TINY, embedding_model="hashing", sessions=frozenset({1}),
                     config=replace(real.config, model="tiny-random", steps=1, val_limit=2))
    monkeypatch.setitem(ship.RECIPES, TINY, recipe)
    return recipe


def test_the_shipped_recipe_is_the_measured_run():
    recipe = ship.RECIPES["smollm2-135m-answer-sft"]
    c = recipe.config
    # benchmarks/run_answer_turns.sh, seed 0: cpu-small preset, 20 steps, gold targets, F1, 10 per speaker
    assert (c.agent, c.algo, c.sft_target, c.seed, c.steps, c.memories_per_speaker, c.prompts_per_step,
            c.lora, c.lora_rank, c.learning_rate) == ("answer", "sft", "gold", 0, 20, 10, 2, True, 8, 1e-4)
    assert (recipe.train_conversation, recipe.val_conversation) == ("conv-26", "conv-30")
    assert recipe.sessions is None  # whole conversations, as measured
    assert set(ship.RECIPES) == set(llm.TRAINED)


def test_an_unbuilt_agent_says_how_to_build_it_and_the_pipeline_keeps_the_base():
    with pytest.raises(UnknownModelError, match="memory-r1 agents build smollm2-135m-answer-sft"):
        resolve_model("smollm2-135m-answer-sft")
    assert answer_model_name(PipelineConfig()) == "smollm2-135m-instruct"


def test_which_answer_model_the_pipeline_uses():
    name = "smollm2-135m-answer-sft"
    trained_dir(name).mkdir(parents=True)
    (trained_dir(name) / "config.json").write_text("{}")  # built, as far as the choice is concerned
    assert answer_model_name(PipelineConfig()) == name
    assert answer_model_name(PipelineConfig(trained_answerer=False)) == "smollm2-135m-instruct"
    assert answer_model_name(PipelineConfig(answer_model="some/folder")) == "some/folder"
    assert answer_model_name(PipelineConfig(model="tiny-random")) == "tiny-random"  # no agent for it
    served = PipelineConfig(backend="openai", base_url="http://x/v1")  # a server serves what it serves
    assert answer_model_name(served) == "smollm2-135m-instruct"


def test_build_is_seeded_atomic_and_then_the_default(tiny_recipe, locomo_path):
    dest = ship.build_agent(tiny_recipe, locomo_path)
    assert dest == trained_dir(TINY) and is_built(TINY)
    files = {p.name for p in dest.iterdir()}
    assert {"config.json", "model.safetensors", "recipe.json", "metrics.jsonl"} <= files
    first = load_file(dest / "model.safetensors")
    base = load_file(resolve_model("tiny-random") + "/model.safetensors")
    assert any(not torch.equal(first[k], base[k]) for k in first)  # the step moved the merged weights

    ship.build_agent(tiny_recipe, locomo_path, force=True)  # same seed, same data: the same agent
    again = load_file(dest / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left

    agents = Agents.load(PipelineConfig(model="tiny-random", embedding_model="hashing"))
    assert agents.answerer.generator.name == TINY and agents.manager.generator.name == "tiny-random"
    assert agents.settings()["answer_model"] == TINY  # every run records which answerer it used
    base_agents = Agents.load(PipelineConfig(model="tiny-random", embedding_model="hashing",
                                             trained_answerer=False))
    assert base_agents.answerer.generator.name == "tiny-random"


def test_a_build_that_fails_leaves_nothing_behind(tiny_recipe, locomo_path):
    def crash(_stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ship.build_agent(tiny_recipe, locomo_path, on_step=crash)
    assert not is_built(TINY) and not trained_dir(TINY).exists()
    assert [p.name for p in trained_dir(TINY).parent.iterdir()] == []
    with pytest.raises(UnknownModelError):
        resolve_model(TINY)


def test_agents_cli(tiny_recipe, locomo_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["agents", "list", "--json"])
    assert listed.exit_code == 0 and '"built": false' in listed.output and TINY in listed.output
    wrong = runner.invoke(app, ["agents", "build", "no-such-agent", "--data", str(locomo_path)])
    assert wrong.exit_code != 0 and "unknown trained agent 'no-such-agent'" in wrong.output
    assert "Traceback" not in wrong.output
    built = runner.invoke(app, ["agents", "build", TINY, "--data", str(locomo_path)])
    assert built.exit_code == 0, built.output
    assert is_built(TINY) and "already built" in runner.invoke(app, ["agents", "build", TINY]).output
