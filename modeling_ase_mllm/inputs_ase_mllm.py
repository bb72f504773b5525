"""The checks of the tensors a forward receives: one clear error that names the input, never a deep traceback.

Remote code: imports only torch, the standard library and sibling modules.
"""

import torch

from .image_processing_ase_mllm import tile_count


def check_pixel_values(pixel_values: torch.Tensor, image_size: tuple[int, int]) -> None:
    """Reject tiles of the wrong shape before they fail deep inside a convolution."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
    expected = (3, *image_size)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
        raise ValueError(
            f"`pixel_values` must have shape (num_tiles, {', '.join(map(str, expected))}), got {tuple(pixel_values.shape)}; "
            "pass the processor's output unchanged."
        )


def check_saliency_maps(saliency_maps: torch.Tensor | None, pixel_values: torch.Tensor) -> None:
    """Saliency maps must come one per tile, square, and finite."""
    if not isinstance(saliency_maps, torch.Tensor):
        raise TypeError(
            f"`saliency_maps` must be a torch.Tensor of shape (num_tiles, G, G), got {type(saliency_maps).__name__}; "
            "AseMllmProcessor returns it next to `pixel_values`."
        )
    num_tiles = pixel_values.shape[0]
    if saliency_maps.ndim != 3 or saliency_maps.shape[0] != num_tiles or saliency_maps.shape[1] != saliency_maps.shape[2]:
        raise ValueError(
            f"`saliency_maps` has shape {tuple(saliency_maps.shape)} but `pixel_values` has {num_tiles} tiles; "
            f"expected ({num_tiles}, G, G), one map per tile in the same order."
        )
    if not torch.isfinite(saliency_maps).all():
        raise ValueError("`saliency_maps` contains NaN or infinite values.")


def check_tile_grids(tile_grids: torch.Tensor, saliency_pixel_values: torch.Tensor, pixel_values: torch.Tensor) -> None:
    """One `(cols, rows)` per image, and together they must account for every tile of `pixel_values`."""
    if tile_grids.ndim != 2 or tile_grids.shape[1] != 2 or tile_grids.shape[0] != saliency_pixel_values.shape[0]:
        raise ValueError(
            f"`tile_grids` has shape {tuple(tile_grids.shape)} but `saliency_pixel_values` holds "
            f"{saliency_pixel_values.shape[0]} images; expected one (cols, rows) row per image."
        )
    tiles = [tile_count(c, r) for c, r in tile_grids.tolist()]
    if sum(tiles) != pixel_values.shape[0]:
        raise ValueError(
            f"`tile_grids` {tile_grids.tolist()} give {sum(tiles)} tiles (thumbnails included) but `pixel_values` "
            f"has {pixel_values.shape[0]}; pass the processor's outputs together, unmodified."
        )


def check_image_token_count(input_ids: torch.Tensor, image_features: torch.Tensor, image_token_id: int) -> None:
    """Every `<IMG_CONTEXT>` must receive one image feature, per sample; say which sample is off."""
    num_tokens = int((input_ids == image_token_id).sum())
    num_features = image_features.shape[0] * image_features.shape[1]
    if num_tokens != num_features:
        per_sample = (input_ids == image_token_id).sum(dim=1).tolist()
        raise ValueError(
            f"input_ids hold {num_tokens} image tokens (per sample: {per_sample}) but the images give "
            f"{image_features.shape[0]} tiles × {image_features.shape[1]} = {num_features} features. "
            "Use the processor's `input_ids` and `pixel_values` together, unmodified."
        )


__all__ = ["check_pixel_values", "check_saliency_maps", "check_tile_grids", "check_image_token_count"]
