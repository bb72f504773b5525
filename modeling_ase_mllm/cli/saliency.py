"""`ase-mllm saliency`: the picture of what the model looks at, per photo (its saliency beside every tile's map)."""

import sys

from .arguments import (
    add_photo_options, check_output_folder, check_photo_options, kept_lines, load_model, photo_limits, print_counted,
    report_failures,
)


def add_parser(subparsers):
    command = subparsers.add_parser(
        "saliency", help="draw what the model looks at: each photo with its saliency, beside every tile's map",
        description="Write, per photo, a PNG of the photo with its saliency overlaid beside the maps of all its "
                    "tiles (what the IAS-ViT receives). Prints each picture's path; a photo that fails is "
                    "reported by name and the exit status is 1.")
    add_photo_options(command)
    command.add_argument("--saliency-out", "--out", default="outputs/saliency", metavar="DIR",
                         help="folder for the pictures (default: %(default)s)")
    command.set_defaults(handler=main, kept=kept_lines)
    return command


def main(args) -> int:
    """Write the saliency picture (overlay + per-tile maps) of each photo; exit 1 if any photo failed."""
    check_photo_options(args)
    check_output_folder(args.parser, "--saliency-out", args.saliency_out)  # last: it creates the folder
    from ..inference.captioning import PER_FILE_ERRORS, image_names, saliency_picture_path
    from ..inference.photos import read_photo
    from ..inference.visualize import save_saliency_picture

    model, processor = load_model(args)
    limits, failed = photo_limits(args), []
    for index, (name, source) in enumerate(zip(image_names(args.images), args.images)):
        try:
            target = saliency_picture_path(args.saliency_out, index, name)
            picture = save_saliency_picture(read_photo(source, limits), target, processor, model, args.max_tiles)
        except PER_FILE_ERRORS as error:
            failed.append(name)
            print_counted(args, f"{name}: ERROR {error}", file=sys.stderr)
            continue
        print_counted(args, picture)
    return report_failures(failed, len(args.images))
