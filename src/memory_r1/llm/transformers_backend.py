"""Local generation with a Hugging Face transformers causal LM.

The same `model` and `tokenizer` objects are what RL training updates, so rollouts come from exactly the
policy being trained. Sampling passes temperature/top_p/top_k explicitly: `generate()` would otherwise
merge in the model's generation_config (often top_k=50, repetition_penalty>1), and the rollouts would not
come from the policy's own distribution (reference notes, section 6).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers import GenerationConfig as HFGenerationConfig

from memory_r1.llm.base import (
    Generation,
    GenerationConfig,
    GenerationError,
    Message,
    neutralise_messages,
    truncate_at_stop,
)
from memory_r1.records import Usage
from memory_r1.threads import apply_torch_threads


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs (half the memory, same range as fp32); fp32 on CPU, where bf16 matmuls are slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class TransformersGenerator:
    """A `Generator` over a local causal LM: chat template, left-padded batches, one `generate` per batch.

    Pass `model` and `tokenizer` to wrap objects already in memory (e.g. the policy during RL);
    otherwise both are loaded from `model_or_path` (a local folder or a cached hub id).
    """

    def __init__(
        self,
        model_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        name: str | None = None,
    ) -> None:
        self._name = name or str(model_or_path)
        self.batch_size = batch_size
        apply_torch_threads()  # half the cores by default, so a busy neighbour does not stall each barrier
        if model is None:
            self.device = torch.device(device) if device is not None else default_device()
            dtype = dtype or default_dtype(self.device)
            model = AutoModelForCausalLM.from_pretrained(model_or_path,
                                                         dtype=dtype).to(self.device)  # type: ignore[arg-type]  # transformers wraps `to` in functools.wraps(nn.Module.to)
        else:
            self.device = torch.device(device) if device is not None else model.device
        self.model = model
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"{self._name}: the tokenizer has no chat template; use an instruct model")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # padding is masked, any token will do
        self._eos_ids = eos_ids(self.model, self.tokenizer)
        added = getattr(self.tokenizer, "added_tokens_decoder", {})
        self._special_tokens = tuple(
            {*self.tokenizer.all_special_tokens, *(t.content for t in added.values() if t.special)}
        )

    @property
    def name(self) -> str:
        return self._name

    def render(self, messages: Sequence[Message]) -> str:
        """The exact prompt text the model sees (chat template plus the assistant turn header).

        Message contents cannot add structure: any of the tokenizer's special tokens inside them is
        neutralised first, so the only control tokens in the prompt are the template's own."""
        safe = neutralise_messages(messages, self._special_tokens)
        text = self.tokenizer.apply_chat_template(safe, add_generation_prompt=True, tokenize=False)
        return str(text)

    @property
    def context_window(self) -> int | None:
        """The model's position limit (`max_position_embeddings`), else the tokenizer's, if plausible."""
        for limit in (getattr(self.model.config, "max_position_embeddings", None),
                      self.tokenizer.model_max_length):
            if isinstance(limit, int) and 0 < limit < 10**8:  # tokenizers say 1e30 when they don't know
                return limit
        return None

    def prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Sequence[Message]], config: GenerationConfig) -> list[Generation]:
        texts = [self.render(p) for p in prompts]
        # Batch prompts of similar length together: less padding, same outputs (padding is masked).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Generation | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, gen in zip(chunk, self._generate_batch([texts[i] for i in chunk], config), strict=True):
                results[i] = gen
        return [r for r in results if r is not None]

    def _generate_batch(self, texts: list[str], config: GenerationConfig) -> list[Generation]:
        start = time.perf_counter()
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        ).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        stopper = _StopStrings(self.tokenizer, config.stop, prompt_len) if config.stop else None
        try:
            with (
                torch.no_grad(),
                torch.random.fork_rng(devices=self._rng_devices()),
                neutral_generation_config(self.model),
            ):
                if config.seed is not None:
                    torch.manual_seed(config.seed)
                out = self.model.generate(  # type: ignore[operator]  # transformers 5 types PreTrainedModel without GenerationMixin
                    **enc,
                    **_decoding_kwargs(config),
                    max_new_tokens=config.max_new_tokens,
                    eos_token_id=self._eos_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([stopper]) if stopper else None,
                )
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory, prompt longer than the context
            raise GenerationError(f"{self._name}: generate failed: {e}") from e
        share = (time.perf_counter() - start) / len(texts)  # each item's share, so usages sum to wall time
        new_tokens = out[:, prompt_len:].tolist()  # (B, T_new)
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()  # (B,) excludes left padding
        gens = []
        for row, (tokens, n_prompt) in enumerate(zip(new_tokens, prompt_counts, strict=True)):
            n = _completion_length(tokens, self._eos_ids, stopper.finished_at[row] if stopper else None)
            text = str(self.tokenizer.decode(tokens[:n], skip_special_tokens=True))
            text = truncate_at_stop(text, config.stop)
            gens.append(Generation(text, Usage(int(n_prompt), n, share), self._name))
        return gens

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []


def _decoding_kwargs(config: GenerationConfig) -> dict:
    """Exactly the decoding the config asks for, overriding whatever the model's generation_config says."""
    neutral = {"num_beams": 1, "repetition_penalty": 1.0}
    if config.greedy:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **neutral}
    return {
        "do_sample": True,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,  # 0 disables top-k; passing it stops the model's top_k=50 leaking in
        **neutral,
    }


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a turn: the model's generation_config may list several (e.g. Llama 3)."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    return list(dict.fromkeys(ids))


def _completion_length(tokens: list[int], eos_ids: list[int], stopped_at: int | None) -> int:
    """Tokens the model really generated: up to and including the first EOS, or up to a stop string.

    Rows that finished early are filled with pad tokens (which may equal EOS); those don't count.
    """
    n = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
    return min(n, stopped_at) if stopped_at is not None else n


class _StopStrings(StoppingCriteria):
    """Finish a row once its decoded completion contains a stop string, and remember when.

    Decoding the whole completion each step is quadratic in its length, but that is a few thousand
    short decodes per batch: negligible next to the forward passes.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_len: int) -> None:
        self.tokenizer, self.stops, self.prompt_len = tokenizer, tuple(stops), prompt_len
        self.finished_at: list[int | None] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if not self.finished_at:
            self.finished_at = [None] * input_ids.shape[0]
        n_new = input_ids.shape[1] - self.prompt_len
        for row, finished in enumerate(self.finished_at):
            if finished is None:
                text = self.tokenizer.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
                if any(s in text for s in self.stops):
                    self.finished_at[row] = n_new
        done = [f is not None for f in self.finished_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextmanager
def neutral_generation_config(model: PreTrainedModel) -> Iterator[None]:
    """Hide the model's generation_config while sampling. `generate()` merges its fields into whatever the
    caller passes, so a checkpoint's suppress_tokens, no_repeat_ngram_size or top_k would silently reshape
    the distribution (measured with transformers 5.23), and rollouts would not come from the policy."""
    saved = model.generation_config
    model.generation_config = HFGenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved
