"""Critique photos in batches: the library behind `ase-mllm caption` (and the demo and evaluation)."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .conversations import PROMPT, aspect_prompt
from .image_processing_ase_mllm import open_image, to_rgb


@dataclass
class Critique:
    """One photo's result: a caption, or the error that stopped it."""

    image: str
    caption: str | None = None
    error: str | None = None
    saliency_picture: str | None = None


def load_model_and_processor(model_path: str, device: str | None = None, dtype: str = "auto"):
    """`AutoModelForImageTextToText` + `AutoProcessor` for a folder or Hub id (remote code allowed)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = AutoModelForImageTextToText.from_pretrained(model_path, trust_remote_code=True, dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    return model.to(device).eval(), processor


def critique_prompt(prompt: str | None = None, aspect: str | None = None) -> str:
    """The paper's prompt, an aspect-conditioned one ("Comment on the composition of this image."), or `prompt`."""
    if prompt is not None and aspect is not None:
        raise ValueError("give either a prompt or an aspect, not both")
    return prompt if prompt is not None else aspect_prompt(aspect) if aspect is not None else PROMPT


def critique_images(
    model,
    processor,
    images: list,
    prompt: str = PROMPT,
    max_tiles: int | None = None,
    batch_size: int = 4,
    generation_config: dict | None = None,
    saliency_out: str | Path | None = None,
    progress: bool | None = None,
) -> list[Critique]:
    """Critique each image (path or PIL image). A file that cannot be read is reported by name; the rest go on.

    Returns one `Critique` per input, in input order.
    """
    from .visualize import save_saliency_picture

    names = [str(item) if isinstance(item, (str, Path)) else f"image[{index}]" for index, item in enumerate(images)]
    results = [Critique(image=name) for name in names]
    loaded = []
    for index, item in enumerate(images):
        try:
            loaded.append((index, to_rgb(open_image(item))))
        except ValueError as error:
            results[index].error = str(error)
    images_kwargs = {"max_patches": max_tiles} if max_tiles else {}
    batches = [loaded[start : start + batch_size] for start in range(0, len(loaded), batch_size)]
    show = progress if progress is not None else len(loaded) > batch_size
    for batch in tqdm(batches, desc="critiquing", unit="batch", disable=not show):
        answers = model.batch_chat(
            processor, [image for _, image in batch], [prompt] * len(batch), generation_config, images_kwargs
        )
        for (index, image), answer in zip(batch, answers):
            results[index].caption = answer.strip()
            if saliency_out is not None:
                path = Path(saliency_out) / f"{index:04d}_{Path(names[index]).stem}_saliency.png"
                results[index].saliency_picture = str(save_saliency_picture(image, path, processor, model, max_tiles))
    return results


def format_critiques(results: list[Critique], as_json: bool) -> list[str]:
    """Lines to print: `name: caption` / `name: ERROR ...`, or one JSON object per image."""
    if as_json:
        return [json.dumps({k: v for k, v in asdict(r).items() if v is not None}, ensure_ascii=False) for r in results]
    return [f"{r.image}: {r.caption}" if r.error is None else f"{r.image}: ERROR {r.error}" for r in results]
