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
    return SaliencyMaps(model, processor)(images)


class SaliencyMaps:
    """EAT + LayerCAM of whole images, holding only what that takes: EAT, the saliency settings and the image
    processor. This is what `datasets.map(num_proc=N)` pickles into each worker process (never the language
    model); a worker of rank r runs on GPU r (modulo the GPUs), or, on the CPU, on its share of the cores.
    """

    def __init__(self, model, processor, num_proc: int | None = None):
        saliency = model.config.saliency_config
        self.eat, self.layer, self.target = model.model.saliency_model, saliency.layercam_layer_name, saliency.layercam_target
        self.image_processor, self.num_proc = processor.image_processor, num_proc

    def place(self, rank: int | None) -> None:
        """Put a worker process's EAT on its own GPU, or give it its share of the CPU threads."""
        if rank is None or not self.num_proc or self.num_proc < 2:
            return
        if torch.cuda.is_available():
            self.eat.to(f"cuda:{rank % torch.cuda.device_count()}")
        else:
            torch.set_num_threads(max(1, torch.get_num_threads() // self.num_proc))
        self.num_proc = None  # placed once per worker

    def __call__(self, images: list) -> list[np.ndarray]:
        if not images:
            return []
        images = [to_rgb(open_image(image)) for image in images]
        inputs = self.image_processor(images, saliency_source="eat_layercam", max_patches=1, return_tensors="pt")
        parameter = next(self.eat.parameters())
        pixels = inputs["saliency_pixel_values"].to(parameter.device, parameter.dtype)
        with torch.no_grad():
            maps = self.eat.layer_cam(pixels, self.layer, self.target)  # = AseMllmModel.get_image_saliency
        return [m.cpu().numpy().astype(np.float32) for m in maps]


def precompute_saliency(dataset, model, processor, image_column: str = "image", column: str = SALIENCY_COLUMN,
                        batch_size: int = 8, num_proc: int | None = None, **map_kwargs):
    """Add a `column` holding, per example, one `(h, w)` map per image of `image_column` (`image` or `images`).

    Runs `dataset.map(batched=True)` with a fingerprint of EAT's weights and the saliency config, so a second call
    with the same model reuses the cache (give `cache_file_name=` for in-memory datasets). EAT is batch-invariant
    (to 1e-5), so `batch_size` changes speed only. `num_proc=N` maps N contiguous shards in N processes (on N
    GPUs when there are, else each on its share of the cores); each shard is its own cache file, so a killed run
    keeps the shards it finished. Shards of a multiple of `batch_size` rows give the maps one process gives, bit
    for bit.
    """
    import datasets

    if image_column not in dataset.column_names:
        raise ValueError(f"dataset has no {image_column!r} column (columns: {dataset.column_names}).")
    if getattr(model.model, "saliency_model", None) is None:
        raise ValueError("the model has no EAT (saliency source is not 'eat_layercam'); nothing to precompute.")

    saliency_maps = SaliencyMaps(model, processor, num_proc)

    def add_maps(batch, rank=None):
        saliency_maps.place(rank)
        per_example = [example_image_list(value) for value in batch[image_column]]
        flat = saliency_maps([image for images in per_example for image in images])
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
    # `datasets` reuses a named `cache_file_name` (with `num_proc`, its shard files) whenever it exists, whatever
    # produced it; a stamp beside it records the fingerprint, so maps of other weights, settings or rows are
    # deleted and recomputed, never returned. It is written first, so the shards a killed run finished are reused.
    cache_file = map_kwargs.get("cache_file_name")
    if cache_file is not None:
        stamp = Path(f"{cache_file}.fingerprint")
        written = [path for path in cache_files(cache_file, num_proc, map_kwargs.get("suffix_template")) if path.exists()]
        if written and (not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != fingerprint):
            logger.warning(f"{cache_file} holds maps of another model, saliency setting or dataset; recomputing it")
            for path in written:
                path.unlink()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint + "\n", encoding="utf-8")
    result = dataset.map(
        add_maps,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        with_rank=bool(num_proc),
        features=features,
        new_fingerprint=fingerprint,
        desc="EAT + LayerCAM saliency",
        **map_kwargs,
    )
    return result


def cache_files(cache_file: str, num_proc: int | None, suffix_template: str | None = None) -> list[Path]:
    """The files `datasets.map` writes for `cache_file_name=cache_file`: the file, or one per process."""
    if not num_proc or num_proc < 2:
        return [Path(cache_file)]
    path = Path(cache_file)
    template = suffix_template or "_{rank:05d}_of_{num_proc:05d}"
    return [path.with_name(path.stem + template.format(rank=rank, num_proc=num_proc) + path.suffix)
            for rank in range(num_proc)]


__all__ = ["precompute_saliency", "compute_image_saliency", "saliency_fingerprint", "SaliencyMaps", "SALIENCY_COLUMN"]
