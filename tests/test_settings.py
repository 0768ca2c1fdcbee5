"""Settings by dotted path: typed conversion, nested replace, clear errors, a docstring for every field."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app
from memory_r1.cli.config import CONFIGS
from memory_r1.eval.harness import EvalConfig
from memory_r1.pipeline import PipelineConfig
from memory_r1.settings import SettingError, apply_overrides, describe


def test_overrides_reach_nested_fields_with_their_types():
    base = PipelineConfig()
    changed = apply_overrides(
        base,
        [
            "answer.top_k_per_speaker=5",
            "answer.distill=false",
            "answer.temperature=0.7",
            "manager_model=ckpt/final",
            "base_url=none",
        ],
    )
    assert changed.answer.top_k_per_speaker == 5 and changed.answer.distill is False
    assert (
        changed.answer.temperature == 0.7
        and changed.manager_model == "ckpt/final"
        and changed.base_url is None
    )
    assert base.answer.top_k_per_speaker == 30  # the original is untouched (frozen, replaced)
    with pytest.raises(FrozenInstanceError):
        base.answer.top_k_per_speaker = 1  # type: ignore[misc]
    evaluated = apply_overrides(EvalConfig(), ["seeds=0,1,2", "limit=3", "limit=none"])
    assert evaluated.seeds == (0, 1, 2) and evaluated.limit is None  # later overrides win


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("answer.top_k=3", "unknown setting 'answer.top_k': AnswerConfig has top_k_per_speaker"),
        ("answer.top_k_per_speaker=many", "expected an integer, got 'many'"),
        ("answer.distill=maybe", "expected true or false"),
        ("answer=3", "is a group of settings"),
        ("model.name=x", "model has no sub-settings"),
        ("no-equals-sign", "expects KEY=VALUE"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override: str, message: str):
    with pytest.raises(SettingError, match=message):
        apply_overrides(PipelineConfig(), [override])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_setting_is_documented_once_at_its_field(name: str):
    undocumented = [s.path for s in describe(CONFIGS[name]()) if not s.doc]
    assert not undocumented, (
        f"give these fields a docstring saying where the default comes from: {undocumented}"
    )


def test_cli_lists_settings_and_refuses_a_bad_one(tmp_path: Path):
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "pipeline"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "answer.top_k_per_speaker" in shown.output and "Paper: 30" in shown.output
    bad = runner.invoke(app, ["eval", "--set", "answer.top_k=3", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "unknown setting 'answer.top_k'" in bad.output
    bad = runner.invoke(app, ["eval", "--set", "eval.batch_size=big", "--out", str(tmp_path / "x")])
    assert (
        bad.exit_code == 1
        and "eval.batch_size" not in bad.output
        and "batch_size: expected an integer" in bad.output
    )
