"""rl.ppo: token rewards, GAE and the value loss on hand-worked numbers; critic and update on the tiny model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.rl.ppo import Critic, PPOConfig, gae, ppo_policy_loss, ppo_update, token_rewards, value_loss
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts


def test_token_rewards_put_the_outcome_on_the_last_response_token() -> None:
    # row 0: 2 prompt tokens, 3 response tokens, 1 pad; row 1: 1 prompt token, 5 response tokens
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.float32)
    kl = torch.tensor([[9.0, 9.0, 0.1, 0.2, 0.3, 9.0], [9.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    rewards = token_rewards(torch.tensor([1.0, -2.0]), mask, kl, kl_coef=0.5)
    # -0.5 * kl on response tokens, outcome added at the last one: 1 - 0.15 = 0.85; -2 - 0.5 = -2.5
    expected = [[0.0, 0.0, -0.05, -0.1, 0.85, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, -2.5]]
    assert rewards.tolist() == [pytest.approx(r) for r in expected]
    assert token_rewards(torch.tensor([1.0, -2.0]), mask, None, 0.0).sum(-1).tolist() == [1.0, -2.0]


def test_gae_one_sequence_hand_case() -> None:
    # columns: 2 prompt tokens, 3 response tokens, 1 pad. gamma 0.9, lam 0.8 (gamma * lam = 0.72).
    # rewards on the response 0, 0, 1; values 0.5, 0.6, 0.7 (junk 100 on masked columns must not matter).
    # t=4: delta = 1 + 0.9*0 - 0.7 = 0.3;          A = 0.3
    # t=3: delta = 0 + 0.9*0.7 - 0.6 = 0.03;       A = 0.03 + 0.72*0.3 = 0.246
    # t=2: delta = 0 + 0.9*0.6 - 0.5 = 0.04;       A = 0.04 + 0.72*0.246 = 0.21712
    # returns = A + V: 0.71712, 0.846, 1.0
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[100.0, 100.0, 0.5, 0.6, 0.7, 100.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert adv.tolist()[0] == pytest.approx([0.0, 0.0, 0.21712, 0.246, 0.3, 0.0], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.0, 0.0, 0.71712, 0.846, 1.0, 0.0], abs=1e-6)


def test_gae_skips_masked_columns_inside_the_response() -> None:
    # The same trajectory with a masked column (junk reward and value) between its 2nd and 3rd tokens
    # gives the same advantages: masked positions are not steps.
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]])
    rewards = torch.tensor([[5.0, 5.0, 0.0, 0.0, 7.0, 1.0, 5.0]])
    values = torch.tensor([[100.0, 100.0, 0.5, 0.6, -30.0, 0.7, 100.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert adv.tolist()[0] == pytest.approx([0.0, 0.0, 0.21712, 0.246, 0.0, 0.3, 0.0], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.0, 0.0, 0.71712, 0.846, 0.0, 1.0, 0.0], abs=1e-6)


def test_gae_with_gamma_lam_one_is_outcome_minus_value() -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.0, 0.2, 0.4, 0.6], [0.1, 0.3, 0.0, 0.0]])
    rewards = token_rewards(torch.tensor([1.0, 0.0]), mask, None, 0.0)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv.tolist() == [pytest.approx([0.0, 0.8, 0.6, 0.4]), pytest.approx([-0.1, -0.3, 0.0, 0.0])]
    assert ret.tolist() == [pytest.approx([0.0, 1.0, 1.0, 1.0], abs=1e-6), pytest.approx([0.0] * 4, abs=1e-6)]


def test_value_loss_clipping_hand_case() -> None:
    # clip 0.2, old values 0.5, 0.5; new 1.0, 0.6; returns 1.0, 0.0; a masked third token with junk.
    # token 1: clipped V = 0.5 + 0.2 = 0.7: (1.0-1.0)^2 = 0 vs (0.7-1.0)^2 = 0.09 -> 0.09 (clip active)
    # token 2: clipped V = 0.6 (inside):   (0.6-0.0)^2 = 0.36 both                -> 0.36
    # loss = 0.5 * (0.09 + 0.36) / 2 = 0.1125; clip fraction 1/2
    # gradients: token 1 sits on the clipped branch, flat in V -> 0; token 2: 0.5 * 1/2 * 2 * 0.6 = 0.3
    values = torch.tensor([[1.0, 0.6, 42.0]], requires_grad=True)
    old, returns = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old, returns, mask, value_clip=0.2, mode="token-mean")
    assert loss.item() == pytest.approx(0.1125, abs=1e-6)
    assert stats["vf_clip_fraction"] == pytest.approx(0.5)
    loss.backward()
    assert values.grad.tolist()[0] == pytest.approx([0.0, 0.3, 0.0], abs=1e-6)


def test_ppo_policy_loss_uses_per_token_advantages() -> None:
    # ratios 1.5 (A=+2, clipped: -2*1.2 = -2.4) and 0.5 (A=-1, clipped: 1*0.8 = 0.8): mean -0.8
    old = torch.tensor([[-1.0, -1.0]])
    logp = old + torch.tensor([[1.5, 0.5]]).log()
    loss, stats = ppo_policy_loss(logp, old, torch.tensor([[2.0, -1.0]]), torch.ones(1, 2), PPOConfig())
    assert loss.item() == pytest.approx(-0.8, abs=1e-6) and stats["clip_fraction"] == 1.0


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=False)
        for q in ("Hi", "What did Melanie paint last year?")
    ]
    return tiny_model_dir, tokenizer, prompts


def test_critic_values_align_with_logprobs_and_ignore_padding(tiny) -> None:
    path, tokenizer, prompts = tiny
    critic = Critic(AutoModelForCausalLM.from_pretrained(path))
    assert not hasattr(critic.body, "lm_head")  # the LM head is dropped: no vocabulary-sized logits
    torch.nn.init.normal_(critic.head.weight)  # zero-initialised: make values non-trivial
    short, long = (tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts)
    pad = len(long) - len(short)
    ids = torch.tensor([[tokenizer.pad_token_id] * pad + short, long])
    attn = torch.tensor([[0] * pad + [1] * len(short), [1] * len(long)])
    with torch.no_grad():
        batched = critic(ids, attn)  # (2, T)
        alone = critic(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
    assert batched.shape == ids.shape and alone[0, 0].item() == 0.0
    # position t holds V(tokens < t): the padded row's values from its 2nd real token on match the unpadded
    assert batched[0, pad + 1 :].tolist() == pytest.approx(alone[0, 1:].tolist(), rel=1e-5, abs=1e-5)


def test_ppo_update_micro_batches_match_one_batch_and_move_both_models(tiny) -> None:
    path, tokenizer, prompts = tiny
    policy = AutoModelForCausalLM.from_pretrained(path)
    batch = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=3, max_new_tokens=5),
                            seed=0)
    batch.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    critic = Critic(AutoModelForCausalLM.from_pretrained(path))
    results = []
    for micro in (6, 4):
        p, c = copy.deepcopy(policy), copy.deepcopy(critic)
        config = PPOConfig(mini_batch_size=6, micro_batch_size=micro, ppo_epochs=2)
        torch.manual_seed(0)  # same shuffles
        opts = torch.optim.SGD(p.parameters(), lr=0.1), torch.optim.SGD(c.parameters(), lr=0.1)
        stats = ppo_update(p, c, *opts, batch, config)
        # zero-initialised head: values 0, so with gamma = lam = 1 every token's return is its outcome
        lengths = batch.response_mask.sum(-1)
        assert stats["value_mean"] == 0.0
        assert stats["return_mean"] == pytest.approx(((batch.rewards * lengths).sum() / lengths.sum()).item())
        results.append((torch.cat([x.detach().flatten() for x in p.parameters()]),
                        torch.cat([x.detach().flatten() for x in c.parameters()])))
    before = torch.cat([x.detach().flatten() for x in policy.parameters()])
    critic_before = torch.cat([x.detach().flatten() for x in critic.parameters()])
    assert not torch.allclose(results[0][0], before) and not torch.allclose(results[0][1], critic_before)
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_ppo_update_needs_a_reference_for_the_kl_reward(tiny) -> None:
    path, tokenizer, prompts = tiny
    policy = AutoModelForCausalLM.from_pretrained(path)
    critic = Critic(AutoModelForCausalLM.from_pretrained(path))
    batch = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=2, max_new_tokens=4),
                            seed=0)
    opts = torch.optim.SGD(policy.parameters(), lr=0.1), torch.optim.SGD(critic.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="reference"):
        ppo_update(policy, critic, *opts, batch, PPOConfig(kl_coef=0.01))
    stats = ppo_update(policy, critic, *opts, batch, PPOConfig(kl_coef=0.01), ref_model=copy.deepcopy(policy))
    assert stats["kl_in_reward"] == pytest.approx(0.0, abs=1e-6)  # the policy was the reference


def test_critic_saves_and_reloads(tiny, tmp_path: Path) -> None:
    path, tokenizer, prompts = tiny
    fresh = Critic.from_pretrained(path)  # from the policy's checkpoint: LM head dropped, zero head
    assert (fresh.head.weight == 0).all()
    torch.nn.init.normal_(fresh.head.weight)
    fresh.save_pretrained(tmp_path / "critic")
    again = Critic.from_pretrained(tmp_path / "critic")
    ids = torch.tensor([tokenizer(prompts[1], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(fresh(ids, torch.ones_like(ids)), again(ids, torch.ones_like(ids)))
