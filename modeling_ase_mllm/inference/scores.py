"""The aesthetic score as every surface shows it: `ase-mllm score`, `caption`'s lines, the server's extra field, the
web demo and the demo's report all ask here for its fields, its text and its untrained label.

The numbers come from the model's remote code (`scoring_ase_mllm.score_with_eat`: EAT's `get_score`, Σ i·y_i over
the raw outputs). torch is imported by the functions that use it: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .photos import PhotoLimits


# The server's extra message field (OpenAI clients keep unknown fields; `chat_requests.SALIENCY_FIELD`'s sibling).
SCORE_FIELD = "aesthetic_score"


@dataclass
class PhotoScore:
    """One photo's aesthetic score (with EAT's ten raw outputs and the spread), or the error that stopped it."""

    image: str
    score: float | None = None
    rating_outputs: list[float] | None = None
    spread: float | None = None
    error: str | None = None


def score_fields(output, index: int) -> dict:
    """`score`, `rating_outputs` (EAT's ten raw outputs) and `spread` of image `index` of an `AseMllmScoreOutput`."""
    return {"score": float(output.scores[index]), "rating_outputs": output.rating_outputs[index].tolist(),
            "spread": float(output.spread[index])}


def score_text(score: float) -> str:
    """How a line shows a score: two decimals, as AVA's mean ratings are quoted."""
    return f"{score:.2f}"


def untrained_note(trained: bool) -> str | None:
    """The label of a score whose EAT is untrained (`scoring_ase_mllm.UNTRAINED_NOTE`), None for a trained one."""
    from ..scoring_ase_mllm import UNTRAINED_NOTE

    return None if trained else UNTRAINED_NOTE


def model_score_note(model) -> str | None:
    """The untrained label a surface shows once for `model`'s scores; None when it has none or its EAT is trained."""
    from ..scoring_ase_mllm import eat_is_trained

    if not model_has_eat(model):
        return None
    return untrained_note(eat_is_trained(model.config.saliency_config.eat_config))


def model_has_eat(model) -> bool:
    """Whether `model` can score: its saliency source runs EAT."""
    return getattr(getattr(model.config, "saliency_config", None), "source", None) == "eat_layercam"


@contextmanager
def eat_outputs(model) -> Iterator[list | None]:
    """Within the block, every forward of the model's EAT appends its raw outputs `(B, 10)` to the yielded list (None
    for a model without EAT): the score of the very forward pass that made the maps (EAT + LayerCAM), with no EAT
    forward of its own."""
    if not model_has_eat(model):
        yield None
        return
    captured = []
    eat = model.get_aesthetic_model()
    handle = eat.register_forward_hook(lambda module, args, output: captured.append(output.detach()))
    try:
        yield captured
    finally:
        handle.remove()


def set_scores_from_outputs(model, outputs: dict, results: list) -> None:
    """Set the score fields of `results[offset]` from EAT's raw outputs `(10,)` of each offset of `outputs` (as
    `eat_outputs` caught them)."""
    from ..scoring_ase_mllm import eat_is_trained, score_from_outputs

    if not outputs:
        return
    import torch

    output = score_from_outputs(torch.stack(list(outputs.values())), eat_is_trained(model.get_aesthetic_model().config))
    set_score_fields(output, outputs, results)


def set_score_fields(output, photos: dict, results: list) -> None:
    """Copy image i's `score_fields` of `output` onto `results[offset]`, offset being the i-th key of `photos`."""
    for index, offset in enumerate(photos):
        for name, value in score_fields(output, index).items():
            setattr(results[offset], name, value)


def score_field(model, inputs) -> dict | None:
    """The server's `SCORE_FIELD`: per image of the prompt's tensors, its score fields (`score_fields`), `trained`,
    and the untrained label when EAT is untrained; None without images or EAT."""
    if not model_has_eat(model) or inputs.get("saliency_pixel_values") is None:
        return None
    output = model.score(inputs["saliency_pixel_values"])
    field = {"images": [score_fields(output, index) for index in range(len(output.scores))],
             "trained": bool(output.trained)}
    note = untrained_note(field["trained"])
    return field if note is None else {**field, "note": note}


def iter_photo_scores(eat, image_processor, images: list, batch_size: int = 16,
                      limits: PhotoLimits = PhotoLimits()) -> Iterator[PhotoScore]:
    """Score each image (path, `bytes` or PIL image) with EAT alone, one `PhotoScore` per input, in input order.

    Photos are read `batch_size` at a time through `photos.read_photo` (bounded); one that cannot be read fails alone.
    Scores do not depend on batch-mates (EAT is batch-invariant here).
    """
    from ..scoring_ase_mllm import eat_inputs, score_with_eat
    from .photos import image_names, read_photos

    names = image_names(images)
    for start in range(0, len(images), batch_size):
        results = [PhotoScore(image=name) for name in names[start : start + batch_size]]
        photos = read_photos(images[start : start + batch_size], results, limits)
        if photos:
            set_score_fields(score_with_eat(eat, eat_inputs(image_processor, list(photos.values()))), photos, results)
        del photos
        yield from results


def distribution_chart(distribution: list[float], size: tuple[int, int] = (220, 140)):
    """A small bar chart (PIL image) of a distribution over the ratings 1..10 (`AseMllmScoreOutput.distribution`),
    the ratings written under their bars."""
    from PIL import Image, ImageDraw

    width, height = size
    chart = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(chart)
    slot, base, top = width / len(distribution), height - 14, 4
    peak = max(max(distribution), 1e-12)
    for index, mass in enumerate(distribution):
        left = index * slot + 2
        draw.rectangle([left, base - (base - top) * mass / peak, left + slot - 4, base], fill=(219, 112, 39))
        draw.text((left + slot / 2 - 4, base + 1), str(index + 1), fill="black")
    return chart


def format_score(result: PhotoScore, as_json: bool) -> str:
    """The line `ase-mllm score` prints: `name: 5.43`, `name: ERROR ...`, or one JSON object (fields that are set)."""
    if as_json:
        return json.dumps({k: v for k, v in asdict(result).items() if v is not None}, ensure_ascii=False)
    if result.error is not None:
        return f"{result.image}: ERROR {result.error}"
    return f"{result.image}: {score_text(result.score)}"


__all__ = ["SCORE_FIELD", "PhotoScore", "score_fields", "score_text", "untrained_note", "model_score_note",
           "model_has_eat", "score_field", "iter_photo_scores", "distribution_chart", "format_score", "eat_outputs",
           "set_scores_from_outputs"]
