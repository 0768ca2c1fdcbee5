"""Hydra overrides for `python -m verl.trainer.main_ppo` that reproduce the paper's training settings.

Paper (App. D): total batch 128, micro-batch 2 per GPU, prompt 4096 / response 2048 tokens, actor lr 1e-6,
critic lr 1e-5, temperature 1.0 for rollouts and greedy validation, verl on 4 H100s (8 for the 14B model).
Where the paper is silent the presets take the LOCAL trainer's choices (`rl/grpo.py`, `rl/ppo.py`), so the
two engines run the same recipe:
- "batch 128" is 128 rollouts per step, as locally: GRPO 16 prompts x G=8, PPO 128 prompts x 1;
- GRPO: one update per batch (mini-batch = batch), KL in the loss, beta 0.001, k3 (verl: low_var_kl);
- PPO: four clipped updates per batch (mini-batch 32), value clip 0.5, gamma = lambda = 1, no KL term;
- 50 steps (`TrainConfig.steps`), validation every 5, a checkpoint every 10 with the HF weights saved
  (`checkpoint.save_contents` includes hf_model), so `global_step_N/actor/huggingface` loads directly in
  `--answer-model` / `--manager-model`.
Our choice for the parallel layout: vLLM tensor parallelism 1 for 3B, 2 for 7-8B, 4 for 14B, and FSDP
parameter + optimizer offload for 14B; these are starting points for 80 GB GPUs, not tuned numbers.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Algo = Literal["grpo", "ppo"]


@dataclass(frozen=True)
class ModelLayout:
    hub_id: str
    """Hugging Face model id (or a local path): the policy, and the critic's initialisation under PPO."""
    gpus: int
    """GPUs on one node. Paper: 4 H100s, 8 for the 14B model; the smoke preset: 1."""
    tensor_parallel: int
    """vLLM tensor parallelism of the rollout. Our choice: fits the model in ~60% of an 80 GB GPU."""
    offload: bool = False
    """FSDP parameter and optimizer offload to CPU. Our choice: on for 14B (actor + critic + ref + vLLM)."""


MODELS: dict[str, ModelLayout] = {
    "qwen2.5-3b": ModelLayout("Qwen/Qwen2.5-3B-Instruct", 4, 1),
    "qwen2.5-7b": ModelLayout("Qwen/Qwen2.5-7B-Instruct", 4, 2),
    "llama3.1-8b": ModelLayout("meta-llama/Llama-3.1-8B-Instruct", 4, 2),
    "qwen2.5-14b": ModelLayout("Qwen/Qwen2.5-14B-Instruct", 8, 4, offload=True),
    "smoke": ModelLayout("Qwen/Qwen2.5-0.5B-Instruct", 1, 1),
}


@dataclass(frozen=True)
class Recipe:
    rollouts_per_step: int = 128
    """Paper: total batch 128."""
    group_size: int = 8
    """GRPO's G. Paper silent; the local trainer's default (`GRPOConfig.group_size`)."""
    micro_batch_per_gpu: int = 2
    """Paper: micro-batch 2 per GPU."""
    max_prompt_length: int = 4096
    """Paper: 4096 tokens."""
    max_response_length: int = 2048
    """Paper: 2048 tokens."""
    actor_lr: float = 1e-6
    """Paper: 1e-6."""
    critic_lr: float = 1e-5
    """Paper: 1e-5."""
    temperature: float = 1.0
    """Paper: 1.0 for rollouts (validation is greedy)."""
    grpo_kl_coef: float = 0.001
    """Local `GRPOConfig.beta` (verl's GRPO examples)."""
    ppo_mini_batch: int = 32
    """Local `PPOConfig.mini_batch_size`: four updates per batch of 128."""
    steps: int = 50
    """Local `TrainConfig.steps`. Paper silent."""
    test_freq: int = 5
    """Validate every N steps (and before training). Our choice."""
    save_freq: int = 10
    """Checkpoint every N steps. Our choice."""
    gpu_memory_utilization: float = 0.6
    """vLLM's share of each GPU while it rolls out. Our choice (verl's default is 0.5)."""
    max_samples: int = -1
    """Rows used from each parquet file (-1: all). The smoke preset uses a few."""


PAPER = Recipe()
SMOKE = Recipe(rollouts_per_step=8, group_size=2, micro_batch_per_gpu=1, max_response_length=256,
               ppo_mini_batch=4,
               steps=2, test_freq=2, save_freq=2, gpu_memory_utilization=0.4, max_samples=16)
"""One GPU, a 0.5B model, two steps: proves the cluster set-up (Ray, vLLM, FSDP, the reward, the checkpoint)
in minutes before a paper-sized run is spent on it."""


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelLayout
    algo: Algo
    recipe: Recipe


PRESETS: dict[str, Preset] = {
    f"{key}-{algo}": Preset(f"{key}-{algo}", layout, algo, SMOKE if key == "smoke" else PAPER)
    for key, layout in MODELS.items()
    for algo in ("grpo", "ppo")
}


@dataclass(frozen=True)
class Answerer:
    """The Memory Manager reward's frozen Answer Agent."""

    model: str
    """Model name (hub id or path); verl's reward-model server loads it when `base_url` is None."""
    base_url: str | None = None
    """An OpenAI-compatible server already running it (vLLM, SGLang); None: verl hosts it itself."""


def rewards_path() -> Path:
    """The file verl loads `compute_score` from (inside the installed package)."""
    from memory_r1.rl.verl import rewards

    return Path(rewards.__file__).resolve()


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def overrides(preset: Preset, export_dir: Path, manifest: dict[str, Any], out: Path,
              answerer: Answerer | None = None, reward: str = "em") -> list[str]:
    """The `key=value` Hydra overrides of one run: data, policy, algorithm, reward, trainer."""
    r, m, export_dir = preset.recipe, preset.model, Path(export_dir).resolve()
    grpo = preset.algo == "grpo"
    n = r.group_size if grpo else 1
    prompts = r.rollouts_per_step // n
    actor = "actor_rollout_ref.actor"
    rollout = "actor_rollout_ref.rollout"
    kwargs = "+reward.custom_reward_function.reward_kwargs"
    agent = manifest["agent"]
    o: dict[str, Any] = {
        "algorithm.adv_estimator": "grpo" if grpo else "gae",
        "algorithm.use_kl_in_reward": False,
        "algorithm.gamma": 1.0, "algorithm.lam": 1.0,
        "data.train_files": export_dir / "train.parquet", "data.val_files": export_dir / "val.parquet",
        "data.train_batch_size": prompts, "data.max_prompt_length": r.max_prompt_length,
        "data.max_response_length": r.max_response_length, "data.filter_overlong_prompts": True,
        "data.truncation": "error", "data.train_max_samples": r.max_samples,
        "data.val_max_samples": r.max_samples, "actor_rollout_ref.model.path": m.hub_id,
        "actor_rollout_ref.model.enable_gradient_checkpointing": True,
        "actor_rollout_ref.model.use_remove_padding": True,
        f"{actor}.optim.lr": r.actor_lr,
        f"{actor}.ppo_mini_batch_size": prompts if grpo else r.ppo_mini_batch,
        f"{actor}.ppo_micro_batch_size_per_gpu": r.micro_batch_per_gpu,
        f"{actor}.ppo_epochs": 1, f"{actor}.clip_ratio": 0.2, f"{actor}.loss_agg_mode": "token-mean",
        f"{actor}.entropy_coeff": 0.0,
        f"{actor}.use_kl_loss": grpo, f"{actor}.kl_loss_coef": r.grpo_kl_coef,
        f"{actor}.kl_loss_type": "low_var_kl",
        f"{actor}.checkpoint.save_contents": "['model','optimizer','extra','hf_model']",
        f"{actor}.fsdp_config.param_offload": m.offload, f"{actor}.fsdp_config.optimizer_offload": m.offload,
        f"{rollout}.name": "vllm", f"{rollout}.tensor_model_parallel_size": m.tensor_parallel,
        f"{rollout}.gpu_memory_utilization": r.gpu_memory_utilization, f"{rollout}.n": n,
        f"{rollout}.temperature": r.temperature, f"{rollout}.top_p": 1.0, f"{rollout}.top_k": -1,
        f"{rollout}.log_prob_micro_batch_size_per_gpu": r.micro_batch_per_gpu,
        f"{rollout}.val_kwargs.do_sample": False, f"{rollout}.val_kwargs.temperature": 0,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": r.micro_batch_per_gpu,
        "actor_rollout_ref.ref.fsdp_config.param_offload": m.offload,
        "reward.custom_reward_function.path": rewards_path(),
        "reward.custom_reward_function.name": "compute_score",
        f"{kwargs}.reward": reward,
        "trainer.nnodes": 1, "trainer.n_gpus_per_node": m.gpus,
        "trainer.total_epochs": 1000, "trainer.total_training_steps": r.steps,
        "trainer.test_freq": r.test_freq, "trainer.save_freq": r.save_freq, "trainer.val_before_train": True,
        "trainer.logger": "['console']", "trainer.project_name": "memory-r1",
        "trainer.experiment_name": f"{agent}-{preset.name}", "trainer.default_local_dir": Path(out).resolve(),
    }
    if not grpo:
        o |= {"critic.model.path": m.hub_id, "critic.optim.lr": r.critic_lr,
              "critic.ppo_micro_batch_size_per_gpu": r.micro_batch_per_gpu, "critic.cliprange_value": 0.5,
              "critic.model.enable_gradient_checkpointing": True, "critic.model.use_remove_padding": True,
              "critic.fsdp.param_offload": m.offload, "critic.fsdp.optimizer_offload": m.offload}
    if agent == "manager":
        if answerer is None:
            raise ValueError("a Memory Manager run needs the frozen answerer: pass --answerer-model")
        o |= {f"{kwargs}.dataset_dir": export_dir, f"{kwargs}.answerer_model": answerer.model,
              f"{kwargs}.embedding_model": manifest["embedding_model"]}
        if answerer.base_url:
            o[f"{kwargs}.answerer_base_url"] = answerer.base_url
        else:  # verl hosts the frozen answerer next to the policy and passes us its router address
            o |= {"reward.reward_model.enable": True, "reward.reward_model.model_path": answerer.model,
                  "reward.reward_model.rollout.name": "vllm",
                  "reward.reward_model.rollout.tensor_model_parallel_size": m.tensor_parallel,
                  "reward.reward_model.rollout.gpu_memory_utilization": 0.25}
    return [f"{key}={_fmt(value)}" for key, value in o.items()]


def launch_command(preset: Preset, export_dir: Path, manifest: dict[str, Any], out: Path,
                   answerer: Answerer | None = None, reward: str = "em",
                   python: str | None = None) -> list[str]:
    return [python or "python3", "-m", "verl.trainer.main_ppo",
            *overrides(preset, export_dir, manifest, out, answerer, reward)]


def launch_script(command: list[str]) -> str:
    """A shell script that runs `command`, one override per line."""
    head = " ".join(shlex.quote(c) for c in command[:3])
    body = " \\\n    ".join(shlex.quote(c) for c in command[3:])
    return (f"#!/usr/bin/env bash\n# Written by `memory-r1 export verl`.\nset -euo pipefail\n"
            f'{head} \\\n    {body} "$@"\n')


def checkpoint_dir(out: Path, step: int) -> Path:
    """Where verl writes the HF weights of step `step` (loadable by --answer-model / --manager-model)."""
    return Path(out) / f"global_step_{step}" / "actor" / "huggingface"


def serve_command(model: str, tensor_parallel: int = 1, port: int = 8000) -> str:
    """The vLLM server for evaluation, ingestion or the frozen answerer (OpenAI-compatible, many requests
    in flight); point `--backend openai --base-url http://HOST:PORT/v1 --model <model>` at it."""
    return (f"vllm serve {shlex.quote(model)} --tensor-parallel-size {tensor_parallel} --port {port} "
            f"--max-model-len 8192 --gpu-memory-utilization 0.9")
