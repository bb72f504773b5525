"""Recipes the TRL way: `TrlParser` builds the same `SFTConfig` and settings the paper's recipes gave before (a fixture
captured from the code before the move), every field works from a recipe and from the command line, `base_recipe`
chains are typed and checked, and `ase-mllm train --help` lists every field."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT
from modeling_ase_mllm.training.recipes import (
    gradient_accumulation_steps, list_recipes, make_parser, parse_recipe, recipe_name,
)


FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "recipes_before_issue14.json").read_text())["recipes"]
REPO = Path(__file__).resolve().parent.parent

# The recipe settings that moved from nested sections (`data:`, `freeze:`, `lora:`) to flat script arguments, and
# their names now. Every other setting kept its name.
RENAMED = {
    ("data", "train_split"): "train_split",
    ("data", "conversations"): "conversations",
    ("data", "aspect_conditioned"): "aspect_conditioned",
    ("data", "prompt"): "prompt",
    ("data", "seed"): "conversation_seed",
    ("freeze", "vision"): "vision",
    ("freeze", "projector"): "projector",
    ("freeze", "llm"): "llm",
    ("freeze", "ias"): "ias",
    ("lora", "r"): "lora_r",
    ("lora", "alpha"): "lora_alpha",
    ("lora", "dropout"): "lora_dropout",
}


def parse(monkeypatch, name: str, *flags: str):
    """The recipe as one CPU process sees it, with the fixture's output_dir."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return parse_recipe(["--recipe", name, "--output_dir", "OUTPUT_DIR", *flags], accelerator=False)


def test_every_recipe_is_in_the_fixture_and_the_fixture_has_the_paper_recipes():
    assert sorted(FIXTURE) == list_recipes()
    assert {"pccd", "pccd-no-ias", "rpcd", "rpcd-no-ias", "dpc2022", "dpc2022-no-ias", "pccd-full", "mini"} <= set(FIXTURE)
    assert {f"qwen-vl-{name}{ablation}" for name in ("pccd", "rpcd", "dpc2022") for ablation in ("", "-no-ias")} <= set(FIXTURE)


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_recipe_gives_the_same_sft_config_and_settings_as_before_the_move(name, monkeypatch):
    before = FIXTURE[name]
    script_args, training_args = parse(monkeypatch, name)
    assert type(training_args).__name__ == before["type"] == "SFTConfig"
    now = json.loads(json.dumps(training_args.to_dict(), default=str))
    assert sorted(now) == sorted(before["training_arguments"])
    differing = {field: (before["training_arguments"][field], now[field]) for field in now
                 if now[field] != before["training_arguments"][field]}
    assert differing == {}

    ours = dataclasses.asdict(script_args)
    compared = 0
    for field, value in before["recipe"].items():
        if field == "name":
            assert recipe_name(script_args.recipe) == value
        elif isinstance(value, dict):
            for inner, inner_value in value.items():
                assert ours[RENAMED[(field, inner)]] == inner_value, (field, inner)
        else:
            assert ours[field] == value, field
        compared += len(value) if isinstance(value, dict) else 1
    assert compared == 21  # every setting a recipe had: 9 top-level (name included), 5 data, 4 freeze, 3 lora

    expected = before["gradient_accumulation_steps_world_8"]
    at_8 = (script_args.effective_batch_size, training_args.per_device_train_batch_size, 8)
    if expected is None:
        with pytest.raises(ValueError, match="not a multiple"):
            gradient_accumulation_steps(*at_8)
    else:
        assert gradient_accumulation_steps(*at_8) == expected


# Table II (InternVL2-8B) and Table III (Qwen-VL-Chat): each dataset, with and without the IAS components.
PAPER_RECIPES = [
    (f"{prefix}{dataset}", dataset, batch, base_model)
    for prefix, base_model in (("", "OpenGVLab/InternVL2-8B"), ("qwen-vl-", "Qwen/Qwen-VL-Chat"))
    for dataset, batch in (("pccd", 16), ("rpcd", 16), ("dpc2022", 64))
]


@pytest.mark.parametrize(("name", "dataset", "batch", "base_model"), PAPER_RECIPES)
def test_paper_recipes_hold_the_paper_hyper_parameters(name, dataset, batch, base_model, monkeypatch):
    from modeling_ase_mllm.data.protocols import get_protocol

    for variant, ias in ((name, True), (f"{name}-no-ias", False)):
        script_args, args = parse(monkeypatch, variant)
        # The paper-comparable protocol: the dataset's default (DPC2022's recipes name ARIC's).
        assert get_protocol(dataset, script_args.protocol) == get_protocol(dataset)
        assert script_args.protocol == ("aric" if dataset == "dpc2022" else None)
        assert (script_args.dataset, script_args.effective_batch_size, script_args.ias, script_args.freezing.ias) == (
            dataset, batch, ias, ias)
        assert script_args.base_model == base_model and script_args.prompt == AESTHETIC_PROMPT
        assert (args.optim, args.learning_rate, args.weight_decay, args.warmup_steps, args.lr_scheduler_type) == (
            "adamw_torch", 4e-5, 0.01, 0.03, "cosine"
        )
        assert args.assistant_only_loss and args.max_length is None
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == batch
        assert args.per_device_train_batch_size * gradient_accumulation_steps(batch, args.per_device_train_batch_size, 8) * 8 == batch


def test_every_field_works_from_the_command_line_over_the_recipe(monkeypatch):
    script_args, args = parse(monkeypatch, "pccd", "--learning_rate", "2e-5", "--ias", "false", "--llm", "full",
                              "--lora-r", "8", "--per_device_train_batch_size", "4", "--data", "rpcd")
    assert (args.learning_rate, script_args.ias, script_args.llm, script_args.lora_r) == (2e-5, False, "full", 8)
    assert script_args.dataset == "rpcd"  # `--data`, the older spelling of `--dataset`
    assert args.gradient_accumulation_steps == 4  # 16 = 4 per device × 1 process × 4
    assert parse(monkeypatch, "pccd", "--effective_batch_size", "none", "--gradient_accumulation_steps", "3")[1] \
        .gradient_accumulation_steps == 3
    with pytest.raises(ValueError, match="gradient_accumulation_steps 3 contradicts effective_batch_size 16"):
        parse(monkeypatch, "pccd", "--gradient_accumulation_steps", "3")


def test_base_recipe_chains_and_bad_recipes_are_rejected_by_name(tmp_path, monkeypatch):
    child = tmp_path / "child.yaml"
    child.write_text("base_recipe: pccd-no-ias\nlearning_rate: 1.0e-3\n", encoding="utf-8")
    script_args, args = parse(monkeypatch, str(child))
    assert (script_args.ias, script_args.dataset, script_args.base_recipe, args.learning_rate) == (
        False, "pccd", "pccd-no-ias", 1e-3)
    typo = tmp_path / "typo.yaml"
    typo.write_text("base_recipe: mini\nlearning_rat: 1.0e-3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"recipe '.*typo.yaml': unknown field\(s\) \['learning_rat'\]"):
        parse(monkeypatch, str(typo))
    bad_choice = tmp_path / "bad.yaml"
    bad_choice.write_text("base_recipe: mini\nllm: lorra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="`llm` must be one of full, frozen, lora, got 'lorra'"):
        parse(monkeypatch, str(bad_choice))
    loop = tmp_path / "loop.yaml"
    loop.write_text("base_recipe: loop\n", encoding="utf-8")
    with pytest.raises(ValueError, match="loops back"):
        parse(monkeypatch, str(loop))
    with pytest.raises(ValueError, match="not a multiple"):
        gradient_accumulation_steps(16, 2, 3)


def test_train_help_lists_every_sft_config_field_and_ours():
    from trl import SFTConfig

    from modeling_ase_mllm.training.arguments import AseMllmScriptArguments

    result = subprocess.run([sys.executable, "-m", "modeling_ase_mllm.cli", "train", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: ase-mllm train --recipe")
    listed = set(result.stdout.split())
    for config in (SFTConfig, AseMllmScriptArguments):
        missing = [f.name for f in dataclasses.fields(config) if f"--{f.name}" not in listed]
        assert missing == [], (config.__name__, missing)
    assert [action.dest for action in make_parser()._actions if not action.help] == []
