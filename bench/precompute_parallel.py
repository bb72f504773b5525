"""Saliency precompute over a dataset: one process against `datasets.map(num_proc=N)`, in one run.

    python bench/precompute_parallel.py [--images 16] [--num-proc 2] [--repeats 2] [--eat base|tiny]

EAT is DAT-Base (the paper's IASM, 224 px) unless `--eat tiny`; the photos are one tile each (448 px). Each variant is timed
`--repeats` times in alternation (minimum kept) with the cache off, and the maps are compared with the one-process
ones (they differ only by the thread count's float rounding: bit-equal at equal threads, tests/test_distributed_eval.py).
"""

import argparse
import os
import time

import datasets
import numpy as np

from common import build_processor, build_tiny_model, image_for_tiles, tiny_config
from modeling_ase_mllm.configuration_ase_mllm import AseMllmEatConfig
from modeling_ase_mllm.data.saliency import precompute_saliency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eat", choices=["base", "tiny"], default="base")
    args = parser.parse_args()
    config = tiny_config()
    if args.eat == "base":
        config.saliency_config.eat_config = AseMllmEatConfig()
    model, processor = build_tiny_model(config).eval(), build_processor()
    data = datasets.Dataset.from_dict({"image": [image_for_tiles(1, seed) for seed in range(args.images)]})
    data = data.cast_column("image", datasets.Image())
    times, maps = {1: [], args.num_proc: []}, {}
    for _ in range(args.repeats):
        for num_proc in times:
            start = time.perf_counter()
            result = precompute_saliency(data, model, processor, batch_size=4, num_proc=num_proc if num_proc > 1 else None,
                                         load_from_cache_file=False)
            maps[num_proc] = np.asarray(result["saliency"])
            times[num_proc].append(time.perf_counter() - start)
    one, many = min(times[1]), min(times[args.num_proc])
    print(f"\nEAT {args.eat}, {args.images} photos, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared machine)")
    print("| variant | seconds | images/s | speed-up |\n|---|---|---|---|")
    print(f"| one process | {one:.2f} | {args.images / one:.2f} | 1.00 |")
    print(f"| datasets.map(num_proc={args.num_proc}) | {many:.2f} | {args.images / many:.2f} | {one / many:.2f} |")
    print(f"max |maps(num_proc) - maps(1)| = {np.abs(maps[args.num_proc] - maps[1]).max():.2e}")


if __name__ == "__main__":
    main()
