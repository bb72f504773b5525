"""Aesthetic-saliency sources and their mapping onto InternVL's tiles.

A saliency map is computed once per *image* (on the whole image) and then resampled onto the grid of every
tile and of the thumbnail, so that tile `k` and the thumbnail see the same map where they overlap.

Remote code: imports only torch, the standard library and sibling modules.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def normalize_saliency(saliency: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min–max normalise each map to [0, 1]; a constant map becomes all ones (uniform), never NaN.

    Args:
        saliency: `(..., H, W)` float maps.
    Returns:
        `(..., H, W)` maps in [0, 1].
    """
    flat = saliency.flatten(-2)
    low = flat.amin(-1, keepdim=True)[..., None]
    span = (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True))[..., None]
    normalized = (saliency - low) / span.clamp_min(eps)
    return torch.where(span > eps, normalized, torch.ones_like(saliency))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflect padding (replicate when the image is smaller than the kernel)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    mode = "reflect" if radius < min(image.shape) else "edge"
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (radius, radius)
        padded = np.pad(image, padding, mode=mode)
        length = image.shape[axis]
        image = sum(weight * np.take(padded, np.arange(i, i + length), axis=axis) for i, weight in enumerate(kernel))
    return image


def spectral_residual_saliency(gray: np.ndarray, blur_sigma: float = 2.5) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of one whole image, at the size it is given.

    The log-amplitude spectrum minus its local (3×3) average is the "residual"; transforming it back with the
    original phase and squaring gives the saliency energy, which is blurred and min–max normalised. NumPy, not
    torch: on a 64×64 map torch's per-op thread-pool overhead costs more than the arithmetic.

    Args:
        gray: `(h, w)` luminance in [0, 1], already at the working size (64 × 64 by default).
        blur_sigma: Gaussian blur of the energy, in pixels.
    Returns:
        `(h, w)` float32 map in [0, 1]; all ones for a flat image (nothing to find, never NaN).
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.max() - gray.min() < 1e-6:
        return np.ones(gray.shape, dtype=np.float32)
    spectrum = np.fft.fft2(gray)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    padded = np.pad(log_amplitude, 1, mode="edge")
    rows, cols = log_amplitude.shape
    local_mean = sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9.0
    energy = np.abs(np.fft.ifft2(np.exp(log_amplitude - local_mean + 1j * np.angle(spectrum)))) ** 2
    saliency = gaussian_blur(energy, blur_sigma)
    span = saliency.max() - saliency.min()
    if span <= 1e-12:
        return np.ones(gray.shape, dtype=np.float32)
    return ((saliency - saliency.min()) / span).astype(np.float32)


def map_saliency_to_tiles(
    image_saliency: torch.Tensor, grid: tuple[int, int], use_thumbnail: bool, grid_size: int
) -> torch.Tensor:
    """Resample one image-level map onto InternVL's tiles (row-major) and, if asked, the thumbnail.

    InternVL resizes the whole image onto a `cols × rows` canvas of tiles (no crop), so tile `(r, c)` covers the
    normalised image region `[c/cols, (c+1)/cols) × [r/rows, (r+1)/rows)`, and the thumbnail covers it all.

    Args:
        image_saliency: `(h, w)` map of the whole image.
        grid: `(cols, rows)` of the tiling.
        use_thumbnail: append the thumbnail's map; the image processor's `has_thumbnail(cols, rows)` says whether
            the tiling has one.
        grid_size: side `G` of each tile's map.
    Returns:
        `(cols * rows [+ 1], G, G)` float32 maps, aligned with the processor's `pixel_values`.
    """
    cols, rows = grid
    source = image_saliency.float()[None, None]
    canvas = F.interpolate(
        source, size=(rows * grid_size, cols * grid_size), mode="bilinear", antialias=True, align_corners=False
    )[0, 0]
    tiles = canvas.reshape(rows, grid_size, cols, grid_size).permute(0, 2, 1, 3).reshape(rows * cols, grid_size, grid_size)
    if use_thumbnail:
        thumbnail = F.interpolate(source, size=(grid_size, grid_size), mode="bilinear", antialias=True, align_corners=False)
        tiles = torch.cat([tiles, thumbnail[0]], dim=0)
    return tiles.clamp(0.0, 1.0)


def uniform_saliency_maps(num_tiles: int, grid_size: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """The `uniform` source's maps (the ablation in which the cross-attention sees no saliency): all ones,
    `(num_tiles, G, G)`, float32 (or `like`'s dtype and device). The only place that makes them."""
    if like is not None:
        return like.new_ones((num_tiles, grid_size, grid_size))
    return torch.ones((num_tiles, grid_size, grid_size))


def saliency_processor_kwargs(saliency_config) -> dict:
    """The image processor's saliency settings, from the model's `saliency_config`: the one place a processor gets
    them (`AseMllmImageProcessor(**saliency_processor_kwargs(model.config.saliency_config))`)."""
    return {
        "saliency_source": saliency_config.source,
        "saliency_grid_size": saliency_config.grid_size,
        "saliency_working_size": saliency_config.working_size,
        "saliency_blur_sigma": saliency_config.blur_sigma,
    }


def check_processor_saliency(image_processor, saliency_config, where: str = "the model") -> None:
    """Raise, naming both values, when an image processor's saliency settings are not those of `saliency_config`
    (the model's, which owns them): its maps would not be the ones the model expects. `where` names the model."""
    different = {key: (value, getattr(image_processor, key, None))
                 for key, value in saliency_processor_kwargs(saliency_config).items()
                 if getattr(image_processor, key, None) != value}
    if different:
        listed = ", ".join(f"{key} {mine!r} (model: {theirs!r})" for key, (theirs, mine) in different.items())
        raise ValueError(f"the processor of {where} does not match the model's saliency_config: {listed}. Build it "
                         "with `from_saliency_config(model.config.saliency_config)`.")


def check_saliency_source(sent: str | None, saliency_config) -> None:
    """Raise when the maps (or EAT inputs) a processor sent were made for another saliency source than the model's.

    Args:
        sent: the `saliency_source` the processor returned with its outputs (`None`: inputs made by hand, unchecked).
    """
    if sent is not None and sent != saliency_config.source:
        raise ValueError(
            f"the processor's saliency_source is {sent!r} but the model's saliency_config.source is "
            f"{saliency_config.source!r}: its saliency inputs would be used in place of the model's own. Use the "
            "processor saved with this model, or build one from the model's config "
            "(`saliency_processor_kwargs(model.config.saliency_config)`)."
        )


__all__ = [
    "uniform_saliency_maps",
    "saliency_processor_kwargs",
    "check_saliency_source",
    "check_processor_saliency",
    "normalize_saliency",
    "gaussian_blur",
    "spectral_residual_saliency",
    "map_saliency_to_tiles",
]
