"""(a) Processor throughput: images/s at 12 tiles, ASE-MLLM's processor against transformers' own InternVL one.

    python bench/processor_throughput.py [--images 8] [--repeats 3]

The reference is transformers' `GotOcr2ImageProcessorPil` set up as InternVL checkpoints set it up (448 px,
ImageNet mean/std, `crop_to_patches=True`, max 12 patches); ours additionally prepares EAT's 224 px input
(`eat_layercam`, the default; EAT itself runs in the model, see saliency_cost.py), computes the spectral-residual
maps, or skips that work (`uniform`).
"""

import argparse
import json

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from common import image_for_tiles, interleaved_medians
from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor


def measure(images=8, repeats=3) -> dict:
    photos = [image_for_tiles(1, seed=i).resize((1792, 1344)) for i in range(images)]  # 4x3 = 12 tiles each
    reference = GotOcr2ImageProcessorPil(
        size={"height": 448, "width": 448}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD,
        crop_to_patches=True, max_patches=12,
    )
    ours = AseMllmImageProcessor()
    fns = {
        "ase_mllm (eat_layercam input)": lambda: ours(photos, return_tensors="pt"),
        "ase_mllm (spectral residual)": lambda: ours(photos, saliency_source="spectral_residual", return_tensors="pt"),
        "ase_mllm (uniform)": lambda: ours(photos, saliency_source="uniform", return_tensors="pt"),
        "internvl (transformers)": lambda: reference(photos, return_tensors="pt"),
    }
    tiles = int(ours(photos[:1], return_tensors="pt")["pixel_values"].shape[0])
    seconds = interleaved_medians(fns, repeats)
    per_second = {name: images / value for name, value in seconds.items()}
    base = per_second["internvl (transformers)"]
    return {"images": images, "tiles_per_image": tiles, "images_per_s": per_second,
            "ratio": {name: value / base for name, value in per_second.items()}}


def report(result: dict) -> str:
    lines = [f"processor throughput, {result['images']} photos of 1792x1344 ({result['tiles_per_image']} tiles each)"]
    lines += [f"{name:30}{value:8.2f} images/s  ×{result['ratio'][name]:.2f}" for name, value in result["images_per_s"].items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.images, args.repeats)
    print(json.dumps(result) if args.json else report(result))
    return result


if __name__ == "__main__":
    main()
