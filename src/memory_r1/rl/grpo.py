"""GRPO (Shao et al., DeepSeekMath 2024) as Memory-R1 uses it (paper section 2): actor only, no critic.

For each prompt, sample G responses; each response's advantage is its outcome reward standardised within
its group, (r - mean_g) / (std_g + eps), shared by all its tokens; the policy minimises the PPO clipped
surrogate on per-token ratios plus beta * KL(pi || pi_ref) added to the loss (verl's `use_kl_loss`).

Where this departs from or fills in the published algorithm:
- The paper reports no group size, KL beta, clip epsilon or epoch count; our defaults are documented below.
- Loss aggregation defaults to verl's "token-mean" (every token in the batch weighs the same); published
  GRPO averages per sequence first ("seq-mean-token-mean"), which is one config switch away.
- A group of one response has no baseline: its advantage is 0 (verl would give it r / (1 + eps)).
- The KL uses the k3 estimator at the sampled tokens, as DeepSeekMath does.

Recipe (the caller's loop): `batch = rollout.sample_rollouts(...)`, fill `batch.rewards`, `grpo_step(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from memory_r1.rl.core import (
    KLKind,
    LossAgg,
    RolloutBatch,
    accumulation_weight,
    aggregate_loss,
    clipped_surrogate,
    kl_estimate,
    masked_mean,
    micro_batches,
)
from memory_r1.rl.passes import PassTimer, ResponseView, pass_logprobs, response_passes


@dataclass(frozen=True)
class GRPOConfig:
    """The GRPO update. Sampling (G, temperature, lengths) is `RolloutConfig`; the lr is the caller's
    optimizer."""

    beta: float = 0.001
    """KL coefficient in the loss. Paper silent. Our choice: verl's GRPO examples (the paper's framework)
    use 0.001; DeepSeekMath used 0.04; TRL defaults to 0.0. 0 disables it and skips the reference pass."""
    kl_kind: KLKind = "k3"
    """KL estimator. DeepSeekMath's (k3: unbiased, non-negative, low variance); verl's `low_var_kl`."""
    clip_eps: float = 0.2
    """PPO clip range for the ratio (the lower one when clip_eps_high is set). Paper silent. Our choice: the
    PPO paper's and verl's default."""
    clip_eps_high: float | None = None
    """Upper clip range ("clip-higher", DAPO uses 0.28). None: the same as clip_eps, as published GRPO."""
    clip_ratio_c: float | None = None
    """verl's dual clip: caps the loss of negative-advantage tokens at -A * c (verl: 3.0). None: off, as
    published GRPO; with one on-policy epoch the ratio is 1 and it never acts."""
    loss_agg: LossAgg = "token-mean"
    """How per-token losses become a scalar. Our choice: verl's default, no per-sequence length bias."""
    scale_rewards: bool = True
    """Divide group-centred rewards by the group std, as published GRPO. False gives Dr. GRPO."""
    eps: float = 1e-6
    """Added to the group std before dividing. verl's value."""
    epochs: int = 1
    """Passes over each rollout batch. Our choice: 1 (verl's default), so every update is on-policy and the
    ratio is exactly 1; more passes reuse samples and make the clipping bite."""
    mini_batch_size: int | None = None
    """Responses per optimizer step; None means the whole batch (one step per epoch)."""
    micro_batch_size: int = 2
    """Responses per forward/backward (gradient accumulation), in every pass. Paper: micro-batch 2 per GPU."""
    max_grad_norm: float = 1.0
    """Gradient clipping. Our choice: verl's default."""


# ----------------------------------------------------------------------------- advantage


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + eps), std unbiased as torch.std. (B,), (B,) -> (B,).

    Groups of one response get 0: with no other sample there is no baseline to compare against. Groups whose
    rewards are all equal get 0 too: no response in them is better than another.
    """
    rewards = rewards.float()
    _, group = torch.unique(group_ids, return_inverse=True)  # (B,) dense group index 0..K-1
    K = int(group.max()) + 1
    count = torch.zeros(K, device=rewards.device).index_add_(0, group, torch.ones_like(rewards))  # (K,)
    mean = torch.zeros(K, device=rewards.device).index_add_(0, group, rewards) / count  # (K,)
    centred = rewards - mean[group]  # (B,)
    sq = torch.zeros(K, device=rewards.device).index_add_(0, group, centred**2)  # (K,)
    std = (sq / (count - 1).clamp(min=1)).sqrt()  # (K,) unbiased
    if scale:  # a constant group (std 0) keeps advantage 0, even with eps = 0
        centred = torch.where(std[group] > 0, centred / (std[group] + eps), torch.zeros_like(centred))
    return torch.where(count[group] > 1, centred, torch.zeros_like(centred))


# ----------------------------------------------------------------------------- loss


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    config: GRPOConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate on token ratios, advantage broadcast over each response, plus beta * KL.

    logprobs, old_logprobs, ref_logprobs, response_mask: (B, T); advantages: (B,).
    """
    pg_loss, pg_stats = clipped_surrogate(
        logprobs, old_logprobs, advantages[:, None], response_mask, config.clip_eps, config.loss_agg,
        clip_eps_high=config.clip_eps_high, clip_ratio_c=config.clip_ratio_c,
    )  # advantages (B, 1): one value for every token of a response
    loss = pg_loss
    kl_value = 0.0
    if config.beta > 0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs reference log-probs (pass ref_model or batch.ref_logprobs)")
        kl = kl_estimate(logprobs, ref_logprobs, config.kl_kind)  # (B, T)
        loss = pg_loss + config.beta * aggregate_loss(kl, response_mask, config.loss_agg)
        kl_value = masked_mean(kl, response_mask).item()
    stats = {"loss": loss.item(), "pg_loss": pg_loss.item(), "kl": kl_value}
    stats.update({key: value.item() for key, value in pg_stats.items()})
    return loss, stats


# ----------------------------------------------------------------------------- update step


def grpo_step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    config: GRPOConfig,
    ref_model: PreTrainedModel | None = None,
    *,
    shared_prefix: bool = True,
) -> dict[str, float]:
    """One GRPO update on a scored rollout batch: advantages, then `epochs` passes of clipped-surrogate
    steps over mini-batches, each accumulated over micro-batches and clipped to `max_grad_norm`.

    Passes that change nothing are skipped: the reference pass when beta is 0, the old-log-prob pass when
    the update is on-policy (one epoch, one mini-batch: the update's own log-probs, detached, are the same
    numbers). `shared_prefix` runs each group's prompt once per pass (exact, `rl.passes`); False is the
    plain path. Pass timings land in the stats as `<pass>_tokens_per_s`.
    """
    advantages = group_advantages(batch.rewards, batch.group_ids, config.scale_rewards, config.eps)  # (B,)
    timings: dict[str, float] = {}
    if config.beta > 0 and batch.ref_logprobs is None:
        if ref_model is None:
            raise ValueError("beta > 0 needs a reference model or batch.ref_logprobs")
        with PassTimer(timings, "reference", batch):
            batch.ref_logprobs = pass_logprobs(ref_model, batch, config.micro_batch_size,
                                               shared_prefix=shared_prefix)
    on_policy = config.epochs == 1 and len(micro_batches(len(batch), config.mini_batch_size)) == 1
    if batch.old_logprobs is None and not on_policy:  # later mini-batches/epochs need the sampling policy's
        with PassTimer(timings, "old_logprob", batch):
            batch.old_logprobs = pass_logprobs(model, batch, config.micro_batch_size,
                                               shared_prefix=shared_prefix)
    history: list[tuple[dict[str, float], float]] = []  # (stats, response tokens) per micro-batch
    grad_norms, entropies = [], []
    P = batch.prompt_width
    with PassTimer(timings, "update", batch, passes=config.epochs):
        for _ in range(config.epochs):
            for mini_rows in micro_batches(len(batch), config.mini_batch_size):
                rows = list(mini_rows)
                mini_mask = batch.response_mask[rows]

                def loss_fn(view: ResponseView, mini_mask: torch.Tensor = mini_mask) -> torch.Tensor:
                    # Old log-probs skipped (on-policy): the parameters have not moved since sampling, so they
                    # are these very numbers; detached, the ratio is exactly 1 and the gradient is A grad log
                    # p.
                    old = view.take(batch.old_logprobs, P) if batch.old_logprobs is not None else None
                    ref = view.take(batch.ref_logprobs, P) if batch.ref_logprobs is not None else None
                    loss, stats = grpo_loss(
                        view.logprobs, view.logprobs.detach() if old is None else old, advantages[view.rows],
                        view.response_mask, ref, config,
                    )
                    history.append((stats, view.response_mask.sum().item()))
                    return loss * accumulation_weight(view.response_mask, mini_mask, config.loss_agg)

                optimizer.zero_grad(set_to_none=True)
                for view in response_passes(model, batch, rows, config.micro_batch_size, grad=True,
                                            entropy=True, shared_prefix=shared_prefix, loss_fn=loss_fn):
                    assert view.entropy is not None
                    entropies.append((view.entropy.sum().item(), view.response_mask.sum().item()))
                grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                 config.max_grad_norm).item())
                optimizer.step()
    tokens = max(sum(n for _, n in history), 1.0)  # token-weighted: the same on any micro-batch split
    summary = {key: sum(s[key] * n for s, n in history) / tokens for key in history[0][0]}
    summary.update(
        grad_norm=sum(grad_norms) / len(grad_norms),
        reward_mean=batch.rewards.float().mean().item(),
        advantage_abs_mean=advantages.abs().mean().item(),
        response_length=batch.response_mask.sum(-1).float().mean().item(),
        entropy=sum(e for e, _ in entropies) / max(sum(n for _, n in entropies), 1.0),
        **timings,
    )
    return summary
