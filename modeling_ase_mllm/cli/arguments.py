"""What the commands share: argument types, the checks that run before a model loads, and common options.

Each check takes the command's parser and ends the run through `parser.error` (usage + one sentence naming the
flag and what it accepts, status 2). Nothing here imports torch, transformers or datasets at module level: the
parser of every command is built from it, and `ase-mllm --help` must answer at once.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path

from ..data.registry import DATASET_NAMES
from ..evaluation.spice import PR_VARIANTS
from ..inference.photos import DEFAULT_MAX_FILE_MB
from ..utils.quantization import QUANTIZATION_HELP, QUANTIZATION_SCHEMES
from ..utils.suggestions import did_you_mean


# `ase-mllm --debug` / `ASE_MLLM_DEBUG=1`: tracebacks instead of one-line errors.
DEBUG_ENV = "ASE_MLLM_DEBUG"
# The reader names, for help texts.
DATASET_HELP = ", ".join(DATASET_NAMES[:-1]) + " or " + DATASET_NAMES[-1]


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


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    return _number(text, int, lambda value: value >= 0, "a whole number >= 0")


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
    from ..image_processing_ase_mllm import MAX_TILES

    if not 1 <= value <= MAX_TILES:
        parser.error(f"argument --max-tiles: must be between 1 and {MAX_TILES}, got {value}")


def check_aspect(parser, value: str | None) -> None:
    if value is not None:
        from ..data.prompts import ASPECT_PHRASES

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
    from ..data.registry import canonical_dataset_name

    try:
        canonical_dataset_name(value)
    except ValueError:
        parser.error(f"argument {flag}: {value!r} is neither a folder nor a dataset name"
                     f"{did_you_mean(value.lower(), DATASET_NAMES)}; the names are {', '.join(DATASET_NAMES)}")


def photo_limits(args):
    from ..inference.photos import PhotoLimits

    return PhotoLimits(max_megapixels=args.max_megapixels, max_file_mb=args.max_file_mb)


def load_model(args, **options):
    """`inference.captioning.load_model_and_processor` for `--model` (with `--quantization`, printing what stayed in
    floating point), failing in one line that names it."""
    from ..inference.captioning import load_model_and_processor

    try:
        model, processor = load_model_and_processor(
            args.model, device=args.device, quantization=getattr(args, "quantization", None), **options)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {args.model!r} could not be loaded: {one_line(error)}") from error
    report_precision(model, getattr(args, "quantization", None))
    return model, processor


def add_quantization_option(command) -> None:
    command.add_argument("--quantization", choices=QUANTIZATION_SCHEMES, help=QUANTIZATION_HELP)


def check_quantization(parser, value: str | None) -> None:
    """The scheme's library is installed (one line naming the extra, before any model loads)."""
    if value is None:
        return
    from ..utils.quantization import quantization_config

    try:
        quantization_config(value)
    except ImportError as error:
        parser.error(f"argument --quantization: {error}")


def report_precision(model, scheme: str | None) -> None:
    """With a quantised load, say on stderr what was quantised and what stayed in floating point."""
    if scheme is not None:
        from ..utils.quantization import describe_precision

        print(describe_precision(model, scheme), file=sys.stderr, flush=True)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.strerror:  # without "[Errno 28]"
        text = f"{error.strerror}: {error.filename}" if error.filename else " ".join(error.strerror.split())
    return text or type(error).__name__


def add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """The SPICE-family flags that `ase-mllm evaluate` and `demo` share; `metric_options` reads them."""
    group = parser.add_argument_group("SPICE, SPICE-L, Precision, Recall (official SPICE 1.0 on Stanford CoreNLP 3.6.0)")
    group.add_argument("--spice-corenlp-dir",
                       help="folder that holds (or receives) the CoreNLP 3.6.0 jars (default: $SPICE_CORENLP_DIR, "
                            "else ~/.cache/ase_mllm/spice)")
    group.add_argument("--no-download", action="store_true",
                       help="never fetch the CoreNLP jars from Maven Central (also: SPICE_NO_DOWNLOAD=1)")
    group.add_argument("--spice-heap", help="the SPICE JVM's maximum heap, e.g. 6g (default: $SPICE_JAVA_HEAP, else 4g)")
    group.add_argument("--spice-threads", type=int, help="SPICE parsing threads (default: one per processor, at most 4)")
    group.add_argument("--no-spice", action="store_true", help="leave the four SPICE-family metrics out (n/a)")
    group.add_argument("--pr-variant", choices=PR_VARIANTS, default="independent",
                       help="Precision/Recall: independent maxima over references (the paper's definition), or "
                            "those of the best-F reference (spice_best.py)")


def metric_options(args: argparse.Namespace) -> dict:
    """`score_predictions` keyword arguments from `add_metric_arguments`' flags (bad values fail here, before any
    captioning)."""
    from ..evaluation.spice import SpiceOptions

    spice = False if args.no_spice else SpiceOptions(
        corenlp_dir=args.spice_corenlp_dir, download=False if args.no_download else None, heap=args.spice_heap,
        threads=args.spice_threads,
    )
    return {"spice": spice, "pr_variant": args.pr_variant}


def add_photo_options(command, dtype: bool = False, images: bool = True,
                      max_file_mb: float = DEFAULT_MAX_FILE_MB, quantization: bool = False) -> None:
    """The photos, their bounds and the model options of `caption` and `saliency` (`serve`: all but the photos, with
    its own `max_file_mb` default)."""
    if images:
        command.add_argument("images", nargs="+", metavar="IMAGE",
                             help="image files (JPEG, PNG, ... anything Pillow reads)")
    command.add_argument("--model", required=True, help="model folder (with config.json) or Hub id (owner/name)")
    command.add_argument("--max-tiles", type=int, metavar="N",
                         help="at most N 448 px tiles per photo (default: the model's own setting, its image "
                              "processor's max_patches)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1, mps ... (default: cuda when available)")
    if dtype:
        command.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                             help="weights' dtype (auto: bfloat16 on cuda, float32 otherwise)")
    if quantization:
        add_quantization_option(command)
    command.add_argument("--max-megapixels", type=positive_float, metavar="MP",
                         help="refuse a photo with more megapixels than this, before decoding it (default: "
                              "Pillow's decompression-bomb threshold, PIL.Image.MAX_IMAGE_PIXELS)")
    command.add_argument("--max-file-mb", type=positive_float, metavar="MB", default=max_file_mb,
                         help="refuse a photo file larger than this (default: %(default)g)")


def check_photo_options(args) -> None:
    """The checks of `add_photo_options`' model options (the photos themselves are checked one by one, later)."""
    check_model(args.parser, args.model)
    check_max_tiles(args.parser, args.max_tiles)
    check_device(args.parser, args.device)
    check_quantization(args.parser, getattr(args, "quantization", None))


def print_counted(args, line: str, file=None) -> None:
    """Print one result and count it in `args.done` (what a Ctrl-C reports as kept) as one step: Python looks for a
    Ctrl-C right after the flush has written the line, and one raised there would leave a printed result uncounted.
    A Ctrl-C in between is raised once both are done."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        print(line, file=file, flush=True)
        args.done += 1
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        print(line, file=file, flush=True)
        args.done += 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def report_failures(failed: list[str], total: int) -> int:
    if failed:
        print(f"{len(failed)} of {total} image(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def kept_lines(args) -> str:
    """What a Ctrl-C leaves behind in `caption` and `saliency`: the lines already printed."""
    return (f"the {args.done} result(s) printed above are complete; {len(args.images) - args.done} of "
            f"{len(args.images)} image(s) were not done")
