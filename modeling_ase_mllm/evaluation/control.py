"""The grounding control of the caption metrics: the same critiques scored against the references of other photos.

Similarity metrics reward a fluent house style as well as what is in the photo (a wrong-photo control in a study of
MLLM critiques on RPCD, arXiv 2606.29689). `shuffled`: a seeded derangement of the split pairs every photo's
references with the critique predicted for another photo, so no photo keeps its own; the eleven metrics are computed
both ways, and the gap (own minus shuffled) is what the critiques owe to the photos. A model that ignores the image
has a gap near zero; a constant critique has a gap of exactly zero for BLEU, METEOR, ROUGE-L and CIDEr, since every
reference set is then scored against the same text in the same order.

The predictions move, not the references, so the corpus statistics that come from the references (CIDEr-D's IDF,
the reference order of BLEU and METEOR) are those of the true scoring.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .vocabulary import METRICS


CONTROLS = ("shuffled",)
CONTROL_PAIRS_FILE = "control_pairs.json"


def derangement(n: int, seed: int) -> list[int]:
    """A permutation `p` of `range(n)` with `p[i] != i` for every i, uniform over such permutations, the same for
    the same `(n, seed)` on every machine (Python's `random.Random`)."""
    if n < 2:
        raise ValueError(f"the shuffled control needs at least 2 images, got {n}")
    rng = random.Random(seed)
    order = list(range(n))
    while True:  # about e tries on average
        rng.shuffle(order)
        if all(index != value for index, value in enumerate(order)):
            return order


def shuffled_pairs(image_ids: list[str], seed: int) -> dict[str, str]:
    """`{image whose critique is scored: image whose references it is scored against}`, a derangement of
    `image_ids` (in their order)."""
    order = derangement(len(image_ids), seed)
    return {image_ids[order[index]]: image_id for index, image_id in enumerate(image_ids)}


def gap(metrics: dict, control: dict) -> dict:
    """Own minus shuffled for each metric both have a number for (None otherwise)."""
    return {
        key: (metrics[key] - control[key])
        if isinstance(metrics.get(key), (int, float)) and isinstance(control.get(key), (int, float)) else None
        for key in METRICS
    }


def shuffled_captions(res: dict[str, list[str]], seed: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The captions moved to other photos: `(moved, pairs)`, `moved[reference image]` being the caption of
    `pairs`' other image, in `res`' order. `res`: PTB-tokenized captions by image id in split order (tokenizing is
    per caption, so moving tokenized captions equals tokenizing moved ones)."""
    pairs = shuffled_pairs(list(res), seed)
    moved = {reference_image: res[image] for image, reference_image in pairs.items()}
    return {image_id: moved[image_id] for image_id in res}, pairs


def control_record(seed: int, metrics: dict, scores: dict) -> dict:
    """`metrics.json`'s `control`: `{"kind": "shuffled", "seed", "metrics": {eleven}, "unavailable": {...},
    "gap": {eleven}}` from the true scores and the shuffled ones."""
    return {
        "kind": "shuffled",
        "seed": seed,
        "metrics": {key: scores[key] for key in METRICS},
        "unavailable": scores["unavailable"],
        "gap": gap(metrics, scores),
    }


def write_control_pairs(pairs: dict[str, str], output_dir) -> Path:
    """`control_pairs.json`: the image whose caption was scored -> the image whose references it was scored against."""
    path = Path(output_dir) / CONTROL_PAIRS_FILE
    path.write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["CONTROLS", "CONTROL_PAIRS_FILE", "control_record", "derangement", "gap", "shuffled_captions",
           "shuffled_pairs", "write_control_pairs"]
