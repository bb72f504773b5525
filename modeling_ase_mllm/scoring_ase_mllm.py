"""The aesthetic score: EAT's AVA rating of each photo, alone or with the critique and the map the IAS-ViT received.

Every ASE-MLLM with the `eat_layercam` saliency source runs EAT on each photo to draw its map; EAT's head gives the
10 AVA rating bins. This module exposes them:

- `aesthetic_score` (in `eat_ase_mllm`): Σ_i i·y_i over the ten raw outputs, no softmax, as EAT's `get_score`;
- `AseMllmScoreOutput` / `AseMllmCritiqueOutput`: typed outputs (transformers' `ModelOutput`);
- `AseMllmScoringMixin`: `model.score(...)` (one EAT forward: no LLM, no LayerCAM backward) and
  `model.critique(...)` (critique + score + the per-tile maps the IAS-ViT received, in one call);
- `AseMllmCritiquePipeline`: the `aesthetic-critique` pipeline task a saved folder declares (`custom_pipelines` in
  its config.json), for `pipeline("aesthetic-critique", model=folder, trust_remote_code=True)`.

Remote code: imports only torch, transformers, PIL, the standard library and sibling modules.
"""

from dataclasses import dataclass

import torch
from transformers import Pipeline
from transformers.image_utils import load_image
from transformers.utils import ModelOutput

# transformers 5.8-5.9 copy only the direct relative imports of a module they load (this one is the pipeline's), so
# every sibling reached below is imported here too.
from .configuration_ase_mllm import SALIENCY_SOURCES  # noqa: F401
from .eat_ase_mllm import aesthetic_score
from .image_processing_ase_mllm import tile_count
from .saliency_ase_mllm import normalize_saliency  # noqa: F401


# The paper's critique prompt; the tools' copy is `data.prompts.AESTHETIC_PROMPT` (a test keeps them equal: remote
# code cannot import the package's data module).
CRITIQUE_PROMPT = "Comment on this image from an aesthetic perspective."

# How the score is labelled when EAT was never loaded from a trained checkpoint (random, or `convert` without --eat).
UNTRAINED_NOTE = "EAT carries no trained weights: the aesthetic score is untrained and means nothing"


def rating_distribution(rating_outputs: torch.Tensor) -> torch.Tensor:
    """`(B, K)` raw bin outputs -> `(B, K)` a distribution over the ratings 1..K: the outputs clamped at 0 and
    normalised to sum 1 (uniform where none is positive). For display and the spread only: the score is always
    Σ i·y_i of the raw outputs, which a trained EAT makes close to a distribution already (EMD-trained on vote
    fractions)."""
    positive = rating_outputs.float().clamp_min(0)
    total = positive.sum(dim=1, keepdim=True)
    uniform = torch.full_like(positive, 1.0 / positive.shape[1])
    return torch.where(total > 0, positive / total.clamp_min(torch.finfo(positive.dtype).tiny), uniform)


def rating_spread(distribution: torch.Tensor) -> torch.Tensor:
    """`(B, K)` distribution over the ratings 1..K -> `(B,)` the standard deviation of the rating under it."""
    ratings = torch.arange(1, distribution.shape[1] + 1, dtype=distribution.dtype, device=distribution.device)
    mean = (distribution * ratings).sum(dim=1, keepdim=True)
    return ((distribution * (ratings - mean) ** 2).sum(dim=1)).sqrt()


def eat_is_trained(eat_config) -> bool:
    """Whether EAT was loaded from a trained checkpoint (`convert --eat` records its file and SHA-256)."""
    return getattr(eat_config, "weights_sha256", None) is not None


@dataclass
class AseMllmScoreOutput(ModelOutput):
    """
    EAT's aesthetic assessment of each image.

    Args:
        scores (`torch.FloatTensor` of shape `(batch_size,)`):
            Σ_i i·y_i over the raw outputs y (ratings 1..10), exactly EAT's `get_score`.
        rating_outputs (`torch.FloatTensor` of shape `(batch_size, 10)`):
            EAT's head outputs as it gives them (raw: no softmax).
        distribution (`torch.FloatTensor` of shape `(batch_size, 10)`):
            The raw outputs clamped at 0 and normalised to sum 1 (`rating_distribution`); never used by the score.
        spread (`torch.FloatTensor` of shape `(batch_size,)`):
            Standard deviation of the rating under `distribution`.
        trained (`bool`):
            False when EAT carries no trained weights (the score is then untrained: see `UNTRAINED_NOTE`).
    """

    scores: torch.FloatTensor | None = None
    rating_outputs: torch.FloatTensor | None = None
    distribution: torch.FloatTensor | None = None
    spread: torch.FloatTensor | None = None
    trained: bool | None = None


def score_with_eat(eat: torch.nn.Module, saliency_pixel_values: torch.Tensor) -> AseMllmScoreOutput:
    """One forward of `eat` (an `EatModel`, whose `config` says whether it is trained) on `(B, 3, S, S)` inputs,
    without autograd: its score, raw outputs, normalised distribution and spread."""
    with torch.no_grad():
        rating_outputs = eat(saliency_pixel_values.to(next(eat.parameters()).device)).float()
    return score_from_outputs(rating_outputs, eat_is_trained(eat.config))


def score_from_outputs(rating_outputs: torch.Tensor, trained: bool) -> AseMllmScoreOutput:
    """The score fields of EAT's raw outputs `(B, num_classes)`, however EAT was run (alone, or in the forward pass
    LayerCAM differentiates): score, raw outputs, normalised distribution and spread."""
    rating_outputs = rating_outputs.detach().float()
    distribution = rating_distribution(rating_outputs)
    return AseMllmScoreOutput(
        scores=aesthetic_score(rating_outputs), rating_outputs=rating_outputs, distribution=distribution,
        spread=rating_spread(distribution), trained=trained,
    )


@dataclass
class AseMllmCritiqueOutput(AseMllmScoreOutput):
    """
    The critique, the aesthetic score and the saliency the IAS-ViT received, per image (score fields as
    `AseMllmScoreOutput`).

    Args:
        critiques (`list[str]` of length `batch_size`):
            The generated critiques, stripped of surrounding whitespace.
        saliency_maps (`tuple[torch.FloatTensor]`, one `(num_tiles_i, G, G)` per image):
            The per-tile maps the IAS-ViT received for image i (its tiles, then its thumbnail when it has one).
        tile_grids (`torch.LongTensor` of shape `(batch_size, 2)`):
            Each image's `(cols, rows)` tiling.
    """

    critiques: list[str] | None = None
    saliency_maps: tuple[torch.FloatTensor, ...] | None = None
    tile_grids: torch.LongTensor | None = None


def image_list(images) -> list:
    """One image (PIL, path, URL, bytes) or a list of them, as a list."""
    return list(images) if isinstance(images, (list, tuple)) else [images]


class AseMllmScoringMixin:
    """`score()` and `critique()` for an ASE-MLLM model class with an EAT (`saliency_model`, the `eat_layercam`
    source); the model classes add it to their bases."""

    def get_aesthetic_model(self) -> torch.nn.Module:
        """The model's EAT; a clear error for a saliency source without one."""
        eat = getattr(self, "saliency_model", None)
        if eat is None:
            eat = getattr(getattr(self, "model", None), "saliency_model", None)
        if eat is None:
            raise ValueError(
                f"this model's saliency source is {self.config.saliency_config.source!r}, which has no EAT, so it "
                "gives no aesthetic score: only the 'eat_layercam' source does."
            )
        return eat

    def score(self, saliency_pixel_values: torch.Tensor | None = None, *, images=None, processor=None) -> AseMllmScoreOutput:
        """EAT's aesthetic score of each image: one EAT forward, no language model, no LayerCAM backward.

        Args:
            saliency_pixel_values: `(num_images, 3, 224, 224)` EAT inputs, as the processor returns them.
            images: instead, images (PIL, path, URL or bytes, or a list), prepared with `processor` (an
                `AseMllmProcessor` or its image processor).
        Returns:
            `AseMllmScoreOutput` with `scores` `(num_images,)`.
        """
        eat = self.get_aesthetic_model()
        if saliency_pixel_values is None:
            if images is None or processor is None:
                raise ValueError("score() needs `saliency_pixel_values`, or `images` together with `processor`.")
            saliency_pixel_values = eat_inputs(processor, image_list(images))
        elif images is not None:
            raise ValueError("score() takes `saliency_pixel_values` or `images`, not both.")
        return score_with_eat(eat, saliency_pixel_values)

    def critique(self, processor, images, prompt: str | None = None, generation_config: dict | None = None,
                 images_kwargs: dict | None = None) -> AseMllmCritiqueOutput:
        """Critique, aesthetic score and the saliency the IAS-ViT received, for each image, in one call.

        The maps are computed once (EAT + LayerCAM) and handed to `generate()` as `saliency_maps`, so the ones
        returned are exactly those the IAS-ViT received; the score costs one more EAT forward.

        Args:
            processor: the model's `AseMllmProcessor`.
            images: an image (PIL, path, URL or bytes) or a list of them; each gets its own critique.
            prompt: the question (default: the paper's, `CRITIQUE_PROMPT`).
            generation_config: `generate()` options (default: greedy, at most 256 new tokens).
            images_kwargs: image-processor options, e.g. `{"max_patches": 6}`.
        """
        images = image_list(images)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt or CRITIQUE_PROMPT}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=[[image] for image in images], text=[text] * len(images), padding=True,
                           images_kwargs=images_kwargs or {}, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.no_grad():
            saliency_maps = self.get_saliency_maps(**inputs)
        scores = self.score(inputs["saliency_pixel_values"])
        generation = {"max_new_tokens": 256, "do_sample": False, **(generation_config or {})}
        output = self.generate(**inputs, saliency_maps=saliency_maps, **generation)
        critiques = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        tiles = [tile_count(cols, rows) for cols, rows in inputs["tile_grids"].tolist()]
        return AseMllmCritiqueOutput(
            **scores, critiques=[critique.strip() for critique in critiques],
            saliency_maps=tuple(saliency_maps.float().split(tiles)), tile_grids=inputs["tile_grids"],
        )


def eat_inputs(processor, images: list) -> torch.Tensor:
    """`(num_images, 3, S, S)` EAT inputs of `images`, from the processor (or image processor) of the model: each
    image is decoded and resized once more to EAT's side, and to a single 448 px tile (not read by the score)."""
    image_processor = getattr(processor, "image_processor", processor)
    features = image_processor(images, saliency_source="eat_layercam", crop_to_patches=False, return_tensors="pt")
    return features["saliency_pixel_values"]


class AseMllmCritiquePipeline(Pipeline):
    """The `aesthetic-critique` task: for each image, its critique, EAT's aesthetic score (with the ten raw outputs,
    the normalised distribution and its spread) and the per-tile saliency maps the IAS-ViT received.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> critic = pipeline("aesthetic-critique", model="path/to/ase-mllm", trust_remote_code=True)
    >>> critic("photo.jpg", max_new_tokens=64)
    {'critique': '...', 'score': 5.43, 'rating_outputs': [...], 'distribution': [...], 'spread': 1.41,
     'score_trained': True, 'saliency_maps': tensor(...), 'tile_grid': [2, 1]}
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, prompt=None, max_new_tokens=None, generate_kwargs=None, images_kwargs=None):
        forward = {"generation_config": {**(generate_kwargs or {})}, "images_kwargs": images_kwargs}
        if max_new_tokens is not None:
            forward["generation_config"]["max_new_tokens"] = max_new_tokens
        return {"prompt": prompt}, forward, {}

    def preprocess(self, image, prompt=None):
        return {"image": load_image(image) if isinstance(image, str) else image, "prompt": prompt}

    def _forward(self, model_inputs, generation_config=None, images_kwargs=None):
        return self.model.critique(self.processor, [model_inputs["image"]], prompt=model_inputs["prompt"],
                                   generation_config=generation_config, images_kwargs=images_kwargs)

    def postprocess(self, output: AseMllmCritiqueOutput) -> dict:
        return {
            "critique": output.critiques[0],
            "score": float(output.scores[0]),
            "rating_outputs": output.rating_outputs[0].tolist(),
            "distribution": output.distribution[0].tolist(),
            "spread": float(output.spread[0]),
            "score_trained": bool(output.trained),
            "saliency_maps": output.saliency_maps[0],
            "tile_grid": output.tile_grids[0].tolist(),
        }


__all__ = [
    "CRITIQUE_PROMPT",
    "UNTRAINED_NOTE",
    "rating_distribution",
    "rating_spread",
    "eat_is_trained",
    "score_with_eat",
    "eat_inputs",
    "AseMllmScoreOutput",
    "AseMllmCritiqueOutput",
    "AseMllmScoringMixin",
    "AseMllmCritiquePipeline",
]
