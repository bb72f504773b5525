"""`ase-mllm train`: fine-tune from a recipe, the TRL way (`training.recipes`, `training.train.main`).

Its flags are `AseMllmScriptArguments`' and `trl.SFTConfig`'s, parsed by `TrlParser` once the command runs: building
that parser imports transformers, so `ase-mllm --help` lists the command without it, and `ase-mllm train --help`
lists every flag. That takes seconds (trl and transformers load), so the rendered text is kept in the cache folder
and read from there until what renders it changes (`help_cache_file`).
"""

import hashlib
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

from ..utils.cache import cache_dir
from .arguments import check_choice, check_dataset, check_existing, check_model, check_output_folder


def add_parser(subparsers):
    command = subparsers.add_parser(
        "train", add_help=False,
        help="fine-tune ASE-MLLM from a recipe (every SFTConfig field is a flag); `accelerate launch` it for DDP, FSDP "
             "or DeepSpeed ZeRO-3",
        description="Fine-tune with TRL's SFTTrainer or transformers' Trainer from a recipe (configuration/recipes). "
                    "`ase-mllm train --help` lists the flags: the recipe's, ASE-MLLM's and SFTConfig's.")
    command.set_defaults(handler=main, kept=kept, takes_arguments=True)
    return command


def help_cache_file() -> Path:
    """Where `ase-mllm train --help` is kept: named by all that shapes its text, which is the installed trl and
    transformers (SFTConfig's fields), our training, data and CLI modules (our fields, their choices and defaults)
    and the width argparse wraps to; a change of any of them renders it anew."""
    package = Path(__file__).resolve().parent.parent
    key = hashlib.sha256()
    for name in ("trl", "transformers"):
        key.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
    for path in sorted([*(package / "training").glob("*.py"), *(package / "data").glob("*.py"), Path(__file__)]):
        key.update(path.name.encode() + path.read_bytes())
    key.update(str(shutil.get_terminal_size().columns).encode())
    return cache_dir("help", f"train-{key.hexdigest()[:16]}.txt")


def print_help() -> int:
    """Print `ase-mllm train --help` from the cache, rendering and keeping it first if it is not there."""
    cached = help_cache_file()
    if cached.is_file():
        text = cached.read_text(encoding="utf-8")
    else:
        from ..training.recipes import make_parser

        text = make_parser().format_help()
        try:  # written whole or not at all: a concurrent reader never sees half of it
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text, encoding="utf-8")
            partial.replace(cached)
        except OSError:  # a read-only cache only costs the next --help its seconds
            pass
    sys.stdout.write(text)
    return 0


def main(args) -> int:
    """Parse the recipe and the flags (`training.recipes.parse_recipe`), check them, train."""
    if args.arguments in (["--help"], ["-h"]):
        return print_help()
    from ..training.arguments import TINY_MODEL
    from ..training.recipes import list_recipes, make_parser, parse_recipe, recipe_argument

    parser = make_parser()
    recipe = recipe_argument(args.arguments)
    if recipe is None:
        parser.parse_args(args.arguments)  # --help, or a wrong flag, answers first (no SFTConfig is built)
        parser.error(f"the following arguments are required: --recipe (a YAML file, or one of {', '.join(list_recipes())})")
    if not Path(recipe).is_file():
        check_choice(parser, "--recipe", recipe, list_recipes(), "recipe (nor a YAML file)")
    script_args, training_args = parse_recipe(args.arguments, parser=parser)
    args.output_dir = training_args.output_dir
    if training_args.max_steps == 0 or training_args.max_steps < -1:  # -1, SFTConfig's default: train by epochs
        parser.error(f"argument --max-steps: must be a whole number >= 1, got '{training_args.max_steps}'")
    check_dataset(parser, "--dataset", script_args.dataset)
    check_existing(parser, "--data-root", script_args.data_root, "folder")
    if script_args.protocol is not None and script_args.dataset and not Path(script_args.dataset).is_dir():
        from ..data.protocols import protocol_names
        from ..data.registry import canonical_dataset_name

        name = canonical_dataset_name(script_args.dataset)
        check_choice(parser, "--protocol", script_args.protocol, protocol_names(name), f"{name} protocol")
    if script_args.model is not None:
        check_model(parser, script_args.model, also=(TINY_MODEL,))
    if script_args.resume not in (None, "last"):
        check_existing(parser, "--resume", script_args.resume, "folder")
    check_output_folder(parser, "--output-dir", training_args.output_dir)
    from ..training.train import main as train

    train(script_args, training_args)
    return 0


def kept(args) -> str:
    output_dir = getattr(args, "output_dir", None) or "the run's output_dir"
    return (f"checkpoints saved so far are in {output_dir}; the same command with --resume continues from the newest "
            "complete one")
