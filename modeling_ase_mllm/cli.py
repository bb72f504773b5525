"""`ase-mllm` command line.

Building the parser imports nothing heavy: each command's handler imports what it uses (torch, transformers,
datasets), so `ase-mllm --help` and `ase-mllm COMMAND --help` answer at once. Every handler checks its arguments
before it loads a model; a wrong one exits with status 2, the command's usage and one sentence naming the flag
and what it accepts. Any other error (a file that cannot be read, a model that does not load) is one line on
stderr and status 1; `--debug` (or `ASE_MLLM_DEBUG=1`) shows the traceback instead. Ctrl-C exits with 130 and
one line saying what was kept.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from pathlib import Path


from .captioning import DEFAULT_MAX_FILE_MB
from .demo import DEFAULT_OUTPUT_DIR as DEMO_OUTPUT_DIR, MODEL_FOLDER as DEMO_MODEL_FOLDER


DEBUG_ENV = "ASE_MLLM_DEBUG"
# The reader names of `aic_datasets.DATASET_LOADERS`, for help texts (importing it would import `datasets`;
# tests/test_cli.py checks that the two agree).
DATASET_NAMES = "pccd, rpcd, dpc2022, ava_captions or mini_aic"


# ------------------------------------------------------------------------------------------- argument types
def _number(text: str, convert, accept, expected: str):
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, beams, tokens, steps)."""
    return _number(text, int, lambda value: value >= 1, "a whole number >= 1")


def positive_float(text: str) -> float:
    return _number(text, float, lambda value: 0 < value < math.inf, "a number > 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda value: 0 <= value < math.inf, "a number >= 0")


def probability(text: str) -> float:
    return _number(text, float, lambda value: 0 < value <= 1, "a number in (0, 1]")


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


# ------------------------------------------------------------------------------------ checks after parsing
# Each takes the command's parser and ends the run through `parser.error` (usage + message, status 2).
def did_you_mean(value: str, known) -> str:
    """`" (did you mean 'composition'?)"` for a near miss, else ""."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(parser, flag: str, value: str, known, what: str) -> None:
    if value not in known:
        parser.error(f"argument {flag}: {value!r} is not a known {what}{did_you_mean(value, known)}; "
                     f"choose one of {', '.join(known)}")


def check_model(parser, value: str, flag: str = "--model", also: tuple[str, ...] = ()) -> None:
    """A model folder (with `config.json`) or a Hub id (`owner/name`); `also`: other accepted words."""
    if value in also:
        return
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            parser.error(f"argument {flag}: {value!r} is a file; give the model's folder (with config.json) or a Hub id")
        if not (path / "config.json").is_file():
            parser.error(f"argument {flag}: folder {value!r} has no config.json, so it holds no saved model")
        return
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value or value.endswith("/"):
        parser.error(f"argument {flag}: no folder {value!r} here (a Hub id looks like owner/name)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        parser.error(f"argument {flag}: {value!r} is neither a folder here nor a Hub id (owner/name)")


def check_existing(parser, flag: str, value: str | None, kind: str = "file") -> None:
    """`value` (when given) is an existing file or folder (`kind`)."""
    if value is None:
        return
    path = Path(value).expanduser()
    if not path.exists():
        parser.error(f"argument {flag}: no {kind} {value!r}")
    if kind == "file" and path.is_dir():
        parser.error(f"argument {flag}: {value!r} is a folder; give a file")
    if kind == "folder" and not path.is_dir():
        parser.error(f"argument {flag}: {value!r} is a file; give a folder")


def check_output_folder(parser, flag: str, value: str | None) -> None:
    """A folder to write into: created now, so that a bad one fails before any work."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        parser.error(f"argument {flag}: {value!r} is an existing file; give a folder (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"argument {flag}: cannot create folder {value!r}: {error.strerror or error}")


def check_output_file(parser, flag: str, value: str | None) -> None:
    if value is not None and Path(value).expanduser().is_dir():
        parser.error(f"argument {flag}: {value!r} is a folder; give the file to write")


def check_max_tiles(parser, value: int | None) -> None:
    if value is None:
        return
    from .image_processing_ase_mllm import MAX_TILES

    if not 1 <= value <= MAX_TILES:
        parser.error(f"argument --max-tiles: must be between 1 and {MAX_TILES}, got {value}")


def check_aspect(parser, value: str | None) -> None:
    if value is not None:
        from .conversations import ASPECT_PHRASES

        check_choice(parser, "--aspect", value, list(ASPECT_PHRASES), "aspect")


def check_device(parser, value: str | None) -> None:
    """A device torch knows and this machine has (`cpu`, `cuda`, `cuda:1`, `mps`, ...)."""
    if value is None:
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        parser.error(f"argument --device: {value!r} is not a device torch knows; use cpu, cuda, cuda:N, mps, xpu ...")
    if device.type == "cpu":
        return
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != device.type:
        have = f"cpu and {accelerator.type}" if accelerator is not None else "only cpu"
        parser.error(f"argument --device: torch finds no {device.type} device on this machine (it has {have})")
    count = torch.accelerator.device_count()
    if device.index is not None and device.index >= count:
        parser.error(f"argument --device: {value!r} does not exist; this machine has {count} {device.type} device(s)")


def check_dataset(parser, flag: str, value: str | None) -> None:
    """A reader name (`pccd`, ..., case and -/_ free) or a `save_to_disk` folder."""
    if value is None or Path(value).expanduser().is_dir():
        return
    from .aic_datasets import DATASET_LOADERS, canonical_dataset_name

    try:
        canonical_dataset_name(value)
    except ValueError:
        parser.error(f"argument {flag}: {value!r} is neither a folder nor a dataset name"
                     f"{did_you_mean(value.lower(), DATASET_LOADERS)}; the names are {', '.join(DATASET_LOADERS)}")


def photo_limits(args):
    from .captioning import PhotoLimits

    return PhotoLimits(max_megapixels=args.max_megapixels, max_file_mb=args.max_file_mb)


def load_model(args, **options):
    """`captioning.load_model_and_processor` for `--model`, failing in one line that names it."""
    from .captioning import load_model_and_processor

    try:
        return load_model_and_processor(args.model, device=args.device, **options)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {args.model!r} could not be loaded: {one_line(error)}") from error


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    return text or type(error).__name__


# ---------------------------------------------------------------------------------------------- commands
def demo(args) -> int:
    """The embedded default: fine-tune, publish, reload, evaluate and caption a small model, then report."""
    check_output_folder(args.parser, "--output-dir", args.output_dir)
    from .demo import run_demo
    from .metrics import metric_options

    run_demo(args.output_dir, steps=args.steps, max_new_tokens=args.max_new_tokens, **metric_options(args))
    return 0


def caption(args) -> int:
    """Critique photos; print one line (or JSON object) per photo as its batch finishes; exit 1 if any failed."""
    parser = args.parser
    check_model(parser, args.model)
    check_aspect(parser, args.aspect)
    check_max_tiles(parser, args.max_tiles)
    check_device(parser, args.device)
    check_output_folder(parser, "--saliency-out", args.saliency_out)  # last: it creates the folder
    from .captioning import critique_prompt, format_critique, iter_critiques

    model, processor = load_model(args, dtype=args.dtype)
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.temperature > 0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    results = iter_critiques(
        model, processor, args.images, prompt=critique_prompt(args.prompt, args.aspect), max_tiles=args.max_tiles,
        batch_size=args.batch_size, generation_config=generation, saliency_out=args.saliency_out,
        limits=photo_limits(args),
    )
    failed = []
    for result in results:
        print(format_critique(result, args.json), flush=True)
        args.done += 1
        if result.saliency_error is not None and not args.json:
            print(f"{result.image}: {result.saliency_error}", file=sys.stderr, flush=True)
        if result.failed:
            failed.append(result.image)
    return report_failures(failed, len(args.images))


def saliency(args) -> int:
    """Write the saliency picture (overlay + per-tile maps) of each photo; exit 1 if any photo failed."""
    parser = args.parser
    check_model(parser, args.model)
    check_max_tiles(parser, args.max_tiles)
    check_device(parser, args.device)
    check_output_folder(parser, "--saliency-out", args.saliency_out)  # last: it creates the folder
    from .captioning import PER_FILE_ERRORS, image_names, read_photo, saliency_picture_path
    from .visualize import save_saliency_picture

    model, processor = load_model(args)
    limits, failed = photo_limits(args), []
    for index, (name, source) in enumerate(zip(image_names(args.images), args.images)):
        try:
            target = saliency_picture_path(args.saliency_out, index, name)
            print(save_saliency_picture(read_photo(source, limits), target, processor, model, args.max_tiles),
                  flush=True)
        except PER_FILE_ERRORS as error:
            failed.append(name)
            print(f"{name}: ERROR {error}", file=sys.stderr, flush=True)
        args.done += 1
    return report_failures(failed, len(args.images))


def report_failures(failed: list[str], total: int) -> int:
    if failed:
        print(f"{len(failed)} of {total} image(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def convert_eat(args) -> int:
    """Check the released EAT `.pth` strictly and write it once as safetensors."""
    check_existing(args.parser, "checkpoint", args.checkpoint)
    check_output_file(args.parser, "--output", args.output)
    from .eat_checkpoint import convert_eat_checkpoint

    print(convert_eat_checkpoint(args.checkpoint, args.output))
    return 0


def convert(args) -> int:
    """Build an ASE-MLLM folder from an InternVL checkpoint (`convert.run_convert`)."""
    parser = args.parser
    check_existing(parser, "source", args.source, "folder")
    if not (Path(args.source) / "config.json").is_file():
        parser.error(f"argument source: folder {args.source!r} has no config.json, so it holds no checkpoint")
    check_existing(parser, "--eat", args.eat)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        parser.error(f"argument output: {args.output!r} is an existing file; give a folder")
    from .convert import DEFAULT_MAX_SHARD_SIZE, run_convert

    args.max_shard_size = args.max_shard_size or DEFAULT_MAX_SHARD_SIZE
    return run_convert(args)


def push(args) -> int:
    """Publish a saved folder to the Hub (`publish.run_push`)."""
    check_existing(args.parser, "folder", args.folder, "folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as error:
        args.parser.error(f"argument --repo-id: {args.repo_id!r} is not a Hub repo id (owner/name): {one_line(error)}")
    from .publish import run_push

    return run_push(args)


def train(args) -> int:
    """Fine-tune from a recipe (`training.run_train_command`)."""
    parser = args.parser
    from .recipes import TINY_MODEL, list_recipes

    if not Path(args.recipe).is_file():
        check_choice(parser, "--recipe", args.recipe, list_recipes(), "recipe (nor a YAML file)")
    check_dataset(parser, "--dataset", args.data)
    check_existing(parser, "--data-root", args.data_root, "folder")
    if args.model is not None:
        check_model(parser, args.model, also=(TINY_MODEL,))
    if isinstance(args.resume, str):
        check_existing(parser, "--resume", args.resume, "folder")
    check_output_folder(parser, "--output-dir", getattr(args, "output_dir", None))
    from .training import run_train_command

    return run_train_command(args)


def prepare_data(args) -> int:
    """Read a dataset release and save it as a `DatasetDict` (embedding the images)."""
    parser = args.parser
    from .aic_datasets import DATASET_LOADERS, canonical_dataset_name, load_aic_dataset

    try:
        name = canonical_dataset_name(args.dataset)
    except ValueError:
        check_choice(parser, "--dataset", args.dataset.lower(), list(DATASET_LOADERS), "dataset")
    if name != "mini_aic" and args.data_root is None:
        parser.error(f"argument --data-root: {name} needs the folder of its release")
    check_existing(parser, "--data-root", args.data_root, "folder")
    check_existing(parser, "--image-dir", args.image_dir, "folder")
    check_output_folder(parser, "--output-dir", args.output_dir)
    options = {"splits": args.splits} if args.splits else {}
    if args.image_dir:
        options["image_root" if name == "rpcd" else "image_dir"] = args.image_dir
    dataset_dict = load_aic_dataset(name, args.data_root, **options)
    # save_to_disk embeds the image bytes, so the saved dataset no longer needs the release folder.
    dataset_dict.save_to_disk(args.output_dir)
    for split, dataset in dataset_dict.items():
        print(f"{name} {split}: {len(dataset)} images, {sum(len(refs) for refs in dataset['references'])} references")
    print(f"saved to {args.output_dir}")
    return 0


# What a Ctrl-C leaves behind, per command (`main` prints it).
def kept_lines(args) -> str:
    return (f"the {args.done} result(s) printed above are complete; {len(args.images) - args.done} of "
            f"{len(args.images)} image(s) were not done")


def kept_demo(args) -> str:
    return f"what finished is in {args.output_dir} (the model in {Path(args.output_dir) / DEMO_MODEL_FOLDER} once trained)"


def kept_train(args) -> str:
    output_dir = getattr(args, "output_dir", None) or f"outputs/train/{Path(args.recipe).stem}"
    return f"checkpoints saved so far are in {output_dir}; the same command with --resume continues from the last"


def kept_convert(args) -> str:
    return f"{args.output} is incomplete: delete it and convert again"


def kept_nothing(args) -> str:
    return "nothing was written"


def kept_push(args) -> str:
    return "no commit was made (the upload commits once, at the end); run it again"


def kept_prepare(args) -> str:
    return f"{args.output_dir} may be incomplete: prepare it again"


# ------------------------------------------------------------------------------------------------ parser
def add_photo_options(command, dtype: bool = False) -> None:
    """The photos, their bounds and the model options of `caption` and `saliency`."""
    command.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ... anything Pillow reads)")
    command.add_argument("--model", required=True, help="model folder (with config.json) or Hub id (owner/name)")
    command.add_argument("--max-tiles", type=int, metavar="N",
                         help="at most N 448 px tiles per photo (default: the model's own setting, its image "
                              "processor's max_patches)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1, mps ... (default: cuda when available)")
    if dtype:
        add_dtype_option(command)
    add_photo_limit_options(command)


def add_dtype_option(command) -> None:
    command.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                         help="weights' dtype (auto: bfloat16 on cuda, float32 otherwise)")


def add_photo_limit_options(command) -> None:
    """`--max-megapixels` and `--max-file-mb` (read by `photo_limits`)."""
    command.add_argument("--max-megapixels", type=positive_float, metavar="MP",
                         help="refuse a photo with more megapixels than this, before decoding it (default: "
                              "Pillow's decompression-bomb threshold, PIL.Image.MAX_IMAGE_PIXELS)")
    command.add_argument("--max-file-mb", type=positive_float, metavar="MB", default=DEFAULT_MAX_FILE_MB,
                         help="refuse a photo file larger than this (default: %(default)g)")


def build_parser() -> argparse.ArgumentParser:
    from .evaluation import add_evaluate_command
    from .metrics import add_metric_arguments
    from .serve_command import add_serve_command

    parser = argparse.ArgumentParser(prog="ase-mllm", description="ASE-MLLM: aesthetic image captioning with saliency.")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also: {DEBUG_ENV}=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str, handler, kept=kept_nothing, **kwargs):
        command = commands.add_parser(name, help=help, description=description, **kwargs)
        command.set_defaults(handler=handler, kept=kept)
        return command

    run_demo = add("demo", "the embedded default: fine-tune a small model on the bundled mini set, evaluate, report",
                   "Build a small ASE-MLLM, fine-tune it on the bundled mini AIC set, reload it through the Auto "
                   "classes, caption and score the test photos, draw the saliency pictures and write report.md. "
                   "Offline, CPU, a few minutes.", demo, kept_demo)
    run_demo.add_argument("--output-dir", default=DEMO_OUTPUT_DIR, help="where it all goes (default: %(default)s)")
    run_demo.add_argument("--steps", type=positive_int, default=300, help="training steps (default: %(default)s)")
    run_demo.add_argument("--max-new-tokens", type=positive_int, default=40,
                          help="longest critique, in tokens (default: %(default)s)")
    add_metric_arguments(run_demo)

    run_caption = add("caption", "critique photos from an aesthetic perspective",
                      "Critique each photo with the model. One line per photo (`path: critique`, or a JSON object "
                      "with --json), printed as soon as its batch is done. A photo that fails is reported by name, "
                      "the others go on, and the exit status is 1.", caption, kept_lines)
    add_photo_options(run_caption, dtype=True)
    prompt = run_caption.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", type=non_empty, help="the question (default: the paper's prompt)")
    prompt.add_argument("--aspect", help="ask about one aspect, e.g. composition or color_lighting (a wrong name lists "
                                         "them all)")
    run_caption.add_argument("--batch-size", type=positive_int, default=4,
                             help="photos decoded and captioned together (default: %(default)s)")
    run_caption.add_argument("--max-new-tokens", type=positive_int, default=128,
                             help="longest critique, in tokens (default: %(default)s)")
    run_caption.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (default: %(default)s)")
    run_caption.add_argument("--temperature", type=non_negative_float, default=0.0,
                             help="> 0 samples at this temperature instead of decoding greedily (default: %(default)s)")
    run_caption.add_argument("--top-p", type=probability, default=1.0,
                             help="nucleus sampling mass, with --temperature (default: %(default)s)")
    run_caption.add_argument("--json", action="store_true", help="one JSON object per photo")
    run_caption.add_argument("--saliency-out", metavar="DIR",
                             help="also write each photo's saliency picture (PNG) into this folder")

    run_saliency = add("saliency", "draw what the model looks at: each photo with its saliency, beside every tile's map",
                       "Write, per photo, a PNG of the photo with its saliency overlaid beside the maps of all its "
                       "tiles (what the IAS-ViT receives). Prints each picture's path; a photo that fails is "
                       "reported by name and the exit status is 1.", saliency, kept_lines)
    add_photo_options(run_saliency)
    run_saliency.add_argument("--saliency-out", "--out", default="outputs/saliency", metavar="DIR",
                              help="folder for the pictures (default: %(default)s)")

    run_convert_eat = add("convert-eat", "check the released EAT AVA .pth (weights only, strict) and write safetensors",
                          "Read the EAT authors' AVA checkpoint with weights_only=True, check it strictly against "
                          "EAT's parameter names and shapes, and write it once as .safetensors.", convert_eat)
    run_convert_eat.add_argument("checkpoint", help="e.g. AVA_AOT_vacc_0.8259_srcc_0.7596_vlcc_0.7710.pth")
    run_convert_eat.add_argument("--output", "--out", help="the .safetensors to write (default: next to the checkpoint)")

    run_convert = add("convert", "build an ASE-MLLM folder from an InternVL2/2.5/3 checkpoint (+ EAT)",
                      "Convert an InternVL checkpoint folder (OpenGVLab remote-code or transformers format) into an "
                      "ASE-MLLM folder, streaming shard by shard; the new IAS weights start at a zero gate. A source "
                      "tokenizer.model (InternLM2's, InternVL2-2B/8B/26B) is read with sentencepiece and protobuf: "
                      'pip install "ase-mllm[convert]". The output needs neither, nor any tokenizer remote code.',
                      convert, kept_convert)
    run_convert.add_argument("source", help="InternVL checkpoint folder (OpenGVLab remote-code or transformers format)")
    run_convert.add_argument("output", help="folder to write")
    run_convert.add_argument("--eat", help="EAT AVA checkpoint (.pth or .safetensors); without it: spectral residual")
    run_convert.add_argument("--max-shard-size", type=positive_int, metavar="BYTES",
                             help="bytes per output shard (default: convert.DEFAULT_MAX_SHARD_SIZE, 5 GiB)")
    run_convert.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                             help="dtype of every floating tensor written (default: the source's)")

    run_push = add("push", "publish a saved ASE-MLLM folder to the Hugging Face Hub",
                   "Check that the folder carries its auto_map and remote code, then upload it with "
                   "HfApi.upload_folder (token from HF_TOKEN or `hf auth login`).", push, kept_push)
    run_push.add_argument("folder", help="a saved ASE-MLLM folder")
    run_push.add_argument("--repo-id", required=True, help="e.g. you/ase-mllm-pccd")
    run_push.add_argument("--private", action="store_true", help="create the repo private")
    run_push.add_argument("--dry-run", action="store_true", help="list the files and auto_map; upload nothing")

    run_train = add("train", "fine-tune ASE-MLLM from a recipe; `accelerate launch` it for DDP, FSDP or DeepSpeed ZeRO-3",
                    "Fine-tune with transformers' Trainer or TRL's SFTTrainer from a recipe (configuration/recipes), "
                    "saving checkpoints and the final model in --output-dir.", train, kept_train)
    run_train.add_argument("--recipe", required=True,
                           help="recipe name (a YAML file of configuration/recipes: pccd, dpc2022, mini ...) or a path")
    run_train.add_argument("--dataset", "--data", dest="data",
                           help=f"dataset name ({DATASET_NAMES}) or a save_to_disk folder (default: the recipe's)")
    run_train.add_argument("--data-root", "--root", help="the dataset's folder, for a dataset name")
    run_train.add_argument("--model", help="checkpoint folder or Hub id (default: the recipe's; 'tiny' = a random "
                                           "tiny model)")
    # SUPPRESS: absent unless given, so that the default can name the recipe (outputs/train/<recipe>).
    run_train.add_argument("--output-dir", default=argparse.SUPPRESS,
                           help="checkpoints and the final model (default: outputs/train/<recipe>)")
    run_train.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps")
    run_train.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                           help="continue from the last checkpoint in --output-dir, or from CHECKPOINT")

    add_evaluate_command(commands)
    add_serve_command(commands)

    prepare = add("prepare-data", "read a dataset release (PCCD, RPCD, DPC2022, AVA-Captions) and save it",
                  "Read an AIC dataset release and save it as a datasets.DatasetDict (save_to_disk, images "
                  "embedded).", prepare_data, kept_prepare)
    prepare.add_argument("--dataset", required=True, help=DATASET_NAMES)
    prepare.add_argument("--data-root", "--root", help="the release's folder (not needed for mini_aic)")
    prepare.add_argument("--output-dir", "--out", required=True, help="folder for DatasetDict.save_to_disk")
    prepare.add_argument("--image-dir", help="image folder, if not the release's default place")
    prepare.add_argument("--split", action="append", dest="splits", help="read only this split (repeatable)")

    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=f"show tracebacks (also: {DEBUG_ENV}=1)")
        command.set_defaults(parser=command, done=0)
        if command.get_default("kept") is None:
            command.set_defaults(kept=kept_nothing)
    return parser


# -------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    name = f"ase-mllm {args.command}"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        message, status = f"{name}: interrupted; {args.kept(args)}", 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # noqa: BLE001  (one line for the user; --debug for the traceback)
        if debug:
            raise
        expected = isinstance(error, (ValueError, OSError, LookupError))
        kind = "error" if expected else f"internal error ({type(error).__name__}, please report it with --debug)"
        message, status = f"{name}: {kind}: {one_line(error)}", 1
    # Printed once the exception (and the frames it holds) is gone, so that a progress bar closed by their
    # release does not write after the message.
    print(message, file=sys.stderr)
    return status

if __name__ == "__main__":
    sys.exit(main())
