"""GRPO step time and peak memory at the paper's architectures, random weights (no download), one GPU.

    python benchmarks/bench_gpu_scale.py                       # tiny + Qwen2.5-3B/-7B + LLaMA-3.1-8B on CUDA
    python benchmarks/bench_gpu_scale.py --models tiny --device cpu   # the CPU smoke run

Step time and memory do not depend on the weights, so each model is built from its published config values
(written below, from the models' config.json) with random bf16 weights and a LoRA adapter, as `memory-r1
train` runs it on a GPU: bf16 base, fp32 adapters, gradient checkpointing, every pass micro-batched, the
group's prompt prefilled once. One step = sample G responses per prompt (forced to --response tokens), a
reference pass (adapter off) and the update. Sized to finish in under 10 minutes on one H100-class GPU with
the defaults (2 prompts x G=4, 1k-token prompts, 256-token responses); the paper's batch (128 rollouts,
4k/2k) is `--prompts 16 --group 8 --prompt-len 4096 --response 2048` on a big enough GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config

from memory_r1.rl.core import RolloutBatch
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.passes import pass_logprobs
from memory_r1.rl.rollout import _assemble


def configs() -> dict[str, PretrainedConfig]:
    """Architecture values of each model's published config.json (vocabulary, widths, heads, rope)."""
    return {
        "tiny": LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192),
        "qwen2.5-3b": Qwen2Config(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                                  num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                                  max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
                                  rms_norm_eps=1e-6),
        "qwen2.5-7b": Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                  num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                  max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
                                  rms_norm_eps=1e-6),
        "llama-3.1-8b": LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                    max_position_embeddings=131072, rope_theta=5e5, rms_norm_eps=1e-5,
                                    rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                  "original_max_position_embeddings": 8192}),
    }


def build(name: str, device: torch.device, dtype: torch.dtype, checkpointing: bool) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(configs()[name], dtype=dtype)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model,
                           LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model.eval()


def fake_rollouts(model: torch.nn.Module, args: argparse.Namespace, vocab: int,
                  device: torch.device) -> RolloutBatch:
    """Sampled-shape rollouts: random prompt tokens, responses from `generate` forced to --response tokens."""
    from memory_r1.rl.passes import cache_kwargs, expanded_cache, prompt_state

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (args.prompt_len,), generator=g).tolist() for _ in range(args.prompts)]
    responses: list[list[int]] = []
    with torch.no_grad():
        for ids in prompts:
            prompt = torch.tensor(ids, device=device)
            state = prompt_state(model, prompt[:-1], grad=False)
            out = model.generate(
                input_ids=prompt[None].expand(args.group, -1),
                attention_mask=torch.ones(args.group, len(ids), dtype=torch.long, device=device),
                **cache_kwargs(expanded_cache(state.keys_values, args.group)),
                do_sample=True,
                top_k=0,
                max_new_tokens=args.response,
                min_new_tokens=args.response,
                pad_token_id=0,
            )
            responses += out[:, len(ids) :].tolist()
    rows = [p for p in prompts for _ in range(args.group)]
    ids, attn, mask, P = _assemble(rows, responses, 0, device)
    B = len(rows)
    return RolloutBatch(
        ids,
        attn,
        mask,
        None,
        None,
        torch.rand(B, generator=g).to(device),
        torch.arange(args.prompts, device=device).repeat_interleave(args.group),
        [""] * B,
        torch.full((B,), args.prompt_len, device=device),
        P,
    )


def run(name: str, args: argparse.Namespace, device: torch.device) -> str:
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build(name, device, dtype, args.checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    config = GRPOConfig(beta=0.001, micro_batch_size=args.micro)
    times = []
    for _ in range(args.steps):
        sync(device)
        t0 = time.perf_counter()
        batch = fake_rollouts(model, args, model.config.vocab_size, device)
        sync(device)
        t1 = time.perf_counter()
        with (
            model.disable_adapter(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            batch.ref_logprobs = pass_logprobs(model, batch, args.micro, shared_prefix=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            grpo_step(model, optimizer, batch, config)
        sync(device)
        times.append((t1 - t0, time.perf_counter() - t1))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    rollout, update = times[-1]
    del model, optimizer
    return (
        f"{name:13s} {str(dtype).removeprefix('torch.'):9s} {args.prompts}x{args.group} "
        f"{args.prompt_len}/{args.response} step {rollout + update:7.2f} s (rollout {rollout:6.2f}, "
        f"ref+update {update:6.2f}) peak {peak:6.1f} GiB"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,qwen2.5-3b,qwen2.5-7b,llama-3.1-8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--response", type=int, default=256)
    parser.add_argument("--micro", type=int, default=2, help="rows per forward/backward in every pass")
    parser.add_argument("--steps", type=int, default=2, help="steps per model; the last is reported")
    parser.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke run: no GPU)"
    print(
        f"device {name}; torch {torch.__version__}; LoRA r=16 all-linear, gradient checkpointing "
        f"{'on' if args.checkpointing else 'off'}, micro-batch {args.micro}, shared-prompt passes",
        flush=True,
    )
    for model_name in args.models.split(","):
        try:
            print(run(model_name.strip(), args, device), flush=True)
        except torch.OutOfMemoryError as error:
            print(f"{model_name:13s} out of memory: {str(error).splitlines()[0]}", flush=True)


if __name__ == "__main__":
    main()
