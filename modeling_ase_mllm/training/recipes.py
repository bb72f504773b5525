"""Fine-tuning recipes, the TRL way: YAML files of `trl.SFTConfig` fields and our script arguments, read by `TrlParser`.

A recipe (`configuration/recipes/<name>.yaml`) is one flat mapping: `SFTConfig` fields (`learning_rate`,
`per_device_train_batch_size`, `bf16` ...) beside `AseMllmScriptArguments` fields (`model`, `dataset`, `ias`,
`llm` ...). `base_recipe: pccd` starts from another recipe's values (looked up beside the file first, then among the
bundled ones); the recipe's own values override them, so `pccd-no-ias.yaml` is `base_recipe: pccd` + `ias: false`.
The values become the parser's defaults, so every field can also be given on the command line, where it wins:

    ase-mllm train --recipe pccd --learning_rate 2e-5 --ias false

Layers, each over the one before: `SFTConfig`'s defaults; ours (`SFT_DEFAULTS`); the recipe chain; on a machine
without an accelerator, CPU training in float32 (`CPU_OVERRIDES`); the command line. Then `effective_batch_size`
sets `gradient_accumulation_steps` for the number of processes at launch.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..presets import list_presets, preset_file


# Settings no recipe needs to repeat: truncation would cut image tokens (the processor refuses it) and the loss is
# the answer's only; logs go to the console unless a recipe names a tracker.
SFT_DEFAULTS = {"assistant_only_loss": True, "max_length": None, "report_to": "none", "disable_tqdm": False}
# Without an accelerator: the CPU, and no half precision (the model then loads in float32).
CPU_OVERRIDES = {"use_cpu": True, "bf16": False, "fp16": False}


def list_recipes() -> list[str]:
    return list_presets("recipes")


def recipe_file(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of one in `configuration/recipes/`."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    try:
        return preset_file("recipes", str(name_or_path))
    except ValueError:
        raise ValueError(f"unknown recipe {str(name_or_path)!r}: not a file, and not one of "
                         f"{', '.join(list_recipes())}") from None


def recipe_name(name_or_path: str | Path) -> str:
    return Path(name_or_path).stem


def recipe_values(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> dict:
    """The recipe's values with its `base_recipe` chain applied (the recipe's own win)."""
    path = recipe_file(name_or_path).resolve()
    if path in seen:
        raise ValueError(f"recipe {path}: `base_recipe` loops back to it")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path}: a recipe is a mapping of fields, got {type(values).__name__}")
    base = values.get("base_recipe")
    if base is None:
        return values
    sibling = path.parent / f"{base}.yaml"
    return {**recipe_values(sibling if sibling.is_file() else base, (*seen, path)), **values}


def world_size() -> int:
    """Processes of this run (`accelerate launch`/`torchrun` set `WORLD_SIZE`), without starting distributed state."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation_steps(effective_batch_size: int, per_device_batch_size: int, processes: int) -> int:
    """Steps that make `effective_batch_size` = per-device batch × processes × accumulation, exactly."""
    per_step = per_device_batch_size * processes
    if effective_batch_size % per_step:
        raise ValueError(
            f"effective batch {effective_batch_size} is not a multiple of per-device batch {per_device_batch_size} "
            f"× {processes} process(es)"
        )
    return effective_batch_size // per_step


def make_parser(prog: str | None = "ase-mllm train"):
    """The `TrlParser` of `AseMllmScriptArguments` and `SFTConfig` (TRL's `make_parser`)."""
    from trl import SFTConfig, TrlParser

    from .arguments import AseMllmScriptArguments

    # No abbreviations: among some 150 flags a typo would silently set another field.
    parser = TrlParser((AseMllmScriptArguments, SFTConfig), prog=prog, allow_abbrev=False,
                       usage=f"{prog} --recipe NAME_OR_FILE [--FIELD VALUE ...]", description=(
        "Fine-tune ASE-MLLM with TRL's SFTTrainer (or transformers' Trainer) from a recipe of configuration/recipes, "
        "saving checkpoints and the final model in --output_dir (default: outputs/train/<recipe>). Every flag is "
        "also a recipe field; a flag given here overrides the recipe's value. `accelerate launch -m "
        "modeling_ase_mllm.cli train ...` runs it on several processes (DDP, FSDP, DeepSpeed ZeRO-3)."))
    for action in parser._actions:
        if action.dest == "debug" and action.option_strings == ["--debug"]:
            action.help = ("TrainingArguments' debug options, set in a recipe (`debug: underflow_overflow`); on the "
                           "command line a bare --debug shows tracebacks instead")
    return parser


def parse_recipe(args=(), recipe: str | Path | None = None, overrides: dict | None = None,
                 accelerator: bool | None = None, parser=None):
    """`(script_args, training_args)` from a recipe and command-line `args` (`--recipe` there, or `recipe`).

    Args:
        args: command-line arguments of `ase-mllm train` (any `AseMllmScriptArguments` or `SFTConfig` flag).
        recipe: the recipe when `args` names none.
        overrides: field values over the recipe's (as from a recipe file: `{"max_steps": 10}`).
        accelerator: whether to train on an accelerator (default: whether torch finds one).
        parser: the `make_parser()` to use (a fresh one by default).
    """
    import torch

    args = list(args)
    recipe = recipe_argument(args) or recipe
    parser = parser or make_parser()
    if recipe is None:
        parser.parse_args(args)  # --help, or a wrong flag, answers first (no SFTConfig is built)
        raise ValueError("give a recipe (--recipe NAME or path); the bundled ones: " + ", ".join(list_recipes()))
    values = {**SFT_DEFAULTS, "output_dir": str(Path("outputs") / "train" / recipe_name(recipe)), **recipe_values(recipe),
              **(overrides or {}), "recipe": str(recipe)}
    if not (torch.accelerator.is_available() if accelerator is None else accelerator):
        values.update(CPU_OVERRIDES)
    unknown = parser.set_defaults_with_config(**values)
    if unknown:
        names = sorted(key.removeprefix("--") for key in unknown[::2])
        raise ValueError(f"recipe {str(recipe)!r}: unknown field(s) {names}: neither ASE-MLLM's script arguments nor "
                         "SFTConfig fields (`ase-mllm train --help` lists them)")
    script_args, training_args, unrecognized = parser.parse_args_into_dataclasses(args, return_remaining_strings=True)
    if unrecognized:
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    if script_args.effective_batch_size is not None:
        steps = gradient_accumulation_steps(script_args.effective_batch_size,
                                            training_args.per_device_train_batch_size, world_size())
        if training_args.gradient_accumulation_steps not in (1, steps):
            raise ValueError(
                f"gradient_accumulation_steps {training_args.gradient_accumulation_steps} contradicts "
                f"effective_batch_size {script_args.effective_batch_size}, which needs {steps} here; give one of them "
                "(effective_batch_size none leaves gradient_accumulation_steps as given)"
            )
        training_args.gradient_accumulation_steps = steps
    return script_args, training_args


def recipe_argument(args) -> str | None:
    """The `--recipe` value (`--recipe V` or `--recipe=V`) in command-line `args`, read before parsing: the recipe
    decides the parser's defaults."""
    args = list(args)
    for index, arg in enumerate(args):
        if arg == "--recipe" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1]
    return None


__all__ = [
    "CPU_OVERRIDES",
    "SFT_DEFAULTS",
    "gradient_accumulation_steps",
    "list_recipes",
    "make_parser",
    "parse_recipe",
    "recipe_argument",
    "recipe_file",
    "recipe_values",
    "world_size",
]
