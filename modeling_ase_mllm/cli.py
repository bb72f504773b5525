"""`ase-mllm` command line."""

import argparse
import sys
from pathlib import Path

from .training import add_train_command


def demo(args) -> int:
    """Build a small random ASE-MLLM, publish it as a Hub folder, reload it with Auto classes, caption photos."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .tiny import build_processor, build_tiny_model

    out = Path(args.output_dir)
    folder = out / "ase-mllm-tiny"
    torch.manual_seed(0)
    model = build_tiny_model(gate=0.5)
    build_processor().save_pretrained(folder)
    model.save_pretrained(folder)
    print(f"[demo] saved a tiny ASE-MLLM Hub folder to {folder}")

    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    photos = sample_photos()
    lines = ["# ase-mllm demo", "", "A random tiny model: it shows the machinery, not caption quality.", ""]
    for name, photo in photos.items():
        messages = [
            {"role": "user", "content": [{"type": "image", "image": photo},
                                         {"type": "text", "text": "Comment on this image from an aesthetic perspective."}]}
        ]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        tokens = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        caption = processor.decode(tokens[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        maps = inputs["saliency_maps"]
        summary = f"{inputs['pixel_values'].shape[0]} tiles, saliency mean {float(maps.mean()):.2f}"
        print(f"[demo] {name} ({photo.size[0]}x{photo.size[1]}, {summary}): {caption!r}")
        lines.append(f"- **{name}** ({photo.size[0]}×{photo.size[1]}, {summary}): {caption!r}")
        Image.fromarray((np.asarray(maps[0]) * 255).astype(np.uint8)).resize((224, 224)).save(out / f"{name}_saliency_tile0.png")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"[demo] report: {report}")
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


def sample_photos() -> dict:
    """Real photos that scikit-image ships (no download)."""
    from PIL import Image
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "chelsea", "rocket")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ase-mllm", description="ASE-MLLM: aesthetic image captioning.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="the embedded default: build, publish, reload and run a small model")
    run_demo.add_argument("--output-dir", default="outputs/demo")
    run_demo.add_argument("--max-new-tokens", type=int, default=16)
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

    add_train_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    Path(getattr(args, "output_dir", ".")).mkdir(parents=True, exist_ok=True)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
