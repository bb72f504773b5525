"""`ase-mllm caption`: critique photos, one line (or JSON object) per photo as soon as its batch is done."""

import sys

from .arguments import (
    add_photo_options, check_aspect, check_output_folder, check_photo_options, kept_lines, load_model, non_empty,
    non_negative_float, photo_limits, positive_int, print_counted, probability, report_failures,
)


def add_parser(subparsers):
    command = subparsers.add_parser(
        "caption", help="critique photos from an aesthetic perspective",
        description="Critique each photo with the model. One line per photo (`path: [score] critique`, the score "
                    "being EAT's aesthetic score, or a JSON object with --json), printed as soon as its batch is "
                    "done. A photo that fails is reported by name, the others go on, and the exit status is 1.")
    add_photo_options(command, dtype=True, quantization=True)
    prompt = command.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", type=non_empty, help="the question (default: the paper's prompt)")
    prompt.add_argument("--aspect", help="ask about one aspect, e.g. composition or color_lighting (a wrong name lists "
                                         "them all)")
    command.add_argument("--batch-size", type=positive_int, default=4,
                         help="photos decoded and captioned together (default: %(default)s)")
    command.add_argument("--max-new-tokens", type=positive_int, default=128,
                         help="longest critique, in tokens (default: %(default)s)")
    command.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (default: %(default)s)")
    command.add_argument("--temperature", type=non_negative_float, default=0.0,
                         help="> 0 samples at this temperature instead of decoding greedily (default: %(default)s)")
    command.add_argument("--top-p", type=probability, default=1.0,
                         help="nucleus sampling mass, with --temperature (default: %(default)s)")
    command.add_argument("--json", action="store_true", help="one JSON object per photo")
    command.add_argument("--saliency-out", metavar="DIR",
                         help="also write each photo's saliency picture (PNG) into this folder")
    command.set_defaults(handler=main, kept=kept_lines)
    return command


def main(args) -> int:
    """Critique photos; print one line (or JSON object) per photo as its batch finishes; exit 1 if any failed."""
    check_photo_options(args)
    check_aspect(args.parser, args.aspect)
    check_output_folder(args.parser, "--saliency-out", args.saliency_out)  # last: it creates the folder
    from ..inference.captioning import critique_prompt, format_critique, iter_critiques
    from ..inference.scores import model_score_note
    from .score import print_score_note

    model, processor = load_model(args, dtype=args.dtype)
    print_score_note(model_score_note(model))
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.temperature > 0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    results = iter_critiques(
        model, processor, args.images, prompt=critique_prompt(args.prompt, args.aspect), max_patches=args.max_tiles,
        batch_size=args.batch_size, generation_config=generation, saliency_out=args.saliency_out,
        limits=photo_limits(args),
    )
    failed = []
    for result in results:
        print_counted(args, format_critique(result, args.json))
        if result.saliency_error is not None and not args.json:
            print(f"{result.image}: {result.saliency_error}", file=sys.stderr, flush=True)
        if result.failed:
            failed.append(result.image)
    return report_failures(failed, len(args.images))
