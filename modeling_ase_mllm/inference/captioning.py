"""Critique photos batch by batch: the library behind `ase-mllm caption` (and the demo, evaluation and web demo).

Photos are decoded one batch at a time, and each batch's results are yielded as soon as the batch is done, so
memory does not grow with the number of files and a caller that writes as it goes keeps everything finished
when it is killed. Each file fails alone: one that cannot be read (missing, a directory, corrupt, over the
size limits) or whose saliency picture cannot be drawn is reported by name and the others go on.

torch and transformers are imported by the functions that use them: the CLI imports this module to build its
parser, and `ase-mllm --help` must not wait for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .chat import chat_inputs, generate_answers
from .photos import PER_FILE_ERRORS, PhotoLimits, image_names, read_photo, read_photos  # noqa: F401 (re-exported)
from .scores import eat_outputs, score_text, set_scores_from_outputs


@dataclass
class Critique:
    """One photo's result: a caption or the error that stopped it, and its saliency picture or why it failed."""

    image: str
    caption: str | None = None
    error: str | None = None
    saliency_picture: str | None = None
    saliency_error: str | None = None
    score: float | None = None  # EAT's aesthetic score and its fields (`scores.score_fields`), when the model has EAT
    rating_outputs: list[float] | None = None
    spread: float | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.saliency_error is not None


def load_model_and_processor(model_path: str, device: str | None = None, dtype: str = "auto",
                             quantization: str | None = None):
    """`AutoModelForImageTextToText` + `AutoProcessor` for a folder or Hub id (remote code allowed).

    Args:
        quantization: a `utils.quantization.QUANTIZATION_SCHEMES` scheme: the language model's linear layers load
            quantised (the model keeps EAT, the ViT and the projector in floating point), straight onto `device`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..saliency_ase_mllm import check_processor_saliency

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    quantized = {}
    if quantization is not None:
        from ..utils.quantization import quantization_config

        # Placed while loading: a bitsandbytes model refuses `.to()` afterwards.
        quantized = {"quantization_config": quantization_config(quantization, torch_dtype), "device_map": device}
    model = AutoModelForImageTextToText.from_pretrained(model_path, trust_remote_code=True, dtype=torch_dtype,
                                                        **quantized)
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    check_processor_saliency(processor.image_processor, model.config.saliency_config, model_path)
    return (model if quantized else model.to(device)).eval(), processor


def critique_prompt(prompt: str | None = None, aspect: str | None = None) -> str:
    """The paper's prompt, an aspect-conditioned one ("Comment on the composition of this image."), or `prompt`."""
    from ..data.prompts import AESTHETIC_PROMPT, aspect_prompt

    if prompt is not None and aspect is not None:
        raise ValueError("give either a prompt or an aspect, not both")
    return prompt if prompt is not None else aspect_prompt(aspect) if aspect is not None else AESTHETIC_PROMPT


def saliency_picture_path(folder, index: int, image_name: str) -> Path:
    """Where the saliency picture of input number `index` goes: `folder/0003_<stem>_saliency.png`."""
    return Path(folder) / f"{index:04d}_{Path(image_name).stem}_saliency.png"


def iter_critiques(
    model,
    processor,
    images: list,
    prompt: str | None = None,
    max_patches: int | None = None,
    batch_size: int = 4,
    generation_config: dict | None = None,
    saliency_out: str | Path | None = None,
    limits: PhotoLimits = PhotoLimits(),
    progress: bool | None = None,
) -> Iterator[Critique]:
    """Critique each image (path, `bytes` or PIL image), yielding one `Critique` per input, in input order.

    Images are read `batch_size` at a time, and a batch's results are yielded as soon as it is captioned (and
    its saliency pictures written into `saliency_out`, when given). A batch that fails in the model is redone
    image by image, so that only the image at fault fails.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt = critique_prompt(prompt)
    names = image_names(images)
    images_kwargs = {"max_patches": max_patches} if max_patches else {}
    starts = range(0, len(images), batch_size)
    show = progress if progress is not None else len(starts) > 1
    for start in tqdm(starts, desc="critiquing", unit="batch", disable=not show):
        results = [Critique(image=name) for name in names[start : start + batch_size]]
        photos = read_photos(images[start : start + batch_size], results, limits)
        maps = {}  # the maps each photo's caption was made with, for its saliency picture
        scores = {}  # EAT's raw outputs of each photo, from the forward pass that made its maps
        for offset, answer, photo_maps, rating_outputs in _caption_batch(
                model, processor, photos, prompt, generation_config, images_kwargs, keep_maps=saliency_out is not None):
            if isinstance(answer, BaseException):
                results[offset].error = f"captioning failed: {type(answer).__name__}: {answer}"
            else:
                results[offset].caption = answer.strip()
                maps[offset] = photo_maps
                if rating_outputs is not None:
                    scores[offset] = rating_outputs
        set_scores_from_outputs(model, scores, results)
        if saliency_out is not None:
            _draw_saliency(processor, photos, maps, results, start, saliency_out, images_kwargs)
        del photos, maps  # the next batch decodes into freed memory
        yield from results


def _caption_batch(model, processor, photos: dict, prompt, generation_config, images_kwargs, keep_maps: bool = False):
    """`(offset, answer or exception, its per-tile maps or None, EAT's raw outputs `(10,)` or None)` for each photo; a
    failing batch is redone one photo at a time. Each photo is tiled once; with `keep_maps` its maps (EAT + LayerCAM
    run once per photo) are returned and given to `generate`, so the caption and its saliency picture come from the
    same maps. The raw outputs (the aesthetic score's) are those of that same EAT forward pass."""
    import torch

    if not photos:
        return []
    try:
        inputs = chat_inputs(model, processor, list(photos.values()), [prompt] * len(photos), images_kwargs)
        maps = [None] * len(photos)
        with eat_outputs(model) as caught:  # EAT runs once per photo: for the maps here, or inside generate()
            if keep_maps:
                counts = [processor.image_processor.get_number_of_image_patches(photo.height, photo.width,
                                                                                images_kwargs)
                          for photo in photos.values()]
                maps = per_image_saliency_maps(model, inputs, counts)
                inputs["saliency_maps"] = torch.cat(maps)
                for computed in ("saliency_pixel_values", "tile_grids"):
                    inputs.pop(computed, None)
            answers = generate_answers(model, processor, inputs, generation_config)
        outputs = list(torch.cat(caught)) if caught else [None] * len(photos)
        if len(outputs) != len(photos):  # not one EAT output per photo (a source that skips EAT): no score
            outputs = [None] * len(photos)
        return list(zip(photos, answers, maps, outputs))
    except PER_FILE_ERRORS as error:
        if len(photos) == 1:
            return [(next(iter(photos)), error, None, None)]
    return [row for offset, photo in photos.items() for row in _caption_batch(
        model, processor, {offset: photo}, prompt, generation_config, images_kwargs, keep_maps)]


def per_image_saliency_maps(model, inputs, counts: list[int]) -> list:
    """Each image's `(tiles, G, G)` maps for `chat_inputs`' batch (`counts`: its tiles): EAT + LayerCAM once per image
    and one image at a time (a map depends on its image alone, as in `ase-mllm serve` and vLLM), or the processor's."""
    import torch

    with torch.no_grad():
        if "saliency_pixel_values" not in inputs:
            return list(model.get_saliency_maps(**inputs).split(counts))
        ends = torch.tensor(counts).cumsum(0).tolist()
        return [model.get_saliency_maps(
            inputs["pixel_values"][end - count : end], saliency_pixel_values=inputs["saliency_pixel_values"][i : i + 1],
            tile_grids=inputs["tile_grids"][i : i + 1], saliency_source=inputs.get("saliency_source"),
        ) for i, (count, end) in enumerate(zip(counts, ends))]


def _draw_saliency(processor, photos: dict, maps: dict, results: list[Critique], start: int, folder,
                   images_kwargs: dict) -> None:
    from .visualize import save_saliency_picture

    for offset, photo in photos.items():
        if results[offset].error is not None:
            continue
        try:
            path = saliency_picture_path(folder, start + offset, results[offset].image)
            results[offset].saliency_picture = str(save_saliency_picture(
                photo, path, processor, max_patches=images_kwargs.get("max_patches"), maps=maps[offset]))
        except PER_FILE_ERRORS as error:
            results[offset].saliency_error = f"saliency picture failed: {type(error).__name__}: {error}"


def critique_images(model, processor, images: list, **options) -> list[Critique]:
    """All of `iter_critiques(...)` as a list (one `Critique` per input, in input order)."""
    return list(iter_critiques(model, processor, images, **options))


def format_critique(result: Critique, as_json: bool) -> str:
    """The line to print: `name: [score] caption` / `name: ERROR ...`, or one JSON object (fields that are set)."""
    if as_json:
        return json.dumps({k: v for k, v in asdict(result).items() if v is not None}, ensure_ascii=False)
    if result.error is not None:
        return f"{result.image}: ERROR {result.error}"
    if result.score is not None:
        return f"{result.image}: [{score_text(result.score)}] {result.caption}"
    return f"{result.image}: {result.caption}"
