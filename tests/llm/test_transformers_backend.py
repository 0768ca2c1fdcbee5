"""The transformers backend on the tiny random model: determinism, batching, token counts, stop strings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.llm.base import GenerationConfig, Generator
from memory_r1.llm.tiny import build_tiny_model
from memory_r1.llm.transformers_backend import TransformersGenerator

PROMPTS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You manage a memory bank."},
        {"role": "user", "content": "Caroline went to the support group on 7 May 2023. What changed?"},
    ],
    [{"role": "user", "content": "When did Melanie paint a sunrise?"}],
]
GREEDY = GenerationConfig(max_new_tokens=12)
SAMPLED = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7)


def texts(gens) -> list[str]:
    return [g.text for g in gens]


def test_tiny_model_reloads_with_chatml_template(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    rendered = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=False)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


def test_tiny_model_build_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path)
    for name in ("model.safetensors", "tokenizer.json"):
        digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (tiny_model_dir, again)]
        assert digest[0] == digest[1], name


def test_implements_generator_protocol(tiny_generator: TransformersGenerator) -> None:
    assert isinstance(tiny_generator, Generator)
    assert tiny_generator.name == "tiny-random"
    assert tiny_generator.model is not None and tiny_generator.tokenizer is not None


def test_greedy_is_deterministic(tiny_generator: TransformersGenerator) -> None:
    first = tiny_generator.generate(PROMPTS, GREEDY)
    assert texts(first) == texts(tiny_generator.generate(PROMPTS, GREEDY))
    assert all(g.text for g in first) and all(g.model == "tiny-random" for g in first)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(
    tiny_generator: TransformersGenerator,
) -> None:
    state = torch.random.get_rng_state()
    first = tiny_generator.generate(PROMPTS, SAMPLED)
    assert torch.equal(state, torch.random.get_rng_state())
    assert texts(first) == texts(tiny_generator.generate(PROMPTS, SAMPLED))
    other_seed = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=8)
    assert texts(first) != texts(tiny_generator.generate(PROMPTS, other_seed))
    assert texts(first) != texts(tiny_generator.generate(PROMPTS, GREEDY))


def test_model_generation_config_cannot_change_decoding(
    tiny_model_dir: Path, tiny_generator: TransformersGenerator
) -> None:
    """Hub models ship top_k=50, repetition penalties, ...: rollouts must ignore them (reference notes 6)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.generation_config.update(
        do_sample=True, temperature=0.3, top_k=3, top_p=0.5, repetition_penalty=1.5
    )
    gen = TransformersGenerator(tiny_model_dir, model=model, tokenizer=tiny_generator.tokenizer)
    for config in (GREEDY, SAMPLED):
        assert texts(gen.generate(PROMPTS, config)) == texts(tiny_generator.generate(PROMPTS, config))


def test_batched_equals_one_at_a_time(tiny_generator: TransformersGenerator) -> None:
    batched = tiny_generator.generate(PROMPTS, GREEDY)
    single = [tiny_generator.generate([p], GREEDY)[0] for p in PROMPTS]
    assert texts(batched) == texts(single)
    assert [g.usage.prompt_tokens for g in batched] == [g.usage.prompt_tokens for g in single]


def test_small_batch_size_and_no_pad_token(
    tiny_model_dir: Path, tiny_generator: TransformersGenerator
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    gen = TransformersGenerator(tiny_model_dir, batch_size=2, tokenizer=tokenizer, model=tiny_generator.model)
    assert gen.tokenizer.pad_token == gen.tokenizer.eos_token
    assert texts(gen.generate(PROMPTS, GREEDY)) == texts(tiny_generator.generate(PROMPTS, GREEDY))


def test_token_counts_match_the_tokenizer(tiny_generator: TransformersGenerator) -> None:
    tok = tiny_generator.tokenizer
    for prompt, gen in zip(PROMPTS, tiny_generator.generate(PROMPTS, GREEDY), strict=True):
        expected = len(tok(tiny_generator.render(prompt), add_special_tokens=False)["input_ids"])
        assert gen.usage.prompt_tokens == expected
        assert gen.usage.completion_tokens == GREEDY.max_new_tokens  # a random model never says EOS
        assert gen.usage.latency_s > 0


def test_completion_stops_at_eos(tiny_model_dir: Path) -> None:
    """Declare the greedy path's 4th token an EOS: the completion is then exactly 4 tokens long."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(PROMPTS[2], add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    reference = model.generate(ids, do_sample=False, max_new_tokens=12)[0, ids.shape[1] :].tolist()
    k = next(i for i, t in enumerate(reference) if i >= 3 and t not in reference[:i])
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, reference[k]]
    gen = TransformersGenerator(tiny_model_dir, model=model, tokenizer=tokenizer)
    # Batch it with a prompt that runs to max_new_tokens, so the early row is padded afterwards.
    out = gen.generate([PROMPTS[2], PROMPTS[1]], GREEDY)[0]
    assert out.usage.completion_tokens == k + 1
    assert out.text == tokenizer.decode(reference[: k + 1], skip_special_tokens=True)


def test_stop_strings_truncate(tiny_generator: TransformersGenerator) -> None:
    full = tiny_generator.generate(PROMPTS[:1], GREEDY)[0]
    start = next(i for i in range(2, len(full.text)) if full.text[i].isalpha())
    stop = full.text[start]
    config = GenerationConfig(max_new_tokens=12, stop=("@@never@@", stop))
    [cut] = tiny_generator.generate(PROMPTS[:1], config)
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.usage.completion_tokens < full.usage.completion_tokens


@pytest.mark.parametrize("config", [GREEDY, SAMPLED])
def test_empty_prompt_list(tiny_generator: TransformersGenerator, config: GenerationConfig) -> None:
    assert tiny_generator.generate([], config) == []
