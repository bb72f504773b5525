"""The model card's section on the aesthetic score: how to get it, where EAT's weights come from (the file and
SHA-256 `convert --eat` recorded, or the untrained label), and a score evaluation's results (`ase-mllm
evaluate-score`: its table, and its `model-index` entries)."""

import json
import math
from pathlib import Path

from ..evaluation.scores import SCORE_METRICS, format_score_table
from ..scoring_ase_mllm import UNTRAINED_NOTE, eat_is_trained
from ..utils.files import write_atomically


# Where a model folder keeps its score evaluation, for every later card.
SCORE_METRICS_FILE = "score_metrics.json"
# The `model-index` task of score evaluations.
SCORE_TASK = ("image-classification", "Image aesthetics assessment")

SCORE_USAGE = '''```python
from transformers import pipeline

critic = pipeline("aesthetic-critique", model="{model_id}", trust_remote_code=True)
result = critic("photo.jpg", max_new_tokens=64)
result["critique"], result["score"], result["saliency_maps"]  # text, Σ i·y_i of EAT's 10 AVA bins, per-tile maps
```'''


def card_score_metrics(folder: Path, score_metrics) -> dict | None:
    """The score evaluation a card shows: `score_metrics` (a dict, kept in the folder for later cards, or a path), else
    the one the folder keeps."""
    kept = Path(folder) / SCORE_METRICS_FILE
    if isinstance(score_metrics, dict):
        write_atomically(kept, json.dumps(score_metrics, indent=2) + "\n")
        return score_metrics
    path = Path(score_metrics) if score_metrics is not None else kept
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def score_eval_results(metrics: dict) -> list:
    """The `model-index` entries of a score evaluation (`huggingface_hub.EvalResult`, one per metric with a value)."""
    from huggingface_hub import EvalResult

    if not metrics.get("dataset"):
        return []
    task_type, task_name = SCORE_TASK
    return [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=str(metrics["dataset"]),
                   dataset_name=str(metrics["dataset"]), dataset_split=metrics.get("split") or "all",
                   metric_type=hub_type, metric_name=name, metric_value=metrics[key])
        for key, name, hub_type in SCORE_METRICS
        if isinstance(metrics.get(key), (int, float)) and not math.isnan(metrics[key])
    ]


def score_section(config, model_id: str, metrics: dict | None = None) -> list[str]:
    """The card's `## Aesthetic score` lines; none for a model without EAT (its saliency source is not EAT's)."""
    if config.saliency_config.source != "eat_layercam":
        return []
    eat = config.saliency_config.eat_config
    if eat_is_trained(eat):
        provenance = (f"EAT's weights were converted from `{eat.weights_file}` (SHA-256 `{eat.weights_sha256}`); "
                      "fine-tuning never changes them (EAT is frozen).")
    else:
        provenance = f"**Untrained score.** {UNTRAINED_NOTE} (no EAT checkpoint was recorded at conversion)."
    lines = [
        "## Aesthetic score",
        "",
        "Every photo also gets EAT's aesthetic score: Σ_i i·y_i over the ten raw outputs y of its AVA rating bins "
        "(no softmax), as EAT's own `get_score`, from the same EAT forward that draws the saliency map. "
        "`model.score(images=..., processor=...)` gives it alone (one EAT forward), `model.critique(processor, "
        "images)` gives critique, score and the maps the ViT received in one call, and so does the pipeline:",
        "",
        SCORE_USAGE.format(model_id=model_id),
        "",
        provenance,
        "",
    ]
    if metrics:
        split = f", {metrics['split']} split" if metrics.get("split") else ""
        lines += [f"Evaluated on {metrics.get('num_images')} photos of {metrics.get('dataset')}{split} "
                  "(`ase-mllm evaluate-score`): SRCC and PLCC with the mean human rating, binary accuracy at 5.0 "
                  "(a score at or below 5.00 is low), EMD (r = 2) between EAT's raw outputs and the vote "
                  "distribution.", "", format_score_table(metrics), ""]
    return lines


__all__ = ["score_section", "score_eval_results", "card_score_metrics", "SCORE_METRICS_FILE"]
