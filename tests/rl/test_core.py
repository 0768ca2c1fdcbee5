"""rl.core: masked maths and KL estimators on hand-worked numbers; log-probs and sampling on the tiny model.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.rl.core import (
    RolloutBatch,
    accumulation_weight,
    aggregate_loss,
    clipped_surrogate,
    entropy_from_logits,
    kl_estimate,
    masked_mean,
    masked_whiten,
    token_logprobs,
)
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts

LN2 = math.log(2.0)


@pytest.fixture
def policy(tiny_model_dir: Path):
    """A fresh copy of the tiny model per test: tests may change its generation config."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[str]:
    questions = ["Hi", "When did Caroline go to the support group?", "What did Melanie paint?"]
    return [render(tokenizer, q) for q in questions]


def render(tokenizer, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# ----------------------------------------------------------------------------- masked maths


def test_masked_mean_ignores_masked_entries_even_nan() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 4 + 6) / 4)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([1.5, 5.0])
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_masked_whiten_uses_masked_unbiased_stats() -> None:
    # values 1, 2, 3 kept (100 masked): mean 2, unbiased var ((1 + 0 + 1) / 2) = 1 -> -1, 0, 1
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert masked_whiten(x, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    unshifted = masked_whiten(x, mask, shift_mean=False).tolist()[0]
    assert unshifted == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_entropy_from_logits() -> None:
    # uniform over 4 -> ln 4; a one-hot-ish distribution -> ~0
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    assert entropy_from_logits(logits).tolist() == pytest.approx([math.log(4.0), 0.0], abs=1e-6)


def test_kl_estimators_at_known_logprob_pairs() -> None:
    # token 1: pi = 0.5, ref = 0.25 -> logp - ref = ln 2 = 0.693147
    #   k1 = 0.693147; k2 = 0.5 * 0.480453 = 0.240227
    #   k3 = exp(-ln 2) + ln 2 - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # token 2: pi = 0.25, ref = 0.5 -> logp - ref = -ln 2
    #   k1 = -0.693147; k2 = 0.240227; k3 = exp(ln 2) - ln 2 - 1 = 2 - 0.693147 - 1 = 0.306853
    # token 3: pi = ref -> all three are 0
    logp = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), math.log(0.3)]])
    assert kl_estimate(logp, ref, "k1").tolist()[0] == pytest.approx([LN2, -LN2, 0.0], abs=1e-6)
    half_sq = 0.5 * LN2**2  # 0.240227
    assert kl_estimate(logp, ref, "k2").tolist()[0] == pytest.approx([half_sq, half_sq, 0.0], abs=1e-6)
    assert kl_estimate(logp, ref, "k3").tolist()[0] == pytest.approx([0.193147, 0.306853, 0.0], abs=1e-6)
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k3_is_non_negative_and_bounded() -> None:
    gen = torch.Generator().manual_seed(0)
    logp, ref = -5 * torch.rand(4, 50, generator=gen), -5 * torch.rand(4, 50, generator=gen)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    # a token the reference finds e^30 times likelier: clamped to 10, never inf
    assert kl_estimate(torch.tensor([[-40.0]]), torch.tensor([[-10.0]]), "k3").item() == 10.0


RAGGED_LOSS = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
RAGGED_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", 4.0),  # (1 + 2 + 3 + 10) / 4 tokens
        ("seq-mean-token-sum", 8.0),  # (6 + 10) / 2 sequences
        ("seq-mean-token-mean", 6.0),  # (6/3 + 10/1) / 2 = (2 + 10) / 2
    ],
)
def test_aggregation_modes_on_a_ragged_mask(mode: str, expected: float) -> None:
    assert aggregate_loss(RAGGED_LOSS, RAGGED_MASK, mode).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_accumulation_weights_recombine_the_full_batch_loss(mode: str) -> None:
    loss = torch.arange(15.0).reshape(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    whole = aggregate_loss(loss, mask, mode)  # type: ignore[arg-type]
    parts = sum(
        aggregate_loss(loss[rows], mask[rows], mode) * accumulation_weight(mask[rows], mask, mode)
        for rows in (slice(0, 2), slice(2, 3))
    )
    assert parts.item() == pytest.approx(whole.item())


def test_clipped_surrogate_hand_case() -> None:
    # eps = 0.2; row 0 has advantage +1, row 1 advantage -1; the last column is masked with a wild ratio.
    # ratio 1.5, A=+1: -1.5 vs clipped -1.2 -> max -1.2 (clip active)
    # ratio 0.5, A=+1: -0.5 vs clipped -0.8 -> max -0.5 (clip inactive: the pessimistic term is unclipped)
    # ratio 1.1, A=-1:  1.1 vs clipped  1.1 -> 1.1    (inside the range)
    # ratio 0.7, A=-1:  0.7 vs clipped  0.8 -> 0.8    (clip active)
    # token-mean = (-1.2 - 0.5 + 1.1 + 0.8) / 4 = 0.05; clip fraction 2/4
    # mean ratio (1.5 + 0.5 + 1.1 + 0.7) / 4 = 0.95
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])
    ratio = torch.tensor([[1.5, 0.5, 50.0], [1.1, 0.7, 50.0]])
    logp = old + ratio.log()
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    adv = torch.tensor([[1.0], [-1.0]])
    loss, stats = clipped_surrogate(logp, old, adv, mask, 0.2, "token-mean")
    assert loss.item() == pytest.approx(0.05, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(0.95, abs=1e-6)


# ----------------------------------------------------------------------------- log-probs


def naive_logprobs(model, ids: list[int], temperature: float = 1.0) -> list[float]:
    """One forward per prefix: log p(ids[t] | ids[:t]) for t >= 1, the slowest and plainest definition."""
    out = [0.0]
    with torch.no_grad():
        for t in range(1, len(ids)):
            logits = model(torch.tensor([ids[:t]])).logits[0, -1] / temperature
            out.append(torch.log_softmax(logits.float(), -1)[ids[t]].item())
    return out


def test_token_logprobs_match_a_naive_loop(policy, tokenizer, prompts) -> None:
    ids = tokenizer(prompts[1] + "She went on 7 May 2023.", add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        for temperature in (1.0, 0.7):
            fast = token_logprobs(policy, x, torch.ones_like(x), temperature=temperature, chunk_size=3)
            assert fast[0].tolist() == pytest.approx(naive_logprobs(policy, ids, temperature), abs=1e-4)
        # start > 1 computes only the tail (logits_to_keep), same values; positions before start are 0
        full = token_logprobs(policy, x, torch.ones_like(x))
        tail = token_logprobs(policy, x, torch.ones_like(x), start=5)
        assert tail[0, 5:].tolist() == pytest.approx(full[0, 5:].tolist(), abs=1e-5)
        assert (tail[0, :5] == 0).all()


def test_token_logprobs_ignore_left_padding(policy, tokenizer, prompts) -> None:
    short = tokenizer(prompts[0] + "Hello there", add_special_tokens=False)["input_ids"]
    long = tokenizer(prompts[1] + "Hello there", add_special_tokens=False)["input_ids"]
    pad = len(long) - len(short)
    ids = torch.tensor([[tokenizer.pad_token_id] * pad + short, long])
    attn = torch.tensor([[0] * pad + [1] * len(short), [1] * len(long)])
    with torch.no_grad():
        batched = token_logprobs(policy, ids, attn)
        alone = token_logprobs(policy, torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
    assert (batched[0, :pad] == 0).all()
    assert batched[0, pad:].tolist() == pytest.approx(alone[0].tolist(), abs=1e-5)


# ----------------------------------------------------------------------------- sampling


def test_rollout_layout(policy, tokenizer, prompts) -> None:
    batch = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=3, max_new_tokens=5),
                            seed=0, old_logprobs=True)
    assert isinstance(batch, RolloutBatch) and len(batch) == 9
    assert batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch.rewards.tolist() == [0.0] * 9 and batch.ref_logprobs is None
    P = batch.prompt_width
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert batch.prompt_lengths.tolist() == [n for n in lengths for _ in range(3)] and max(lengths) == P
    for row in range(9):
        n = batch.prompt_lengths[row].item()
        assert batch.attention_mask[row, :P].tolist() == [0] * (P - n) + [1] * n  # left padding
        assert (batch.response_mask[row, :P] == 0).all()  # prompt is never a response token
        assert (batch.old_logprobs[row][batch.response_mask[row] == 0] == 0).all()
        assert (batch.old_logprobs[row][batch.response_mask[row] == 1] < 0).all()
        response = batch.input_ids[row, P:][batch.response_mask[row, P:].bool()]
        assert batch.texts[row] == tokenizer.decode(response, skip_special_tokens=True)


def test_response_mask_ends_at_the_first_eos(policy, tokenizer, prompts) -> None:
    # The random model rarely says <|im_end|>; make a token it often samples an extra EOS instead.
    first = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=8, max_new_tokens=6),
                            seed=1)
    P = first.prompt_width
    frequent = Counter(first.input_ids[:, P + 1 : P + 4].flatten().tolist()).most_common(1)[0][0]
    policy.generation_config.eos_token_id = [tokenizer.eos_token_id, frequent]
    batch = sample_rollouts(policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=8, max_new_tokens=6),
                            seed=1)
    lengths = batch.response_mask.sum(-1).long().tolist()
    assert any(n < 6 for n in lengths), "no row stopped early: the test lost its point"
    for row, n in enumerate(lengths):
        response = batch.input_ids[row, P : P + n].tolist()
        stops = [i for i, t in enumerate(response) if t in (tokenizer.eos_token_id, frequent)]
        assert all(i == n - 1 for i in stops)  # an EOS can only be the last response token
        if n < 6:
            assert stops == [n - 1]  # a row shorter than max_new_tokens stopped at its EOS
        assert batch.response_mask[row, P + n :].sum() == 0 and batch.attention_mask[row, P + n :].sum() == 0


def test_old_logprobs_are_the_policy_at_the_sampling_temperature(policy, tokenizer, prompts) -> None:
    batch = sample_rollouts(
        policy, tokenizer, prompts, RolloutConfig(samples_per_prompt=4, max_new_tokens=6, temperature=0.7,
                                                  generation_batch_size=3, shared_prefix=False),
        seed=3, old_logprobs=True,  # uneven chunks, re-padded into one batch
    )
    with torch.no_grad():
        fresh = token_logprobs(
            policy, batch.input_ids, batch.attention_mask, temperature=0.7, start=batch.prompt_width
        ) * batch.response_mask
        at_one = token_logprobs(policy, batch.input_ids, batch.attention_mask) * batch.response_mask
    assert torch.allclose(fresh, batch.old_logprobs, atol=1e-5)  # so the first update's ratio is 1
    _, stats = clipped_surrogate(fresh, batch.old_logprobs, torch.ones(12, 1), batch.response_mask, 0.2,
                                 "token-mean")
    assert stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-5) and stats["clip_fraction"].item() == 0
    assert not torch.allclose(at_one, batch.old_logprobs, atol=1e-3)  # the temperature really is applied


def test_sampling_is_seeded(policy, tokenizer, prompts) -> None:
    def draw(seed):
        return sample_rollouts(policy, tokenizer, prompts,
                               RolloutConfig(samples_per_prompt=4, max_new_tokens=6),
                               seed=seed, old_logprobs=True)

    a, b, c = draw(5), draw(5), draw(6)
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts
    assert torch.equal(a.old_logprobs, b.old_logprobs)
    assert not torch.equal(a.input_ids, c.input_ids)


def test_model_generation_config_does_not_leak_into_rollouts(policy, tokenizer, prompts) -> None:
    """A checkpoint's generation_config must not reshape the sampling distribution (generate() merges it
    even into an explicit config): the same seed gives the same samples with and without one."""
    def draw():
        return sample_rollouts(policy, tokenizer, prompts,
                               RolloutConfig(samples_per_prompt=8, max_new_tokens=6), seed=0)

    clean = draw()
    P = clean.prompt_width
    common = Counter(clean.input_ids[:, P:].flatten().tolist()).most_common(1)[0][0]
    config = policy.generation_config
    config.top_k, config.top_p, config.repetition_penalty = 1, 0.1, 10.0
    config.suppress_tokens, config.no_repeat_ngram_size = [common], 1
    leaky = draw()
    assert torch.equal(leaky.input_ids, clean.input_ids)
    assert policy.generation_config.suppress_tokens == [common]  # restored after sampling
