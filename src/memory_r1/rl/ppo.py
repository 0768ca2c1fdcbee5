"""PPO with a learned critic (Schulman et al. 2017), as Memory-R1 trains either agent (paper section 2).

One response per prompt is a trajectory whose actions are its tokens. The outcome reward (EM) lands on the
last response token, optionally with a per-token KL penalty against a reference policy in the reward
(verl's `use_kl_in_reward`); GAE over the response tokens turns rewards and the critic's values into
advantages, whitened over the batch; actor and critic then take `ppo_epochs` passes of clipped updates over
shuffled mini-batches, each with its own optimizer (paper: actor lr 1e-6, critic lr 1e-5).

Where this fills gaps the paper left: gamma, lambda, clip ranges, epochs and mini-batch size are not
reported; defaults follow verl (the paper's framework) and are documented field by field. The critic is a
separate copy of the backbone with a linear value head (verl's critic is also a separate model).

Recipe (the caller's loop): `batch = sample_rollouts(...)`, fill `batch.rewards`, `ppo_update(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel

from memory_r1.rl.core import (
    KLKind,
    LossAgg,
    RolloutBatch,
    accumulation_weight,
    aggregate_loss,
    clipped_surrogate,
    kl_estimate,
    masked_mean,
    masked_whiten,
    micro_batches,
    position_ids_from_mask,
)
from memory_r1.rl.passes import ResponseView, pass_logprobs, response_passes


@dataclass(frozen=True)
class PPOConfig:
    """The PPO update. Sampling is `RolloutConfig`; the actor lr is the caller's optimizer
    (`TrainConfig.lr`)."""

    critic_lr: float = 1e-5
    """Critic learning rate for the caller's optimizer. Paper: 1e-5."""
    gamma: float = 1.0
    """Discount over response tokens. Paper silent; verl's default: an episode is one short response."""
    lam: float = 1.0
    """GAE lambda. Paper silent; verl's default. With gamma = lam = 1 every token's advantage is
    R - V(s_t): the outcome minus the critic's estimate, Monte Carlo with a learned baseline."""
    clip_eps: float = 0.2
    """Policy ratio clip range (the lower one when clip_eps_high is set). Paper silent; PPO's and verl's."""
    clip_eps_high: float | None = None
    """Upper clip range ("clip-higher", DAPO: 0.28). None: the same as clip_eps."""
    clip_ratio_c: float | None = None
    """verl's dual clip for negative advantages (verl: 3.0). None: off, as the PPO paper."""
    value_clip: float = 0.5
    """Value clip range around the rollout-time values. Paper silent; verl's default. (TRL uses 0.2; with
    0/1 EM rewards that would cap each batch's value change at a fifth of the reward range.)"""
    vf_coef: float = 1.0
    """Scale of the critic loss. The critic has its own optimizer, so this acts only through gradient
    clipping (Adam is scale-invariant); 1.0 is verl's behaviour (it has no such weight)."""
    kl_coef: float = 0.0
    """Per-token KL penalty in the reward, -kl_coef * KL(pi_old || pi_ref). Paper silent. Our choice: 0.0,
    verl's default (`use_kl_in_reward: False`), so no reference model is needed; verl uses 0.001 when on."""
    kl_kind: KLKind = "k1"
    """Estimator for the in-reward KL. verl's default for the reward penalty (`kl_penalty: kl`)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch. Our choice: verl's default; the mini-batches below already give
    several updates per batch."""
    mini_batch_size: int = 32
    """Responses per optimizer step. Our choice: a quarter of the paper's batch of 128, the ratio of verl's
    examples (train batch 1024, mini-batch 256), so each batch gives four clipped updates."""
    micro_batch_size: int = 2
    """Responses per forward/backward (gradient accumulation), in every pass. Paper: micro-batch 2 per GPU."""
    critic_lora: bool = False
    """Train the critic as a LoRA adapter on a frozen body (its value head in full) so PPO fits beside the
    actor on one GPU. Our choice: off by default (verl trains the whole critic); on for big models."""
    loss_agg: LossAgg = "token-mean"
    """How per-token losses become a scalar, for actor and critic. verl's default."""
    max_grad_norm: float = 1.0
    """Gradient clipping for actor and critic. verl's default."""


# ----------------------------------------------------------------------------- critic

VALUE_HEAD_FILE = "value_head.pt"


class Critic(nn.Module):
    """V(s): a causal LM body (its own copy, its own optimizer) with a scalar head on the last hidden state.

    Pass a freshly loaded model, never the policy itself. A CausalLM's LM head is dropped (its base model is
    used), so no (B, T, V) logits are computed. The head starts at zero: the first values are 0.
    """

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.body = backbone.base_model  # LlamaForCausalLM -> LlamaModel; a base model is itself
        hidden = backbone.get_input_embeddings().embedding_dim
        # float32 whatever the body's dtype. get_input_embeddings() is typed nn.Module; it is an nn.Embedding.
        self.head = nn.Linear(hidden, 1, device=backbone.device)  # type: ignore[arg-type]
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values aligned with `token_logprobs`: position t holds V(tokens < t), the state in which token t
        was chosen; position 0 holds 0. (B, T) -> (B, T)."""
        out = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        v = self.head(out.last_hidden_state.float()).float().squeeze(-1)  # (B, T); fp32 under autocast too
        return torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)  # (B, T): shift by one

    def save_pretrained(self, path: str | Path) -> None:
        """The body as a transformers folder plus the head in `value_head.pt`."""
        self.body.save_pretrained(path)  # type: ignore[operator]  # base_model is typed nn.Module
        torch.save(self.head.state_dict(), Path(path) / VALUE_HEAD_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: object) -> Critic:
        """A saved critic, or a fresh zero head on any model folder or hub id: verl starts its critic from
        the policy's checkpoint. `kwargs` go to `AutoModel.from_pretrained` (dtype, device_map, ...)."""
        critic = cls(AutoModel.from_pretrained(path, **kwargs))
        head = Path(path) / VALUE_HEAD_FILE
        if head.exists():
            critic.head.load_state_dict(torch.load(head, map_location=critic.head.weight.device))
        return critic


def critic_values(critic: Critic, batch: RolloutBatch, micro_batch_size: int | None) -> torch.Tensor:
    """No-grad values of a whole batch, 0 outside the response. (B, T)."""
    with torch.no_grad():
        parts = [
            critic(mb.input_ids, mb.attention_mask) * mb.response_mask
            for mb in (batch.select(rows) for rows in micro_batches(len(batch), micro_batch_size))
        ]
    return torch.cat(parts)


# ----------------------------------------------------------------------------- advantage


def token_rewards(
    outcome: torch.Tensor, response_mask: torch.Tensor, kl: torch.Tensor | None, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * kl on response tokens, plus the outcome on the last response token.

    outcome: (B,); response_mask, kl: (B, T) -> (B, T).
    """
    rewards = torch.zeros_like(response_mask, dtype=torch.float32)  # (B, T)
    if kl is not None and kl_coef != 0:
        rewards = -kl_coef * torch.where(response_mask.bool(), kl, torch.zeros_like(kl))
    T = response_mask.shape[1]
    last = T - 1 - response_mask.flip(-1).argmax(-1)  # (B,) column of each row's last response token
    has_response = response_mask.sum(-1) > 0  # (B,)
    rows = torch.arange(len(outcome), device=outcome.device)
    rewards[rows, last] += torch.where(has_response, outcome.float(), torch.zeros_like(outcome.float()))
    return rewards


def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens only. (B, T) x3 -> advantages, returns (B, T).

    delta_t = r_t + gamma V_next - V_t;  A_t = delta_t + gamma lam A_next, where "next" is the next response
    token (masked positions are skipped, not treated as steps) and V = A = 0 after the last one. Returns are
    A + V. Both are 0 outside the mask. Advantages come out raw: the caller whitens them.
    """
    B, T = token_rewards.shape
    mask = response_mask.float()
    next_value = torch.zeros(B, device=values.device)  # (B,)
    next_adv = torch.zeros(B, device=values.device)  # (B,)
    advantages = torch.zeros(B, T, device=values.device)  # (B, T)
    first = int(mask.any(0).float().argmax())  # columns before the first response token change nothing
    for t in reversed(range(first, T)):
        m = mask[:, t]  # (B,)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = adv_t * m
        next_value = m * values[:, t] + (1 - m) * next_value  # carry through masked positions
        next_adv = m * adv_t + (1 - m) * next_adv
    returns = (advantages + values) * mask
    return advantages, returns


# ----------------------------------------------------------------------------- losses


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: PPOConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate with per-token advantages. All inputs (B, T)."""
    loss, stats = clipped_surrogate(
        logprobs, old_logprobs, advantages, response_mask, config.clip_eps, config.loss_agg,
        clip_eps_high=config.clip_eps_high, clip_ratio_c=config.clip_ratio_c,
    )
    return loss, {"pg_loss": loss.item(), **{key: value.item() for key, value in stats.items()}}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    value_clip: float,
    mode: LossAgg,
) -> tuple[torch.Tensor, dict[str, float]]:
    """0.5 * agg(max((V - R)^2, (V_clipped - R)^2)), V_clipped = V_old + clip(V - V_old, -c, c). (B, T)."""
    clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)  # (B, T)
    loss_unclipped = (values - returns) ** 2  # (B, T)
    loss_clipped = (clipped - returns) ** 2  # (B, T)
    loss = 0.5 * aggregate_loss(torch.maximum(loss_unclipped, loss_clipped), response_mask, mode)
    stats = {
        "vf_loss": loss.item(),
        "vf_clip_fraction": masked_mean((loss_clipped > loss_unclipped).float(), response_mask).item(),
    }
    return loss, stats


# ----------------------------------------------------------------------------- update


def ppo_update(
    policy: PreTrainedModel,
    critic: Critic,
    policy_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
    batch: RolloutBatch,
    config: PPOConfig,
    ref_model: PreTrainedModel | None = None,
    *,
    shared_prefix: bool = True,
) -> dict[str, float]:
    """One PPO update on a scored rollout batch; returns mean statistics over all micro-batches.

    The sampling policy's log-probs are computed here only when needed: the in-reward KL uses them, and
    later mini-batches or epochs are off-policy; one epoch over one mini-batch takes the update's own,
    detached. `shared_prefix` runs each group's prompt once in the actor's passes (`rl.passes`).
    Shuffles with the global torch RNG: seed it for reproducible runs.
    """
    mask = batch.response_mask  # (B, T)
    P = batch.prompt_width
    on_policy = config.ppo_epochs == 1 and len(micro_batches(len(batch), config.mini_batch_size)) == 1
    if batch.old_logprobs is None and (config.kl_coef > 0 or not on_policy):
        batch.old_logprobs = pass_logprobs(policy, batch, config.micro_batch_size,
                                           shared_prefix=shared_prefix)
    kl = None
    if config.kl_coef > 0:
        if batch.ref_logprobs is None:
            if ref_model is None:
                raise ValueError("kl_coef > 0 needs a reference model or batch.ref_logprobs")
            batch.ref_logprobs = pass_logprobs(ref_model, batch, config.micro_batch_size,
                                               shared_prefix=shared_prefix)
        assert batch.old_logprobs is not None
        kl = kl_estimate(batch.old_logprobs, batch.ref_logprobs, config.kl_kind)  # (B, T)
    old_values = critic_values(critic, batch, config.micro_batch_size)  # (B, T)
    rewards = token_rewards(batch.rewards, mask, kl, config.kl_coef)  # (B, T)
    raw_advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)  # (B, T) each
    advantages = masked_whiten(raw_advantages, mask)  # (B, T)

    history: list[tuple[dict[str, float], float]] = []  # (stats, response tokens) per micro-batch
    norms: list[dict[str, float]] = []
    for _ in range(config.ppo_epochs):
        order = torch.randperm(len(batch), device=mask.device)
        for mini_rows in micro_batches(len(batch), config.mini_batch_size):
            mini_idx = order[list(mini_rows)]  # (m,)
            mini_mask = mask[mini_idx]
            policy_opt.zero_grad(set_to_none=True)
            critic_opt.zero_grad(set_to_none=True)

            def actor_loss(view: ResponseView, mini_mask: torch.Tensor = mini_mask) -> torch.Tensor:
                old = view.take(batch.old_logprobs, P) if batch.old_logprobs is not None else None
                loss, stats = ppo_policy_loss(view.logprobs, view.logprobs.detach() if old is None else old,
                                              view.take(advantages, P), view.response_mask, config)
                history.append((stats, view.response_mask.sum().item()))
                return loss * accumulation_weight(view.response_mask, mini_mask, config.loss_agg)

            for _view in response_passes(policy, batch, mini_idx.tolist(), config.micro_batch_size, grad=True,
                                         shared_prefix=shared_prefix, loss_fn=actor_loss):
                pass
            for rows in micro_batches(len(mini_idx), config.micro_batch_size):
                idx = mini_idx[list(rows)]  # (b,)
                mb = batch.select(idx)
                weight = accumulation_weight(mb.response_mask, mini_mask, config.loss_agg)
                values = critic(mb.input_ids, mb.attention_mask)  # (b, T)
                vf_loss, vf_stats = value_loss(
                    values, old_values[idx], returns[idx], mb.response_mask, config.value_clip,
                    config.loss_agg,
                )
                (config.vf_coef * vf_loss * weight).backward()
                history.append((vf_stats, mb.response_mask.sum().item()))
            norms.append({
                "grad_norm": torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm).item(),
                "critic_grad_norm": torch.nn.utils.clip_grad_norm_(
                    critic.parameters(), config.max_grad_norm
                ).item(),
            })
            policy_opt.step()
            critic_opt.step()

    summary = _token_weighted(history)
    summary.update({key: sum(n[key] for n in norms) / len(norms) for key in norms[0]})
    summary.update(
        reward_mean=batch.rewards.float().mean().item(),
        value_mean=masked_mean(old_values, mask).item(),
        return_mean=masked_mean(returns, mask).item(),
        advantage_raw_mean=masked_mean(raw_advantages, mask).item(),
        kl_in_reward=masked_mean(kl, mask).item() if kl is not None else 0.0,
        response_length=mask.sum(-1).float().mean().item(),
    )
    return summary


def _token_weighted(history: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Per-key means over the micro-batches that report the key, weighted by their response tokens."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for stats, n in history:
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value * n
            weights[key] = weights.get(key, 0.0) + n
    return {key: sums[key] / max(weights[key], 1.0) for key in sums}
