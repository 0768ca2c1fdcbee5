"""rl.grpo: group advantages and the loss on hand-worked numbers; the update step on the tiny model."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.rl.core import kl_estimate
from memory_r1.rl.grpo import GRPOConfig, group_advantages, grpo_loss, grpo_step
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts


def test_group_advantages_hand_case() -> None:
    # group 7: rewards 1, 0, 0, 1 -> mean 0.5, deviations +-0.5, unbiased var = (4 * 0.25) / 3 = 1/3,
    #          std = 0.577350 -> advantages +-0.5 / 0.577350 = +-0.866025
    # group 3: rewards 0.5, 0.5, 0.5 -> all equal: 0 (std 0, centred 0)
    # group 9: a single response -> no baseline: 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 2.0])
    groups = torch.tensor([7, 7, 7, 7, 3, 3, 3, 9])
    a = 0.5 / math.sqrt(1 / 3)
    expected = [a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]
    exact = group_advantages(rewards, groups, scale=True, eps=0.0)
    assert exact.tolist() == pytest.approx(expected, abs=1e-6)
    # eps in the denominator: 0.5 / (0.577350 + 1e-6)
    assert group_advantages(rewards, groups)[0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-6))
    # unscaled (Dr. GRPO): just centred
    unscaled = [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert group_advantages(rewards, groups, scale=False).tolist() == pytest.approx(unscaled)


def test_group_advantages_do_not_depend_on_row_order() -> None:
    rewards, groups = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 9.0]), torch.tensor([0, 1, 0, 1, 0, 1])
    perm = torch.tensor([5, 2, 0, 3, 1, 4])
    shuffled = group_advantages(rewards[perm], groups[perm])
    assert torch.allclose(group_advantages(rewards, groups)[perm], shuffled)


def hand_batch():
    """Two responses, advantages +1 and -1, token ratios 1.5, 0.5 | 1.1, 0.7 and one masked column."""
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])
    ratio = torch.tensor([[1.5, 0.5, 50.0], [1.1, 0.7, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    return old + ratio.log(), old, torch.tensor([1.0, -1.0]), mask


def test_grpo_loss_clips_some_ratios() -> None:
    # per token (eps 0.2): A=+1 r=1.5 -> -1.2 (clipped); A=+1 r=0.5 -> -0.5;
    #                      A=-1 r=1.1 -> 1.1;            A=-1 r=0.7 -> 0.8 (clipped).
    # token-mean 0.2 / 4 = 0.05; seq-mean-token-mean ((-1.7)/2 + 1.9/2) / 2 = 0.05 too; clip 2/4
    logp, old, adv, mask = hand_batch()
    loss, stats = grpo_loss(logp, old, adv, mask, None, GRPOConfig(beta=0.0))
    assert loss.item() == pytest.approx(0.05, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(0.5) and stats["kl"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(0.95, abs=1e-6)
    # seq-mean-token-sum: (-1.7 + 1.9) / 2 = 0.1
    loss, _ = grpo_loss(logp, old, adv, mask, None, GRPOConfig(beta=0.0, loss_agg="seq-mean-token-sum"))
    assert loss.item() == pytest.approx(0.1, abs=1e-6)


def test_grpo_loss_adds_beta_times_kl() -> None:
    logp, old, adv, mask = hand_batch()
    ref = logp - math.log(2.0)  # pi / pi_ref = 2 on every token: k3 = 0.5 + ln 2 - 1 = 0.193147
    loss, stats = grpo_loss(logp, old, adv, mask, ref, GRPOConfig(beta=0.1))
    assert stats["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert loss.item() == pytest.approx(0.05 + 0.1 * 0.193147, abs=1e-6)
    assert torch.allclose(kl_estimate(logp, ref, "k3")[mask.bool()], torch.tensor(0.193147), atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp, old, adv, mask, None, GRPOConfig(beta=0.1))


@pytest.fixture(scope="module")
def scored_batch(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=False)
        for q in ("Hi", "What did Melanie paint last year?")
    ]
    batch = sample_rollouts(model, tokenizer, prompts, RolloutConfig(samples_per_prompt=4, max_new_tokens=5),
                            seed=0)
    batch.rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0])
    return batch


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_accumulate_to_the_full_batch_update(tiny_model_dir, scored_batch, loss_agg) -> None:
    """Gradient accumulation over uneven micro-batches (3, 3, 2) gives the same step as one batch of 8."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref = copy.deepcopy(base)
    after = []
    for micro in (8, 3):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        config = GRPOConfig(beta=0.04, micro_batch_size=micro, loss_agg=loss_agg)
        batch = copy.copy(scored_batch)
        batch.ref_logprobs = None
        stats = grpo_step(model, opt, batch, config, ref_model=ref)
        assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and stats["clip_fraction"] == 0.0
        assert stats["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the step
        after.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    before = torch.cat([p.detach().flatten() for p in base.parameters()])
    assert not torch.allclose(after[0], before)
    assert torch.allclose(after[0], after[1], atol=1e-6)


def test_grpo_step_needs_a_reference_when_beta_is_positive(tiny_model_dir, scored_batch) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = copy.copy(scored_batch)
    batch.ref_logprobs = None
    with pytest.raises(ValueError, match="reference"):
        grpo_step(model, torch.optim.SGD(model.parameters(), lr=0.1), batch, GRPOConfig(beta=0.04))
