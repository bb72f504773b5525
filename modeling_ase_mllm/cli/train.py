"""`ase-mllm train`: fine-tune from a recipe, the TRL way (`training.recipes`, `training.train.main`).

Its flags are `AseMllmScriptArguments`' and `trl.SFTConfig`'s, parsed by `TrlParser` once the command runs: building
that parser imports transformers, so `ase-mllm --help` lists the command without it, and `ase-mllm train --help`
lists every flag.
"""

from pathlib import Path

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


def main(args) -> int:
    """Parse the recipe and the flags (`training.recipes.parse_recipe`), check them, train."""
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
    return f"checkpoints saved so far are in {output_dir}; the same command with --resume continues from the last"
