"""The training recipe end to end on the tiny model: every agent x algorithm runs, checkpoints, resumes,
and saves a model the pipeline can load."""

import json

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app
from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.llm import TransformersGenerator
from memory_r1.llm.base import GenerationConfig
from memory_r1.rl.datasets import build_answer_dataset, build_manager_dataset
from memory_r1.rl.ppo import PPOConfig
from memory_r1.rl.rollout import RolloutConfig
from memory_r1.rl.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, locomo_path):
    """Answer and manager datasets from conv-26 session 1, built with a scripted teacher (real banks)."""
    root = tmp_path_factory.mktemp("datasets")
    conv = select_sessions(get_conversation(load_locomo(locomo_path), "conv-26"), {1})
    return root, conv


@pytest.fixture
def built(datasets, scripted, make_system):
    root, conv = datasets
    if not (root / "answer" / "answer.jsonl").exists():
        build_answer_dataset(make_system(scripted(), bank=root / "answer-bank.db"), conv, root / "answer")
        build_manager_dataset(make_system(scripted(), bank=root / "teacher.db"), conv, root / "manager")
    return root


def config(built, tmp_path, agent="answer", algo="grpo", **kw):
    settings = {"steps": 2, "prompts_per_step": 2, "lr": 1e-3, "checkpoint_every": 1,
                "embedding_model": "hashing", "ppo": PPOConfig(mini_batch_size=4),
                "rollout": RolloutConfig(samples_per_prompt=2, max_new_tokens=6)} | kw
    return TrainConfig(agent=agent, algo=algo, dataset=built / agent, out=tmp_path / "run",
                       model="tiny-random", **settings)


@pytest.mark.parametrize("algo", ["grpo", "ppo", "sft"])
def test_answer_agent_trains_and_saves_a_loadable_model(built, tmp_path, algo):
    final = Trainer(config(built, tmp_path, algo=algo)).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    key = "sft_loss" if algo == "sft" else "reward_mean"
    assert all(key in r for r in rows)
    if algo == "ppo":
        assert "vf_loss" in rows[0]
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 5_000
    reloaded = TransformersGenerator(str(final))
    [out] = reloaded.generate([[{"role": "user", "content": "hi"}]], GenerationConfig(max_new_tokens=3))
    assert out.usage.completion_tokens > 0


def test_training_changes_the_weights_and_resume_continues(built, tmp_path):
    first = Trainer(config(built, tmp_path))
    before = {n: p.detach().clone() for n, p in first.policy.named_parameters() if p.requires_grad}
    first.train()
    state = __import__("torch").load(tmp_path / "run" / "checkpoint" / "policy.pt")
    assert any(not (state[n] == before[n]).all() for n in state if n in before)

    resumed = Trainer(config(built, tmp_path, val_dataset=built / "answer", val_every=1, steps=3))
    assert resumed.resume() and resumed.step == 2
    resumed.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "val_reward" in rows[-1]


def test_validation_starts_with_the_base_model(built, tmp_path):
    Trainer(config(built, tmp_path, steps=2, val_dataset=built / "answer", val_every=2)).train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"step", "val_reward", "val_format_failure_rate"} and "val_reward" in rows[2]
    assert "val_reward" not in rows[1] and (tmp_path / "run" / "training_curves.png").stat().st_size > 0


@pytest.mark.parametrize("algo", ["grpo", "ppo", "sft"])
def test_mixed_precision_path_runs_and_is_off_by_default_on_cpu(built, tmp_path, algo):
    torch = __import__("torch")
    assert Trainer(config(built, tmp_path, algo=algo, steps=1)).mixed_precision is False  # CPU: fp32
    trainer = Trainer(config(built, tmp_path, algo=algo, steps=1, mixed_precision=True))  # the CUDA code path
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}
    trainer.train()
    [row] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(v == v and abs(v) != float("inf") for v in row.values() if isinstance(v, float))  # no NaN/inf
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())  # fp32 master weights
    if algo == "sft":  # always a gradient: the trained (LoRA) weights must move
        saved = torch.load(tmp_path / "run" / "checkpoint" / "policy.pt")
        assert saved.keys() == before.keys() and any(not (saved[n] == before[n]).all() for n in saved)


def test_manager_grpo_step_applies_decisions_to_forks(built, tmp_path, locomo_path):
    trainer = Trainer(config(built, tmp_path, agent="manager", data=locomo_path, steps=1))
    trainer.train()
    [row] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # six random tokens are never valid JSON: every rollout gets the unparsable penalty
    assert row["reward_mean"] == pytest.approx(-0.25) and row["format_failure_rate"] == 1.0


def test_train_cli(built, tmp_path):
    result = CliRunner().invoke(app,
                                ["train", "answer", "--dataset", str(built / "answer"), "--out",
                                 str(tmp_path / "cli"),
                                      "--model", "tiny-random", "--steps", "1", "--prompts-per-step", "1",
                                      "--group-size", "2", "--max-new-tokens", "4", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "final" / "config.json").exists()
    bad = CliRunner().invoke(app,
                             ["train", "critic", "--dataset", str(built / "answer"), "--out",
                              str(tmp_path / "x")])
    assert bad.exit_code == 1 and "answer|manager" in bad.output


class TextEnv:
    """The answer environment with a reward computed from each row's own text (distinct across rows)."""

    def __init__(self, env, constant: bool = False):
        self.env, self.examples, self.constant = env, env.examples, constant

    def messages(self, example):
        return self.env.messages(example)

    def score(self, example, outputs):
        from memory_r1.rl.envs import Scored

        return [Scored(1.0 if self.constant else float(len(t) % 7), True, {}) for t in outputs]


def test_rewards_line_up_with_their_rows(built, tmp_path):
    """Fails if the trainer pairs a reward with another row's response (shuffled, reversed, regrouped)."""
    trainer = Trainer(config(built, tmp_path, rollout=RolloutConfig(samples_per_prompt=4, max_new_tokens=8)))
    trainer.env = TextEnv(trainer.env)
    batch, scored = trainer.rollout(trainer.env.examples[:3])
    expected = [float(len(t) % 7) for t in batch.texts]
    assert len(set(expected)) > 2, "rows too alike: the test would prove nothing"
    assert batch.rewards.tolist() == expected and [s.reward for s in scored] == expected


def test_dynamic_sampling_counts_and_refills_zero_variance_groups(built, tmp_path):
    trainer = Trainer(config(built, tmp_path, steps=1, dynamic_sampling=True, max_refill_rounds=2))
    trainer.env = TextEnv(trainer.env, constant=True)  # every group all-equal: all dropped, refills tried
    trainer.train()
    [row] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (
        row["zero_variance_fraction"] == 1.0 and 1.0 <= row["refill_rounds"] <= 2.0
    )  # fewer when the pool runs dry
    assert {"entropy", "update_tokens_per_s", "lr"} <= row.keys()


def test_cli_options_come_from_the_config_fields(built, tmp_path):
    out = tmp_path / "knobs"
    result = CliRunner().invoke(app, [
        "train", "answer", "--dataset", str(built / "answer"), "--out", str(out), "--model", "tiny-random",
        "--steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "4", "--lr",
        "1e-3", "--grpo-clip-eps-high", "0.28", "--grpo-clip-ratio-c", "3", "--beta", "0", "--reward", "f1",
        "--warmup-steps", "2", "--lora-rank", "4", "--lora-targets", "q_proj,v_proj", "--embedding-model",
        "hashing",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["grpo"]["clip_eps_high"] == 0.28 and saved["grpo"]["beta"] == 0.0
    assert saved["rollout"]["samples_per_prompt"] == 2 and saved["lora_targets"] == "q_proj,v_proj"
    bad = CliRunner().invoke(app, ["train", "answer", "--dataset", str(built / "answer"), "--out", str(out),
                                   "--reward", "bleu"])
    assert bad.exit_code == 1 and "--reward: expected em|f1" in bad.output
