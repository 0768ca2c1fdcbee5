"""A tiny randomly initialised chat model for tests and smoke runs.

Nothing can be downloaded here (reference notes, section 6), so tests need a model built from scratch: a
2-layer Llama with hidden size 64 and a byte-level BPE tokenizer trained on a built-in paragraph, with a
ChatML template like SmolLM2's. Its output is gibberish, but it exercises every code path (chat template,
padding, sampling, log-probs, training) in seconds. Building is seeded, so two builds are identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load only when a model is built: importing llm stays cheap
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 1024

# ChatML, as SmolLM2 and Qwen use it, so prompts render the same way on the tiny and the real model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """
Caroline went to the LGBTQ support group on 7 May 2023 and said it was powerful. Melanie painted a sunrise
over the lake last year and plans to run a charity race for mental health. They talked about adoption,
counseling, camping with the kids, pottery classes, books, music, and a trip to the beach in the summer.
The memory manager decides whether to ADD, UPDATE, DELETE or make NO change to each memory. The answer
agent reads the retrieved memories, selects the relevant ones and answers the question in a few words.
Question: When did Caroline go to the support group? Answer: 7 May 2023. {"memory": [{"id": "0", "text":
"Likes hiking", "event": "UPDATE", "old_memory": "Likes walks"}]} Yesterday, today, tomorrow; Monday,
Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday; January, February, March, April, June, July,
August, September, October, November, December. 0 1 2 3 4 5 6 7 8 9 10 2022 2024. I, you, he, she, we,
they, my, your, his, her, our, their, is, are, was, were, has, have, had, do, does, did, not, yes, no.
"""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus (byte fallback: any text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # ends an assistant turn, so generation stops there as with SmolLM2
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Build and `save_pretrained` the tiny model and tokenizer into `path`; return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # Our choice: wider than the usual 0.02 so logits are peaked and greedy decoding has clear
        # winners; near-ties would make batched-vs-single comparisons flip on float noise.
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
