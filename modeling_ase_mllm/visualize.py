"""Pictures of what the model attends to: the photo with its saliency overlaid, beside every tile's map.

The per-tile maps are the ones the IAS-ViT receives (`saliency_maps`, aligned with `pixel_values`); the overlay
stitches the tiles' maps back onto the image, so it shows exactly what the model saw.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .image_processing_ase_mllm import select_tile_grid, to_rgb


# Anchor colours of a perceptually ordered dark→bright colormap (black, purple, red, orange, pale yellow).
_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)
PANEL_HEIGHT = 448
TILE_CELL = 96
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


def render_saliency(image: Image.Image, tile_maps: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
    """The picture: photo + overlay (left), the tile grid with each tile's map, and the thumbnail's (right).

    Args:
        image: the photo.
        tile_maps: `(tiles, G, G)` maps of this image, as the processor returns them (thumbnail last if any).
        grid: `(cols, rows)` of its tiling.
    Returns:
        An RGB image of size `saliency_picture_size(image.size, grid)`.
    """
    cols, rows = grid
    width, height = saliency_picture_size(image.size, grid)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    photo_w = round(image.width * PANEL_HEIGHT / image.height)
    photo = image.convert("RGB").resize((photo_w, PANEL_HEIGHT), Image.BICUBIC)
    canvas.paste(overlay(photo, stitch_tiles(tile_maps, grid)), (MARGIN, MARGIN))

    draw = ImageDraw.Draw(canvas)
    left = 2 * MARGIN + photo_w
    for index in range(cols * rows):
        row, col = divmod(index, cols)
        cell = Image.fromarray(colorize(tile_maps[index].float().cpu().numpy())).resize((TILE_CELL, TILE_CELL), Image.NEAREST)
        x, y = left + col * (TILE_CELL + 2), MARGIN + row * (TILE_CELL + 2)
        canvas.paste(cell, (x, y))
        draw.text((x + 3, y + 2), str(index), fill=(255, 255, 255))
    if cols * rows > 1:
        thumb_x = left + cols * (TILE_CELL + 2) + MARGIN
        thumbnail = Image.fromarray(colorize(tile_maps[cols * rows].float().cpu().numpy()))
        canvas.paste(thumbnail.resize((2 * TILE_CELL, 2 * TILE_CELL), Image.NEAREST), (thumb_x, MARGIN))
        draw.text((thumb_x + 3, MARGIN + 2), "thumbnail", fill=(255, 255, 255))
    return canvas


def saliency_picture_size(image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` of `render_saliency`'s output for an image of `image_size = (width, height)`."""
    cols, rows = grid
    photo_w = round(image_size[0] * PANEL_HEIGHT / image_size[1])
    tiles_w = cols * (TILE_CELL + 2)
    thumb_w = MARGIN + 2 * TILE_CELL if cols * rows > 1 else 0
    width = MARGIN + photo_w + MARGIN + tiles_w + thumb_w + MARGIN
    height = MARGIN + max(PANEL_HEIGHT, rows * (TILE_CELL + 2), 2 * TILE_CELL if cols * rows > 1 else 0) + MARGIN
    return width, height


def tile_grid_of(image: Image.Image, image_processor, max_patches: int | None = None) -> tuple[int, int]:
    """The `(cols, rows)` the image processor uses for `image`."""
    max_patches = max_patches or image_processor.max_patches
    if not image_processor.crop_to_patches or max_patches <= 1:
        return (1, 1)
    return select_tile_grid(image.width, image.height, image_processor.min_patches, max_patches, image_processor.size.height)


def tile_saliency_maps(image: Image.Image, processor, model=None, max_patches: int | None = None) -> torch.Tensor:
    """The `(tiles, G, G)` maps the IAS-ViT gets for `image`: the processor's, or the model's for model-side sources."""
    options = {"max_patches": max_patches} if max_patches else {}
    batch = processor.image_processor([image], return_tensors="pt", **options)
    if model is not None and hasattr(model, "get_saliency_maps"):
        with torch.no_grad():
            return model.get_saliency_maps(**{k: v.to(model.device) for k, v in batch.items() if k != "num_patches"})
    if "saliency_maps" not in batch:
        raise ValueError(
            f"the processor's {processor.image_processor.saliency_source!r} saliency is computed by the model "
            "(EAT + LayerCAM); pass `model=`."
        )
    return batch["saliency_maps"]


def saliency_picture(image: Image.Image, processor, model=None, max_patches: int | None = None) -> Image.Image:
    """`render_saliency` for `image` with the maps the model would get."""
    image = to_rgb(image)
    maps = tile_saliency_maps(image, processor, model, max_patches)
    return render_saliency(image, maps, tile_grid_of(image, processor.image_processor, max_patches))


def save_saliency_picture(image: Image.Image, path, processor, model=None, max_patches: int | None = None) -> Path:
    """Write `saliency_picture(...)` as PNG to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saliency_picture(image, processor, model, max_patches).save(path, format="PNG")
    return path
