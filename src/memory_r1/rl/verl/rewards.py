"""Rewards with verl's signature, `compute_score(data_source, solution_str, ground_truth, extra_info, **kw)`.

verl loads this file by path (`reward.custom_reward_function.path=<this file>`, `name=compute_score`) and
its reward manager calls it once per trajectory with the decoded response; `reward_kwargs` from the config
arrive as keyword arguments. Each reward is the local trainer's environment (`rl.envs`) run on one output,
so the two trainers cannot drift apart: same parser, same metrics, same penalties.

The Memory Manager's reward needs an environment: the sampled operations are applied to a fork of the
bank as it was before the turn, and a FROZEN Answer Agent answers the turn's linked questions from it.
We do that inside the reward function, not in a custom agent loop, because:
- the manager's action is one completion; nothing the environment does is fed back to the policy, so a
  multi-turn agent loop would add machinery and no behaviour. verl's default single-turn loop samples it;
- the frozen answerer must not be the policy, so it cannot use the agent loop's rollout server anyway. It
  needs its own server: verl's reward-model server (`reward.reward_model.enable=True`, which hands us
  `reward_router_address`, an OpenAI-compatible endpoint verl starts and schedules), or any vLLM/SGLang
  server given as `answerer_base_url`. Either way our OpenAI-compatible backend sends the questions of a
  trajectory concurrently, and verl runs reward calls for many trajectories at once;
- it works the same in training, validation and verl's reward loop workers, with no registration.
The bank is per trajectory: each call opens its own in-memory fork of the snapshot file and closes it
before returning (verl's tool loop, by contrast, creates and releases a tool on every call, which is why
the environment is not a tool). The snapshot file is only read.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from memory_r1.agents import AnswerAgent, MemoryManager
from memory_r1.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, load_embedder
from memory_r1.llm.base import Generator
from memory_r1.records import Conversation
from memory_r1.rl.datasets import AnswerExample, ManagerExample
from memory_r1.rl.envs import AnswerEnv, ManagerEnv, Reward
from memory_r1.rl.verl.export import DATA_SOURCES, NotSampled

UNPARSABLE_PENALTY = -0.25
"""The local trainer's default (`TrainConfig.unparsable_penalty`): an unparsable manager output."""
NO_WINDOW = 10**9
"""Exported snapshots are already windowed (see `export`), so the environment hides nothing more."""


def answer_score(solution_str: str, ground_truth: str, extra_info: Mapping[str, Any], *,
                 reward: Reward = "em", format_bonus: float = 0.0) -> dict[str, Any]:
    """The Answer Agent's reward: `AnswerEnv.score` on this one output."""
    example = AnswerExample(str(extra_info.get("sample_id", "")), int(extra_info.get("qa_index", 0)),
                            int(extra_info.get("category", 0)), str(extra_info.get("question", "")),
                            ground_truth, [], [int(i) for i in extra_info["memory_ids"]])
    [scored] = AnswerEnv([example], reward, format_bonus).score(example, [solution_str])
    # Numbers only: verl logs each extra key as a per-step mean.
    return {"score": scored.reward, "parsed": float(scored.parsed)}


@lru_cache(maxsize=4)
def _embedder(name: str) -> Embedder:
    return load_embedder(name)


@lru_cache(maxsize=4)
def _answerer_generator(model: str, base_url: str, concurrency: int) -> Generator:
    from memory_r1.llm.openai_backend import OpenAIGenerator

    return OpenAIGenerator(model, base_url=base_url, concurrency=concurrency, timeout=600.0)


def answerer_url(answerer_base_url: str | None, reward_router_address: str | None) -> str:
    """The frozen answerer's OpenAI-compatible base URL: an explicit server, else verl's reward-model
    router."""
    if answerer_base_url:
        return answerer_base_url
    if reward_router_address:
        address = reward_router_address.removeprefix("http://").rstrip("/")
        return f"http://{address}/v1"
    raise ValueError("the Memory Manager reward needs a frozen answerer: set reward_kwargs.answerer_base_url "
                     "(a vLLM server) or reward.reward_model.enable=True (verl's reward-model server)")


def manager_score(
    solution_str: str, extra_info: Mapping[str, Any], *, dataset_dir: str, answerer_model: str,
    answerer_base_url: str | None = None, reward_router_address: str | None = None, reward: Reward = "em",
    unparsable_penalty: float = UNPARSABLE_PENALTY, embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    answerer_concurrency: int = 32, generator: Generator | None = None,
) -> dict[str, Any]:
    """The Memory Manager's reward: `ManagerEnv.score` on this one output, with its own bank fork.

    `generator` replaces the HTTP answerer (tests, or an in-process model)."""
    example = ManagerExample.from_json({
        "sample_id": extra_info["sample_id"], "dia_id": extra_info["dia_id"],
        "position": extra_info["position"],
        "owner": extra_info["owner"], "timestamp": extra_info["timestamp"],
        "facts": list(extra_info["facts"]),
        "bank": extra_info["bank"], "questions": [dict(q) for q in extra_info["questions"]],
    })
    speakers = list(extra_info["speakers"])
    # Only the id and the speakers are read: the turns are not needed since the snapshot is already windowed.
    conversation = Conversation(example.sample_id, speakers[0], speakers[1], sessions=())
    embedder = _embedder(embedding_model)
    frozen = generator or _answerer_generator(answerer_model,
                                              answerer_url(answerer_base_url, reward_router_address),
                                              answerer_concurrency)
    env = ManagerEnv(Path(dataset_dir), [example], conversation, MemoryManager(NotSampled(), embedder),
                     AnswerAgent(frozen, embedder), window=NO_WINDOW, unparsable_penalty=unparsable_penalty,
                     reward=reward)
    [scored] = env.score(example, [solution_str])
    result: dict[str, Any] = {"score": scored.reward, "parsed": float(scored.parsed)}
    counts = cast(dict[str, int], scored.detail["operations"])  # ManagerEnv.score: operations per event
    result.update({f"op_{name.lower()}": float(n) for name, n in counts.items()})
    return result


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's entry point: dispatch on `data_source` to the agent's reward. Returns {"score": ..., ...}; the
    other keys become verl's `reward_extra_info` (logged per step)."""
    extra_info = extra_info or {}
    if data_source == DATA_SOURCES["answer"]:
        return answer_score(solution_str, ground_truth, extra_info, reward=kwargs.get("reward", "em"),
                            format_bonus=float(kwargs.get("format_bonus", 0.0)))
    if data_source == DATA_SOURCES["manager"]:
        known = ("dataset_dir", "answerer_model", "answerer_base_url", "reward_router_address", "reward",
                 "unparsable_penalty", "embedding_model", "answerer_concurrency", "generator")
        missing = [k for k in ("dataset_dir", "answerer_model") if not kwargs.get(k)]
        if missing:
            raise ValueError(
                f"the Memory Manager reward needs reward_kwargs {missing} (see `memory-r1 export verl`)"
            )
        return manager_score(solution_str, extra_info, **{k: v for k, v in kwargs.items() if k in known})
    raise ValueError(
        f"unknown data_source {data_source!r}; memory-r1 rows use {sorted(DATA_SOURCES.values())}"
    )
