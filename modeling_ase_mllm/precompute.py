"""Precompute EAT + LayerCAM saliency for a whole dataset once, with `datasets.map` (cached), and reuse it.

    ds = precompute_saliency(ds, model, processor, cache_file_name="cache/saliency.arrow")
    inputs = processor(images=..., text=..., image_saliency=[...])    # EAT is not run again
    AseMllmDataCollator(processor) passes an example's `saliency` column the same way.

A precomputed map goes through the same tile mapping (`map_saliency_to_tiles`) as one computed inside the
model, so on the same device both give bit-identical model outputs.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from .image_processing_ase_mllm import open_image, to_rgb


SALIENCY_COLUMN = "saliency"


def saliency_fingerprint(model, processor, image_column: str) -> str:
    """Fingerprint of what determines the maps: EAT's weights, the saliency config and the input size."""
    digest = hashlib.sha256()
    saliency_config = model.config.saliency_config.to_dict()
    digest.update(json.dumps(saliency_config, sort_keys=True, default=str).encode())
    digest.update(f"{processor.image_processor.saliency_image_size}|{image_column}".encode())
    for name, tensor in sorted(model.model.saliency_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
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
    return dataset.map(
        add_maps,
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=saliency_fingerprint(model, processor, image_column),
        desc="EAT + LayerCAM saliency",
        **map_kwargs,
    )


__all__ = ["precompute_saliency", "compute_image_saliency", "saliency_fingerprint", "SALIENCY_COLUMN"]
