"""Every shortcut of `rl.passes` / `rl.rollout` gives the plain path's numbers: log-probs, gradients, samples.

Tolerances: float32 on CPU; the shared-prompt path runs the same maths in different matrix shapes, so
results agree to rounding (log-probs 2e-5 absolute, gradients 1e-4 relative to their norm), never exactly.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from memory_r1.rl.core import RolloutBatch, batch_logprobs
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.passes import ResponseView, pass_logprobs, response_passes
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts

QUESTIONS = ("Hi", "When did Caroline go to the support group, and who went with her?", "Pottery?")


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path) -> tuple[PreTrainedModel, AutoTokenizer, list[str]]:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in QUESTIONS]
    return model, tokenizer, prompts


def rollouts(setup: tuple, G: int = 4, new: int = 7, **kw: object) -> RolloutBatch:
    model, tokenizer, prompts = setup
    config = RolloutConfig(samples_per_prompt=G, max_new_tokens=new, **kw)  # type: ignore[arg-type]
    batch = sample_rollouts(model, tokenizer, prompts, config, seed=3)
    P = batch.prompt_width
    for row in range(1, len(batch), 2):  # as if EOS ended these early: right padding of varied widths
        cut = P + 1 + row % (new - 1)
        batch.attention_mask[row, cut:] = 0
        batch.response_mask[row, cut:] = 0
    batch.rewards = torch.rand(len(batch), generator=torch.Generator().manual_seed(0))
    return batch


def test_prompts_differ_in_length_and_responses_in_length(setup: tuple) -> None:
    batch = rollouts(setup)
    assert len(set(batch.prompt_lengths.tolist())) == 3  # left padding is exercised
    assert len(set(batch.response_mask.sum(-1).tolist())) > 1  # right padding too (EOS ends some early)


@pytest.mark.parametrize("micro", [None, 1, 3])
def test_shared_prompt_and_trimmed_log_probs_equal_the_plain_full_batch_pass(setup: tuple,
                                                                             micro: int | None) -> None:
    model = setup[0]
    batch = rollouts(setup)
    reference = batch_logprobs(model, batch, temperature=1.0)  # one untrimmed forward over the whole batch
    shared = pass_logprobs(model, batch, micro, shared_prefix=True)
    plain = pass_logprobs(model, batch, micro, shared_prefix=False)  # trimmed per micro-batch
    assert torch.allclose(shared, reference, atol=2e-5) and torch.allclose(plain, reference, atol=2e-5)
    assert (reference != 0).sum() == batch.response_mask.sum()  # the comparison covers every response token


def grads(
    model: PreTrainedModel, batch: RolloutBatch, shared: bool, micro: int | None
) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    adv = torch.linspace(-1, 1, len(batch))
    total = batch.response_mask.sum()

    def loss_fn(view: ResponseView) -> torch.Tensor:  # a sum over tokens: micro-batches add up exactly
        return -(adv[view.rows, None] * view.logprobs * view.response_mask).sum() / total

    list(response_passes(model, batch, list(range(len(batch))), micro, shared_prefix=shared, grad=True,
                         loss_fn=loss_fn))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("micro", [None, 2])
def test_shared_prompt_gradients_equal_the_plain_path(setup: tuple, micro: int | None) -> None:
    batch = rollouts(setup)
    plain, shared = grads(setup[0], batch, False, micro), grads(setup[0], batch, True, micro)
    assert plain.keys() == shared.keys() and len(plain) > 10  # embeddings, attention, MLP, head
    for name in plain:
        scale = plain[name].norm().clamp(min=1e-6)
        assert (shared[name] - plain[name]).norm() / scale < 1e-4, name
    # embeddings of prompt tokens only get gradient through the prompt's own backward: it must have run
    assert plain["model.embed_tokens.weight"].abs().sum() > 0


@pytest.mark.parametrize("cfg", [GRPOConfig(beta=0.04), GRPOConfig(beta=0.04, epochs=2, mini_batch_size=6,
                                                                   clip_eps=0.05, micro_batch_size=3)])
def test_grpo_step_moves_parameters_the_same_on_both_paths(setup: tuple, cfg: GRPOConfig) -> None:
    model = setup[0]
    batch = rollouts(setup)
    results = []
    for shared in (False, True):
        policy, ref = copy.deepcopy(model), copy.deepcopy(model)
        b = copy.deepcopy(batch)
        stats = grpo_step(policy, torch.optim.SGD(policy.parameters(), lr=1.0), b, cfg, ref_model=ref,
                          shared_prefix=shared)
        results.append((dict(policy.named_parameters()), stats))
    (plain, s_plain), (shared_p, s_shared) = results
    moved = sum((plain[n] - model.get_parameter(n)).norm().item() for n in plain)
    assert moved > 1e-3
    for n in plain:
        delta = (plain[n] - model.get_parameter(n)).norm().clamp(min=1e-6)
        assert (shared_p[n] - plain[n]).norm() / delta < 1e-3, n
    for key in ("loss", "kl", "clip_fraction", "entropy"):
        assert s_shared[key] == pytest.approx(s_plain[key], rel=1e-3, abs=1e-6), key


def test_shared_prompt_generation_samples_the_plain_paths_tokens(setup: tuple) -> None:
    """Same seed, same rows per generate call: the same draws from (to rounding) the same distribution."""
    shared = rollouts(setup, G=4, new=10, shared_prefix=True)
    plain = rollouts(setup, G=4, new=10, shared_prefix=False, generation_batch_size=4)
    assert shared.texts == plain.texts
    assert torch.equal(shared.input_ids, plain.input_ids)


def test_generation_batch_size_splits_a_group(setup: tuple) -> None:
    batch = rollouts(setup, G=4, generation_batch_size=3)
    assert len(batch) == 12 and batch.response_mask.sum() > 0


def test_max_prompt_tokens_refuses_or_truncates(setup: tuple) -> None:
    model, tokenizer, prompts = setup
    with pytest.raises(ValueError, match="max_prompt_tokens=8"):
        sample_rollouts(model, tokenizer, prompts, RolloutConfig(samples_per_prompt=2, max_new_tokens=2,
                                                                 max_prompt_tokens=8))
    cut = sample_rollouts(
        model,
        tokenizer,
        prompts,
        RolloutConfig(
            samples_per_prompt=2, max_new_tokens=2, max_prompt_tokens=8, prompt_overflow="truncate"
        ),
    )
    assert cut.prompt_lengths.max() == 8 and cut.prompt_width == 8
