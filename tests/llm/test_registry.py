"""Model names -> folders -> generators, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.llm.base import GenerationConfig
from memory_r1.llm.registry import REGISTERED, UnknownModelError, load_generator, resolve_model
from memory_r1.llm.transformers_backend import TransformersGenerator


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMORY_R1_CACHE", str(tmp_path))
    return tmp_path


def test_tiny_random_is_built_once_into_the_cache(cache: Path) -> None:
    path = Path(resolve_model("tiny-random"))
    assert path == cache / "models" / "tiny-random"
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-random") == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in (cache / "models").iterdir()] == ["tiny-random"]  # no temp folder left


def test_local_folder_passes_through(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


@pytest.mark.parametrize("name", ["no-such-model-xyz", "nobody/nothing-7b", "./missing/folder"])
def test_unknown_names_raise_a_clear_error(name: str) -> None:
    with pytest.raises(UnknownModelError, match="not a registered model") as err:
        resolve_model(name)
    assert all(registered in str(err.value) for registered in REGISTERED)


def test_load_generator_transformers_keeps_the_given_name(tiny_model_dir: Path) -> None:
    gen = load_generator(str(tiny_model_dir), device="cpu", batch_size=2)
    assert isinstance(gen, TransformersGenerator) and gen.batch_size == 2
    assert gen.name == str(tiny_model_dir)
    [out] = gen.generate([[{"role": "user", "content": "hi"}]], GenerationConfig(max_new_tokens=3))
    assert out.usage.completion_tokens == 3


def test_load_generator_openai_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        load_generator("gpt-4o-mini", backend="openai")
    gen = load_generator("gpt-4o-mini", backend="openai", base_url="http://127.0.0.1:9/v1")
    assert gen.name == "gpt-4o-mini"


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        load_generator("tiny-random", backend="llamafile")


@pytest.mark.slow
def test_smollm2_converts_once_and_chats() -> None:
    """Uses the real user cache (or $MEMORY_R1_CACHE): the first run converts the GGUF (~30 s)."""
    gen = load_generator("smollm2-135m-instruct")
    assert isinstance(gen, TransformersGenerator) and gen.name == "smollm2-135m-instruct"
    folder = Path(resolve_model("smollm2-135m-instruct"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert gen.render(messages).endswith("<|im_end|>\n<|im_start|>assistant\n")
    [out] = gen.generate([messages], GenerationConfig(max_new_tokens=16))
    assert "Paris" in out.text
    assert 0 < out.usage.completion_tokens <= 16  # stopped at <|im_end|>, which is not in the text
    assert "<|im_end|>" not in out.text
