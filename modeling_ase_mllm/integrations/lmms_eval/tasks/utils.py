"""The AIC caption tasks' functions: the photo, the paper's prompt, and the eleven metrics of `ase-mllm evaluate`
(`evaluation.metrics.score_predictions` over the whole split: CIDEr takes its IDF over it, so each metric's aggregation
scores the split once, shared by all eleven)."""

from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT
from modeling_ase_mllm.evaluation.metrics import score_predictions
from modeling_ase_mllm.evaluation.vocabulary import METRICS


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc):
    return AESTHETIC_PROMPT


def process_results(doc, results):
    record = {"image_id": str(doc["image_id"]), "caption": results[0].strip() if results else "",
              "references": list(doc["references"])}
    return {metric: record for metric in METRICS}


_scored: dict = {}


def split_metrics(records) -> dict:
    """All eleven metrics of one split's records (computed once per split)."""
    key = tuple((record["image_id"], record["caption"]) for record in records)
    if key not in _scored:
        _scored[key] = score_predictions({r["image_id"]: r["caption"] for r in records},
                                         {r["image_id"]: r["references"] for r in records})
    return _scored[key]


def _aggregation(metric):
    def aggregate(records):
        return split_metrics(records)[metric]

    aggregate.__name__ = f"aggregate_{metric}"
    return aggregate


# `aggregate_Bleu_1`, ..., `aggregate_Recall`: what the YAMLs' metric_list names.
globals().update({f"aggregate_{metric}": _aggregation(metric) for metric in METRICS})
