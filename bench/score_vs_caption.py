"""`ase-mllm score` (EAT alone) against `ase-mllm caption` (critique + score) per photo, on the demo's model.

    python bench/score_vs_caption.py [--model FOLDER] [--photos 8] [--repeats 3] [--max-new-tokens 40]

The demo's model is the `tiny` preset `ase-mllm demo` fine-tunes (default: a random one of that architecture, saved
to a temporary folder; `--model outputs/demo/model` measures the trained one). Two measurements, both in this run:

- in process, model loaded once: the median time per photo of `inference.scores.iter_photo_scores` (what `score`
  runs: EAT's loader, one EAT forward per batch) and of `inference.captioning.iter_critiques` (what `caption` runs:
  tiles, EAT + LayerCAM, the ViT, generation, and the score);
- the commands themselves, as a user runs them (process start and model load included): wall time over the photos.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import median_seconds

from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model


def photos_in(folder: Path, count: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng, paths = np.random.default_rng(0), []
    for index in range(count):
        height, width = 360 + 40 * index, 640 - 20 * index
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        paths.append(folder / f"photo{index}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def command_seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modeling_ase_mllm.cli", *argv], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: a random model of the demo's architecture)")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40, help="the demo's critique length (default 40)")
    args = parser.parse_args()

    from modeling_ase_mllm.faithfulness.loading import load_model_eat
    from modeling_ase_mllm.inference.captioning import iter_critiques, load_model_and_processor
    from modeling_ase_mllm.inference.scores import iter_photo_scores

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = args.model
        if model_path is None:
            model_path = str(scratch / "model")
            build_tiny_model(seed=0).save_pretrained(model_path)
            build_processor().save_pretrained(model_path)
        photos = [str(path) for path in photos_in(scratch, args.photos)]
        generation = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}

        eat = load_model_eat(model_path)
        model, processor = load_model_and_processor(model_path, device="cpu")
        score_s = median_seconds(lambda: list(iter_photo_scores(eat.eat, eat.image_processor, photos, 4)),
                                 args.repeats) / len(photos)
        caption_s = median_seconds(lambda: list(iter_critiques(model, processor, photos, batch_size=4,
                                                               generation_config=generation, progress=False)),
                                   args.repeats) / len(photos)
        score_cli = command_seconds(["score", *photos, "--model", model_path])
        caption_cli = command_seconds(["caption", *photos, "--model", model_path, "--device", "cpu",
                                       "--max-new-tokens", str(args.max_new_tokens)])

    print(f"model: {args.model or 'random tiny (the demo architecture)'}; {len(photos)} photos, critiques of "
          f"{args.max_new_tokens} tokens, CPU")
    print(f"in process, per photo: score {score_s * 1e3:.1f} ms, caption {caption_s * 1e3:.1f} ms; "
          f"caption / score = {caption_s / score_s:.1f}x")
    print(f"commands, wall time for {len(photos)} photos: ase-mllm score {score_cli:.1f} s, ase-mllm caption "
          f"{caption_cli:.1f} s; caption / score = {caption_cli / score_cli:.1f}x")


if __name__ == "__main__":
    main()
