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
    add_train_command(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    Path(getattr(args, "output_dir", ".")).mkdir(parents=True, exist_ok=True)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
