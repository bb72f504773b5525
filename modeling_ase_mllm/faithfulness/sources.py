"""What the saliency report scores: LayerCAM of EAT at candidate layers, and three controls.

A source is named `layercam:<module path in EAT>` or by its control's name. Every map is `(h, w)` float32 in
[0, 1] at its own grid; the metrics resize it to EAT's input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import PIL.Image
import torch

from ..eat_ase_mllm import layer_cam
from ..saliency_ase_mllm import normalize_saliency


LAYERCAM_PREFIX = "layercam:"
# Maps that owe nothing to EAT's weights: what a faithful map must beat.
CONTROL_SOURCES = ("random", "centre_gaussian", "spectral_residual")
# The centre Gaussian's standard deviation, as a fraction of the image side.
CENTRE_SIGMA = 0.25


@dataclass
class Photo:
    """One photo as the report sees it.

    name: how results name it (file name or dataset id).
    image: the decoded RGB photo (the spectral residual reads it as the image processor does).
    pixels: `(3, S, S)` EAT's input, ImageNet-normalised.
    seed: the photo's own seed (random map, tie-breaking, ROAD's noise).
    region: `(top, left, height, width)` in input pixels of what sets the score, where known (the pointing game).
    """

    name: str
    image: PIL.Image.Image
    pixels: torch.Tensor
    seed: int
    region: tuple[int, int, int, int] | None = None


def photo_seed(seed: int, name: str) -> int:
    """A photo's seed from the run's and its name (not its position, so a subset scores each photo the same)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{name}".encode()).digest()[:4], "little")


def candidate_layers(eat_config) -> dict[str, str]:
    """LayerCAM's candidate targets in EAT, `{module path: what it is}`: for each stage, its last block's output (the
    stage's output), that block's first norm (before attention) and second norm (before the MLP), and its attention
    and MLP outputs (each before the residual sum)."""
    layers = {}
    for stage, depth in enumerate(eat_config.depths):
        last, name = depth - 1, f"stage {stage + 1}"
        layers[f"stages.{stage}"] = f"{name}: last block's output"
        layers[f"stages.{stage}.layer_norms.{2 * last}"] = f"{name}: last block's first norm (before attention)"
        layers[f"stages.{stage}.layer_norms.{2 * last + 1}"] = f"{name}: last block's second norm (before the MLP)"
        layers[f"stages.{stage}.attns.{last}"] = f"{name}: last block's attention output"
        layers[f"stages.{stage}.mlps.{last}"] = f"{name}: last block's MLP output"
    return layers


def layercam_source(layer: str) -> str:
    return LAYERCAM_PREFIX + layer


def check_sources(sources: list[str], eat) -> None:
    """A `ValueError` naming a source that is neither a control nor LayerCAM at a module of `eat` giving a map."""
    for source in sources:
        if source in CONTROL_SOURCES:
            continue
        if not source.startswith(LAYERCAM_PREFIX):
            raise ValueError(f"saliency source {source!r}: expected one of {CONTROL_SOURCES} or 'layercam:<layer>'")
        layer = source.removeprefix(LAYERCAM_PREFIX)
        try:
            eat.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"LayerCAM layer {layer!r} is not a module of EAT (e.g. {next(iter(candidate_layers(eat.config)))!r})") from None


def centre_gaussian(side: int) -> torch.Tensor:
    """`(side, side)` isotropic Gaussian at the image centre, σ = `CENTRE_SIGMA` of the side, in [0, 1]."""
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side - 0.5
    squared = coords[:, None] ** 2 + coords[None, :] ** 2
    return normalize_saliency(torch.exp(-squared / (2 * CENTRE_SIGMA**2)))


def source_map(source: str, eat, photo: Photo, target: str, image_processor) -> torch.Tensor:
    """The `(h, w)` map of `source` for `photo` (on EAT's device for LayerCAM, on the CPU otherwise)."""
    if source.startswith(LAYERCAM_PREFIX):
        pixels = photo.pixels[None].to(next(eat.parameters()).device)
        return layer_cam(eat, pixels, eat.get_submodule(source.removeprefix(LAYERCAM_PREFIX)), target)[0]
    grid = eat.config.feature_map_sizes[2]  # the controls come at the grid of stage 3, where LayerCAM's default is
    if source == "random":
        return torch.rand(grid, grid, generator=torch.Generator().manual_seed(photo.seed))
    if source == "centre_gaussian":
        return centre_gaussian(grid)
    if source == "spectral_residual":
        return image_processor.classical_saliency(photo.image, "spectral_residual",
                                                  image_processor.saliency_working_size,
                                                  image_processor.saliency_blur_sigma)
    raise ValueError(f"unknown saliency source {source!r}")


def region_map(region: tuple[int, int, int, int], side: int) -> torch.Tensor:
    """A map of `region` (input pixels): 1 inside, falling off with the distance from its centre outside, so that
    the rest of the image is ranked by nearness to it. `(side, side)` in [0, 1]."""
    top, left, height, width = region
    rows, cols = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    distance = torch.hypot(rows - (top + height / 2), cols - (left + width / 2)) / side
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return torch.where(inside, torch.ones(()), 0.9 * (1 - distance / distance.max()))


__all__ = [
    "LAYERCAM_PREFIX", "CONTROL_SOURCES", "Photo", "photo_seed", "candidate_layers", "layercam_source", "check_sources",
    "centre_gaussian", "source_map", "region_map",
]
