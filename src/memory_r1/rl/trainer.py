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
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from memory_r1.agents import AnswerAgent, MemoryManager
from memory_r1.agents.answerer import AnswerConfig
from memory_r1.bank import SQLiteStore
from memory_r1.data import find_locomo, get_conversation, load_locomo
from memory_r1.embeddings import DEFAULT_EMBEDDING_MODEL, load_embedder
from memory_r1.llm import TransformersGenerator, load_generator, resolve_model
from memory_r1.llm.base import GenerationConfig, Message
from memory_r1.llm.transformers_backend import default_device
from memory_r1.pipeline import DEFAULT_MODEL
from memory_r1.records import owner_id
from memory_r1.rl.core import RolloutBatch
from memory_r1.rl.datasets import DEFAULT_WINDOW, AnswerExample, answer_examples, manager_examples
from memory_r1.rl.envs import AnswerEnv, ManagerEnv, Reward, Scored
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.passes import pass_logprobs
from memory_r1.rl.ppo import Critic, PPOConfig, ppo_update
from memory_r1.rl.rollout import RolloutConfig, merge_batches, sample_rollouts
from memory_r1.rl.sft import SFTConfig, sft_step

Agent = Literal["answer", "manager"]
Algo = Literal["grpo", "ppo", "sft"]
WeightsDtype = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class TrainConfig:
    """One `memory-r1 train` run. Every knob lives here or in the nested configs, once; the CLI's options are
    derived from these fields and their docstrings (`cli/training.py`)."""

    agent: Agent
    """answer or manager."""
    algo: Algo
    """grpo, ppo or sft."""
    dataset: Path
    """Folder written by `memory-r1 data build-answer` / `build-manager`."""
    out: Path
    """Run folder: config.json, metrics.jsonl, training_curves.png, checkpoint/, final/."""
    model: str = DEFAULT_MODEL
    """The policy: registered name, local path or hub id."""
    steps: int = 50
    """Update steps. Our choice: enough for a CPU run to show a trend; the paper does not report its count."""
    prompts_per_step: int = 16
    """Prompts per step; with 8 samples per prompt that is 128 rollouts, the paper's total batch size."""
    lr: float | None = None
    """Actor learning rate. None: 1e-4 with LoRA, 1e-6 with full fine-tuning (the paper's, for 7-8B
    models). LoRA adapters start at zero and need a ~100x larger lr to move within tens of steps (the LoRA
    and QLoRA papers use 1e-4 to 2e-4); at 2e-5 the committed runs' KL stayed at 5e-5 after 10 steps."""
    warmup_steps: int = 0
    """Linear lr warm-up from 0 over this many steps, then constant. Paper: constant schedule."""
    lora: bool = True
    """Our choice (the paper does not say): LoRA adapters, merged into the saved model at the end."""
    lora_rank: int = 16
    """LoRA rank. Our choice: a common default that fits a CPU."""
    lora_alpha: int | None = None
    """LoRA alpha. None: 2 x rank (the scaling most LoRA recipes use)."""
    lora_targets: str = "all-linear"
    """Modules that get adapters: all-linear, or a comma list such as q_proj,v_proj."""
    seed: int = 0
    """Seeds prompts, rollouts and initialisation."""
    checkpoint_every: int = 10
    """Steps between checkpoints (and at the last step)."""
    val_dataset: Path | None = None
    """A dataset folder built on the validation conversation (conv-30); scored greedily."""
    val_every: int = 0
    """Validate every N steps, and at step 0 (the base model); 0: never."""
    val_limit: int = 40
    """Validation examples scored each time."""
    reward: Reward = "em"
    """Both agents. Paper: exact match (a judge reward made answers longer and F1 lower). F1 is denser: a
    small model whose answers are almost never exact gets a learning signal from partial overlap."""
    format_bonus: float = 0.0
    """Added to the answer reward when the output has the `**Answer:**` format. Paper: none."""
    unparsable_penalty: float = -0.25
    """Manager reward for output with no usable JSON. Paper: none; a public reproduction uses -0.25."""
    window: int = DEFAULT_WINDOW
    """Manager: turns of history visible in the temporal bank. Paper's algorithm: 50 (prose: 24)."""
    memories_per_speaker: int | None = None
    """Answer training: memories retrieved per speaker for the prompt. None: as the dataset was built
    (paper: 30 + 30). Fewer re-renders the prompts from the dataset's bank: the prompt length is the main
    cost of a step on a CPU (the cpu-small preset keeps 30)."""
    answer_model: str | None = None
    """Manager training: the frozen Answer Agent (default: the base model); any backend."""
    answer_backend: str = "transformers"
    """Backend of the frozen Answer Agent: transformers or openai (an OpenAI-compatible server)."""
    answer_base_url: str | None = None
    """Server URL for answer_backend openai."""
    sft_target: Literal["teacher", "gold"] = "teacher"
    """SFT targets: a teacher's greedy outputs, or (answer agent) the gold answer itself in the agent's
    output format: the floor RL must be compared against."""
    teacher_model: str | None = None
    """SFT: the teacher that writes target outputs (default: the base model); any backend."""
    teacher_backend: str = "transformers"
    """Backend of the SFT teacher: transformers or openai."""
    teacher_base_url: str | None = None
    """Server URL for teacher_backend openai."""
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """Embedder for retrieval in the environments."""
    data: Path | None = None
    """locomo10.json, needed for manager training (the conversation's turn order)."""
    device: str | None = None
    """None: CUDA when available, else CPU."""
    mixed_precision: bool | None = None
    """bf16 autocast over fp32 master weights. None: on where supported (CUDA with bf16), off on CPU,
    where bf16 matmuls are slower than fp32."""
    weights_dtype: WeightsDtype = "auto"
    """Dtype of the frozen base weights. auto: bfloat16 for LoRA on a GPU with bf16 (halves the memory of
    the base; adapters and optimizer stay fp32), else float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: long prompts and big batches fit, ~30% slower."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (GRPO): drop groups whose rewards are all equal (advantage 0, no signal) and
    refill with new prompts, up to `max_refill_rounds`. Off by default (published GRPO keeps them); the
    fraction of such groups is in the metrics either way."""
    max_refill_rounds: int = 2
    """Dynamic sampling: extra sampling rounds per step at most."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.lora else 1e-6)


def cpu_small(config: TrainConfig) -> TrainConfig:
    """The small-CPU preset: a few prompts, small groups, short outputs (30 + 30 memories kept)."""
    return replace(config, steps=20, prompts_per_step=2, lora_rank=8, checkpoint_every=5,
                   rollout=replace(config.rollout, samples_per_prompt=4, max_new_tokens=96),
                   ppo=replace(config.ppo, mini_batch_size=8))


PRESETS = {"cpu-small": cpu_small}


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        path = resolve_model(config.model)
        self.device = torch.device(config.device) if config.device else default_device()
        bf16_ok = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.mixed_precision = bf16_ok if config.mixed_precision is None else config.mixed_precision
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(config.weights_dtype)
        if dtype is None:  # auto
            dtype = torch.bfloat16 if (bf16_ok and config.lora) else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.policy = AutoModelForCausalLM.from_pretrained(path,
                                                           dtype=dtype).to(self.device)  # type: ignore[arg-type]  # transformers wraps `to` in functools.wraps(nn.Module.to)
        if config.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.policy.config.use_cache = True  # generation still caches; checkpointing acts in training
        if config.lora:
            self.policy = _with_lora(self.policy, config)
        self.policy.eval()  # no dropout: sampling-time and update-time log-probs must agree
        self.renderer = TransformersGenerator(path, model=self.policy, tokenizer=self.tokenizer,
                                              name="policy")
        self.optimizer = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad],
                                           lr=config.learning_rate)
        warmup = max(config.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        self.critic: Critic | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if config.algo == "ppo":
            self.critic = _critic(path, dtype, self.device, config)
            self.critic_optimizer = torch.optim.AdamW(
                [p for p in self.critic.parameters() if p.requires_grad], lr=config.ppo.critic_lr
            )
        self.env: AnswerEnv | ManagerEnv = self._env(config.dataset)
        self.val_env = self._env(config.val_dataset) if config.val_dataset else None
        self.teacher_targets: dict[str, str] = {}
        self.step = 0

    # ---------------------------------------------------------------- set-up

    def _env(self, dataset: Path) -> AnswerEnv | ManagerEnv:
        c = self.config
        embedder = load_embedder(c.embedding_model)
        if c.agent == "answer":
            examples = answer_examples(dataset)
            prompts = None
            if c.memories_per_speaker is not None:
                prompts = _rerender(Path(dataset), examples, AnswerAgent(
                    self.renderer, embedder, AnswerConfig(top_k_per_speaker=c.memories_per_speaker)))
            return AnswerEnv(examples, c.reward, c.format_bonus, prompts)
        manager_rows = manager_examples(dataset)
        if not manager_rows:
            raise ValueError(f"{dataset}: no manager examples")
        conversation = get_conversation(load_locomo(find_locomo(c.data)), manager_rows[0].sample_id)
        frozen = load_generator(c.answer_model or c.model, backend=c.answer_backend,
                                base_url=c.answer_base_url)
        return ManagerEnv(dataset, manager_rows, conversation, MemoryManager(self.renderer, embedder),
                          AnswerAgent(frozen, embedder), window=c.window,
                          unparsable_penalty=c.unparsable_penalty, reward=c.reward)

    # ---------------------------------------------------------------- the loop

    def train(self, on_step: Callable[[dict[str, float]], None] | None = None) -> Path:
        c = self.config
        c.out.mkdir(parents=True, exist_ok=True)
        (c.out / "config.json").write_text(json.dumps(_jsonable(asdict(c)), indent=2))
        rng = random.Random(c.seed)
        if (
            self.step == 0 and self.val_env is not None and c.val_every
        ):  # the base model's score, for reference
            with self._precision():
                self._log({"step": 0, **self.validate()})
        while self.step < c.steps:
            rng.seed(c.seed * 100_003 + self.step)  # the same prompts after a resume
            examples = rng.sample(self.env.examples, min(c.prompts_per_step, len(self.env.examples)))
            with self._precision():
                stats = self._sft_step(examples) if c.algo == "sft" else self._rl_step(examples, rng)
            self.scheduler.step()
            self.step += 1
            stats["step"] = self.step
            stats["lr"] = float(self.scheduler.get_last_lr()[0])
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

    def _log(self, row: dict[str, float]) -> None:
        with (self.config.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _precision(self) -> AbstractContextManager[object]:
        """bf16 autocast (trainable weights and optimizer state stay fp32), or nothing."""
        if not self.mixed_precision:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def rollout(self, examples: list[Any]) -> tuple[RolloutBatch, list[Scored]]:
        """Sample G responses per example from the policy and score each row with the environment."""
        c = self.config
        prompts = [self.renderer.render(self.env.messages(e)) for e in examples]
        batch = sample_rollouts(self.policy, self.tokenizer, prompts, c.rollout,
                                seed=c.seed * 1_000 + self.step, micro_batch_size=self._micro())
        G = c.rollout.samples_per_prompt
        scored = [
            s for i, e in enumerate(examples) for s in self.env.score(e, batch.texts[i * G : (i + 1) * G])
        ]
        batch.rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32, device=self.device)
        return batch, scored

    def _micro(self) -> int:
        return (
            self.config.ppo.micro_batch_size
            if self.config.algo == "ppo"
            else self.config.grpo.micro_batch_size
        )

    def _rl_step(self, examples: list[Any], rng: random.Random) -> dict[str, float]:
        c = self.config
        G = c.rollout.samples_per_prompt
        t0 = time.perf_counter()
        batch, scored = self.rollout(examples)
        zero_var = zero_variance_groups(batch.rewards, G)
        groups, dropped, rounds = len(examples), len(zero_var), 0
        if c.dynamic_sampling and c.algo == "grpo":
            keep = [i for i in range(len(examples)) if i not in zero_var]
            parts = [(batch.select([i * G + j for i in keep for j in range(G)]),
                      [scored[i * G + j] for i in keep
                      for j in range(G)])] if keep else []
            kept = len(keep)
            pool = [e for e in self.env.examples if e not in examples]
            while kept < len(examples) and rounds < c.max_refill_rounds and pool:
                rounds += 1
                extra = rng.sample(pool, min(len(examples) - kept, len(pool)))
                pool = [e for e in pool if e not in extra]
                more, more_scored = self.rollout(extra)
                bad = zero_variance_groups(more.rewards, G)
                groups, dropped = groups + len(extra), dropped + len(bad)
                good = [i for i in range(len(extra)) if i not in bad]
                if good:
                    parts.append((more.select([i * G + j for i in good for j in range(G)]),
                                  [more_scored[i * G + j] for i in good for j in range(G)]))
                    kept += len(good)
            if parts:
                batch = merge_batches([p[0] for p in parts], self.tokenizer)
                scored = [s for p in parts for s in p[1]]
        rollout_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        shared = c.rollout.shared_prefix
        if c.algo == "grpo":
            if c.grpo.beta > 0:
                batch.ref_logprobs = self._reference_logprobs(batch)
            stats = grpo_step(self.policy, self.optimizer, batch, c.grpo, shared_prefix=shared)
        else:
            assert self.critic is not None and self.critic_optimizer is not None
            if c.ppo.kl_coef > 0:
                batch.ref_logprobs = self._reference_logprobs(batch)
            stats = ppo_update(self.policy, self.critic, self.optimizer, self.critic_optimizer, batch, c.ppo,
                               shared_prefix=shared)
        tokens = batch.response_mask.sum().item()
        rewards = batch.rewards
        stats.update(
            reward_mean=rewards.mean().item(),
            reward_std=rewards.std().item() if len(rewards) > 1 else 0.0,
            format_failure_rate=sum(not s.parsed for s in scored) / len(scored),
            zero_variance_fraction=dropped / groups,
            refill_rounds=float(rounds),
            rollout_tokens_per_s=tokens / rollout_s,
            rollout_s=rollout_s,
            update_s=time.perf_counter() - t1,
            step_s=time.perf_counter() - t0,
        )
        return stats

    def _reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        if not self.config.lora:
            raise ValueError(
                "a KL term with full fine-tuning needs a reference copy: use LoRA or beta/kl_coef 0"
            )
        with self.policy.disable_adapter():  # the base model is the reference: no second copy
            return pass_logprobs(self.policy, batch, self._micro(),
                                 shared_prefix=self.config.rollout.shared_prefix)

    def _sft_step(self, examples: list[Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        prompts = [self.renderer.render(self.env.messages(e)) for e in examples]
        targets = self._targets(examples)
        stats = sft_step(self.policy, self.tokenizer, self.optimizer, prompts, targets, self.config.sft)
        stats["step_s"] = time.perf_counter() - t0
        return stats

    def _targets(self, examples: list[Any]) -> list[str]:
        if self.config.sft_target == "gold":
            if self.config.agent != "answer":
                raise ValueError("sft_target gold is for the answer agent (the manager has no gold output)")
            return [gold_target(e.gold) for e in examples]
        return self._teacher_outputs(examples)

    def _teacher_outputs(self, examples: list[Any]) -> list[str]:
        """Teacher trajectories, generated once per prompt (greedy) and cached beside the run."""
        c = self.config
        cache = c.out / "teacher_outputs.jsonl"
        if not self.teacher_targets and cache.exists():
            rows = [json.loads(line) for line in cache.read_text().splitlines()]
            self.teacher_targets = {str(r["key"]): str(r["output"]) for r in rows}
        keys = [e.key for e in examples]
        missing = [e for e, k in zip(examples, keys, strict=True) if k not in self.teacher_targets]
        if missing:
            teacher = load_generator(c.teacher_model or c.model, backend=c.teacher_backend,
                                     base_url=c.teacher_base_url)
            outputs = teacher.generate([self.env.messages(e) for e in missing],
                                       GenerationConfig(max_new_tokens=c.rollout.max_new_tokens))
            with cache.open("a") as f:
                for e, g in zip(missing, outputs, strict=True):
                    self.teacher_targets[e.key] = g.text
                    f.write(json.dumps({"key": e.key, "output": g.text}) + "\n")
        return [self.teacher_targets[k] for k in keys]

    def validate(self) -> dict[str, float]:
        """Greedy outputs of the current policy on the validation examples, scored by the environment."""
        assert self.val_env is not None
        examples: list[Any] = self.val_env.examples[: self.config.val_limit]
        outputs = self.renderer.generate([self.val_env.messages(e) for e in examples],
                                         GenerationConfig(max_new_tokens=self.config.rollout.max_new_tokens))
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
        if self.critic is not None and self.critic_optimizer is not None:
            torch.save(self.critic.state_dict(), tmp / "critic.pt")
            torch.save(self.critic_optimizer.state_dict(), tmp / "critic_optimizer.pt")
        torch.save({"step": self.step, "torch_rng": torch.get_rng_state(),
                    "mixed_precision": self.mixed_precision, "scheduler": self.scheduler.state_dict()},
                   tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def resume(self) -> bool:
        path = self.config.out / "checkpoint"
        if not (path / "state.pt").exists():
            return False
        def load(name: str) -> dict[str, Any]:
            return torch.load(path / name, map_location=self.device)

        self.policy.load_state_dict(load("policy.pt"), strict=False)
        self.optimizer.load_state_dict(load("optimizer.pt"))
        if self.critic is not None and self.critic_optimizer is not None:
            self.critic.load_state_dict(load("critic.pt"))
            self.critic_optimizer.load_state_dict(load("critic_optimizer.pt"))
        state = torch.load(path / "state.pt")
        self.step = state["step"]
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
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
    panels = [k for k in ("reward_mean", "val_reward", "kl", "entropy", "zero_variance_fraction",
                          "clip_fraction", "vf_loss", "response_length", "format_failure_rate", "sft_loss")
              if any(k in r for r in rows)]
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


def zero_variance_groups(rewards: torch.Tensor, G: int) -> set[int]:
    """Groups (prompt indices) whose G rewards are all equal: their GRPO advantages are all 0."""
    per_group = rewards.view(-1, G)  # (K, G)
    return {i for i in range(per_group.shape[0]) if bool((per_group[i] == per_group[i, 0]).all())}


def gold_target(gold: str) -> str:
    """The gold answer in the Answer Agent's output format (no memories listed: the parser accepts that)."""
    return f"**Answer:** {gold}"


def _with_lora(model: PreTrainedModel, config: TrainConfig) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = config.lora_targets
    if config.lora_targets != "all-linear":
        targets = [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    adapter = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                         lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, adapter)
    for p in peft_model.parameters():  # adapters train in fp32 whatever the base's dtype
        if p.requires_grad:
            p.data = p.data.float()
    return peft_model  # type: ignore[return-value]  # a PeftModel forwards every attribute to its model


def _critic(path: str, dtype: torch.dtype, device: torch.device, config: TrainConfig) -> Critic:
    body = AutoModelForCausalLM.from_pretrained(path,
                                                dtype=dtype if config.ppo.critic_lora else torch.float32)
    if config.gradient_checkpointing:
        body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.ppo.critic_lora:  # a frozen base and a LoRA adapter: PPO's critic costs little beside the actor
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(body,
                              LoraConfig(r=config.lora_rank,
                                         lora_alpha=config.lora_alpha or 2 * config.lora_rank,
                                               lora_dropout=0.0, target_modules="all-linear"))
        return Critic(lora.to(device))  # type: ignore[arg-type]  # a PeftModel forwards every attribute to its model
    return Critic(body.to(device))  # type: ignore[arg-type]  # transformers wraps `to` in functools.wraps(nn.Module.to)


def _rerender(
    dataset: Path, examples: list[AnswerExample], agent: AnswerAgent
) -> dict[str, tuple[list[Message], int]]:
    """The examples' prompts rebuilt from the dataset's bank with the agent's memories per speaker."""
    bank_path = dataset / "bank.db"
    if not bank_path.exists():
        raise ValueError(f"memories_per_speaker needs {bank_path} (written by `memory-r1 data build-answer`)")
    with SQLiteStore(bank_path) as bank:
        out = {}
        for sample_id in sorted({e.sample_id for e in examples}):
            prefix = owner_id(sample_id, "")
            owners = [(o[len(prefix):], o) for o in bank.owners() if o.startswith(prefix)]
            rows = [e for e in examples if e.sample_id == sample_id]
            for e, p in zip(rows, agent.build_prompts(bank, [e.question for e in rows], owners), strict=True):
                out[e.key] = (p.messages, len(p.numbered))
    return out


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
