"""Faithfulness metrics of one saliency map over EAT, for one photo at a time.

What the metrics score is EAT's expected rating Σ i·y_i over its 10 AVA bins (`aesthetic_target(..., "mean_score")`),
whatever output LayerCAM differentiated. EAT sees one image per forward pass: the released EAT mixes the images of
a batch, and one at a time also keeps every number independent of what else is being scored.

- Deletion / insertion (Petsiuk et al., BMVC 2018): the map's most relevant pixels are replaced by a blurred copy
  (deletion) or revealed on the blurred copy (insertion) in `steps` equal steps; the area under the score curve
  over the removed fraction is the metric (deletion: lower is better; insertion: higher is better).
- ROAD (Rong et al., ICML 2022): pytorch-grad-cam's `ROADMostRelevantFirst` / `ROADLeastRelevantFirst`, which fill
  the removed pixels by noisy linear imputation so that the hole's shape leaks less; the score change, averaged over
  the percentiles (MoRF: lower is better; LeRF: nearer 0, i.e. higher, is better).
- Model randomisation (Adebayo et al., NeurIPS 2018): EAT's parts are re-initialised from the top down, one more
  part per step; a faithful map changes (Spearman rank correlation and SSIM with the original map fall).
- Pointing game (Zhang et al., ECCV 2016), where the region that sets the score is known: the map's maximum lies
  inside it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..eat_ase_mllm import EatModel, aesthetic_target
from ..saliency_ase_mllm import gaussian_blur


# The cascade of the randomisation check: EAT's parts from the output down, each step adding one (module prefixes).
RANDOMISATION_CASCADE = (
    ("head", ("cls_head", "cls_norm")),
    ("stage 4", ("stages.3", "down_projs.2")),
    ("stage 3", ("stages.2", "down_projs.1")),
    ("stage 2", ("stages.1", "down_projs.0")),
    ("stage 1 + stem", ("stages.0", "patch_proj")),
)
# The blur of the deletion/insertion substrate at EAT's 224 px input (RISE's), scaled with the input side.
BLUR_SIGMA_AT_224 = 5.0


def mean_score(logits: torch.Tensor) -> torch.Tensor:
    """`(B, num_classes)` raw bins -> `(B,)` expected ratings Σ i·y_i."""
    return aesthetic_target(logits, "mean_score")


class OneImageAtATime(nn.Module):
    """EAT fed one image per forward pass (what pytorch-grad-cam's metrics call with a batch)."""

    def __init__(self, eat: nn.Module):
        super().__init__()
        self.eat = eat

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, S, S)` -> `(B, num_classes)`."""
        return torch.cat([self.eat(image[None]) for image in pixel_values])


class MeanScoreTarget:
    """pytorch-grad-cam target: one image's `(num_classes,)` output -> its expected rating."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return mean_score(output[None])[0]


def eat_score(eat: nn.Module, pixels: torch.Tensor) -> float:
    """EAT's expected rating of one `(3, S, S)` input."""
    with torch.no_grad():
        return float(mean_score(eat(pixels[None]))[0])


def blur_substrate(pixels: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """The deletion/insertion substrate: each channel of `(3, S, S)` blurred (σ = 5 px at 224, scaled)."""
    sigma = sigma if sigma is not None else BLUR_SIGMA_AT_224 * pixels.shape[-1] / 224
    channels = [gaussian_blur(channel.double().cpu().numpy(), sigma) for channel in pixels]
    return torch.from_numpy(np.stack(channels)).to(pixels.device, pixels.dtype)


def upsample_map(saliency: torch.Tensor, side: int) -> torch.Tensor:
    """An `(h, w)` map bilinearly resized to the `(side, side)` input (as the tiles receive maps)."""
    return F.interpolate(saliency.float()[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]


def relevance_order(pixel_map: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most relevant first; equal values in the order of `tiebreak` (a random permutation, so
    a flat map removes pixels at random rather than in raster order)."""
    return np.lexsort((tiebreak, -pixel_map.reshape(-1).astype(np.float64)))


def perturbation_curves(eat: nn.Module, pixels: torch.Tensor, substrate: torch.Tensor, order: np.ndarray, steps: int,
                        original: float, blurred: float) -> tuple[list[float], list[float]]:
    """Deletion and insertion curves: EAT's rating after `k/steps` of the pixels, most relevant first, were replaced
    by the substrate (deletion) or revealed on it (insertion), k = 0..steps.

    Args:
        pixels, substrate: `(3, S, S)` the input and its blurred copy.
        order: `(S·S,)` pixel indices, most relevant first (`relevance_order`).
        original, blurred: the ratings of `pixels` and `substrate` (the curves' shared end points).
    """
    flat, flat_substrate = pixels.reshape(pixels.shape[0], -1), substrate.reshape(substrate.shape[0], -1)
    counts = np.round(np.linspace(0, order.size, steps + 1)).astype(np.int64)
    deletion, insertion = [original], [blurred]
    for count in counts[1:-1]:
        chosen = torch.from_numpy(order[:count]).to(pixels.device)
        deleted = flat.clone()
        deleted[:, chosen] = flat_substrate[:, chosen]
        inserted = flat_substrate.clone()
        inserted[:, chosen] = flat[:, chosen]
        deletion.append(eat_score(eat, deleted.reshape(pixels.shape)))
        insertion.append(eat_score(eat, inserted.reshape(pixels.shape)))
    return deletion + [blurred], insertion + [original]


def area_under_curve(curve: list[float]) -> float:
    """Trapezoidal area over the fraction perturbed, 0..1 in equal steps."""
    values = np.asarray(curve, dtype=np.float64)
    return float((values[:-1] + values[1:]).sum() / (2 * (len(values) - 1)))


def road_changes(eat: nn.Module, pixels: torch.Tensor, pixel_map: np.ndarray, percentiles: list[int], seed: int,
                 original: float) -> dict[str, list[float]]:
    """ROAD with pytorch-grad-cam: EAT's rating change per percentile, most- (`morf`) and least-relevant first
    (`lerf`). grad-cam's `percentile=p` keeps p % of the pixels: MoRF removes the (100 - p) % most relevant, LeRF
    the (100 - p) % least relevant. The imputation's noise is drawn from a generator seeded per call."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    model, targets, cams = OneImageAtATime(eat), [MeanScoreTarget()], pixel_map[None].astype(np.float32)
    changes = {"morf": [], "lerf": []}
    for key, metric in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
        for percentile in percentiles:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + percentile)
                after = metric(percentile=percentile)(pixels[None], cams, targets, model, return_diff=False)
            changes[key].append(float(after[0]) - original)
    return changes


class CascadingRandomisation:
    """EAT with its parts re-initialised from the top down (`RANDOMISATION_CASCADE`), one more part per step.

    The re-initialised weights are a fresh `EatModel`'s own initialisation under `seed`, so each step is
    reproducible. One working copy of EAT is overwritten in place step by step: memory is two EATs and one state
    dict, whatever the number of photos.
    """

    def __init__(self, eat: EatModel, seed: int = 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = EatModel(eat.config)
        parameter = next(eat.parameters())
        self.fresh = {k: v.to(parameter.device, parameter.dtype) if v.is_floating_point() else v.to(parameter.device)
                      for k, v in fresh.state_dict().items()}
        self.original = {k: v.detach().clone() for k, v in eat.state_dict().items()}
        self.working = EatModel(eat.config).to(parameter.device, parameter.dtype).eval().requires_grad_(False)

    def steps(self):
        """Yield `(step name, model)` for each step of the cascade; the model is the same object, changed in place."""
        self.working.load_state_dict(self.original)
        state = self.working.state_dict()
        with torch.no_grad():
            for name, prefixes in RANDOMISATION_CASCADE:
                for key, tensor in state.items():
                    if any(key.startswith(prefix + ".") for prefix in prefixes):
                        tensor.copy_(self.fresh[key])
                yield name, self.working


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's ρ of two maps' values; 1.0 for identical maps, 0.0 when one is constant (it ranks nothing)."""
    from scipy.stats import spearmanr

    first, second = np.asarray(first, np.float64).ravel(), np.asarray(second, np.float64).ravel()
    if np.array_equal(first, second):
        return 1.0
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first, second).statistic)


def structural_similarity(first: np.ndarray, second: np.ndarray) -> float | None:
    """SSIM of two maps in [0, 1] (scikit-image, window up to 7, odd); None for maps under 3 × 3."""
    from skimage.metrics import structural_similarity as ssim

    side = min(first.shape)
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return None
    return float(ssim(np.asarray(first, np.float64), np.asarray(second, np.float64), data_range=1.0, win_size=window))


def pointing_hit(pixel_map: np.ndarray, region: tuple[int, int, int, int]) -> bool:
    """Whether the map's maximum (first one) lies in `region = (top, left, height, width)`, in input pixels."""
    row, col = np.unravel_index(int(np.argmax(pixel_map)), pixel_map.shape)
    top, left, height, width = region
    return bool(top <= row < top + height and left <= col < left + width)


def mean_and_interval(values: list[float], seed: int = 0, resamples: int = 1000) -> dict | None:
    """`{"mean", "low", "high", "n"}`: the mean and its 95 % percentile-bootstrap interval (scipy), None for no values."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return None
    mean = float(values.mean())
    if values.size == 1 or np.ptp(values) == 0:
        return {"mean": mean, "low": mean, "high": mean, "n": int(values.size)}
    from scipy.stats import bootstrap

    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=0.95, method="percentile",
                       rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return {"mean": mean, "low": float(interval.low), "high": float(interval.high), "n": int(values.size)}


__all__ = [
    "RANDOMISATION_CASCADE", "OneImageAtATime", "MeanScoreTarget", "eat_score", "blur_substrate", "upsample_map",
    "relevance_order", "perturbation_curves", "area_under_curve", "road_changes", "CascadingRandomisation",
    "rank_correlation", "structural_similarity", "pointing_hit", "mean_and_interval",
]
