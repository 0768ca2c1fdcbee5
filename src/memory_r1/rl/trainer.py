"""`memory-r1 train`: the training recipe, an explicit loop (no trainer framework).

    for step: sample prompts -> rollouts from the policy -> rewards from the environment -> GRPO/PPO update
              (or an SFT step on teacher outputs) -> metrics.jsonl -> checkpoint -> validation

Two stages as in the paper (section 2): train the Memory Manager with a frozen Answer Agent, then the
Answer Agent on banks built by the (trained) manager. Where the paper is silent, choices are documented on
`TrainConfig` and in the algorithm configs. LoRA by default, because it fits a laptop and a CPU: the
reference policy for the KL term is then the same model with the adapter switched off, at no extra memory.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.agents import AnswerAgent, MemoryManager
from memory_r1.data import find_locomo, get_conversation, load_locomo
from memory_r1.embeddings import DEFAULT_EMBEDDING_MODEL, load_embedder
from memory_r1.llm import TransformersGenerator, load_generator, resolve_model
from memory_r1.llm.base import GenerationConfig
from memory_r1.llm.transformers_backend import default_device
from memory_r1.pipeline import DEFAULT_MODEL
from memory_r1.rl.core import batch_logprobs, sample_rollouts
from memory_r1.rl.datasets import load_examples
from memory_r1.rl.envs import AnswerEnv, ManagerEnv
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.ppo import Critic, PPOConfig, ppo_update
from memory_r1.rl.sft import sft_step

Agent = Literal["answer", "manager"]
Algo = Literal["grpo", "ppo", "sft"]


@dataclass
class TrainConfig:
    agent: Agent
    algo: Algo
    dataset: Path
    """Folder written by `memory-r1 data build-answer` / `build-manager`."""
    out: Path
    model: str = DEFAULT_MODEL
    steps: int = 50
    prompts_per_step: int = 16
    """Prompts per step; with GRPO's group of 8 that is 128 rollouts, the paper's total batch size."""
    max_new_tokens: int = 256
    """Paper: 2048. Ours: answers and operation lists of the small default model fit in 256."""
    lr: float | None = None
    """None: the algorithm's default (paper 1e-6, for full fine-tuning of 7-8B models)."""
    lora: bool = True
    """Our choice (the paper does not say): LoRA adapters, merged into the saved model at the end."""
    lora_rank: int = 16
    seed: int = 0
    checkpoint_every: int = 10
    val_dataset: Path | None = None
    """A dataset folder built on the validation conversation (conv-30); scored greedily."""
    val_every: int = 0
    val_limit: int = 40
    reward: Literal["em", "f1"] = "em"
    """Both agents. Paper: exact match (a judge reward made answers longer and F1 lower). F1 is denser: a
    small model whose answers are almost never exact gets a learning signal from partial overlap."""
    format_bonus: float = 0.0
    """Added to the answer reward when the output has the `**Answer:**` format. Paper: none."""
    unparsable_penalty: float = -0.25
    """Manager reward for output with no usable JSON. Paper: none; a public reproduction uses -0.25."""
    window: int = 50
    """Manager: turns of history visible in the temporal bank. Paper's algorithm: 50 (prose: 24)."""
    answer_model: str | None = None
    """Manager training: the frozen Answer Agent (default: the base model)."""
    teacher_model: str | None = None
    """SFT: the teacher that writes target outputs (default: the base model); any backend."""
    teacher_backend: str = "transformers"
    teacher_base_url: str | None = None
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    data: Path | None = None
    """locomo10.json, needed for manager training (the conversation's turn order)."""
    device: str | None = None
    """None: CUDA when available, else CPU."""
    mixed_precision: bool | None = None
    """bf16 autocast over fp32 master weights. None: on where supported (CUDA with bf16), off on CPU,
    where bf16 matmuls are slower than fp32."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)


def cpu_small(config: TrainConfig) -> TrainConfig:
    """The small-CPU preset: a few prompts, small groups, short outputs, a LoRA learning rate."""
    config.steps, config.prompts_per_step, config.max_new_tokens = 20, 2, 96
    config.lr, config.lora_rank, config.checkpoint_every = 2e-5, 8, 5
    config.grpo.group_size, config.ppo.mini_batch_size = 4, 8
    return config


PRESETS = {"cpu-small": cpu_small}


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        path = resolve_model(config.model)
        self.device = torch.device(config.device) if config.device else default_device()
        self.mixed_precision = config.mixed_precision
        if self.mixed_precision is None:
            self.mixed_precision = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.policy = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(self.device)
        if config.lora:
            from peft import LoraConfig, get_peft_model

            adapter = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
            self.policy = get_peft_model(self.policy, adapter)
        self.policy.eval()  # no dropout: sampling-time and update-time log-probs must agree
        self.renderer = TransformersGenerator(path, model=self.policy, tokenizer=self.tokenizer, name="policy")
        algo = config.grpo if config.algo != "ppo" else config.ppo
        lr = config.lr or (config.grpo.lr if config.algo != "ppo" else config.ppo.actor_lr)
        self.optimizer = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad], lr=lr)
        self.critic = self.critic_optimizer = None
        if config.algo == "ppo":
            self.critic = Critic(AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(self.device))
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.ppo.critic_lr)
        self.max_new_tokens = min(config.max_new_tokens, algo.max_new_tokens)
        self.env = self._env(config.dataset)
        self.val_env = self._env(config.val_dataset) if config.val_dataset else None
        self.teacher_targets: dict[str, str] = {}
        self.step = 0

    # ---------------------------------------------------------------- set-up

    def _env(self, dataset: Path):
        c = self.config
        if c.agent == "answer":
            return AnswerEnv(load_examples(Path(dataset) / "answer.jsonl"), c.reward, c.format_bonus)
        examples = load_examples(Path(dataset) / "manager.jsonl")
        if not examples:
            raise ValueError(f"{dataset}: no manager examples")
        conversation = get_conversation(load_locomo(find_locomo(c.data)), examples[0]["sample_id"])
        embedder = load_embedder(c.embedding_model)
        frozen = load_generator(c.answer_model or c.model)  # a separate, frozen copy of the answerer
        return ManagerEnv(dataset, examples, conversation, MemoryManager(self.renderer, embedder),
                          AnswerAgent(frozen, embedder), window=c.window, unparsable_penalty=c.unparsable_penalty, reward=c.reward)

    # ---------------------------------------------------------------- the loop

    def train(self, on_step=None) -> Path:
        c = self.config
        c.out.mkdir(parents=True, exist_ok=True)
        (c.out / "config.json").write_text(json.dumps(_jsonable(asdict(c)), indent=2))
        rng = random.Random(c.seed)
        if self.step == 0 and self.val_env is not None and c.val_every:  # the base model's score, for reference
            with self._precision():
                self._log({"step": 0, **self.validate()})
        while self.step < c.steps:
            rng.seed(c.seed * 100_003 + self.step)  # the same prompts after a resume
            examples = rng.sample(self.env.examples, min(c.prompts_per_step, len(self.env.examples)))
            with self._precision():
                stats = self._sft_step(examples) if c.algo == "sft" else self._rl_step(examples)
            self.step += 1
            stats["step"] = self.step
            if self.val_env is not None and c.val_every and self.step % c.val_every == 0:
                with self._precision():
                    stats.update(self.validate())
            self._log(stats)
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                self.save_checkpoint()
            if on_step:
                on_step(stats)
        plot_curves(c.out / "metrics.jsonl", c.out / "training_curves.png")
        return self.save_final()

    def _log(self, row: dict) -> None:
        with (self.config.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _precision(self):
        """bf16 autocast (weights and optimizer state stay fp32), or nothing."""
        if not self.mixed_precision:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _rl_step(self, examples: list[dict]) -> dict:
        c = self.config
        algo = c.grpo if c.algo == "grpo" else c.ppo
        group = c.grpo.group_size  # samples per prompt; PPO uses them as independent rollouts
        prompts = [self.renderer.render(self.env.messages(e)) for e in examples]
        t0 = time.perf_counter()
        batch = sample_rollouts(self.policy, self.tokenizer, prompts, samples_per_prompt=group,
                                max_new_tokens=self.max_new_tokens, temperature=algo.temperature,
                                seed=c.seed * 1_000 + self.step,
                                old_logprobs=c.algo == "ppo")  # GRPO recomputes them only when off-policy
        rollout_s = time.perf_counter() - t0
        scored = [s for i, e in enumerate(examples) for s in self.env.score(e, batch.texts[i * group : (i + 1) * group])]
        batch.rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32, device=self.device)
        t1 = time.perf_counter()
        if c.algo == "grpo":
            if c.grpo.beta > 0:
                batch.ref_logprobs = self._reference_logprobs(batch, algo.temperature)
            stats = grpo_step(self.policy, self.optimizer, batch, c.grpo)
        else:
            if c.ppo.kl_coef > 0:
                batch.ref_logprobs = self._reference_logprobs(batch, algo.temperature)
            stats = ppo_update(self.policy, self.critic, self.optimizer, self.critic_optimizer, batch, c.ppo)
        tokens = batch.response_mask.sum().item()
        rewards = batch.rewards
        stats.update(
            reward_mean=rewards.mean().item(),
            reward_std=rewards.std().item() if len(rewards) > 1 else 0.0,
            format_failure_rate=sum(not s.parsed for s in scored) / len(scored),
            rollout_tokens_per_s=tokens / rollout_s,
            rollout_s=rollout_s,
            update_s=time.perf_counter() - t1,
            step_s=time.perf_counter() - t0,
        )
        return stats

    def _reference_logprobs(self, batch, temperature: float) -> torch.Tensor:
        if self.config.lora:
            with self.policy.disable_adapter():  # the base model is the reference: no second copy
                return batch_logprobs(self.policy, batch, temperature=temperature)
        raise ValueError("a KL term with full fine-tuning needs a reference copy: use --lora or beta/kl_coef 0")

    def _sft_step(self, examples: list[dict]) -> dict:
        t0 = time.perf_counter()
        prompts = [self.renderer.render(self.env.messages(e)) for e in examples]
        targets = self._teacher_outputs(examples)
        stats = sft_step(self.policy, self.tokenizer, self.optimizer, prompts, targets, self.config.grpo.micro_batch_size)
        stats["step_s"] = time.perf_counter() - t0
        return stats

    def _teacher_outputs(self, examples: list[dict]) -> list[str]:
        """Teacher trajectories, generated once per prompt (greedy) and cached beside the run."""
        c = self.config
        cache = c.out / "teacher_outputs.jsonl"
        if not self.teacher_targets and cache.exists():
            self.teacher_targets = {r["key"]: r["output"] for r in map(json.loads, cache.read_text().splitlines())}
        keys = [_example_key(e) for e in examples]
        missing = [e for e, k in zip(examples, keys, strict=True) if k not in self.teacher_targets]
        if missing:
            teacher = load_generator(c.teacher_model or c.model, backend=c.teacher_backend, base_url=c.teacher_base_url)
            outputs = teacher.generate([self.env.messages(e) for e in missing], GenerationConfig(max_new_tokens=self.max_new_tokens))
            with cache.open("a") as f:
                for e, g in zip(missing, outputs, strict=True):
                    self.teacher_targets[_example_key(e)] = g.text
                    f.write(json.dumps({"key": _example_key(e), "output": g.text}) + "\n")
        return [self.teacher_targets[k] for k in keys]

    def validate(self) -> dict:
        """Greedy outputs of the current policy on the validation examples, scored by the environment."""
        examples = self.val_env.examples[: self.config.val_limit]
        outputs = self.renderer.generate([self.val_env.messages(e) for e in examples],
                                         GenerationConfig(max_new_tokens=self.max_new_tokens))
        scored = [self.val_env.score(e, [g.text])[0] for e, g in zip(examples, outputs, strict=True)]
        return {"val_reward": sum(s.reward for s in scored) / len(scored),
                "val_format_failure_rate": sum(not s.parsed for s in scored) / len(scored)}

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        """Trainable weights, optimizer and RNG states, written to a temp dir then swapped in atomically."""
        final, tmp = self.config.out / "checkpoint", self.config.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        trainable = {n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad}
        torch.save(trainable, tmp / "policy.pt")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        if self.critic is not None:
            torch.save(self.critic.state_dict(), tmp / "critic.pt")
            torch.save(self.critic_optimizer.state_dict(), tmp / "critic_optimizer.pt")
        torch.save({"step": self.step, "torch_rng": torch.get_rng_state(), "mixed_precision": self.mixed_precision},
                   tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def resume(self) -> bool:
        path = self.config.out / "checkpoint"
        if not (path / "state.pt").exists():
            return False
        def load(name: str):
            return torch.load(path / name, map_location=self.device)

        self.policy.load_state_dict(load("policy.pt"), strict=False)
        self.optimizer.load_state_dict(load("optimizer.pt"))
        if self.critic is not None:
            self.critic.load_state_dict(load("critic.pt"))
            self.critic_optimizer.load_state_dict(load("critic_optimizer.pt"))
        state = torch.load(path / "state.pt")
        self.step = state["step"]
        torch.set_rng_state(state["torch_rng"].cpu())
        metrics = self.config.out / "metrics.jsonl"  # drop rows logged after the checkpoint
        if metrics.exists():
            rows = [r for r in metrics.read_text().splitlines() if r and json.loads(r)["step"] <= self.step]
            metrics.write_text("".join(r + "\n" for r in rows))
        return True

    def save_final(self) -> Path:
        """A plain transformers folder (LoRA merged) that `--answer-model` / `--manager-model` accept."""
        final = self.config.out / "final"
        shutil.rmtree(final, ignore_errors=True)
        model = self.policy.merge_and_unload() if self.config.lora else self.policy
        model.save_pretrained(final)
        self.tokenizer.save_pretrained(final)
        if self.config.lora:  # merging unwraps the adapters: rebuild nothing, training is over
            self.policy = model
        return final


def plot_curves(metrics_path: Path, out_png: Path) -> Path:
    """Training curves a person would rather look at than read: reward, KL, clipping, length, validation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    panels = [k for k in ("reward_mean", "val_reward", "kl", "clip_fraction", "vf_loss", "response_length",
                          "format_failure_rate", "sft_loss") if any(k in r for r in rows)]
    figure = Figure(figsize=(4 * min(len(panels), 4), 3 * ((len(panels) + 3) // 4)), dpi=110)
    FigureCanvasAgg(figure)
    for i, key in enumerate(panels):
        ax = figure.add_subplot((len(panels) + 3) // 4, min(len(panels), 4), i + 1)
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_png)
    return out_png


def _example_key(example: dict) -> str:
    return f"{example['sample_id']}/{example.get('qa_index', example.get('dia_id'))}"


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
