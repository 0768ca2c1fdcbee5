"""Memory-SFT baseline (paper's comparison row): supervised fine-tuning on a teacher's outputs for the same
prompts and in the same output format the RL agents produce. Any generation backend can be the teacher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SFTConfig:
    micro_batch_size: int = 2
    """Examples per forward/backward (gradient accumulation). Our choice: the RL passes' micro-batch."""
    max_grad_norm: float = 1.0
    """Gradient clipping, as the RL updates."""


def sft_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], targets: Sequence[str]
) -> torch.Tensor:
    """Mean cross-entropy of the target tokens given the (chat-rendered) prompt; prompt tokens are masked."""
    eos = tokenizer.eos_token or ""
    rows = []
    for prompt, target in zip(prompts, targets, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target + eos, add_special_tokens=False)["input_ids"]
        rows.append((p + t, [-100] * len(p) + t))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows], device=device)  # (B, T)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows], device=device)  # (B, T)
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows], device=device)
    return model(input_ids=input_ids, attention_mask=attention, labels=labels).loss


def sft_step(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[str],
    targets: Sequence[str],
    config: SFTConfig = SFTConfig(),
) -> dict[str, float]:
    """One optimizer step on the mean target cross-entropy, accumulated over micro-batches."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for start in range(0, len(prompts), config.micro_batch_size):
        chunk = slice(start, start + config.micro_batch_size)
        loss = sft_loss(model, tokenizer, prompts[chunk], targets[chunk])
        weight = len(prompts[chunk]) / len(prompts)
        (loss * weight).backward()
        total += loss.item() * weight
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm).item()
    optimizer.step()
    return {"sft_loss": total, "grad_norm": grad_norm}
