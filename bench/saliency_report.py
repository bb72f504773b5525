"""The candidate sweep on the planted-region world: every LayerCAM layer and control, with the pointing game.

    python bench/saliency_report.py [--image-size 64|224] [--steps 500] [--photos 24] [--out outputs/bench-saliency]

Trains the planted-region EAT (`modeling_ase_mllm.testing.planted`; 64 px: maps 16/8/4/2, 224 px: EAT's own
56/28/14/7 grids), then runs the saliency report (`faithfulness.report.run_report`) over held-out photos whose
planted square is known, with every candidate layer and both LayerCAM targets. Prints each target's table (the
report's, plus the pointing game) and writes each report folder under `--out`. Deterministic for a seed: one thread.
The tables of docs/saliency.md come from this script.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.faithfulness.loading import LoadedEat  # noqa: E402
from modeling_ase_mllm.faithfulness.report import markdown_table, run_report  # noqa: E402
from modeling_ase_mllm.faithfulness.sources import CONTROL_SOURCES, candidate_layers, layercam_source  # noqa: E402
from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor  # noqa: E402
from modeling_ase_mllm.testing.planted import planted_photos, train_planted_eat  # noqa: E402


def print_pointing_table(eat, held_out, layers, targets) -> None:
    """Per layer (rows) and target (columns): the share of photos whose map peaks on the planted square."""
    from modeling_ase_mllm.eat_ase_mllm import layer_cam
    from modeling_ase_mllm.faithfulness.metrics import pointing_hit, upsample_map
    from modeling_ase_mllm.testing.planted import eat_pixels

    pixels = eat_pixels([planted.image for planted in held_out])
    side = eat.config.image_size
    print("| layer | grid | " + " | ".join(f"pointing, `{target}`" for target in targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for layer in layers:
        cells, grid = [], None
        for target in targets:
            hits = 0
            for index, planted in enumerate(held_out):  # one image at a time, as the report feeds EAT
                saliency = layer_cam(eat, pixels[index:index + 1], eat.get_submodule(layer), target)[0]
                grid = tuple(saliency.shape)
                hits += pointing_hit(upsample_map(saliency, side).numpy(), planted.region)
            cells.append(f"{hits / len(held_out):.2f}")
        print(f"| `{layer}` | {grid[0]}×{grid[1]} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64, choices=[64, 128, 224])
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--road-percentiles", default="10,30,50,70,90")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="top_bin,mean_score")
    parser.add_argument("--out", default="outputs/bench-saliency")
    parser.add_argument("--pointing-only", action="store_true",
                        help="only the pointing game of every layer and target (no report): cheap at 224 px")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.process_time()
    eat = train_planted_eat(steps=args.train_steps, seed=args.seed, image_size=args.image_size)
    print(f"trained the planted EAT at {args.image_size} px: {args.train_steps} steps, "
          f"{time.process_time() - started:.0f} s CPU", flush=True)
    held_out = planted_photos(args.photos, seed=args.seed + 1, side=args.image_size, min_contrast=0.4)
    photos = [(f"planted {index:03d}", planted.image) for index, planted in enumerate(held_out)]
    regions = {name: planted.region for (name, _), planted in zip(photos, held_out)}
    layers = list(candidate_layers(eat.config))
    if args.pointing_only:
        print_pointing_table(eat, held_out, layers, args.targets.split(","))
        return
    sources = list(CONTROL_SOURCES) + [layercam_source(layer) for layer in layers]
    for target in args.targets.split(","):
        loaded = LoadedEat(eat, eat.config.default_layercam_layer, target, AseMllmImageProcessor(),
                           f"the planted-region EAT ({args.image_size} px, {args.train_steps} steps, seed {args.seed})")
        started = time.process_time()
        summary = run_report(loaded, photos, Path(args.out) / f"{args.image_size}px-{target}", sources,
                             steps=args.steps, road_percentiles=[int(p) for p in args.road_percentiles.split(",")],
                             seed=args.seed, regions=regions, read=lambda image: image)
        print(f"\n## LayerCAM target `{target}` ({summary['photos']} photos, {time.process_time() - started:.0f} s CPU)\n")
        print(markdown_table(summary), flush=True)


if __name__ == "__main__":
    main()
