"""A planted-region world: generated photos whose aesthetic score is set by one region, and a tiny EAT trained on it.

Each photo is a smooth grey gradient with faint noise and two squares of side `S/4` at random, non-overlapping
places on a 4-pixel grid:

- the *planted* square: a 1-pixel checkerboard of contrast `c`; the photo's score is `2 + 6c`;
- a *decoy* square: a 2-pixel checkerboard of random contrast, which does not change the score.

So a faithful map points at the planted square, not at the decoy nor at texture in general. The tiny EAT learns
the score in a few hundred CPU steps (`train_planted_eat`), deterministically for a given seed and thread count.
Used by the saliency-report tests and `bench/saliency_report.py`; nothing is cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from ..configuration_ase_mllm import AseMllmEatConfig
from ..eat_ase_mllm import EatModel, aesthetic_target
from ..image_processing_ase_mllm import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


GRID = 4  # squares sit on this pixel grid (EAT's patch)
PLANTED_CONTRAST = 0.3  # checkerboard amplitude at c = 1, in [0, 1] intensity


def planted_eat_config(image_size: int = 64) -> AseMllmEatConfig:
    """A tiny EAT (the test suite's widths) at `image_size` (64: maps 16/8/4/2; 224: 56/28/14/7, EAT's own)."""
    windows = {64: [8, 8, 4, 2], 128: [8, 8, 4, 4], 224: [7, 7, 7, 7]}[image_size]
    return AseMllmEatConfig(image_size=image_size, patch_size=4, dim_stem=16, dims=[16, 32, 64, 128],
                            depths=[1, 1, 2, 2], heads=[1, 2, 4, 8], stage_spec=[["L"], ["S"], ["L", "D"], ["L", "D"]],
                            groups=[-1, -1, 2, 4], window_sizes=windows)


@dataclass
class PlantedPhoto:
    """One generated photo: `image` (`S × S` RGB), its `contrast` c and `score` 2 + 6c, and the planted and decoy
    squares as `(top, left, height, width)`."""

    image: PIL.Image.Image
    contrast: float
    score: float
    region: tuple[int, int, int, int]
    decoy: tuple[int, int, int, int]


def checkerboard(side: int, cell: int) -> np.ndarray:
    cells = np.arange(side) // cell
    return np.where((cells[:, None] + cells[None, :]) % 2 == 0, 1.0, -1.0)[..., None]


def planted_photo(rng: np.random.Generator, side: int = 64, contrast: float | None = None) -> PlantedPhoto:
    """A photo of the planted world (see the module's docstring); `contrast` drawn from U(0, 1) unless given."""
    square = side // 4
    rows, cols = np.mgrid[0:side, 0:side] / side - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * cols + np.sin(angle) * rows)[..., None] * rng.uniform(0.5, 1.0, 3)
    pixels = 0.5 + 0.2 * gradient + rng.normal(0, 0.02, (side, side, 3))
    contrast = float(rng.uniform()) if contrast is None else float(contrast)
    while True:
        top, left, decoy_top, decoy_left = (rng.integers(0, (side - square) // GRID + 1, 4) * GRID).tolist()
        if abs(top - decoy_top) >= square or abs(left - decoy_left) >= square:
            break
    pixels[top:top + square, left:left + square] += PLANTED_CONTRAST * contrast * checkerboard(square, 1)
    decoy_contrast = rng.uniform()
    pixels[decoy_top:decoy_top + square, decoy_left:decoy_left + square] += (
        PLANTED_CONTRAST * decoy_contrast * checkerboard(square, 2))
    image = PIL.Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    return PlantedPhoto(image, contrast, 2 + 6 * contrast, (top, left, square, square),
                        (decoy_top, decoy_left, square, square))


def planted_photos(count: int, seed: int, side: int = 64, min_contrast: float = 0.0) -> list[PlantedPhoto]:
    """`count` photos; held-out sets use `min_contrast` > 0, so that every photo has a region to find."""
    rng = np.random.default_rng(seed)
    return [planted_photo(rng, side, rng.uniform(min_contrast, 1.0)) for _ in range(count)]


def eat_pixels(images: list[PIL.Image.Image]) -> torch.Tensor:
    """`(B, 3, S, S)` ImageNet-normalised inputs of same-size RGB images (EAT's preprocessing, no resize)."""
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    mean, std = np.asarray(IMAGENET_DEFAULT_MEAN, np.float32), np.asarray(IMAGENET_DEFAULT_STD, np.float32)
    return torch.from_numpy((array - mean) / std).permute(0, 3, 1, 2).contiguous()


def rating_distribution(scores: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """`(B,)` scores -> `(B, num_classes)` vote shares around each score (a discretised Gaussian, σ = 1 bin), as
    AVA's normalised vote counts are the released EAT's targets."""
    bins = torch.arange(1, num_classes + 1, dtype=scores.dtype)
    return torch.softmax(-((bins[None] - scores[:, None]) ** 2) / 2, dim=1)


def train_planted_eat(steps: int = 500, batch_size: int = 16, seed: int = 0, image_size: int = 64,
                      learning_rate: float = 1e-3) -> EatModel:
    """A tiny EAT trained on fresh planted photos each step: the vote shares (MSE) and the expected rating (MSE / 9),
    AdamW with 50 warm-up steps and a cosine decay, gradients clipped at 1. The head starts at zero (a flat rating),
    which the training needs to leave the constant solution quickly. Returns it in eval mode, frozen."""
    torch.manual_seed(seed)
    eat = EatModel(planted_eat_config(image_size))
    with torch.no_grad():
        eat.cls_head.weight.zero_()
        eat.cls_head.bias.fill_(0.1)
    optimizer = torch.optim.AdamW(eat.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = [planted_photo(rng, image_size) for _ in range(batch_size)]
        scores = torch.tensor([photo.score for photo in batch], dtype=torch.float32)
        logits = eat(eat_pixels([photo.image for photo in batch]))
        loss = (F.mse_loss(logits, rating_distribution(scores)) * 10
                + F.mse_loss(aesthetic_target(logits, "mean_score"), scores) / 9)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(eat.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return eat.eval().requires_grad_(False)


__all__ = ["planted_eat_config", "PlantedPhoto", "planted_photo", "planted_photos", "eat_pixels",
           "rating_distribution", "train_planted_eat"]
