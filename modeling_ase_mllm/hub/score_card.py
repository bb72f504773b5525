"""The model card's section on the aesthetic score: how to get it, and where EAT's weights come from (the file and
SHA-256 `convert --eat` recorded, or the untrained label)."""

from ..scoring_ase_mllm import UNTRAINED_NOTE, eat_is_trained


SCORE_USAGE = '''```python
from transformers import pipeline

critic = pipeline("aesthetic-critique", model="{model_id}", trust_remote_code=True)
result = critic("photo.jpg", max_new_tokens=64)
result["critique"], result["score"], result["saliency_maps"]  # text, Σ i·y_i of EAT's 10 AVA bins, per-tile maps
```'''


def score_section(config, model_id: str) -> list[str]:
    """The card's `## Aesthetic score` lines; none for a model without EAT (its saliency source is not EAT's)."""
    if config.saliency_config.source != "eat_layercam":
        return []
    eat = config.saliency_config.eat_config
    if eat_is_trained(eat):
        provenance = (f"EAT's weights were converted from `{eat.weights_file}` (SHA-256 `{eat.weights_sha256}`); "
                      "fine-tuning never changes them (EAT is frozen).")
    else:
        provenance = f"**Untrained score.** {UNTRAINED_NOTE} (no EAT checkpoint was recorded at conversion)."
    return [
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


__all__ = ["score_section"]
