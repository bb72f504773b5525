"""Aesthetic-saliency sources and their mapping onto InternVL's tiles.

A saliency map is computed once per *image* (on the whole image) and then resampled onto the grid of every
tile and of the thumbnail, so that tile `k` and the thumbnail see the same map where they overlap.

Remote code: imports only torch, the standard library and sibling modules.
"""

import math

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


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding. `image`: `(H, W)`."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = image[None, None]
    # Reflect padding needs radius < size; a tiny working size falls back to replicate.
    mode = "reflect" if radius < min(image.shape) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return x[0, 0]


def spectral_residual_saliency(gray: torch.Tensor, working_size: int = 64, blur_sigma: float = 2.5) -> torch.Tensor:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of one whole image.

    The log-amplitude spectrum minus its local (3×3) average is the "residual"; transforming it back with the
    original phase and squaring gives the saliency energy, which is blurred and normalised.

    Args:
        gray: `(H, W)` luminance in [0, 1], any size.
        working_size: the image is resized (antialiased) to `working_size × working_size` first.
        blur_sigma: Gaussian blur of the energy, in working-size pixels.
    Returns:
        `(working_size, working_size)` float32 map in [0, 1] (all ones for a flat image).
    """
    small = F.interpolate(
        gray.float()[None, None], size=(working_size, working_size), mode="bilinear", antialias=True, align_corners=False
    )[0, 0]
    spectrum = torch.fft.fft2(small)
    log_amplitude = torch.log(spectrum.abs() + 1e-8)
    local_mean = F.avg_pool2d(F.pad(log_amplitude[None, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0, 0]
    residual = log_amplitude - local_mean
    energy = torch.fft.ifft2(torch.exp(torch.complex(residual, torch.angle(spectrum)))).abs() ** 2
    saliency = normalize_saliency(gaussian_blur(energy, blur_sigma))
    # A flat image has no structure to find: report it as uniform rather than as numerical noise.
    if small.amax() - small.amin() < 1e-6:
        saliency = torch.ones_like(saliency)
    return saliency


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a `(3, H, W)` image (any range; the output keeps it)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=rgb.device)
    return torch.einsum("chw,c->hw", rgb.float(), weights)


def map_saliency_to_tiles(
    image_saliency: torch.Tensor, grid: tuple[int, int], use_thumbnail: bool, grid_size: int
) -> torch.Tensor:
    """Resample one image-level map onto InternVL's tiles (row-major) and, if present, the thumbnail.

    InternVL resizes the whole image onto a `cols × rows` canvas of tiles (no crop), so tile `(r, c)` covers the
    normalised image region `[c/cols, (c+1)/cols) × [r/rows, (r+1)/rows)`, and the thumbnail covers it all.

    Args:
        image_saliency: `(h, w)` map of the whole image.
        grid: `(cols, rows)` of the tiling.
        use_thumbnail: append the thumbnail's map (InternVL adds a thumbnail only when there are 2+ tiles).
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
    if use_thumbnail and rows * cols > 1:
        thumbnail = F.interpolate(source, size=(grid_size, grid_size), mode="bilinear", antialias=True, align_corners=False)
        tiles = torch.cat([tiles, thumbnail[0]], dim=0)
    return tiles.clamp(0.0, 1.0)


__all__ = [
    "normalize_saliency",
    "gaussian_blur",
    "spectral_residual_saliency",
    "rgb_to_luminance",
    "map_saliency_to_tiles",
]
