"""`ase-mllm score`: EAT's aesthetic score of photos, loading only EAT (never the language model or the ViT)."""

import sys

from .arguments import (
    check_device, check_model, kept_lines, photo_limits, positive_float, positive_int, print_counted,
    report_failures,
)
from ..inference.photos import DEFAULT_MAX_FILE_MB


def add_parser(subparsers):
    command = subparsers.add_parser(
        "score", help="the aesthetic score of photos (EAT only: fast)",
        description="Print each photo's aesthetic score: EAT's AVA rating, Σ i·y_i over its ten raw outputs (as "
                    "EAT's get_score), the number `caption` shows beside each critique. Only the model's EAT is "
                    "loaded. One line per photo (`path: score`, or a JSON object with --json that adds the ten raw "
                    "outputs and the spread); a photo that fails is reported by name, the others go on, and the exit "
                    "status is 1.")
    command.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ... anything Pillow reads)")
    command.add_argument("--model", required=True, help="model folder (with config.json) or Hub id (owner/name)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1, mps ... (default: cpu)")
    command.add_argument("--batch-size", type=positive_int, default=16,
                         help="photos decoded and scored together (default: %(default)s)")
    command.add_argument("--json", action="store_true", help="one JSON object per photo")
    command.add_argument("--max-megapixels", type=positive_float, metavar="MP",
                         help="refuse a photo with more megapixels than this, before decoding it (default: "
                              "Pillow's decompression-bomb threshold, PIL.Image.MAX_IMAGE_PIXELS)")
    command.add_argument("--max-file-mb", type=positive_float, metavar="MB", default=DEFAULT_MAX_FILE_MB,
                         help="refuse a photo file larger than this (default: %(default)g)")
    command.set_defaults(handler=main, kept=kept_lines)
    return command


def print_score_note(note: str | None) -> None:
    """Say once, on stderr, that the scores that follow are untrained (nothing for a trained EAT)."""
    if note is not None:
        print(f"note: {note}", file=sys.stderr, flush=True)


def main(args) -> int:
    """Score photos with the model's EAT; one line (or JSON object) per photo; exit 1 if any failed."""
    check_model(args.parser, args.model)
    check_device(args.parser, args.device)
    from ..faithfulness.loading import load_model_eat
    from ..inference.scores import format_score, iter_photo_scores, untrained_note
    from ..scoring_ase_mllm import eat_is_trained

    loaded = load_model_eat(args.model, device=args.device or "cpu")
    print_score_note(untrained_note(eat_is_trained(loaded.eat.config)))
    failed = []
    for result in iter_photo_scores(loaded.eat, loaded.image_processor, args.images, args.batch_size,
                                    photo_limits(args)):
        print_counted(args, format_score(result, args.json))
        if result.error is not None:
            failed.append(result.image)
    return report_failures(failed, len(args.images))
