"""Tests a broken algorithm cannot pass (issue 8, section 3). Each names the broken variant it catches; each
variant was tried by hand (see the README's training section) and failed its test.

- group baseline: constant rewards within each group (different constants across groups) carry no signal:
  parameters must not move. REINFORCE without a baseline moves them; so do batch-normalised advantages.
- clipping (stale log-probs, ratio e^0.5 outside 1 +- 0.2): positive-advantage tokens get no gradient and
  negative ones get exactly ratio / n. A min/max swap inverts which rows get gradient.
- KL direction: with zero advantages the KL term alone must pull a perturbed policy back to its reference.
- LoRA: a LoRA policy learns the token reward. SFT: the loss on its own targets falls.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.rl.core import clipped_surrogate
from memory_r1.rl.grpo import GRPOConfig, group_advantages, grpo_step
from memory_r1.rl.passes import pass_logprobs
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts
from memory_r1.rl.sft import SFTConfig, sft_loss, sft_step

QUESTIONS = ("Hi", "When did Caroline go to the support group?", "What did Melanie paint?")


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in QUESTIONS]
    return model, tokenizer, prompts


def test_constant_rewards_within_groups_leave_the_policy_unchanged(parts) -> None:
    model, tokenizer, prompts = parts
    batch = sample_rollouts(model, tokenizer, prompts, RolloutConfig(samples_per_prompt=4, max_new_tokens=5),
                            seed=0)
    batch.rewards = torch.tensor([1.0] * 4 + [0.0] * 4 + [0.5] * 4)  # each group constant, groups differ
    assert group_advantages(batch.rewards, batch.group_ids).abs().max() == 0
    policy = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    grpo_step(policy, torch.optim.SGD(policy.parameters(), lr=1.0), batch, GRPOConfig(beta=0.0))
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())


def test_group_advantages_use_the_group_not_the_batch() -> None:
    rewards = torch.tensor([1.0, 0.0, 3.0, 2.0])  # group 0: {1, 0}; group 1: {3, 2}
    adv = group_advantages(rewards, torch.tensor([0, 0, 1, 1]), eps=0.0)
    s = 1 / math.sqrt(2)  # each group: centred +-0.5, std 0.5 * sqrt(2)
    assert adv.tolist() == pytest.approx([s, -s, s, -s])  # batch-normalised would rank 3 > 2 > 1 > 0


def test_clip_stops_gradient_where_the_ratio_left_the_trust_region() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)  # (B, T)
    old = torch.full((2, 3), -0.5)  # stale: ratio e^0.5 = 1.65 > 1 + 0.2 on every token
    adv = torch.tensor([[1.0], [-1.0]])
    loss, stats = clipped_surrogate(logp, old, adv, torch.ones(2, 3), 0.2, "token-mean")
    loss.backward()
    assert logp.grad is not None
    assert torch.equal(logp.grad[0], torch.zeros(3))  # A > 0 and r > 1 + eps: clipped, no gradient
    assert logp.grad[1].tolist() == pytest.approx([math.exp(0.5) / 6] * 3)  # A < 0: the unclipped -A r / n
    assert stats["clip_fraction"].item() == pytest.approx(0.5)


def test_clip_higher_and_dual_clip() -> None:
    logp = torch.zeros(1, 2, requires_grad=True)
    old = torch.full((1, 2), -math.log(1.25))  # ratio 1.25
    clipped_surrogate(logp, old, torch.ones(1, 1), torch.ones(1, 2), 0.2, "token-mean")[0].backward()
    assert logp.grad is not None and logp.grad.abs().sum() == 0  # symmetric 0.2: clipped
    logp.grad = None
    clipped_surrogate(logp, old, torch.ones(1, 1), torch.ones(1, 2), 0.2, "token-mean",
                      clip_eps_high=0.28)[0].backward()
    assert logp.grad is not None and logp.grad[0].tolist() == pytest.approx([-1.25 / 2] * 2)  # inside 1.28
    far = torch.zeros(1, 2, requires_grad=True)
    loss, _ = clipped_surrogate(far, torch.full((1, 2), -2.0), -torch.ones(1, 1), torch.ones(1, 2), 0.2,
                                "token-mean", clip_ratio_c=3.0)  # ratio e^2 = 7.4 > c, A < 0: capped at c
    loss.backward()
    assert loss.item() == pytest.approx(3.0) and far.grad is not None and far.grad.abs().sum() == 0


def test_stale_log_probs_clip_inside_grpo_step(parts) -> None:
    """Two epochs with a big step: the second epoch's ratio leaves the trust region and the clip acts."""
    model, tokenizer, prompts = parts
    batch = sample_rollouts(model, tokenizer, prompts, RolloutConfig(samples_per_prompt=4, max_new_tokens=5),
                            seed=1)
    batch.rewards = torch.arange(12, dtype=torch.float32) % 3
    policy = copy.deepcopy(model)
    stats = grpo_step(policy, torch.optim.Adam(policy.parameters(), lr=3e-2), batch,
                      GRPOConfig(beta=0.0, epochs=3, clip_eps=0.05, micro_batch_size=12))
    assert stats["clip_fraction"] > 0.05 and stats["ratio_mean"] != pytest.approx(1.0, abs=1e-4)


def test_kl_term_pulls_the_policy_back_to_its_reference(parts) -> None:
    model, tokenizer, prompts = parts
    ref = copy.deepcopy(model)
    policy = copy.deepcopy(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.005 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    batch = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=4, max_new_tokens=6),
                            seed=2)
    batch.rewards = torch.ones(12)  # advantages 0: only the KL term acts
    config = GRPOConfig(beta=1.0, micro_batch_size=12)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)  # small steps: the tiny model overshoots
    kls = []
    for _ in range(6):
        batch.ref_logprobs = None
        kls.append(grpo_step(policy, optimizer, batch, config, ref_model=ref)["kl"])
    assert kls[0] > 0.01 and kls[-1] < 0.5 * kls[0] and kls == sorted(kls, reverse=True), (
        kls
    )  # a flipped KL sign pushes it up instead


def test_a_lora_policy_learns_the_token_reward(parts) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer, prompts = parts
    policy = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    policy.eval()
    rollout = RolloutConfig(samples_per_prompt=12, max_new_tokens=5)
    probe = sample_rollouts(policy, tokenizer, prompts, rollout, seed=99)
    P = probe.prompt_width
    target = int(torch.mode(probe.input_ids[:, P + 1 :].flatten()).values)  # a common non-first token
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=2e-2)
    curve = []
    for step in range(30):
        batch = sample_rollouts(policy, tokenizer, prompts, rollout, seed=step)
        hits = (batch.input_ids == target).float() * batch.response_mask
        batch.rewards = hits.sum(-1) / batch.response_mask.sum(-1)
        curve.append(grpo_step(policy, optimizer, batch,
                               GRPOConfig(beta=0.0, micro_batch_size=36))["reward_mean"])
    first, last = sum(curve[:3]) / 3, sum(curve[-5:]) / 5
    assert first < 0.35 and last > first + 0.25, curve
    base_lp = pass_logprobs(model, batch, None, shared_prefix=True)
    assert not torch.allclose(base_lp, pass_logprobs(policy, batch, None, shared_prefix=True), atol=1e-3)


def test_sft_loss_on_its_targets_falls(parts) -> None:
    model, tokenizer, prompts = parts
    policy = copy.deepcopy(model)
    targets = ["**Answer:** 7 May 2023", "**Answer:** a sunset", "**Answer:** pottery"]
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    with torch.no_grad():
        before = sft_loss(policy, tokenizer, prompts, targets).item()
    for _ in range(15):
        sft_step(policy, tokenizer, optimizer, prompts, targets, SFTConfig(micro_batch_size=2))
    with torch.no_grad():
        after = sft_loss(policy, tokenizer, prompts, targets).item()
    assert after < 0.5 * before, (before, after)
