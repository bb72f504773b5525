"""The model card (`README.md`) of a saved ASE-MLLM folder.

Tooling, not remote code: `import modeling_ase_mllm` adds `card_save_hook` to the model's `SAVE_HOOKS`, so every
`save_pretrained` and `push_to_hub` of the installed package writes the card, and a model loaded from a Hub folder
as remote code writes none. `write_model_card(folder, metrics=..., picture=...)` adds the evaluation, as the Table I
table and as the Hub's `model-index` metadata (one entry per metric, with the task, dataset and split), and the
saliency picture. A card that Trainer or TRL wrote is kept: its metadata is merged with ours and its text stays
below our sections, which sit between markers so that writing again replaces them instead of stacking.
"""

import json
import math
from pathlib import Path

from ..data.prompts import AESTHETIC_PROMPT
from ..evaluation.metrics import format_table
from ..evaluation.vocabulary import METRIC_TABLE
from .score_card import card_score_metrics, score_eval_results, score_section


BEGIN, END = "<!-- ase-mllm card: begin -->", "<!-- ase-mllm card: end -->"
TAGS = ["ase-mllm", "aesthetic-image-captioning", "image-text-to-text", "custom_code"]
# The `model-index` task of the evaluation results: captioning, as the Hub files it.
EVAL_TASK = ("image-to-text", "Aesthetic image captioning")

USAGE = '''```python
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model_id = "{model_id}"
model = AutoModelForImageTextToText.from_pretrained(model_id, trust_remote_code=True, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)

image = Image.new("RGB", (640, 480), (180, 120, 60))  # your photo: Image.open("photo.jpg")
messages = [{{"role": "user", "content": [
    {{"type": "image"}}, {{"type": "text", "text": {prompt}}}]}}]
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


def evaluation_section(metrics: dict) -> list[str]:
    """The card's evaluation: the Table I table (each reason for an `n/a` once) and what was scored how."""
    lines = ["## Evaluation", "", format_table(metrics, protocol=False), ""]
    scored = f"{metrics['num_images']} images" if metrics.get("num_images") else "The images"
    if metrics.get("dataset"):
        scored += f" of {metrics['dataset']}" + (f" ({metrics['split']} split)" if metrics.get("split") else "")
    legend = ", ".join(f"{metric.column}: {metric.name}" for metric in METRIC_TABLE)
    lines += [f"{scored}. {legend}. BLEU, METEOR, ROUGE-L and CIDEr as the MS-COCO caption evaluation computes them "
              "(pycocoevalcap); SPICE-L: SPICE against each reference alone, best per image; SPICE precision and "
              f"recall: its tuple precision and recall over the same pairs (rule: {metrics.get('pr_variant', 'independent')}).",
              ""]
    protocol = metrics.get("protocol")
    if protocol:
        lines += [f"Protocol: trained on `{protocol['train_split']}`, scored on `{protocol['eval_split']}`, the split of "
                  f"{protocol['whose']} (split files: {protocol['source']}). Compare these numbers only with numbers of "
                  "the same protocol.", ""]
    elif metrics.get("protocol_note"):
        lines += [f"Protocol: {metrics['protocol_note']}.", ""]
    if metrics.get("control"):
        lines += ["Grounding control: the same critiques scored against the references of other photos of the split "
                  f"(a derangement, seed {metrics['control']['seed']}); the gap is what the critiques owe to their "
                  "photos, near zero for a model that ignores the image.", ""]
    return lines


def eval_results(metrics: dict) -> list:
    """The `model-index` entries of `metrics` (`huggingface_hub.EvalResult`, one per metric with a value), or none
    when `metrics.json` does not say which dataset and split it scored."""
    from huggingface_hub import EvalResult

    if not metrics.get("dataset") or not metrics.get("split"):
        return []
    dataset = str(metrics["dataset"])
    task_type, task_name = EVAL_TASK
    return [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=Path(dataset).name, dataset_name=dataset,
                   dataset_split=metrics["split"], metric_type=metric.hub_type, metric_name=metric.name,
                   metric_value=metrics[metric.key])
        for metric in METRIC_TABLE
        if isinstance(metrics.get(metric.key), (int, float)) and not math.isnan(metrics[metric.key])
    ]


# The base model of each family (`model_type`), how its ViT sees a photo, and its Hub tag.
BASE_MODELS = {
    "ase_mllm": ("InternVL2", "448 px tiles and a thumbnail", "internvl"),
    "ase_mllm_qwen_vl": ("Qwen-VL-Chat", "one 448 px picture", "qwen-vl"),
}


def card_sections(config, model_id: str, metrics: dict | None, picture: str | None, saliency_source: str | None = None,
                  score_metrics: dict | None = None) -> str:
    from ..configuration_ase_mllm import PYTHON_REQUIREMENT, TORCH_REQUIREMENT, TRANSFORMERS_REQUIREMENT

    source = saliency_source or config.saliency_config.source
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
        USAGE.format(model_id=model_id, prompt=json.dumps(AESTHETIC_PROMPT)),
        "",
        f"Runs with `transformers{TRANSFORMERS_REQUIREMENT}`, `torch{TORCH_REQUIREMENT}` and Python {PYTHON_REQUIREMENT}: "
        "this folder carries its own code (`trust_remote_code=True`), so the ase-mllm package is not needed.",
        "",
        "## How saliency works",
        "",
        f"{SALIENCY.get(source, source)} In {len(vision.ias_layer_indices)} of the {vision.num_hidden_layers} "
        "ViT blocks, a cross-attention after the self-attention takes its queries from the saliency features and its "
        "keys and values from the image features, scaled by a learned per-channel gate `tanh(g)` (zero at "
        f"conversion, so an untrained model equals {base} exactly).",
        "",
    ]
    lines += score_section(config, model_id, score_metrics)
    if picture:
        lines += ["![What the model looks at: the photo with its saliency, beside every tile's map]"
                  f"({picture})", ""]
    if metrics:
        lines += evaluation_section(metrics)
    return "\n".join(lines + [END])


def write_model_card(folder, config=None, model_id: str | None = None, metrics: dict | str | Path | None = None,
                     picture: str | None = None, base_model: str | None = None, datasets: list | None = None,
                     license: str | None = None, saliency_source: str | None = None,
                     score_metrics: dict | str | Path | None = None) -> Path:
    """Write (or update) `folder/README.md`.

    Args:
        config: the model's `AseMllmConfig` or `AseMllmQwenVLConfig` (default: read from `folder/config.json`).
        model_id: what the usage snippet loads (default: the folder path; use the Hub id when publishing).
        metrics: a `metrics.json` path or dict (default: `folder/metrics.json` if present), as `ase-mllm evaluate`
            writes it: the evaluation table, and the `model-index` when it names its dataset and split.
        picture: a saliency picture's path relative to `folder` (default: `saliency.png` if present).
        saliency_source: the source the processor that made `metrics` used (default: the config's, the same:
            the model refuses maps made for another source).
        score_metrics: a score evaluation's metrics (`ase-mllm evaluate-score`), path or dict (default:
            `folder/score_metrics.json` if present; a dict given is kept there): its table and `model-index` entries.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    if config is None:
        from ..configuration_ase_mllm import AseMllmConfig
        from ..configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig

        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        config_class = AseMllmQwenVLConfig if model_type == AseMllmQwenVLConfig.model_type else AseMllmConfig
        config = config_class.from_pretrained(folder)
    if metrics is None and (folder / "metrics.json").is_file():
        metrics = folder / "metrics.json"
    if isinstance(metrics, (str, Path)):
        metrics = json.loads(Path(metrics).read_text(encoding="utf-8"))
    score_metrics = card_score_metrics(folder, score_metrics)
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
    card_data = ModelCardData(**data)
    if results := eval_results(metrics or {}) + score_eval_results(score_metrics or {}):
        # Results of the same task, dataset and split replace the ones there; others (another split) stay.
        scored = {(result.task_type, result.dataset_type, result.dataset_split) for result in results}
        kept = [result for result in card_data.eval_results or []
                if (result.task_type, result.dataset_type, result.dataset_split) not in scored]
        card_data.eval_results = kept + results
        card_data.model_name = card_data.model_name or (model_id or folder.resolve().name).rstrip("/").split("/")[-1]
    body = existing.text if existing is not None else ""
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + body[body.index(END) + len(END):]
    sections = card_sections(config, model_id or str(folder), metrics, picture, saliency_source, score_metrics)
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{sections}\n\n{body.strip()}\n")
    card.save(path)
    return path


def card_save_hook(folder, model, repo_id: str | None = None) -> None:
    """`SAVE_HOOKS` entry: the card of a folder `save_pretrained` just wrote (snippet pointing at `repo_id` when
    `push_to_hub` is about to upload it)."""
    write_model_card(folder, config=model.config, model_id=repo_id)


__all__ = ["write_model_card", "card_save_hook", "eval_results"]
