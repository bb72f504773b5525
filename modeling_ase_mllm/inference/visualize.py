"""Pictures of what the model attends to: the photo with its saliency overlaid, beside every tile's map.

The per-tile maps are the ones the IAS-ViT receives (`saliency_maps`, aligned with `pixel_values`); the overlay
stitches the tiles' maps back onto the image, so it shows exactly what the model saw.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..image_processing_ase_mllm import has_thumbnail
from .photos import read_photo


# Anchor colours of a perceptually ordered dark→bright colormap (black, purple, red, orange, pale yellow).
_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
# Layout of the picture, in pixels. The photo is fitted into PHOTO_BOX (each side at least MIN_PHOTO_SIDE, so a
# 10000x1 panorama stays visible), and the tiles' maps go in TILE_CELL cells: in the tiling's own geometry when
# it fits GRID_SIDE x GRID_SIDE cells, otherwise in reading order, GRID_SIDE per row, each cell numbered. So the
# picture stays under 2 megapixels whatever the photo's size or aspect ratio (at most 40 tiles).
PHOTO_BOX = (896, 448)
MIN_PHOTO_SIDE = 48
TILE_CELL = 96
CELL_GAP = 2
GRID_SIDE = 8
MARGIN = 8


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 through the anchor colormap. `(H, W)` → `(H, W, 3)`."""
    position = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    fraction = (position - low)[..., None]
    return (_ANCHORS[low] * (1 - fraction) + _ANCHORS[low + 1] * fraction).round().astype(np.uint8)


def stitch_tiles(tile_maps: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Reassemble the `cols × rows` tile maps (row-major) into the canvas map `(rows*G, cols*G)`."""
    cols, rows = grid
    grid_size = tile_maps.shape[-1]
    tiles = tile_maps[: cols * rows].float().reshape(rows, cols, grid_size, grid_size)
    return tiles.permute(0, 2, 1, 3).reshape(rows * grid_size, cols * grid_size).cpu().numpy()


def overlay(image: Image.Image, saliency: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """Blend the colorized `saliency` (any size, values in [0, 1]) over `image`."""
    heat = Image.fromarray(colorize(saliency)).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


def photo_panel_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` of the photo in the picture: fitted into `PHOTO_BOX`, no side under `MIN_PHOTO_SIDE`."""
    width, height = image_size
    scale = min(PHOTO_BOX[0] / width, PHOTO_BOX[1] / height)
    return (min(PHOTO_BOX[0], max(MIN_PHOTO_SIDE, round(width * scale))),
            min(PHOTO_BOX[1], max(MIN_PHOTO_SIDE, round(height * scale))))


def tile_cells(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """`(column, row)` of each tile's cell, tile by tile: the grid's geometry, or reading order when it is large."""
    cols, rows = grid
    per_row = cols if cols <= GRID_SIDE and rows <= GRID_SIDE else GRID_SIDE
    return [(index % per_row, index // per_row) for index in range(cols * rows)]


def _layout(image_size: tuple[int, int], grid: tuple[int, int]) -> dict:
    photo = photo_panel_size(image_size)
    cells = tile_cells(grid)
    step = TILE_CELL + CELL_GAP
    tiles_w = (max(col for col, _ in cells) + 1) * step
    tiles_h = (max(row for _, row in cells) + 1) * step
    thumbnail = 2 * TILE_CELL if has_thumbnail(*grid) else 0
    tiles_x = 2 * MARGIN + photo[0]
    width = tiles_x + tiles_w + (MARGIN + thumbnail if thumbnail else 0) + MARGIN
    height = MARGIN + max(photo[1], tiles_h, thumbnail) + MARGIN
    return {"size": (width, height), "photo": photo, "cells": cells, "tiles_x": tiles_x,
            "thumbnail_x": tiles_x + tiles_w + MARGIN if thumbnail else None}


def render_saliency(image: Image.Image, tile_maps: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
    """The picture: photo + overlay (left), each tile's map in its cell, and the thumbnail's map (right).

    Args:
        image: the photo.
        tile_maps: `(tiles, G, G)` maps of this image, as the processor returns them (thumbnail last if any).
        grid: `(cols, rows)` of its tiling.
    Returns:
        An RGB image of size `saliency_picture_size(image.size, grid)` (under 2 megapixels).
    """
    layout = _layout(image.size, grid)
    canvas = Image.new("RGB", layout["size"], (255, 255, 255))
    # An integer box reduction first keeps the bicubic resize of a huge photo cheap.
    photo = image.convert("RGB")
    factor = max(1, min(photo.width // layout["photo"][0], photo.height // layout["photo"][1]))
    photo = photo.reduce(factor) if factor > 1 else photo
    photo = photo.resize(layout["photo"], Image.BICUBIC)
    canvas.paste(overlay(photo, stitch_tiles(tile_maps, grid)), (MARGIN, MARGIN))

    draw = ImageDraw.Draw(canvas)
    step = TILE_CELL + CELL_GAP
    for index, (col, row) in enumerate(layout["cells"]):
        cell = Image.fromarray(colorize(tile_maps[index].float().cpu().numpy())).resize((TILE_CELL, TILE_CELL), Image.NEAREST)
        x, y = layout["tiles_x"] + col * step, MARGIN + row * step
        canvas.paste(cell, (x, y))
        draw.text((x + 3, y + 2), str(index), fill=(255, 255, 255))
    if layout["thumbnail_x"] is not None:
        thumbnail = Image.fromarray(colorize(tile_maps[len(layout["cells"])].float().cpu().numpy()))
        canvas.paste(thumbnail.resize((2 * TILE_CELL, 2 * TILE_CELL), Image.NEAREST), (layout["thumbnail_x"], MARGIN))
        draw.text((layout["thumbnail_x"] + 3, MARGIN + 2), "thumbnail", fill=(255, 255, 255))
    return canvas


def saliency_picture_size(image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` of `render_saliency`'s output for an image of `image_size = (width, height)`."""
    return _layout(image_size, grid)["size"]


def tile_saliency_maps(image: Image.Image, processor, model=None, max_patches: int | None = None) -> torch.Tensor:
    """The `(tiles, G, G)` maps the IAS-ViT gets for `image`: the processor's, or the model's for model-side sources."""
    options = {"max_patches": max_patches} if max_patches else {}
    batch = processor.image_processor([image], return_tensors="pt", **options)
    if model is not None and hasattr(model, "get_saliency_maps"):
        with torch.no_grad():
            return model.get_saliency_maps(**batch.to(model.device).data)
    if "saliency_maps" not in batch:
        raise ValueError(
            f"the processor's {processor.image_processor.saliency_source!r} saliency is computed by the model "
            "(EAT + LayerCAM); pass `model=`."
        )
    return batch["saliency_maps"]


def saliency_picture(image, processor, model=None, max_patches: int | None = None, maps=None) -> Image.Image:
    """`render_saliency` for `image` (PIL image, path or bytes) with the maps the model would get (`maps`: the
    `(tiles, G, G)` ones it got, when known: nothing is computed again)."""
    image = read_photo(image)
    maps = maps if maps is not None else tile_saliency_maps(image, processor, model, max_patches)
    grid = processor.image_processor.get_tile_grid(image.height, image.width, {"max_patches": max_patches} if max_patches else None)
    return render_saliency(image, maps, grid)


def save_saliency_picture(image, path, processor, model=None, max_patches: int | None = None, maps=None) -> Path:
    """Write `saliency_picture(...)` as PNG to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saliency_picture(image, processor, model, max_patches, maps).save(path, format="PNG")
    return path
