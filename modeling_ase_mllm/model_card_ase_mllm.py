"""The model card (`README.md`) of a saved ASE-MLLM folder.

`save_pretrained` writes it; `write_model_card(folder, metrics=..., picture=...)` adds the evaluation table and the
saliency picture. A card that Trainer or TRL wrote is kept: its metadata is merged with ours and its text stays
below our sections, which sit between markers so that writing again replaces them instead of stacking.

Remote code: imports only huggingface_hub, the standard library and sibling modules.
"""

import json
import math
from pathlib import Path



BEGIN, END = "<!-- ase-mllm card: begin -->", "<!-- ase-mllm card: end -->"
TAGS = ["ase-mllm", "aesthetic-image-captioning", "image-text-to-text", "custom_code"]
# The eleven metrics, as the paper's Table I columns (§IV.C) and the keys `metrics.json` holds them under. This is
# their one vocabulary: `metrics.py` imports it from here, because remote code cannot import the metrics module.
TABLE_COLUMNS = (
    ("B1", "Bleu_1"), ("B2", "Bleu_2"), ("B3", "Bleu_3"), ("B4", "Bleu_4"), ("M", "METEOR"), ("R", "ROUGE_L"),
    ("C", "CIDEr"), ("S", "SPICE"), ("S-L", "SPICE-L"), ("Pre", "Precision"), ("Re", "Recall"),
)

USAGE = '''```python
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model_id = "{model_id}"
model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)

image = Image.new("RGB", (640, 480), (180, 120, 60))  # your photo: Image.open("photo.jpg")
messages = [{{"role": "user", "content": [
    {{"type": "image"}}, {{"type": "text", "text": "Comment on this image from an aesthetic perspective."}}]}}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[image], text=[text], return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```'''

SALIENCY = {
    "eat_layercam": "EAT, an aesthetics-oriented deformable-attention transformer (DAT-Base, 10 AVA rating bins), "
    "scores the whole photo at 224 px; LayerCAM at the last LayerNorm of its stage 3 turns the gradient of the top "
    "bin into a 14×14 aesthetic-saliency map, computed once per photo and resampled onto every 448 px picture the "
    "ViT sees. EAT's weights are part of this checkpoint and frozen.",
    "spectral_residual": "A classical spectral-residual saliency map (no learned weights), computed once per photo "
    "and resampled onto every 448 px picture the ViT sees.",
    "uniform": "A uniform map (ablation: the cross-attention sees no saliency).",
}


def format_table_row(metrics: dict) -> str:
    """One Table I row from `metrics.json`'s keys: `| 0.682 | 0.454 | ... | n/a |` (3 decimals)."""
    cells = []
    for _, key in TABLE_COLUMNS:
        value = metrics.get(key)
        cells.append(f"{value:.3f}" if isinstance(value, (int, float)) and not math.isnan(value) else "n/a")
    return "| " + " | ".join(cells) + " |"


def format_table(metrics: dict) -> str:
    """A markdown table in the paper's Table I layout; each distinct reason for an `n/a` once, below it."""
    header = "| " + " | ".join(column for column, _ in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---:|" * len(TABLE_COLUMNS), format_table_row(metrics)]
    reasons = list(dict.fromkeys((metrics.get("unavailable") or {}).values()))
    return "\n".join(lines + ([""] + [f"n/a: {reason}" for reason in reasons] if reasons else []))


# The base model of each family (`model_type`), how its ViT sees a photo, and its Hub tag.
BASE_MODELS = {
    "ase_mllm": ("InternVL2", "448 px tiles and a thumbnail", "internvl"),
    "ase_mllm_qwen_vl": ("Qwen-VL-Chat", "one 448 px picture", "qwen-vl"),
}


def card_sections(config, model_id: str, metrics: dict | None, picture: str | None) -> str:
    source = config.saliency_config.source
    vision = config.vision_config
    base, pictures, _ = BASE_MODELS.get(config.model_type, BASE_MODELS["ase_mllm"])
    lines = [
        BEGIN,
        "# ASE-MLLM",
        "",
        f"An aesthetic image captioning model (ASE-MLLM, arXiv 2509.04378): {base} whose vision encoder "
        f"(IAS-ViT, seeing {pictures} per photo) attends to an aesthetic-saliency map through a gated "
        "cross-attention in its blocks.",
        "",
        "## Usage",
        "",
        USAGE.format(model_id=model_id),
        "",
        "## How saliency works",
        "",
        f"{SALIENCY.get(source, source)} In {len(vision.ias_layer_indices)} of the {vision.num_hidden_layers} "
        "ViT blocks, a cross-attention after the self-attention takes its queries from the saliency features and its "
        "keys and values from the image features, scaled by a learned per-channel gate `tanh(g)` (zero at "
        f"conversion, so an untrained model equals {base} exactly).",
        "",
    ]
    if picture:
        lines += ["![What the model looks at: the photo with its saliency, beside every tile's map]"
                  f"({picture})", ""]
    if metrics:
        lines += ["## Evaluation", "", format_table(metrics), ""]
        if metrics.get("num_images"):
            lines += [f"{metrics['num_images']} test images. B1-B4: BLEU-1..4, M: METEOR, R: ROUGE-L, C: CIDEr, S: SPICE, "
                      "as the MS-COCO caption evaluation computes them (pycocoevalcap); S-L: SPICE against each "
                      "reference alone, best per image; Pre/Re: SPICE's tuple precision and recall over the same "
                      f"pairs (rule: {metrics.get('pr_variant', 'independent')}).", ""]
    return "\n".join(lines + [END])


def write_model_card(folder, config=None, model_id: str | None = None, metrics: dict | str | Path | None = None,
                     picture: str | None = None, base_model: str | None = None, datasets: list | None = None,
                     license: str | None = None) -> Path:
    """Write (or update) `folder/README.md`.

    Args:
        config: the model's `AseMllmConfig` or `AseMllmQwenVLConfig` (default: read from `folder/config.json`).
        model_id: what the usage snippet loads (default: the folder path; use the Hub id when publishing).
        metrics: a `metrics.json` path or dict (default: `folder/metrics.json` if present) for the evaluation table.
        picture: a saliency picture's path relative to `folder` (default: `saliency.png` if present).
    """
    from huggingface_hub import ModelCard, ModelCardData  # here: the CLI imports this module's table only

    folder = Path(folder)
    if config is None:
        from .configuration_ase_mllm import AseMllmConfig
        from .configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig

        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        config_class = AseMllmQwenVLConfig if model_type == AseMllmQwenVLConfig.model_type else AseMllmConfig
        config = config_class.from_pretrained(folder)
    if metrics is None and (folder / "metrics.json").is_file():
        metrics = folder / "metrics.json"
    if isinstance(metrics, (str, Path)):
        metrics = json.loads(Path(metrics).read_text(encoding="utf-8"))
    if picture is None and (folder / "saliency.png").is_file():
        picture = "saliency.png"
    path = folder / "README.md"
    existing = ModelCard.load(path) if path.is_file() else None
    data = existing.data.to_dict() if existing is not None else {}
    data.setdefault("library_name", "transformers")
    data.setdefault("pipeline_tag", "image-text-to-text")
    family_tag = BASE_MODELS.get(config.model_type, BASE_MODELS["ase_mllm"])[2]
    data["tags"] = list(dict.fromkeys([*(data.get("tags") or []), *TAGS[:2], family_tag, *TAGS[2:]]))
    for key, value in (("base_model", base_model), ("datasets", datasets), ("license", license)):
        if value is not None:
            data[key] = value
    data.setdefault("license", "other")
    body = existing.text if existing is not None else ""
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + body[body.index(END) + len(END):]
    sections = card_sections(config, model_id or str(folder), metrics, picture)
    card = ModelCard(f"---\n{ModelCardData(**data).to_yaml()}\n---\n\n{sections}\n\n{body.strip()}\n")
    card.save(path)
    return path


__all__ = ["write_model_card", "format_table"]
