"""Tiling is InternVL's `dynamic_preprocess`, exactly; token counts are what the processor emits."""

import numpy as np
import pytest
import torch

from conftest import random_image
from modeling_ase_mllm.image_processing_ase_mllm import select_tile_grid
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas


# --- A transcription of OpenGVLab InternVL's tiling (internvl/train/dataset.py, `dynamic_preprocess` and
# `find_closest_aspect_ratio`) plus its `build_transform` (ToTensor + ImageNet Normalize), kept literal. ---
def reference_closest_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def reference_dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    target = reference_closest_ratio(aspect_ratio, target_ratios, orig_width, orig_height, image_size)
    target_width, target_height = image_size * target[0], image_size * target[1]
    blocks = target[0] * target[1]
    resized = image.resize((target_width, target_height))
    tiles = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size,
        )
        tiles.append(resized.crop(box))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return target, tiles


MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def reference_pixels(tiles):
    return torch.stack([(torch.from_numpy(np.array(t)).permute(2, 0, 1).float() / 255 - MEAN) / STD for t in tiles])


# (height, width, max_patches): extreme aspect ratios, tiny images, exact tie-breaks, and max 1 / 12 / 40.
SIZES = [
    (1, 1, 12), (1, 2, 12), (3, 2, 12), (7, 13, 12), (1, 10000, 12), (10000, 1, 12), (2, 5000, 40),
    (448, 448, 12), (600, 600, 12), (700, 700, 12), (1000, 1000, 12), (1400, 1400, 12),  # ties among n×n grids
    (448, 896, 12), (500, 1000, 12), (700, 1400, 12), (1000, 2000, 12),  # ties among 2:1 grids
    (896, 448, 40), (2000, 1000, 40), (3000, 3000, 40), (300, 1000, 12), (1000, 300, 12),
    (480, 640, 12), (640, 480, 12), (1080, 1920, 12), (1920, 1080, 40), (3024, 4032, 12),
    (333, 777, 1), (1000, 300, 1), (1, 1, 40), (225, 4000, 40), (4000, 225, 12), (99, 100, 12), (101, 100, 40),
]


@pytest.mark.parametrize("height,width,max_patches", SIZES)
def test_tiles_match_internvl_dynamic_preprocess(processor, height, width, max_patches):
    image = random_image(height, width, seed=height * 7 + width)
    grid, tiles = reference_dynamic_preprocess(image, max_num=max_patches)
    out = processor.image_processor([image], max_patches=max_patches, return_tensors="pt")
    assert select_tile_grid(width, height, 1, max_patches) == grid or max_patches == 1
    assert out["num_patches"].tolist() == [len(tiles)]
    # Default source (EAT + LayerCAM in the model): the whole image once at 224 px, and its grid for the mapping.
    assert out["saliency_pixel_values"].shape == (1, 3, 224, 224)
    assert out["tile_grids"].tolist() == ([list(grid)] if max_patches > 1 else [[1, 1]])
    assert out["pixel_values"].shape == (len(tiles), 3, 448, 448)
    assert (out["pixel_values"] - reference_pixels(tiles)).abs().max().item() <= 1e-6


def test_exact_tie_uses_internvl_candidate_order():
    # 15x6 px at exactly 4 tiles: 4x1 and 2x2 are equally far from 2.5; InternVL keeps the first in its order
    # (4x1), transformers' GotOcr2 enumerates differently and keeps 2x2.
    from PIL import Image

    grid, _ = reference_dynamic_preprocess(Image.new("RGB", (15, 6)), min_num=4, max_num=4)
    assert grid == (4, 1)
    assert select_tile_grid(15, 6, 4, 4) == (4, 1)
    assert get_optimal_tiled_canvas((6, 15), (448, 448), 4, 4) == (2, 2)


@pytest.mark.parametrize("height,width,max_patches", [(300, 1000, 12), (1, 10000, 12), (700, 700, 40), (50, 60, 1)])
def test_token_count_equals_what_processor_emits(processor, height, width, max_patches):
    images = [random_image(height, width), random_image(448, 448)]
    text = ["<image>\nA <image> B"]
    out = processor(images=images, text=text, images_kwargs={"max_patches": max_patches}, return_tensors="pt")
    predicted = processor._get_num_multimodal_tokens(image_sizes=[(height, width), (448, 448)], max_patches=max_patches)
    ids = out["input_ids"][0]
    emitted = int(torch.isin(ids, torch.tensor(processor.image_token_ids)).sum())
    assert sum(predicted.num_image_tokens) == emitted
    assert int((ids == processor.image_token_id).sum()) == 256 * out["pixel_values"].shape[0]
    assert sum(predicted.num_image_patches) == out["pixel_values"].shape[0]
