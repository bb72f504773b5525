"""`ase-mllm` command line."""

import argparse
import sys
from pathlib import Path

from .aic_datasets import main as prepare_data_main
from .convert import add_convert_command
from .evaluation import add_evaluate_command
from .metrics import add_metric_arguments
from .publish import add_push_command
from .training import add_train_command


def demo(args) -> int:
    """The embedded default: fine-tune, publish, reload, evaluate and caption a small model, then report."""
    from .demo import run_demo
    from .metrics import metric_options

    run_demo(args.output_dir, steps=args.steps, max_new_tokens=args.max_new_tokens, **metric_options(args))
    return 0


def caption(args) -> int:
    """Critique photos; print one line (or JSON object) per photo; exit 1 if any photo failed."""
    from .captioning import critique_images, critique_prompt, format_critiques, load_model_and_processor

    model, processor = load_model_and_processor(args.model, device=args.device, dtype=args.dtype)
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.temperature > 0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    results = critique_images(
        model, processor, args.images, prompt=critique_prompt(args.prompt, args.aspect), max_tiles=args.max_tiles,
        batch_size=args.batch_size, generation_config=generation, saliency_out=args.saliency_out,
    )
    for line in format_critiques(results, args.json):
        print(line)
    failed = [r.image for r in results if r.error is not None]
    if failed:
        print(f"{len(failed)} of {len(results)} image(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def saliency(args) -> int:
    """Write the saliency picture (overlay + per-tile maps) of each photo; exit 1 if any photo failed."""
    from .captioning import load_model_and_processor
    from .visualize import save_saliency_picture

    model, processor = load_model_and_processor(args.model, device=args.device)
    failed = 0
    for index, image in enumerate(args.images):
        target = Path(args.out) / f"{index:04d}_{Path(image).stem}_saliency.png"
        try:
            print(save_saliency_picture(image, target, processor, model, args.max_tiles))
        except (OSError, ValueError) as error:
            failed += 1
            print(f"{image}: {error}", file=sys.stderr)
    return 1 if failed else 0


def convert_eat(args) -> int:
    """Check the released EAT `.pth` strictly and write it once as safetensors."""
    from .eat_checkpoint import convert_eat_checkpoint

    print(convert_eat_checkpoint(args.checkpoint, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ase-mllm", description="ASE-MLLM: aesthetic image captioning.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="the embedded default: fine-tune a small model on the bundled mini set, evaluate, caption, report"
    )
    run_demo.add_argument("--output-dir", default="outputs/demo")
    run_demo.add_argument("--steps", type=int, default=300, help="training steps (300 take about two minutes on 2 cores)")
    run_demo.add_argument("--max-new-tokens", type=int, default=40)
    add_metric_arguments(run_demo)
    run_demo.set_defaults(handler=demo)

    run_caption = commands.add_parser("caption", help="critique photos from an aesthetic perspective")
    run_caption.add_argument("images", nargs="+", help="image files")
    run_caption.add_argument("--model", required=True, help="model folder or Hub id")
    prompt = run_caption.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="the question (default: the paper's prompt)")
    prompt.add_argument("--aspect", help="aspect-conditioned prompt, e.g. composition, color_lighting, focus")
    run_caption.add_argument("--max-tiles", type=int, help="max 448 px tiles per photo (1..40; default 12)")
    run_caption.add_argument("--batch-size", type=int, default=4)
    run_caption.add_argument("--max-new-tokens", type=int, default=128)
    run_caption.add_argument("--num-beams", type=int, default=1)
    run_caption.add_argument("--temperature", type=float, default=0.0, help="> 0 samples instead of greedy decoding")
    run_caption.add_argument("--top-p", type=float, default=1.0)
    run_caption.add_argument("--json", action="store_true", help="one JSON object per photo")
    run_caption.add_argument("--saliency-out", help="write a saliency picture (PNG) per photo into this folder")
    run_caption.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    run_caption.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    run_caption.set_defaults(handler=caption)

    run_saliency = commands.add_parser(
        "saliency", help="write what the model looks at: each photo with its saliency overlaid, beside every tile's map"
    )
    run_saliency.add_argument("images", nargs="+", help="image files")
    run_saliency.add_argument("--model", required=True, help="model folder or Hub id")
    run_saliency.add_argument("--out", default="outputs/saliency", help="folder for the PNGs")
    run_saliency.add_argument("--max-tiles", type=int, help="max 448 px tiles per photo (1..40; default 12)")
    run_saliency.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    run_saliency.set_defaults(handler=saliency, output_dir=None)

    run_convert_eat = commands.add_parser(
        "convert-eat", help="check the released EAT AVA .pth (weights only, strict) and write it once as safetensors"
    )
    run_convert_eat.add_argument("checkpoint", help="e.g. AVA_AOT_vacc_0.8259_srcc_0.7596_vlcc_0.7710.pth")
    run_convert_eat.add_argument("--out", help="the .safetensors to write (default: next to the checkpoint)")
    run_convert_eat.set_defaults(handler=convert_eat)

    add_convert_command(commands)
    add_push_command(commands)
    add_train_command(commands)
    add_evaluate_command(commands)

    prepare = commands.add_parser(
        "prepare-data", add_help=False, help="read a dataset release (PCCD, RPCD, DPC2022, AVA-Captions) and save it"
    )
    prepare.add_argument("arguments", nargs=argparse.REMAINDER, help="see `ase-mllm prepare-data --help`")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["prepare-data"]:  # its own parser (argparse's REMAINDER cannot pass leading options on)
        return prepare_data_main(argv[1:], prog="ase-mllm prepare-data")
    args = build_parser().parse_args(argv)
    Path(getattr(args, "output_dir", None) or ".").mkdir(parents=True, exist_ok=True)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
