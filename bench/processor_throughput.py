"""(a) Processor throughput on real photos: images/s at 12 tiles + thumbnail, ours against transformers' own.

    python bench/processor_throughput.py [--repeats 5] [--photos-dir DIR] [--threads N] [--json]

The photos are scikit-image's astronaut, coffee, chelsea and rocket, resized up with PIL to 4032x3024, 3000x2000
and 1920x1080 and saved as JPEG (quality 90) into a temporary folder (or DIR). Every processor gets the file
paths, so decoding counts for all of them, as it does for a user's photos; one call per size, 4 photos a batch.

The reference is transformers' `GotOcr2ImageProcessorPil` set up as InternVL checkpoints set it up (448 px,
ImageNet mean/std, `crop_to_patches=True`, max 12 patches). Ours also prepares EAT's 224 px input
(`eat_layercam`, the default; EAT itself runs in the model, see saliency_cost.py), in three modes: exact
(InternVL's pixels, checked here against the reference), `fast_resize` + `fast_decode` ("fast"), and the
spectral-residual source (exact tiles + the classical saliency maps). The fast options' error against the exact
pixels is measured on the same photos, each option alone and both together. Ours works on
`torch.get_num_threads()` threads (`--threads` sets it; the reference has one): `--threads 1` compares the work
alone.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from common import interleaved_medians, load_average
from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor
from modeling_ase_mllm.data.mini_aic import load_skimage_photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZES = ((4032, 3024), (3000, 2000), (1920, 1080))
REFERENCE = "internvl (transformers)"
EXACT = "ase_mllm exact"
FAST = "ase_mllm fast"
FAST_OPTIONS = {"fast_resize": {"fast_resize": True}, "fast_decode": {"fast_decode": True},
                "both": {"fast_resize": True, "fast_decode": True}}


def make_photos(folder: Path) -> dict[str, list[str]]:
    """JPEG paths by size (`"4032x3024"`: 4 photos), written once into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = {}
    for width, height in SIZES:
        paths = []
        for name in PHOTOS:
            path = folder / f"{name}_{width}x{height}.jpg"
            if not path.exists():
                load_skimage_photo(name).convert("RGB").resize((width, height), Image.BICUBIC).save(path, quality=90)
            paths.append(str(path))
        photos[f"{width}x{height}"] = paths
    return photos


def fast_error(ours, paths: list[str]) -> dict:
    """Largest and mean |fast - exact| of `pixel_values` and `saliency_pixel_values`, and the fraction of tile
    values that moved by more than 1e-6, for each fast option."""
    exact = ours(paths, return_tensors="pt")
    errors = {}
    for name, options in FAST_OPTIONS.items():
        fast = ours(paths, return_tensors="pt", **options)
        tiles = (fast["pixel_values"] - exact["pixel_values"]).abs()
        eat = (fast["saliency_pixel_values"] - exact["saliency_pixel_values"]).abs()
        errors[name] = {"tiles_max": tiles.max().item(), "tiles_mean": tiles.mean().item(),
                        "tiles_changed": (tiles > 1e-6).float().mean().item(),
                        "eat_max": eat.max().item(), "eat_mean": eat.mean().item()}
    return errors


def measure(repeats: int = 5, photos_dir: str | None = None, threads: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    reference = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD,
        crop_to_patches=True, max_patches=12,
    )
    ours = AseMllmImageProcessor(max_patches=12)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        photos = make_photos(Path(photos_dir or scratch))
        result = {"photos_per_size": len(PHOTOS), "threads": torch.get_num_threads(), "sizes": {},
                  "load_average": {"before": load_before}}
        total = {}
        for size, paths in photos.items():
            fns = {
                REFERENCE: lambda paths=paths: reference(paths, return_tensors="pt"),
                EXACT: lambda paths=paths: ours(paths, return_tensors="pt"),
                FAST: lambda paths=paths: ours(paths, return_tensors="pt", fast_resize=True, fast_decode=True),
                "ase_mllm spectral residual": lambda paths=paths: ours(
                    paths, saliency_source="spectral_residual", return_tensors="pt"),
            }
            exact, theirs = fns[EXACT](), fns[REFERENCE]()
            seconds = interleaved_medians(fns, repeats)
            for name, value in seconds.items():
                total[name] = total.get(name, 0.0) + value
            result["sizes"][size] = {
                "tiles_per_image": exact["num_patches"].tolist(),
                "exact_vs_reference_max_abs": (exact["pixel_values"] - theirs["pixel_values"]).abs().max().item(),
                "images_per_s": {name: len(paths) / value for name, value in seconds.items()},
                "ratio": {name: seconds[REFERENCE] / value for name, value in seconds.items()},
                "fast_error": fast_error(ours, paths),
            }
    result["overall"] = {
        "images_per_s": {name: len(PHOTOS) * len(SIZES) / value for name, value in total.items()},
        "ratio": {name: total[REFERENCE] / value for name, value in total.items()},
    }
    result["load_average"]["after"] = load_average()
    return result


def report(result: dict) -> str:
    load = result["load_average"]
    lines = [f"processor throughput on real photos: JPEG paths, {result['photos_per_size']} a batch, max 12 tiles "
             f"+ thumbnail, ours on {result['threads']} threads; load average before {load['before']}, "
             f"after {load['after']}"]
    for size, row in [*result["sizes"].items(), ("overall", result["overall"])]:
        tiles = f" ({'/'.join(map(str, row['tiles_per_image']))} tiles)" if "tiles_per_image" in row else ""
        lines.append(f"{size}{tiles}:")
        lines += [f"  {name:30}{value:8.2f} images/s  ×{row['ratio'][name]:.2f}" for name, value in row["images_per_s"].items()]
        if "fast_error" in row:
            lines.append(f"  exact mode vs transformers' pixel_values: max |diff| {row['exact_vs_reference_max_abs']:.1e}")
            lines += [f"  {name} vs exact: tiles max {e['tiles_max']:.4f}, mean {e['tiles_mean']:.5f}, "
                      f"{e['tiles_changed']:.2%} changed; EAT input max {e['eat_max']:.4f}, mean {e['eat_mean']:.5f}"
                      for name, e in row["fast_error"].items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--photos-dir", help="keep the generated JPEGs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for ours (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.repeats, args.photos_dir, args.threads)
    print(json.dumps(result) if args.json else report(result))
    return result


if __name__ == "__main__":
    main()
