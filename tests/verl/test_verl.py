"""The verl path against verl's real code: its dataset class, its Hydra config, its reward manager.

No GPU, no Ray: verl's RLHFDataset reads our parquet; every preset composes through verl's own config
tree; rewards run through verl's `load_reward_manager` (the naive reward manager and the custom-reward
loader main_ppo uses) and must equal the local trainer's environments on the same outputs. The Memory
Manager's frozen answerer is a real HTTP server speaking the OpenAI chat-completions API.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

verl = pytest.importorskip(
    "verl", reason="verl is not installed here: CI runs tests/verl in .venv-verl (bash scripts/setup-verl.sh)"
)

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from memory_r1.agents import AnswerAgent, MemoryManager
from memory_r1.agents.manager import DEFAULT_PROTOCOL
from memory_r1.data import get_conversation, load_locomo, select_sessions
from memory_r1.embeddings import HashingEmbedder
from memory_r1.llm.openai_backend import OpenAIGenerator
from memory_r1.rl.datasets import (
    AnswerExample,
    ManagerExample,
    build_answer_dataset,
    build_manager_dataset,
    load_examples,
)
from memory_r1.rl.envs import AnswerEnv, ManagerEnv
from memory_r1.rl.verl.export import NotSampled, export
from memory_r1.rl.verl.presets import PRESETS, Answerer, overrides, rewards_path

EMBEDDER = HashingEmbedder()
WINDOW = 10  # small, so the window hides memories and the test sees whether both engines apply it alike


def _conftest():
    """The shared scripted teacher of tests/conftest.py (its fixtures are per test; these datasets are per
    module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "memory_r1_test_support", Path(__file__).parents[1] / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _system(generator, bank: Path):
    from memory_r1.agents import FactExtractor
    from memory_r1.bank import SQLiteStore
    from memory_r1.pipeline import Agents, MemorySystem

    store = SQLiteStore(bank, embedding_model=EMBEDDER.name, dim=EMBEDDER.dim)
    return MemorySystem(
        store,
        Agents(
            EMBEDDER,
            FactExtractor(generator),
            MemoryManager(generator, EMBEDDER),
            AnswerAgent(generator, EMBEDDER),
        ),
    )


@pytest.fixture(scope="module")
def conversations(locomo_path):
    data = load_locomo(locomo_path)
    return {
        "conv-26": select_sessions(get_conversation(data, "conv-26"), {1, 2}),
        "conv-30": select_sessions(get_conversation(data, "conv-30"), {1}),
    }


@pytest.fixture(scope="module")
def datasets(conversations, tmp_path_factory):
    """Answer and manager dataset folders (train conv-26, val conv-30) from a scripted teacher."""
    support = _conftest()
    root = tmp_path_factory.mktemp("verl-data")
    for name, conv in conversations.items():
        for kind, build in (("manager", build_manager_dataset), ("answer", build_answer_dataset)):
            generator = support.ScriptedGenerator(support.reference_script)
            build(_system(generator, root / f"{kind}-{name}.db"), conv, root / f"{kind}-{name}")
    return root


@pytest.fixture(scope="module")
def exports(datasets, conversations):
    out = {}
    for agent in ("answer", "manager"):
        out[agent] = datasets / f"export-{agent}"
        export(
            agent,
            datasets / f"{agent}-conv-26",
            datasets / f"{agent}-conv-30",
            out[agent],
            embedder=EMBEDDER,
            conversations=conversations,
            window=WINDOW,
        )
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _compose(preset: str, agent: str, export_dir: Path, answerer: Answerer | None = None):
    ov = overrides(
        PRESETS[preset],
        export_dir,
        {"agent": agent, "embedding_model": EMBEDDER.name},
        export_dir / "run",
        answerer or Answerer("frozen"),
    )
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=ov)


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_composes_through_verls_config(name, tmp_path):
    preset = PRESETS[name]
    for agent in ("manager",):  # the manager's overrides are the answer's plus the reward's environment
        cfg = _compose(name, agent, tmp_path)
        ar = cfg.actor_rollout_ref
        n = ar.rollout.n
        assert cfg.data.train_batch_size * n == preset.recipe.rollouts_per_step  # paper: 128 rollouts a step
        assert ar.rollout.prompt_length == preset.recipe.max_prompt_length  # verl's interpolation reached
        assert ar.rollout.response_length == preset.recipe.max_response_length
        assert ar.actor.optim.lr == 1e-6 and ar.rollout.temperature == 1.0
        assert ar.rollout.val_kwargs.do_sample is False and ar.rollout.val_kwargs.temperature == 0
        assert ar.actor.ppo_micro_batch_size_per_gpu == preset.recipe.micro_batch_per_gpu
        assert cfg.trainer.n_gpus_per_node == preset.model.gpus
        assert "hf_model" in ar.actor.checkpoint.save_contents
        assert cfg.reward.custom_reward_function.path == str(rewards_path())
        if preset.algo == "grpo":
            assert (
                cfg.algorithm.adv_estimator == "grpo"
                and ar.actor.use_kl_loss
                and n == preset.recipe.group_size
            )
        else:
            assert cfg.algorithm.adv_estimator == "gae" and cfg.critic.optim.lr == 1e-5 and n == 1
            assert cfg.critic.model.path == preset.model.hub_id
        if agent == "manager":  # verl hosts the frozen answerer
            assert cfg.reward.reward_model.enable and cfg.reward.reward_model.model_path == "frozen"
            assert cfg.reward.custom_reward_function.reward_kwargs.dataset_dir == str(tmp_path.resolve())
    if name in ("qwen2.5-14b-grpo", "qwen2.5-14b-ppo"):
        assert cfg.trainer.n_gpus_per_node == 8


def test_paper_presets_cover_the_papers_models():
    models = {p.model.hub_id for p in PRESETS.values()}
    assert {
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-14B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
    } <= models
    assert PRESETS["smoke-grpo"].model.gpus == 1


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("agent", ["answer", "manager"])
def test_exported_parquet_loads_through_verls_rlhf_dataset(agent, exports, datasets, tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = _compose("smoke-grpo", agent, exports[agent])
    kind = AnswerExample if agent == "answer" else ManagerExample
    local = [e.to_json() for e in load_examples(datasets / f"{agent}-conv-26" / f"{agent}.jsonl", kind)]
    for split, n in (("train", len(local)), ("val", None)):
        files = cfg.data.train_files if split == "train" else cfg.data.val_files
        # The preset's config, except the length filter: the tiny test tokenizer is nearly byte-level.
        config = OmegaConf.merge(cfg.data, {"filter_overlong_prompts": False})
        data = RLHFDataset(files, tokenizer, config, max_samples=-1)
        if n is not None:
            assert len(data) == n
        row = data[0]
        assert row["data_source"] == f"memory-r1/{agent}" and row["extra_info"]["split"] == split
        if split == "train" and agent == "answer":
            assert (
                row["raw_prompt"] == local[0]["messages"]
                and row["reward_model"]["ground_truth"] == local[0]["gold"]
            )
            assert row["extra_info"]["memory_ids"] == local[0]["memory_ids"]
        if split == "train" and agent == "manager":
            assert (exports[agent] / row["extra_info"]["bank"]).exists()
            assert [q["gold"] for q in row["extra_info"]["questions"]] == [
                q["gold"] for q in local[0]["questions"]
            ]


def test_manager_prompts_equal_the_local_environments(exports, datasets, conversations):
    local = load_examples(datasets / "manager-conv-26" / "manager.jsonl", ManagerExample)
    env = ManagerEnv(
        datasets / "manager-conv-26",
        local,
        conversations["conv-26"],
        MemoryManager(NotSampled(), EMBEDDER),
        AnswerAgent(NotSampled(), EMBEDDER),
        window=WINDOW,
    )
    import pyarrow.parquet as pq

    rows = pq.read_table(exports["manager"] / "train.parquet").to_pylist()
    assert [r["prompt"] for r in rows] == [env.messages(ex) for ex in local]
    from memory_r1.bank import SQLiteStore

    last = rows[-1]["extra_info"]
    with (
        SQLiteStore(exports["manager"] / last["bank"]) as windowed,
        SQLiteStore(datasets / "manager-conv-26" / local[-1].bank) as full,
    ):
        assert windowed.count() == WINDOW < full.count()  # the window mattered, and was applied once


# ---------------------------------------------------------------- rewards through verl's reward manager


def _reward_manager(cfg, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    return load_reward_manager(cfg, tokenizer)


def _data_item(tokenizer, row: dict, response: str):
    from verl import DataProto

    prompt = torch.tensor([tokenizer.encode("prompt")])
    ids = tokenizer.encode(response, add_special_tokens=False) or [tokenizer.pad_token_id or 0]
    responses = torch.tensor([ids + [tokenizer.pad_token_id or 0] * 3])  # right padding
    mask = torch.cat([torch.ones_like(prompt), torch.tensor([[1] * len(ids) + [0] * 3])], dim=1)
    non_tensors = {k: np.array([row[k]], dtype=object) for k in ("data_source", "reward_model", "extra_info")}
    data = DataProto.from_dict(
        tensors={"prompts": prompt, "responses": responses, "attention_mask": mask}, non_tensors=non_tensors
    )
    return data, tokenizer.decode(ids, skip_special_tokens=True)


def _run(manager, data) -> dict:
    return manager.loop.run_until_complete(manager.run_single(data))


ANSWER_OUTPUTS = [
    "**Answer:** {gold}",
    "[1] a memory\n**Answer:** {gold}",
    "**Answer:** {first} zebra",
    "the answer is {gold}",
    "",
    "**Answer:** nothing like it",
]


@pytest.mark.parametrize("reward", ["em", "f1"])
def test_answer_reward_under_verl_equals_the_local_trainers(reward, exports, datasets, tokenizer):
    import pyarrow.parquet as pq

    cfg = _compose("smoke-grpo", "answer", exports["answer"])
    cfg.reward.custom_reward_function.reward_kwargs.reward = reward
    manager = _reward_manager(cfg, tokenizer)
    local = load_examples(datasets / "answer-conv-26" / "answer.jsonl", AnswerExample)
    env = AnswerEnv(local, reward)
    rows = pq.read_table(exports["answer"] / "train.parquet").to_pylist()
    seen = set()
    for row, ex in list(zip(rows, local, strict=True))[:6]:
        for template in ANSWER_OUTPUTS:
            text = template.format(gold=ex.gold, first=ex.gold.split()[0])
            data, decoded = _data_item(tokenizer, row, text)
            result = _run(manager, data)
            [expected] = env.score(ex, [decoded])
            assert result["reward_score"] == pytest.approx(expected.reward)
            seen.add(round(expected.reward, 3))
    assert len(seen) >= 2  # the table exercises more than one reward value


class FrozenAnswerer(ThreadingHTTPServer):
    """An OpenAI-compatible chat server: the first word of the gold answer plus a wrong word, so F1 is partial
    and EM is 0, unless the question's first memory was written by the rollout ("zebra" in it): then the
    gold."""

    def __init__(self, golds: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.golds, self.requests = golds, 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FrozenAnswerer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        self.server.requests += 1
        question = next((q for q in self.server.golds if q in content), None)
        gold = self.server.golds.get(question or "", "unknown")
        text = f"**Answer:** {gold}" if "zebra" in content else f"**Answer:** {gold.split()[0]} walrus"
        payload = json.dumps({"choices": [{"message": {"content": text}}], "usage": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answerer(datasets) -> Iterator[FrozenAnswerer]:
    local = load_examples(datasets / "manager-conv-26" / "manager.jsonl", ManagerExample)
    server = FrozenAnswerer({q.question: q.gold for ex in local for q in ex.questions})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _manager_outputs(ex: ManagerExample, shown: int) -> list[str]:
    """Policy outputs in the default protocol (manage-v3: one line per fact, memories labelled M1, ...):
    an ADD, an unparsable reply, a NOOP, and with memories shown a DELETE and an UPDATE."""
    assert DEFAULT_PROTOCOL == "manage-v3", "these scripted outputs speak manage-v3"
    outputs = ["F1: ADD", "no decision here", "F1: NONE"]
    if shown:
        outputs += ["F1: DELETE M1", "F1: UPDATE M1: zebra crossing"]
    return outputs


@pytest.mark.parametrize("reward", ["em", "f1"])
def test_manager_reward_under_verl_equals_the_local_trainers(
    reward, exports, datasets, conversations, tokenizer, answerer
):
    import pyarrow.parquet as pq

    cfg = _compose("smoke-grpo", "manager", exports["manager"], Answerer("frozen", answerer.base_url))
    cfg.reward.custom_reward_function.reward_kwargs.reward = reward
    assert not cfg.reward.reward_model.enable  # an explicit server: verl hosts nothing
    manager = _reward_manager(cfg, tokenizer)
    local = load_examples(datasets / "manager-conv-26" / "manager.jsonl", ManagerExample)
    frozen = OpenAIGenerator("frozen", base_url=answerer.base_url)
    env = ManagerEnv(
        datasets / "manager-conv-26",
        local,
        conversations["conv-26"],
        MemoryManager(NotSampled(), EMBEDDER),
        AnswerAgent(frozen, EMBEDDER),
        window=WINDOW,
        reward=reward,
    )
    rows = pq.read_table(exports["manager"] / "train.parquet").to_pylist()
    values = []
    for row, ex in list(zip(rows, local, strict=True))[-3:]:  # the latest turns: the window hides memories
        for text in _manager_outputs(ex, len(env.prompt(ex).shown)):
            data, decoded = _data_item(tokenizer, row, text)
            result = _run(manager, data)
            [expected] = env.score(ex, [decoded])
            assert result["reward_score"] == pytest.approx(expected.reward), text
            assert result["reward_extra_info"]["parsed"] == float(expected.parsed)
            values.append(expected.reward)
    assert -0.25 in values and len(set(values)) >= 2 and answerer.requests > 0


def test_manager_reward_needs_its_frozen_answerer(exports):
    from memory_r1.rl.verl.rewards import compute_score

    with pytest.raises(ValueError, match="answerer_model"):
        compute_score("memory-r1/manager", "{}", [], {}, dataset_dir=str(exports["manager"]))
    with pytest.raises(ValueError, match="unknown data_source"):
        compute_score("gsm8k", "42", "42", {})


# ---------------------------------------------------------------- the command


def test_export_command_writes_parquet_and_a_launch_script(datasets, locomo_path, tmp_path):
    from typer.testing import CliRunner

    from memory_r1.cli import app

    out = tmp_path / "export"
    args = [
        "export",
        "verl",
        "--agent",
        "manager",
        "--dataset",
        str(datasets / "manager-conv-26"),
        "--val-dataset",
        str(datasets / "manager-conv-30"),
        "--out",
        str(out),
        "--data",
        str(locomo_path),
        "--preset",
        "smoke-grpo",
        "--answerer-model",
        "Qwen/Qwen2.5-0.5B-Instruct",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "train.parquet").exists() and (out / "val.parquet").exists()
    script = (out / "launch.sh").read_text()
    assert "verl.trainer.main_ppo" in script and "reward.reward_model.enable=True" in script
    assert f"reward_kwargs.dataset_dir={out.resolve()}" in script
    bad = CliRunner().invoke(app, [*args[:-4], "--preset", "nope"])
    assert bad.exit_code == 1 and "unknown preset" in bad.output and "Traceback" not in bad.output
    listing = CliRunner().invoke(app, ["export", "presets"])
    assert listing.exit_code == 0 and "smoke-grpo" in listing.output and "vllm serve" in listing.output


# ---------------------------------------------------------------- the manager reward inside verl's agent loop


class InProcessActor:
    """Ray's actor-handle interface over a plain object here: `handle.method.remote(...)` gives an awaitable.
    verl's load balancer, agent-loop worker and reward-loop worker are plain classes its trainer wraps with
    `ray.remote`, so they run as they are; only the transport is not Ray's."""

    def __init__(self, target: object) -> None:
        self._target = target

    def __getattr__(self, name: str) -> SimpleNamespace:
        method = getattr(self._target, name)
        return SimpleNamespace(remote=lambda *args, **kwargs: _awaitable(method(*args, **kwargs)))


def _awaitable(value):
    if inspect.isawaitable(value):
        return value
    done = asyncio.get_running_loop().create_future()  # sync methods (and fire-and-forget calls) run now
    done.set_result(value)
    return done


class ScriptedReplica:
    """The one double: a vLLM rollout replica (`generate(request_id, prompt_ids, sampling_params, ...)` ->
    `TokenOutput`), which needs a GPU. Each prompt gets its scripted outputs in turn, one per request."""

    def __init__(self, tokenizer, script: dict[str, list[str]]) -> None:
        self.tokenizer, self.script = tokenizer, {k: list(v) for k, v in script.items()}
        self.sampling: list[dict] = []

    async def generate(self, *, request_id: str, prompt_ids: list[int], sampling_params: dict, **_) -> object:
        from verl.workers.rollout.replica import TokenOutput

        prompt = self.tokenizer.decode(prompt_ids)
        [key] = [k for k in self.script if k in prompt]  # exactly one exported prompt is this request's
        self.sampling.append(sampling_params)
        await asyncio.sleep(0)  # let the other trajectories' requests interleave, as on a real server
        ids = self.tokenizer.encode(self.script[key].pop(0), add_special_tokens=False)
        return TokenOutput(
            token_ids=ids + [self.tokenizer.eos_token_id], log_probs=None, stop_reason="completed"
        )


def _agent_loop(cfg, tokenizer, tiny_model_dir, export_dir: Path, script: dict[int, list[str]]):
    """One step's rollouts along verl's trainer path, minus vLLM and Ray: its RLHFDataset and collate_fn, the
    trainer's gen-batch split and rollout.n repeat, `AgentLoopWorker.generate_sequences` running the
    registered
    `single_turn_agent` through `LLMServerClient` and `GlobalRequestLoadBalancer`, and the streaming reward in
    `RewardLoopWorker` (its naive reward manager calls our compute_score in its thread pool, every trajectory
    in flight at once). `script`: parquet row -> its G outputs. -> (the output DataProto, the rows
    repeated)."""
    import pyarrow.parquet as pq
    from verl import DataProto
    from verl.experimental.agent_loop import AgentLoopWorker
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.utils.ray_utils import get_event_loop
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.router import GlobalRequestLoadBalancer

    picked = sorted(script)
    [G] = {len(outputs) for outputs in script.values()}
    cfg.actor_rollout_ref.rollout.n = G
    cfg.actor_rollout_ref.model.path = str(tiny_model_dir)  # the tokenizer verl's workers load
    rows = pq.read_table(export_dir / "train.parquet").to_pylist()
    replica = ScriptedReplica(tokenizer, {rows[i]["prompt"][-1]["content"]: script[i] for i in picked})
    data = RLHFDataset(
        cfg.data.train_files,
        tokenizer,
        OmegaConf.merge(cfg.data, {"filter_overlong_prompts": False}),
        max_samples=-1,
    )
    batch = DataProto.from_single_dict(collate_fn([data[i] for i in picked]))
    batch.non_tensor_batch["uid"] = np.array([str(i) for i in picked], dtype=object)
    gen = RayPPOTrainer._get_gen_batch(None, batch).repeat(repeat_times=G, interleave=True)  # type: ignore[arg-type]
    gen.non_tensor_batch["priority"] = np.arange(len(gen), dtype=np.int64)  # as AgentLoopManager sets it
    client = LLMServerClient(
        cfg, InProcessActor(GlobalRequestLoadBalancer({"replica-0": InProcessActor(replica)}))
    )
    worker = AgentLoopWorker(cfg, client, reward_loop_worker_handles=[InProcessActor(RewardLoopWorker(cfg))])
    # verl's workers bind to the loop current when they are built (in Ray, the actor's own), so run on
    # that one
    out = get_event_loop().run_until_complete(worker.generate_sequences(gen))
    assert len(out) == G * len(picked) and all(s["temperature"] == 1.0 for s in replica.sampling)
    return out, [int(i) for i in np.repeat(picked, G)]


def _responses(out, tokenizer) -> list[str]:
    P = out.batch["prompts"].shape[1]
    lengths = out.batch["attention_mask"][:, P:].sum(-1).tolist()
    return [
        tokenizer.decode(out.batch["responses"][k, :n], skip_special_tokens=True)
        for k, n in enumerate(lengths)
    ]


def test_answer_reward_through_verls_agent_loop_equals_the_local_trainers(
    exports, datasets, tokenizer, tiny_model_dir
):
    cfg = _compose("smoke-grpo", "answer", exports["answer"])
    local = load_examples(datasets / "answer-conv-26" / "answer.jsonl", AnswerExample)
    script = {
        i: [t.format(gold=local[i].gold, first=local[i].gold.split()[0]) for t in ANSWER_OUTPUTS]
        for i in range(3)
    }
    out, rows = _agent_loop(cfg, tokenizer, tiny_model_dir, exports["answer"], script)
    env = AnswerEnv(local, "em")
    scores = out.batch["rm_scores"].sum(-1).tolist()  # verl puts the score on the last response token
    expected = [
        env.score(local[i], [text])[0] for i, text in zip(rows, _responses(out, tokenizer), strict=True)
    ]
    assert scores == pytest.approx([e.reward for e in expected])
    assert out.non_tensor_batch["parsed"].tolist() == [float(e.parsed) for e in expected]
    assert 0.0 in scores and 1.0 in scores


def test_manager_reward_through_verls_agent_loop_keeps_a_bank_per_trajectory(
    exports, datasets, conversations, tokenizer, tiny_model_dir, answerer
):
    """A group's trajectories score concurrently inside verl's agent loop; each reward must equal the local
    trainer's for that output scored alone: a bank shared by the group would let one rollout's ADD answer
    another's questions (tried: one fork per prompt fails here)."""
    import hashlib

    cfg = _compose("smoke-grpo", "manager", exports["manager"], Answerer("frozen", answerer.base_url))
    local = load_examples(datasets / "manager-conv-26" / "manager.jsonl", ManagerExample)
    frozen = OpenAIGenerator("frozen", base_url=answerer.base_url)
    env = ManagerEnv(
        datasets / "manager-conv-26",
        local,
        conversations["conv-26"],
        MemoryManager(NotSampled(), EMBEDDER),
        AnswerAgent(frozen, EMBEDDER),
        window=WINDOW,
    )
    picked = list(range(len(local)))[-3:]  # the latest turns: memories shown, some hidden by the window
    script = {i: _manager_outputs(local[i], len(env.prompt(local[i]).shown)) for i in picked}
    banks = sorted(exports["manager"].rglob("*.db"))
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in banks]
    out, rows = _agent_loop(cfg, tokenizer, tiny_model_dir, exports["manager"], script)
    scores = out.batch["rm_scores"].sum(-1).tolist()
    values = []
    for k, (i, text) in enumerate(zip(rows, _responses(out, tokenizer), strict=True)):
        [expected] = env.score(local[i], [text])
        assert scores[k] == pytest.approx(expected.reward), text
        assert out.non_tensor_batch["parsed"][k] == float(expected.parsed)
        values.append(expected.reward)
    assert -0.25 in values and 1.0 in values and len(set(values)) >= 3  # the table spans rewards
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in banks] == before  # snapshots only read
