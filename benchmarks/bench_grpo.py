"""GRPO step time on CPU: our compact RL core (`sample_rollouts` + `grpo_step`) against TRL's `GRPOTrainer`.

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py --model tiny-random
    OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py --model smollm2-135m-instruct --steps 5 --repeats 2

Both sides get the same model (a fresh copy each run), the same chat prompts rendered with the tokenizer's
chat template, the same prompts per step and group size G, the same sampling (temperature 1.0, no top-k, no
top-p, no repetition penalty), beta 0 (no reference model), full fine-tuning (no LoRA), AdamW at lr 1e-6 with
no weight decay and a constant schedule, grad-norm clip 1.0, one optimizer step per rollout batch, token-mean
loss (TRL's "dapo"), fp32, no gradient checkpointing (TRL turns it on by default; ours has none). Completion
lengths are forced equal with `min_new_tokens = max_new_tokens` (EOS is masked until the limit) so tokens/s
compare; pass --no-force-length to let EOS end completions, and read the mean completion length column.

Runs alternate (ours, TRL, ours, TRL, ...) so a noisy shared machine slows both alike; the first step of each
run is a warm-up and is dropped; the table gives medians over the remaining steps of all runs.

What is timed:
- ours: rollout = `sample_rollouts`, update = reward + `grpo_step`. One epoch over one mini-batch is
  on-policy, so, like TRL in that case, ours skips the separate no-grad "old" log-prob pass
  (`old_logprobs=False`) and takes the update's own detached log-probs; --old-logprob-pass puts the pass back
  (part of the rollout).
- TRL:  step = `on_step_begin` .. `on_step_end` of a TrainerCallback (generation, scoring, loss, backward,
  optimizer step; logging comes after), rollout = its `_generate_and_score_completions` (generation + reward +
  advantages), update = step - rollout.
- both: generate = the model's own `generate` call (wrapped on the instance, so the same thing on each side).

TRL is an optional benchmark dependency: `pip install "trl>=1.16"` (it needs the torch you already have).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import torch

from memory_r1.llm.registry import resolve_model
from memory_r1.prompts import answer as answer_prompt
from memory_r1.rl.grpo import GRPOConfig, grpo_step
from memory_r1.rl.rollout import RolloutConfig, sample_rollouts

PROMPTS = [
    "When did Caroline go to the LGBTQ support group?",
    "What did Melanie paint last year?",
    "Name two hobbies Melanie mentioned.",
    "Summarise in one sentence: we went camping with the kids in July.",
    "Should the memory 'Likes walks' be updated given 'Loves hiking'? Answer ADD, UPDATE, DELETE or NONE.",
    "What is 7 plus 5?",
    "Give a one-word answer: which month comes after April?",
    "Write a short greeting for a friend.",
]


def messages_for(n: int, case: str = "short") -> list[list[dict[str, str]]]:
    if n > len(PROMPTS):
        raise SystemExit(f"--prompts is at most {len(PROMPTS)}")
    if case == "answer":
        return [answer_messages(q, i) for i, q in enumerate(PROMPTS[:n])]
    return [[{"role": "user", "content": p}] for p in PROMPTS[:n]]


def answer_messages(question: str, seed: int, per_speaker: int = 18) -> list[dict[str, str]]:
    """The Answer Agent's own prompt with 18 + 18 invented memories: 1,348 tokens with SmolLM2's tokenizer,
    the length of the committed runs' prompts (30 + 30 of these invented lines make ~2k),
    the shape of `memory-r1 data build-answer` rows, without quoting LoCoMo."""
    things = ["the garden", "a pottery class", "the camping trip", "a new job", "the dog", "a concert",
              "the marathon", "a painting", "the school play", "a book club"]
    blocks = []
    for s, speaker in enumerate(("Avery", "Jordan")):
        lines = [answer_prompt.format_memory(s * per_speaker + k + 1, f"{1 + (k + seed) % 28} May 2023",
                                             f"{speaker} talked about {things[(k * 3 + s + seed) % 10]} "
                                             f"with a friend, item {k}.")
                 for k in range(per_speaker)]
        blocks.append((speaker, lines))
    return [dict(m) for m in answer_prompt.render(question, blocks)]


def reward_of(text: str) -> float:
    """A cheap reward that varies between completions (so advantages are non-zero) and means nothing."""
    return (sum(map(ord, text)) % 7) / 6.0


def trl_reward(completions: list, **kwargs: object) -> list[float]:
    """TRL's reward hook: completions are strings, or message lists for conversational prompts."""
    texts = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
    return [reward_of(t) for t in texts]


@dataclass
class Step:
    step_s: float
    rollout_s: float
    update_s: float
    generate_s: float
    tokens: float  # response tokens in the step (sum over the B completions)
    mean_len: float


@dataclass
class Timer:
    """Wall time of the wrapped calls since the last `take()`."""

    seconds: float = 0.0
    calls: int = 0

    def wrap(self, fn, **extra):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **{**kwargs, **extra})
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed

    def take(self) -> float:
        s, self.seconds, self.calls = self.seconds, 0.0, 0
        return s


def load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# ----------------------------------------------------------------------------- ours


def run_ours(path: str, args: argparse.Namespace, seed: int, shared: bool = True) -> list[Step]:
    model, tokenizer = load(path)
    if args.case == "answer":  # as `memory-r1 train` does: LoRA, the reference is the adapter switched off
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model,
                               LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    model.eval()  # as our trainer does: no dropout, sampling- and update-time log-probs agree
    torch.manual_seed(seed)
    gen_timer = Timer()
    # min_new_tokens forces equal lengths; sample_rollouts hides the model's generation_config, so pass it
    # here.
    extra = {"min_new_tokens": args.max_new_tokens} if args.force_length else {}
    model.generate = gen_timer.wrap(model.generate, **extra)
    render = functools.partial(tokenizer.apply_chat_template, add_generation_prompt=True, tokenize=False)
    texts = [render(m) for m in messages_for(args.prompts, args.case)]
    B = args.prompts * args.group_size
    rollout = RolloutConfig(samples_per_prompt=args.group_size, temperature=1.0,
                            max_new_tokens=args.max_new_tokens, shared_prefix=shared)
    config = GRPOConfig(beta=args.beta, loss_agg="token-mean", epochs=1, mini_batch_size=None,
                        micro_batch_size=args.micro_batch_size or B, max_grad_norm=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ref = RefWithoutAdapter(model) if args.beta > 0 else None
    steps = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        batch = sample_rollouts(model, tokenizer, texts, rollout, seed=seed * 1000 + i,
                                old_logprobs=args.old_logprob_pass, micro_batch_size=config.micro_batch_size)
        t1 = time.perf_counter()
        batch.rewards = torch.tensor([reward_of(t) for t in batch.texts])
        grpo_step(model, optimizer, batch, config, ref_model=ref,
                  shared_prefix=shared)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        lengths = batch.response_mask.sum(-1)
        steps.append(Step(t2 - t0, t1 - t0, t2 - t1, gen_timer.take(), float(lengths.sum()),
                          float(lengths.mean())))
    return steps


class RefWithoutAdapter(torch.nn.Module):
    """The LoRA policy with its adapter switched off: the trainer's reference model, at no extra memory."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, *args: object, **kwargs: object) -> object:
        with self.policy.disable_adapter():  # type: ignore[operator]
            return self.policy(*args, **kwargs)


# ----------------------------------------------------------------------------- TRL


def import_trl():
    try:
        import trl
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer
    except ImportError as e:
        raise SystemExit(
            f"bench_grpo: TRL is not installed ({e}). It is an optional benchmark dependency: "
            'pip install "trl>=1.16" (keep your torch), or run with --impl ours.'
        ) from e
    return trl, TRLConfig, GRPOTrainer


def run_trl(path: str, args: argparse.Namespace, seed: int) -> list[Step]:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    _, TRLConfig, GRPOTrainer = import_trl()
    model, tokenizer = load(path)
    B = args.prompts * args.group_size
    micro = args.micro_batch_size or B
    gen_timer, rollout_timer = Timer(), Timer()
    model.generate = gen_timer.wrap(model.generate)  # TRL passes min_new_tokens through generation_kwargs

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[Step] = []
            self.lengths: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, *a, **k) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k) -> None:
            step_s = time.perf_counter() - self.t0
            rollout_s = rollout_timer.take()
            self.steps.append(Step(step_s, rollout_s, step_s - rollout_s, gen_timer.take(), 0.0, 0.0))

        def on_log(self, _args, _state, _control, logs=None, **k) -> None:
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

    clock = StepClock()
    # TRL turns activation checkpointing on by default; ours has none. transformers 5.23 renamed the argument.
    names = {f.name for f in dataclasses.fields(TRLConfig)}
    no_checkpointing = {k: False for k in ("activation_checkpointing",
                                           "gradient_checkpointing") if k in names}
    with tempfile.TemporaryDirectory(prefix="bench-grpo-trl-") as out:
        config = TRLConfig(
            output_dir=out,
            use_cpu=True, bf16=False, fp16=False, **no_checkpointing,
            report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, log_completions=False,
            max_steps=args.steps, seed=seed, dataloader_num_workers=0,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=B // micro,  # one optimizer step per batch
            num_generations=args.group_size, max_completion_length=args.max_new_tokens,
            temperature=1.0, top_k=0, top_p=1.0, min_p=None, repetition_penalty=1.0,
            generation_kwargs={"min_new_tokens": args.max_new_tokens} if args.force_length else None,
            beta=args.beta, num_iterations=1, epsilon=0.2, loss_type="dapo", scale_rewards="group",
            learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            optim="adamw_torch", max_grad_norm=1.0,
        )
        assert config.generation_batch_size == B, (config.generation_batch_size, B)
        dataset = Dataset.from_dict({"prompt": messages_for(args.prompts, args.case)})
        peft_config = None
        if args.case == "answer":  # the same LoRA; TRL's reference is then the adapter switched off too
            from peft import LoraConfig

            peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                     task_type="CAUSAL_LM")
        trainer = GRPOTrainer(
            model=model, reward_funcs=trl_reward, args=config, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[clock], peft_config=peft_config,
        )
        trainer.remove_callback(PrinterCallback)  # our own table replaces its per-step log dicts
        flag = "is_activation_checkpointing" if hasattr(trainer.model, "is_activation_checkpointing") else (
            "is_gradient_checkpointing"
        )
        if getattr(trainer.model, flag, False):
            print("WARNING: TRL enabled activation checkpointing; timings are not comparable",
                  file=sys.stderr)
        trainer._generate_and_score_completions = rollout_timer.wrap(trainer._generate_and_score_completions)
        trainer.train()
    if len(clock.lengths) != len(clock.steps):
        raise RuntimeError(f"TRL logged {len(clock.lengths)} completion lengths for {len(clock.steps)} steps")
    for s, mean_len in zip(clock.steps, clock.lengths, strict=True):
        s.mean_len, s.tokens = mean_len, mean_len * B
    return clock.steps


# ----------------------------------------------------------------------------- report


def prompt_tokens(path: str, args: argparse.Namespace) -> list[list[int]]:
    _, tokenizer = load(path)
    return [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
            for m in messages_for(args.prompts, args.case)]


def check_same_prompts(path: str, n: int, case: str) -> None:
    """Ours renders to text then tokenizes without special tokens; TRL tokenizes through the chat template."""
    _, tokenizer = load(path)
    for m in messages_for(n, case):
        ours = tokenizer(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                         add_special_tokens=False)["input_ids"]
        theirs = tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)
        if list(ours) != list(theirs["input_ids"]):
            print(f"WARNING: prompt tokens differ between ours and TRL for {m[0]['content']!r}",
                  file=sys.stderr)


@dataclass
class Summary:
    name: str
    steps: list[Step] = field(default_factory=list)

    def med(self, key: str) -> float:
        return statistics.median(getattr(s, key) for s in self.steps)

    def med_rate(self, key: str) -> float:
        return statistics.median(s.tokens / getattr(s, key) for s in self.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random",
                        help="tiny-random, smollm2-135m-instruct, or a folder")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each implementation, alternating")
    parser.add_argument("--micro-batch-size", type=int, default=None,
                        help="rows per forward/backward (default: the whole batch, prompts x G)")
    parser.add_argument("--no-force-length", dest="force_length", action="store_false",
                        help="let EOS end completions instead of forcing max-new-tokens on both sides")
    parser.add_argument(
        "--old-logprob-pass",
        action="store_true",
        help="ours: keep the separate no-grad log-prob pass in sample_rollouts (the old default; "
        "redundant for an on-policy update, which TRL skips too)",
    )
    parser.add_argument("--impl", default="plain,ours,trl",
                        help="comma list of: plain (ours, today's plain path), ours (shared prompt), trl")
    parser.add_argument(
        "--case",
        choices=["short", "answer"],
        default="short",
        help="short: one-line prompts, full fine-tuning, beta 0. answer: the Answer Agent's "
        "~1.3k-token prompt, LoRA r=8 with the adapter-off reference, beta 0.001, micro-batch 2 "
        "(the cpu-small preset's shape)",
    )
    parser.add_argument("--beta", type=float, default=None,
                        help="KL coefficient (default: 0 short, 0.001 answer)")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-6 short, 1e-4 answer (LoRA)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step of each run is dropped)")
    B = args.prompts * args.group_size
    answer = args.case == "answer"
    args.beta = (0.001 if answer else 0.0) if args.beta is None else args.beta
    args.lr = (1e-4 if answer else 1e-6) if args.lr is None else args.lr
    if answer and args.micro_batch_size is None:
        args.micro_batch_size = 2
    if args.micro_batch_size and B % args.micro_batch_size:
        parser.error(f"--micro-batch-size must divide prompts x group-size = {B}")
    names = {"plain": "plain", "ours": "ours", "trl": "TRL"}
    order = [names[x.strip()] for x in args.impl.split(",") if x.strip() in names]
    if not order:
        parser.error("--impl: name at least one of plain, ours, trl")
    trl_version = import_trl()[0].__version__ if "TRL" in order else "not used"

    import transformers

    warnings.filterwarnings("ignore",
                            category=FutureWarning)  # transformers 5.23's checkpointing renames, via TRL
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    path = resolve_model(args.model)
    check_same_prompts(path, args.prompts, args.case)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}; python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_version}"
    )
    print(
        f"model {args.model}; {args.prompts} prompts x G={args.group_size} = {B} completions/step, "
        f"max_new_tokens {args.max_new_tokens} ({'forced' if args.force_length else 'EOS may end early'}), "
        f"micro-batch {args.micro_batch_size or B}, ours' old-logprob pass "
        f"{'on' if args.old_logprob_pass else 'off'}; {args.steps} steps x {args.repeats} runs each, "
        "first step dropped"
    )

    runners = {"ours": run_ours, "plain": functools.partial(run_ours, shared=False), "TRL": run_trl}
    print(f"case {args.case}: beta {args.beta}, lr {args.lr}; prompt tokens "
          f"{[len(t) for t in prompt_tokens(path, args)]}", flush=True)
    results = {name: Summary(name) for name in order}
    for r in range(args.repeats):
        for name in order:
            t0 = time.perf_counter()
            steps = runners[name](path, args, seed=args.seed + r)
            results[name].steps += steps[1:]
            print(
                f"  run {r + 1} {name:4s}: {time.perf_counter() - t0:5.1f} s total; step s "
                + " ".join(f"{s.step_s:.2f}" for s in steps)
                + "  (rollout " + " ".join(f"{s.rollout_s:.2f}" for s in steps) + ")",
                flush=True,
            )

    print()
    header = (
        f"{'impl':5s} {'step s':>7s} {'rollout s':>9s} {'gen s':>6s} {'update s':>8s} "
        f"{'rollout tok/s':>13s} {'gen tok/s':>9s} {'step tok/s':>10s} {'mean len':>8s} {'n':>3s}"
    )
    print(header)
    print("-" * len(header))
    for s in results.values():
        print(
            f"{s.name:5s} {s.med('step_s'):7.3f} {s.med('rollout_s'):9.3f} {s.med('generate_s'):6.3f} "
            f"{s.med('update_s'):8.3f} {s.med_rate('rollout_s'):13.1f} {s.med_rate('generate_s'):9.1f} "
            f"{s.med_rate('step_s'):10.1f} {statistics.mean(x.mean_len for x in s.steps):8.1f} "
            f"{len(s.steps):3d}"
        )
    if "ours" in results and "plain" in results:
        new, old = results["ours"], results["plain"]
        print(
            "new/old = ours (shared prompt) / plain (today's path), median time ratio: "
            f"step {new.med('step_s') / old.med('step_s'):.3f} "
            f"({old.med('step_s') / new.med('step_s'):.2f}x cheaper), "
            f"rollout {new.med('rollout_s') / old.med('rollout_s'):.3f}, "
            f"update {new.med('update_s') / old.med('update_s'):.3f}"
        )
    if "ours" in results and "TRL" in results:
        ours, theirs = results["ours"], results["TRL"]
        print(
            "ours/TRL (median time ratio, < 1 means ours is faster): "
            f"step {ours.med('step_s') / theirs.med('step_s'):.2f}, "
            f"rollout {ours.med('rollout_s') / theirs.med('rollout_s'):.2f}, "
            f"generate {ours.med('generate_s') / theirs.med('generate_s'):.2f}, "
            f"update {ours.med('update_s') / theirs.med('update_s'):.2f}"
        )


if __name__ == "__main__":
    main()
