"""Learning tests: GRPO and PPO must raise a reward the untrained tiny model rarely earns.

The reward is the fraction of response tokens equal to one target token: a token the random policy samples
about 1 time in 20. Nothing else in the loop knows the target, so the reward can only rise if advantages,
ratios, signs, masks and the optimizer step are all right; these tests fail when learning does not happen.
lr 1e-2 with Adam suits a 2-layer model of width 64 (the paper's 1e-6 is for 7B models). Seeded and small:
a few seconds each on one CPU thread.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.rl.core import RolloutBatch
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.ppo import Critic, PPOConfig, ppo_update
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts

QUESTIONS = (
    "Hi", "When did Caroline go to the support group?", "What did Melanie paint?", "Tell me about pottery."
)
SAMPLES, NEW_TOKENS, LR = 8, 6, 1e-2


def target_reward(batch: RolloutBatch, target: int) -> torch.Tensor:
    """Fraction of each response's tokens that are `target`. (B,)"""
    hits = (batch.input_ids == target).float() * batch.response_mask  # (B, T)
    return hits.sum(-1) / batch.response_mask.sum(-1)


def setup(path: Path):
    """The untrained policy, its tokenizer, rendered prompts, and the target: the token the policy samples
    most often after its first response token (the first one is nearly fixed per prompt)."""
    policy = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=False)
        for q in QUESTIONS
    ]
    probe = sample_rollouts(policy, tokenizer, prompts,
                            RolloutConfig(samples_per_prompt=SAMPLES, max_new_tokens=NEW_TOKENS), seed=12345)
    after_first = slice(probe.prompt_width + 1, None)
    tokens = probe.input_ids[:, after_first][probe.response_mask[:, after_first].bool()]
    target = Counter(tokens.tolist()).most_common(1)[0][0]
    return policy, tokenizer, prompts, target


def report(name: str, curve: list[float], seconds: float) -> tuple[float, float]:
    first, last = sum(curve[:3]) / 3, sum(curve[-5:]) / 5
    print(f"{name}: {len(curve)} steps in {seconds:.1f}s; reward first 3 {first:.3f} -> last 5 {last:.3f}; "
          f"curve {[round(r, 2) for r in curve]}")
    return first, last


@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_learns_a_token_reward(tiny_model_dir: Path, seed: int) -> None:
    policy, tokenizer, prompts, target = setup(tiny_model_dir)
    ref = copy.deepcopy(policy)
    # 16 samples per group: fewer groups where every sample already agrees (advantage 0, no signal) once
    # the fast-learning policy turns nearly deterministic; with 8, gains over 8 seeds dipped to +0.30.
    config = GRPOConfig(beta=0.04, micro_batch_size=32)
    rollout = RolloutConfig(samples_per_prompt=16, max_new_tokens=NEW_TOKENS)
    optimizer = torch.optim.Adam(policy.parameters(), lr=LR)
    torch.manual_seed(seed)
    curve, kls, start = [], [], time.perf_counter()
    for step in range(40):
        batch = sample_rollouts(policy, tokenizer, prompts, rollout,
                                seed=1000 * seed + step)
        batch.rewards = target_reward(batch, target)
        stats = grpo_step(policy, optimizer, batch, config, ref_model=ref)
        curve.append(stats["reward_mean"])
        kls.append(stats["kl"])
    first, last = report(f"GRPO seed {seed}", curve, time.perf_counter() - start)
    assert first < 0.2, "the untrained policy already earns the reward: the test would prove nothing"
    assert last > first + 0.3
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0.01  # it moved away from the reference


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_learns_a_token_reward(tiny_model_dir: Path, seed: int) -> None:
    policy, tokenizer, prompts, target = setup(tiny_model_dir)
    critic = Critic(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    config = PPOConfig(mini_batch_size=16, micro_batch_size=8)
    policy_opt = torch.optim.Adam(policy.parameters(), lr=LR)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=LR)
    torch.manual_seed(seed)
    curve, values, start = [], [], time.perf_counter()
    for step in range(40):
        batch = sample_rollouts(policy, tokenizer, prompts,
                                RolloutConfig(samples_per_prompt=SAMPLES, max_new_tokens=NEW_TOKENS),
                                seed=1000 * seed + step)
        batch.rewards = target_reward(batch, target)
        stats = ppo_update(policy, critic, policy_opt, critic_opt, batch, config)
        curve.append(stats["reward_mean"])
        values.append(stats["value_mean"])
    first, last = report(f"PPO seed {seed}", curve, time.perf_counter() - start)
    assert first < 0.2, "the untrained policy already earns the reward: the test would prove nothing"
    assert last > first + 0.3
    # the critic tracks the rising reward: its late predictions are near the late returns
    assert abs(sum(values[-5:]) / 5 - last) < 0.2
