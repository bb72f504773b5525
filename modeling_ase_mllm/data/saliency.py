"""Precompute EAT + LayerCAM saliency for a whole dataset once, with `datasets.map` (cached), and reuse it.

    ds = precompute_saliency(ds, model, processor, cache_file_name="cache/saliency.arrow")
    inputs = processor(images=..., text=..., image_saliency=[...])    # EAT is not run again
    AseMllmDataCollator(processor) passes an example's `saliency` column the same way (`training.collator`).

A precomputed map goes through the same tile mapping (`map_saliency_to_tiles`) as one computed inside the
model, so on the same device both give bit-identical model outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from .fingerprint import update_with_tensors
from ..image_processing_ase_mllm import open_image, to_rgb


SALIENCY_COLUMN = "saliency"
logger = logging.getLogger(__name__)


def saliency_fingerprint(model, processor, image_column: str, dataset=None) -> str:
    """Fingerprint of what determines the maps: EAT's weights, the saliency config, the input size and, given a
    `datasets.Dataset`, its own fingerprint (which rows and images it holds)."""
    digest = hashlib.sha256()
    saliency_config = model.config.saliency_config.to_dict()
    digest.update(json.dumps(saliency_config, sort_keys=True, default=str).encode())
    digest.update(f"{processor.image_processor.saliency_image_size}|{image_column}".encode())
    if dataset is not None:
        digest.update(f"|dataset={dataset._fingerprint}".encode())
    update_with_tensors(digest, model.model.saliency_model)
    return digest.hexdigest()[:32]


def example_image_list(value) -> list:
    """An `image` cell (one image) or an `images` cell (a list) as a list of images."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def compute_image_saliency(model, processor, images: list) -> list[np.ndarray]:
    """EAT + LayerCAM maps of whole images, `(h, w)` float32 each, in order."""
    if not images:
        return []
    images = [to_rgb(open_image(image)) for image in images]
    inputs = processor.image_processor(images, saliency_source="eat_layercam", max_patches=1, return_tensors="pt")
    pixels = inputs["saliency_pixel_values"].to(model.device, model.dtype)
    with torch.no_grad():
        maps = model.get_image_saliency(pixels)
    return [m.cpu().numpy().astype(np.float32) for m in maps]


def precompute_saliency(dataset, model, processor, image_column: str = "image", column: str = SALIENCY_COLUMN,
                        batch_size: int = 8, **map_kwargs):
    """Add a `column` holding, per example, one `(h, w)` map per image of `image_column` (`image` or `images`).

    Runs `dataset.map(batched=True)` with a fingerprint of EAT's weights and the saliency config, so a second call
    with the same model reuses the cache (give `cache_file_name=` for in-memory datasets). EAT is batch-invariant
    here, so `batch_size` changes speed only.
    """
    import datasets

    if image_column not in dataset.column_names:
        raise ValueError(f"dataset has no {image_column!r} column (columns: {dataset.column_names}).")
    if getattr(model.model, "saliency_model", None) is None:
        raise ValueError("the model has no EAT (saliency source is not 'eat_layercam'); nothing to precompute.")

    def add_maps(batch):
        per_example = [example_image_list(value) for value in batch[image_column]]
        flat = compute_image_saliency(model, processor, [image for images in per_example for image in images])
        maps, start = [], 0
        for images in per_example:
            maps.append(np.stack(flat[start : start + len(images)]) if images else np.zeros((0, 1, 1), np.float32))
            start += len(images)
        return {column: maps}

    # The map's grid depends on the LayerCAM layer; one probe image tells it.
    side = model.config.saliency_config.eat_config.image_size
    with torch.no_grad():
        probe = model.get_image_saliency(torch.zeros(1, 3, side, side, device=model.device, dtype=model.dtype))
    features = dataset.features.copy()
    features[column] = datasets.Array3D(shape=(None, *probe.shape[1:]), dtype="float32")
    fingerprint = saliency_fingerprint(model, processor, image_column, dataset)
    # `datasets` reuses a named `cache_file_name` whenever the file exists, whatever produced it; a stamp beside
    # it records the fingerprint, so maps of other weights, settings or rows are recomputed, never returned.
    cache_file = map_kwargs.get("cache_file_name")
    stamp = Path(f"{cache_file}.fingerprint") if cache_file is not None else None
    if stamp is not None and Path(cache_file).exists():
        if not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != fingerprint:
            logger.warning(f"{cache_file} holds maps of another model, saliency setting or dataset; recomputing it")
            map_kwargs["load_from_cache_file"] = False
    result = dataset.map(
        add_maps,
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        desc="EAT + LayerCAM saliency",
        **map_kwargs,
    )
    if stamp is not None:
        stamp.write_text(fingerprint + "\n", encoding="utf-8")
    return result


__all__ = ["precompute_saliency", "compute_image_saliency", "saliency_fingerprint", "SALIENCY_COLUMN"]
