"""Sampling rollouts from the policy itself: G responses per prompt, each group's prompt prefilled once.

Rollouts sample from the policy's own distribution: temperature only, with top-k, top-p and repetition
penalty explicitly switched off (reference notes, section 6). With `shared_prefix` (the default) a group's
prompt, all but its last token, is run once and its KV cache copied to the G rows before `generate`
continues from it: the same distribution as G separate prefills (the cache holds the same keys and values),
at a G-th of the prefill cost. Greedy decoding gives token-identical outputs on both paths (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from memory_r1.llm.transformers_backend import eos_ids, neutral_generation_config
from memory_r1.rl.core import RolloutBatch, micro_batches
from memory_r1.rl.passes import cache_kwargs, expanded_cache, pass_logprobs, prompt_state

PromptOverflow = Literal["truncate", "refuse"]


@dataclass(frozen=True)
class RolloutConfig:
    """How rollouts are sampled: the one home of group size, temperature and lengths, for GRPO and PPO."""

    samples_per_prompt: int = 8
    """Responses per prompt (GRPO's G; PPO treats them as independent rollouts). Our choice: the paper is
    silent; TRL's default. Binary EM rewards need enough samples that a group is rarely all-right or
    all-wrong (advantage 0)."""
    temperature: float = 1.0
    """Rollout temperature; every log-prob pass scores at the same one. Paper: 1.0."""
    max_new_tokens: int = 256
    """Longest sampled response. Paper: 2048. Ours: answers and operation lists of the small default
    model fit in 256."""
    generation_batch_size: int | None = None
    """Rows per `generate` call. None: one group (G rows) per call, which the shared prompt needs anyway."""
    shared_prefix: bool = True
    """Prefill each group's prompt once, in generation and in every log-prob pass (exact; see `rl.passes`).
    False: today's plain path, kept so `benchmarks/bench_grpo.py` can measure both in one run."""
    max_prompt_tokens: int | None = None
    """Longest prompt in tokens; None: no limit. What happens to a longer one: `prompt_overflow`."""
    prompt_overflow: PromptOverflow = "refuse"
    """refuse: raise a ValueError naming the prompt's length (our default: a silently cut prompt trains
    on a question the model never saw). truncate: keep the prompt's last `max_prompt_tokens` tokens (the
    question and the assistant header survive; the instructions and the oldest memories go)."""


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], config: RolloutConfig
) -> list[list[int]]:
    """Token ids of already-rendered prompts, with `max_prompt_tokens` applied as configured."""
    encoded = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    limit = config.max_prompt_tokens
    if limit is None:
        return encoded
    if config.prompt_overflow == "refuse":
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise ValueError(f"prompt {i} has {len(ids)} tokens, more than max_prompt_tokens={limit} "
                                 "(raise it, or set prompt_overflow=truncate)")
        return encoded
    return [ids[-limit:] for ids in encoded]


def sample_rollouts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: RolloutConfig,
    *,
    seed: int | None = None,
    old_logprobs: bool = False,
    micro_batch_size: int | None = None,
) -> RolloutBatch:
    """Sample `config.samples_per_prompt` responses per already-rendered prompt from the policy itself.

    Rows are prompt-major: rows i*G .. i*G+G-1 answer prompt i (group_ids = i). Each response is cut after
    its first EOS. Rewards are zeros: the caller scores `texts` and fills them in.

    `old_logprobs=True` runs the sampling policy's log-prob pass now (micro-batches of `micro_batch_size`).
    The default skips it: `grpo_step`/`ppo_update` run it themselves only when an update is off-policy (more
    than one epoch or mini-batch) or PPO's in-reward KL needs it; on-policy they are the update's own
    log-probs, detached.
    """
    if config.temperature <= 0:
        raise ValueError("RL rollouts must sample (temperature > 0): greedy outputs have no log-probs")
    device = model.device
    eos = sorted(set(eos_ids(model, tokenizer)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    G = config.samples_per_prompt
    encoded = encode_prompts(tokenizer, prompts, config)
    prompt_rows = [encoded[i] for i in range(len(encoded)) for _ in range(G)]
    responses: list[list[int]] = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        settings: dict[str, object] = {  # top_k=0: the model's own generation_config must not leak in
            "do_sample": True, "temperature": config.temperature, "top_k": 0, "top_p": 1.0,
            "repetition_penalty": 1.0, "num_beams": 1, "max_new_tokens": config.max_new_tokens,
            "eos_token_id": eos, "pad_token_id": pad_id,
        }
        if config.shared_prefix:
            for ids in encoded:
                responses += _sample_group(model, ids, G, config.generation_batch_size or G, settings)
        else:
            for rows in micro_batches(len(prompt_rows), config.generation_batch_size):
                responses += _sample_padded(model, [prompt_rows[i] for i in rows], pad_id, settings)
    responses = [_through_eos(r, set(eos)) for r in responses]
    input_ids, attention_mask, response_mask, P = _assemble(prompt_rows, responses, pad_id, device)
    batch = RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        old_logprobs=None,
        ref_logprobs=None,
        rewards=torch.zeros(len(prompt_rows), device=device),
        group_ids=torch.arange(len(prompts), device=device).repeat_interleave(G),
        texts=[str(tokenizer.decode(r, skip_special_tokens=True)) for r in responses],
        prompt_lengths=torch.tensor([len(p) for p in prompt_rows], dtype=torch.long, device=device),
        prompt_width=P,
        temperature=config.temperature,
    )
    if old_logprobs:
        batch.old_logprobs = pass_logprobs(model, batch, micro_batch_size, shared_prefix=config.shared_prefix)
    return batch


def _sample_group(
    model: PreTrainedModel, ids: list[int], G: int, chunk: int, settings: dict[str, object]
) -> list[list[int]]:
    """G samples of one prompt: its first P-1 tokens prefilled once, `generate` continues from the cache."""
    prompt = torch.tensor(ids, dtype=torch.long, device=model.device)
    out: list[list[int]] = []
    with torch.no_grad(), neutral_generation_config(model):
        state = prompt_state(model, prompt[:-1], grad=False) if len(ids) > 1 else None
        for rows in micro_batches(G, chunk):
            b = len(rows)
            kwargs: dict[str, object] = dict(settings)
            if state is not None:
                kwargs.update(cache_kwargs(expanded_cache(state.keys_values, b)))
            generated = model.generate(  # type: ignore[operator]
                input_ids=prompt[None].expand(b, -1),
                attention_mask=torch.ones(b, len(ids), dtype=torch.long, device=model.device),
                **kwargs,
            )
            out += generated[:, len(ids) :].tolist()
    return out


def _sample_padded(
    model: PreTrainedModel, chunk: list[list[int]], pad_id: int, settings: dict[str, object]
) -> list[list[int]]:
    """The plain path: left-padded prompts, each prefilled in full."""
    width = max(len(p) for p in chunk)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=model.device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
    with torch.no_grad(), neutral_generation_config(model):
        generated = model.generate(input_ids=ids, attention_mask=attn,
                                   **settings)  # type: ignore[operator]  # transformers 5 types PreTrainedModel without GenerationMixin
    rows: list[list[int]] = generated[:, width:].tolist()
    return rows


def _through_eos(tokens: list[int], eos: set[int]) -> list[int]:
    n = next((j + 1 for j, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:n]


def _assemble(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One (B, T) batch: prompts left-padded to the longest, responses right-padded to the longest."""
    P = max(len(p) for p in prompts)
    R = max(1, max(len(r) for r in responses))
    B = len(prompts)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros(B, P + R, dtype=torch.long)
    resp = torch.zeros(B, P + R, dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p) : P] = 1
        if r:
            ids[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, P : P + len(r)] = 1
            resp[i, P : P + len(r)] = 1.0
    return ids.to(device), attn.to(device), resp.to(device), P


def merge_batches(batches: Sequence[RolloutBatch], tokenizer: PreTrainedTokenizerBase) -> RolloutBatch:
    """Rows of several rollout batches (same temperature) as one, re-padded; group ids kept distinct."""
    prompts: list[list[int]] = []
    responses: list[list[int]] = []
    groups: list[int] = []
    offset = 0
    for b in batches:
        P = b.prompt_width
        for row in range(len(b)):
            prompts.append(b.input_ids[row, P - int(b.prompt_lengths[row]) : P].tolist())
            responses.append(b.input_ids[row, P : P + int(b.response_mask[row].sum())].tolist())
        _, dense = torch.unique(b.group_ids, return_inverse=True)
        groups += (dense + offset).tolist()
        offset += int(dense.max()) + 1
    first = batches[0]
    device = first.input_ids.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(first.input_ids[0, 0])
    ids, attn, mask, P = _assemble(prompts, responses, pad, device)
    return RolloutBatch(ids, attn, mask, None, None, torch.cat([b.rewards for b in batches]),
                        torch.tensor(groups, dtype=torch.long, device=device),
                        [t for b in batches for t in b.texts],
                        torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device), P,
                        first.temperature)
