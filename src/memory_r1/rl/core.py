"""What PPO and GRPO share: the rollout batch, per-token log-probs, KL estimators, masked maths, sampling.

Sampling lives in `rl.rollout`, the cheap passes in `rl.passes`.

Every per-token tensor uses one layout, (B, T) over the whole sequence: left-padded prompt, then the
right-padded response. Position t holds the quantity for token `input_ids[:, t]` (its log-prob, its KL, its
value, its advantage); `response_mask` is 1 on response tokens up to and including the first EOS. One
layout means one set of indices everywhere, and masks do the rest.

Conventions follow verl's `trainer/ppo/core_algos.py` (the paper's framework, reference notes section 7):
KL estimators k1/k2/k3 (Schulman, "Approximating KL divergence", 2020), loss aggregation modes, masked
whitening with Bessel's correction. Rollouts sample from the policy's own distribution: temperature only,
with top-k, top-p and repetition penalty explicitly switched off (reference notes, section 6).

Keep dropout off in the policy (HF models load in eval mode; LoRA adapters should use lora_dropout=0):
with dropout on, the log-probs of an update no longer match those recorded at sampling time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

KLKind = Literal["k1", "k2", "k3"]
LossAgg = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]


@dataclass
class RolloutBatch:
    """B sampled responses and all an update needs. Per-token tensors are (B, T), see the module doc."""

    input_ids: torch.Tensor  # (B, T) long: left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # (B, T) long: 1 on real prompt tokens and on response tokens up to EOS
    response_mask: torch.Tensor  # (B, T) float: 1 on response tokens up to and including the first EOS
    old_logprobs: torch.Tensor | None  # (B, T) float: log-probs under the sampling policy, 0 outside the
    # response; None when sample_rollouts(old_logprobs=False) skipped that pass (see there)
    ref_logprobs: torch.Tensor | None  # (B, T) float or None: log-probs under the frozen reference policy
    rewards: torch.Tensor  # (B,) float: outcome reward per response, filled in by the caller
    group_ids: torch.Tensor  # (B,) long: index of the prompt each response answers
    texts: list[str]  # B decoded responses (special tokens skipped)
    prompt_lengths: torch.Tensor  # (B,) long: real (unpadded) prompt tokens per row
    prompt_width: int  # responses start at this column: the padded prompt length
    temperature: float = 1.0  # the sampling temperature: every log-prob pass scores at this one

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> RolloutBatch:
        """The rows `index` (a minibatch or micro-batch), same columns."""
        idx = torch.as_tensor(index, dtype=torch.long)
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[idx.to(value.device)]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in idx.tolist()]
            else:
                picked[f.name] = value
        return RolloutBatch(**picked)

    def to(self, device: torch.device | str) -> RolloutBatch:
        moved: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return RolloutBatch(**moved)


# ----------------------------------------------------------------------------- masked maths


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x where mask is 1 (0 where the mask is empty). Masked entries never leak in, even NaN."""
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    if dim is None:
        return kept.sum() / mask.sum().clamp(min=1)
    return kept.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance over the masked entries, as verl computes it."""
    n = mask.sum()
    var = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return var * n / (n - 1) if n > 1 else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) with masked statistics; 0 outside the mask (verl keeps the junk)."""
    mean = masked_mean(x, mask)
    white = (x - mean) * torch.rsqrt(masked_var(x, mask) + 1e-8)
    if not shift_mean:
        white = white + mean
    return torch.where(mask.bool(), white, torch.zeros_like(white))


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: (..., V) -> (...)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (F.softmax(logits, dim=-1) * logits).sum(-1)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLKind) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probs. (B, T) -> (B, T).

    k1 = logp - ref                       unbiased, can be negative, high variance
    k2 = 0.5 (logp - ref)^2               biased, non-negative
    k3 = exp(ref - logp) - (ref - logp) - 1   unbiased, non-negative, low variance (DeepSeekMath's GRPO)
    k3 clamps as verl does (log-ratio to [-20, 20], result to at most 10) so one rare token cannot explode.
    """
    log_ratio = logprobs - ref_logprobs  # (B, T)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        r = torch.clamp(-log_ratio, min=-20.0, max=20.0)  # log(pi_ref / pi)
        return torch.clamp(torch.exp(r) - r - 1.0, max=10.0)
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")


def aggregate_loss(loss: torch.Tensor, mask: torch.Tensor, mode: LossAgg) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the masked tokens, as verl's `agg_loss`.

    token-mean:          every token in the batch weighs the same (long answers weigh more)
    seq-mean-token-sum:  sum over each sequence's tokens, mean over sequences
    seq-mean-token-mean: mean over each sequence's tokens, then over sequences (GRPO as published)
    """
    kept = torch.where(mask.bool(), loss, torch.zeros_like(loss))  # (B, T)
    if mode == "token-mean":
        return kept.sum() / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-sum":
        return kept.sum(-1).mean()
    if mode == "seq-mean-token-mean":
        return (kept.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}")


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float,
    mode: LossAgg,
    *,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped objective as a loss: agg(max(-A r, -A clip(r, 1-eps_low, 1+eps_high))), r = pi / pi_old.

    `clip_eps` is the lower range and, unless `clip_eps_high` is given, the upper one too (DAPO's
    "clip-higher" raises only the upper bound, so unlikely tokens can gain probability faster).
    `clip_ratio_c` is verl's dual clip: for negative advantages the loss is also capped at -A * c (c > 1),
    so one token whose ratio has exploded cannot dominate the batch.
    All inputs (B, T); advantages may be (B, 1) to share one value per sequence. The log-ratio is clamped
    to [-20, 20] as verl does. Stats are detached tensors: mean ratio, fraction of tokens where the clip
    was active, and the k1 estimate of KL(old || new).
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = torch.clamp(logprobs - old_logprobs, min=-20.0, max=20.0)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)  # (B, T)
    per_token = torch.maximum(unclipped, clipped)  # (B, T): the pessimistic bound
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (verl's default is 3.0), got {clip_ratio_c}")
        capped = torch.minimum(per_token, -advantages * clip_ratio_c)  # (B, T)
        per_token = torch.where(advantages < 0, capped, per_token)
    loss = aggregate_loss(per_token, response_mask, mode)
    stats = {
        "ratio_mean": masked_mean(ratio, response_mask).detach(),
        "clip_fraction": masked_mean((clipped > unclipped).float(), response_mask).detach(),
        "approx_kl_old": masked_mean(-log_ratio, response_mask).detach(),
    }
    return loss, stats


def accumulation_weight(micro_mask: torch.Tensor, full_mask: torch.Tensor, mode: LossAgg) -> float:
    """Scale for a micro-batch's aggregated loss so the accumulated gradient equals the full batch's.

    token-mean over the union of micro-batches = sum_i (tokens_i / tokens) * token-mean_i; the two
    sequence means weigh each micro-batch by its share of the sequences.
    """
    if mode == "token-mean":
        return float(micro_mask.sum() / full_mask.sum().clamp(min=1))
    return micro_mask.shape[0] / full_mask.shape[0]


def micro_batches(n: int, size: int | None) -> list[range]:
    """Consecutive row ranges of at most `size` rows (all n rows when size is None)."""
    size = n if size is None else size
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


# ----------------------------------------------------------------------------- log-probs


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate()` builds them: left padding shifts nothing."""
    pos = attention_mask.long().cumsum(-1) - 1  # (B, T)
    return pos.clamp(min=0)


def token_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    start: int = 1,
    chunk_size: int = 512,
) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]) at position t, for t >= start; 0 before. (B, T) -> (B, T).

    Padding (attention_mask 0) and a row's first real token (no context) also get 0.

    `temperature` divides the logits, so the log-probs are those of the distribution rollouts sample from.
    Only the logits for positions start-1 .. T-2 are computed (`logits_to_keep`), and the float32
    log-softmax runs `chunk_size` positions at a time: a 150k vocabulary never needs a float32 copy of the
    whole (B, T, V) logits. Gradients flow when called outside `torch.no_grad()`.
    """
    return _token_scores(model, input_ids, attention_mask, temperature, start, chunk_size, False)[0]


def token_scores(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    start: int = 1,
    chunk_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs` and the (detached) entropy of the policy at each scored position. (B, T) each."""
    lp, ent = _token_scores(model, input_ids, attention_mask, temperature, start, chunk_size, True)
    assert ent is not None
    return lp, ent


def _token_scores(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
    start: int, chunk_size: int, entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T = input_ids.shape
    start = max(start, 1)  # position 0 has no context: its log-prob is defined as 0
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=T - start + 1,  # positions start-1 .. T-1; the last one predicts nothing we score
        use_cache=False,
    )
    logits = out.logits[:, :-1]  # (B, T - start, V): row j predicts token start + j
    targets = input_ids[:, start:]  # (B, T - start)
    pieces, ents = [], []
    for s in range(0, targets.shape[1], chunk_size):
        lg = logits[:, s : s + chunk_size].float() / temperature  # (B, C, V)
        lse = torch.logsumexp(lg, dim=-1)  # (B, C)
        picked = lg.gather(-1, targets[:, s : s + chunk_size, None]).squeeze(-1)  # (B, C)
        pieces.append(picked - lse)
        if entropy:
            with torch.no_grad():
                ents.append(lse - (F.softmax(lg, dim=-1) * lg).sum(-1))
    head = torch.zeros(B, start, dtype=torch.float32, device=input_ids.device)
    logprobs = torch.cat([head, *pieces], dim=1)  # (B, T)
    # A token counts only if it and the one before it are real: a left-padded row's first token has no
    # context (like position 0), and padding has no log-prob.
    real = attention_mask.bool()
    scored = real & torch.cat([torch.zeros_like(real[:, :1]), real[:, :-1]], dim=1)  # (B, T)
    zero = torch.zeros_like(logprobs)
    ent_full = torch.where(scored, torch.cat([head, *ents], dim=1), zero) if entropy else None
    return torch.where(scored, logprobs, zero), ent_full


def batch_logprobs(
    model: PreTrainedModel, batch: RolloutBatch, *, temperature: float, micro_batch_size: int | None = None
) -> torch.Tensor:
    """No-grad log-probs of a whole batch in micro-batches, 0 outside the response. (B, T)."""
    parts = []
    with torch.no_grad():
        for rows in micro_batches(len(batch), micro_batch_size):
            mb = batch.select(rows)
            lp = token_logprobs(
                model, mb.input_ids, mb.attention_mask, temperature=temperature, start=batch.prompt_width
            )
            parts.append(lp * mb.response_mask)
    return torch.cat(parts)
