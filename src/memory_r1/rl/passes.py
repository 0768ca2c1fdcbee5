"""The model passes of an RL step, made cheap without changing a number: shared prompts, micro-batches,
trimming.

The G responses of a group answer one prompt. A plain pass runs that prompt G times; here it runs once:

- generation: the prompt (all but its last token) is prefilled once, its KV cache is copied G ways, and
  `generate` continues from it (`sample_group`);
- log-prob passes (old, reference, update): the prompt runs once with `use_cache=True`; the responses of
  the group run against that cache in micro-batches (`response_passes`). In the update the prompt's cached
  keys/values and its last logits are cut from the graph as leaves; every micro-batch's backward
  accumulates their gradients, and one backward through the prompt per group finishes the chain rule.
  The gradient is the plain path's: the prompt's forward is the same function of the same weights, and
  d loss / d weights sums, over the prompt's outputs, d loss / d output x d output / d weights whichever way
  the graph is cut (tested against the plain path on the tiny model: `tests/rl/test_passes.py`).

The plain path (`shared_prefix=False`) stays for comparison (`benchmarks/bench_grpo.py --path plain`):
whole rows in micro-batches, each micro-batch trimmed to its own longest prompt and response.

Every pass yields `ResponseView`s: per-token tensors over the response columns only, (b, R), the layout
the losses need (they are masked to the response anyway).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from memory_r1.rl.core import RolloutBatch, micro_batches, token_logprobs, token_scores


@dataclass
class ResponseView:
    """A micro-batch's response columns: rows of the batch, log-probs (with grad when asked), mask."""

    rows: list[int]  # indices into the batch
    logprobs: torch.Tensor  # (b, R) float: log-probs of the response tokens, 0 outside the mask
    entropy: torch.Tensor | None  # (b, R) float, detached: policy entropy at each response position
    response_mask: torch.Tensor  # (b, R) float

    def take(self, full: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """The same rows and response columns of a (B, T) batch tensor. -> (b, R)."""
        R = self.response_mask.shape[1]
        return full[self.rows, prompt_width : prompt_width + R]


LossFn = Callable[[ResponseView], torch.Tensor]


def groups_of(batch: RolloutBatch, rows: list[int]) -> list[list[int]]:
    """`rows` split by group, in order of first appearance."""
    out: dict[int, list[int]] = {}
    for r in rows:
        out.setdefault(int(batch.group_ids[r]), []).append(r)
    return list(out.values())


def prompt_ids(batch: RolloutBatch, row: int) -> torch.Tensor:
    """The real (unpadded) prompt tokens of a row. (P_i,)"""
    P, n = batch.prompt_width, int(batch.prompt_lengths[row])
    return batch.input_ids[row, P - n : P]


def response_width(batch: RolloutBatch, rows: list[int]) -> int:
    """Columns after the prompt that hold a response token in some row of `rows` (at least 1)."""
    return max(1, int(batch.response_mask[rows].sum(-1).max()))


# ----------------------------------------------------------------------------- plain path


def plain_view(
    model: PreTrainedModel, batch: RolloutBatch, rows: list[int], *, entropy: bool
) -> ResponseView:
    """Whole rows, trimmed to the micro-batch's own longest prompt and response (padding costs nothing)."""
    P = batch.prompt_width
    lead = P - int(batch.prompt_lengths[rows].max())  # columns of padding before every prompt
    R = response_width(batch, rows)
    ids = batch.input_ids[rows, lead : P + R]  # (b, P' + R)
    attn = batch.attention_mask[rows, lead : P + R]
    mask = batch.response_mask[rows, P : P + R]  # (b, R)
    if entropy:
        lp, ent = token_scores(model, ids, attn, temperature=batch.temperature, start=P - lead)
        return ResponseView(rows, lp[:, P - lead :] * mask, ent[:, P - lead :] * mask, mask)
    lp = token_logprobs(model, ids, attn, temperature=batch.temperature, start=P - lead)
    return ResponseView(rows, lp[:, P - lead :] * mask, None, mask)


# ----------------------------------------------------------------------------- shared-prompt path


# transformers renamed the KV cache's forward/generate keyword and output field from `past_key_values` to
# `cache` during 5.x: 5.10 (the newest verl 0.9.1 allows) knows only the old name, where `cache=` is rejected
# by `generate` and swallowed unused by `forward`; 5.24 takes the new one and keeps the old as a deprecated
# alias until 5.40. Read once from the library's own output record, so every model (and a PEFT wrapper,
# whose forward takes **kwargs) gets the name its transformers understands.
CACHE_KEY = ("cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
             else "past_key_values")


def cache_kwargs(cache: DynamicCache) -> dict[str, Any]:
    """`cache` as the keyword argument this transformers' `forward` and `generate` take."""
    return {CACHE_KEY: cache}


@dataclass
class PromptState:
    """One prompt's forward: its KV cache and the logits after its last token, as graph leaves."""

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (1, H, P, D) each
    last_logits: torch.Tensor  # (1, V) float: predicts the first response token
    roots: list[torch.Tensor]  # the same tensors inside the prompt's graph (empty without grad)
    length: int

    def leaves(self) -> list[torch.Tensor]:
        return [t for kv in self.keys_values for t in kv] + [self.last_logits]

    def backward(self) -> None:
        """Push the gradients the micro-batches left on the leaves through the prompt's forward, once."""
        pairs = [(root, leaf.grad) for root, leaf in zip(self.roots, self.leaves(), strict=True)
                 if leaf.grad is not None and root.requires_grad]  # e.g. keys without an adapter
        if pairs:
            torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])


def prompt_state(model: PreTrainedModel, ids: torch.Tensor, *, grad: bool) -> PromptState:
    """Run one prompt (P,) once, keeping its cache. With `grad`, outputs become leaves (see module doc)."""
    P = ids.shape[0]
    out = model(
        input_ids=ids[None],
        attention_mask=torch.ones(1, P, dtype=torch.long, device=ids.device),
        position_ids=torch.arange(P, device=ids.device)[None],
        use_cache=True,
        logits_to_keep=1,
    )
    kv = [(layer.keys, layer.values) for layer in getattr(out, CACHE_KEY).layers]
    last = out.logits[:, -1]  # (1, V)
    if not grad:
        return PromptState(kv, last, [], P)
    roots = [t for pair in kv for t in pair] + [last]
    leaf_kv = [(k.detach().requires_grad_(True), v.detach().requires_grad_(True)) for k, v in kv]
    return PromptState(leaf_kv, last.detach().requires_grad_(True), roots, P)


def expanded_cache(keys_values: list[tuple[torch.Tensor, torch.Tensor]], rows: int) -> DynamicCache:
    """A fresh cache holding the prompt's keys/values for `rows` rows (autograd flows back to them)."""
    cache = DynamicCache()
    for i, (k, v) in enumerate(keys_values):
        cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), i)
    return cache


def shared_view(
    model: PreTrainedModel, batch: RolloutBatch, state: PromptState, rows: list[int], *, entropy: bool
) -> ResponseView:
    """The responses of `rows` (one group) against their prompt's cache. (b, R) tensors."""
    P, R, b = batch.prompt_width, response_width(batch, rows), len(rows)
    resp = batch.input_ids[rows, P : P + R]  # (b, R)
    mask = batch.response_mask[rows, P : P + R]  # (b, R)
    first = state.last_logits.expand(b, -1)[:, None]  # (b, 1, V): the prompt's last logits
    if R > 1:  # tokens 0..R-2 predict tokens 1..R-1
        attn = torch.cat([torch.ones(b, state.length, dtype=torch.long, device=resp.device),
                          batch.attention_mask[rows, P : P + R - 1]], dim=1)  # (b, P_i + R - 1)
        out = model(
            input_ids=resp[:, :-1], attention_mask=attn,
            position_ids=(state.length + torch.arange(R - 1, device=resp.device))[None].expand(b, -1),
            use_cache=True, **cache_kwargs(expanded_cache(state.keys_values, b)),
        )
        logits = torch.cat([first.to(out.logits.dtype), out.logits], dim=1)  # (b, R, V)
    else:
        logits = first
    lp, ent = _score(logits, resp, batch.temperature, entropy)
    return ResponseView(rows, lp * mask, ent * mask if ent is not None else None, mask)


def _score(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, entropy: bool, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `targets` (b, R) under logits (b, R, V) / temperature, float32, chunked over R."""
    lps, ents = [], []
    for s in range(0, targets.shape[1], chunk):
        lg = logits[:, s : s + chunk].float() / temperature  # (b, C, V)
        lse = torch.logsumexp(lg, dim=-1)
        lps.append(lg.gather(-1, targets[:, s : s + chunk, None]).squeeze(-1) - lse)
        if entropy:
            with torch.no_grad():
                ents.append(lse - (torch.softmax(lg, -1) * lg).sum(-1))
    return torch.cat(lps, 1), torch.cat(ents, 1) if entropy else None


# ----------------------------------------------------------------------------- one pass over rows


def response_passes(
    model: PreTrainedModel,
    batch: RolloutBatch,
    rows: list[int],
    micro_batch_size: int | None,
    *,
    shared_prefix: bool,
    grad: bool = False,
    entropy: bool = False,
    loss_fn: LossFn | None = None,
) -> Iterator[ResponseView]:
    """Micro-batched log-prob pass over `rows` of `batch`, yielding one view per micro-batch.

    Without grad this is a plain no-grad pass. With grad, `loss_fn(view)` is called on each view and its
    result back-propagated before the next micro-batch runs (so only one micro-batch's activations live at
    a time); with `shared_prefix` the prompt's own backward runs once per group, after its last micro-batch.
    Micro-batches never span groups on the shared path (one prompt per cache).
    """
    if grad and loss_fn is None:
        raise ValueError("a pass with grad needs loss_fn")
    context = torch.enable_grad() if grad else torch.no_grad()
    with context:
        if not shared_prefix:
            for chunk in micro_batches(len(rows), micro_batch_size):
                view = plain_view(model, batch, [rows[i] for i in chunk], entropy=entropy)
                if loss_fn is not None and grad:
                    loss_fn(view).backward()
                yield view
            return
        for group in groups_of(batch, rows):
            ids = prompt_ids(batch, group[0])
            for r in group[1:]:
                if not torch.equal(prompt_ids(batch, r), ids):
                    raise ValueError("shared_prefix: rows of one group have different prompts")
            state = prompt_state(model, ids, grad=grad)
            for chunk in micro_batches(len(group), micro_batch_size):
                view = shared_view(model, batch, state, [group[i] for i in chunk], entropy=entropy)
                if loss_fn is not None and grad:
                    loss_fn(view).backward()
                yield view
            if grad:
                state.backward()


def pass_logprobs(
    model: PreTrainedModel, batch: RolloutBatch, micro_batch_size: int | None, *, shared_prefix: bool
) -> torch.Tensor:
    """No-grad log-probs of the whole batch in the (B, T) layout, 0 outside the response."""
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)
    P = batch.prompt_width
    for view in response_passes(model, batch, list(range(len(batch))), micro_batch_size,
                                shared_prefix=shared_prefix):
        out[view.rows, P : P + view.logprobs.shape[1]] = view.logprobs.float()
    return out


class PassTimer:
    """Times a pass and records `<name>_s` and `<name>_tokens_per_s` (prompt + response tokens scored)."""

    def __init__(self, into: dict[str, float], name: str, batch: RolloutBatch, passes: int = 1) -> None:
        self.into, self.name, self.passes = into, name, passes
        self.tokens = float(batch.attention_mask.sum()) * passes
        self.start = 0.0

    def __enter__(self) -> PassTimer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.start
        self.into[f"{self.name}_s"] = seconds
        self.into[f"{self.name}_tokens_per_s"] = self.tokens / max(seconds, 1e-9)
