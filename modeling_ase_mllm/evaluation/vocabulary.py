"""The eleven AIC metrics' one vocabulary: what each is called in `metrics.json`, in the paper's Table I, in prose and
on the Hub.

Every place that names a metric asks here: the scorers (`metrics.py`, `spice.py`) key their results by `key`, the
Table I layout (`metrics.md`, the demo report, the model card) uses `column` in this order, the model card's legend
and `model-index` use `name` and `hub_type`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        key: its key in `metrics.json` (pycocoevalcap's own name for the seven COCO metrics).
        column: its Table I column (§IV.C).
        name: how prose and the Hub's evaluation results name it.
        hub_type: the `type` of its `model-index` entry (the Hub's metric id).
        spice: computed by the official SPICE jar (else by pycocoevalcap).
    """

    key: str
    column: str
    name: str
    hub_type: str
    spice: bool = False


# In Table I order.
METRIC_TABLE: tuple[Metric, ...] = (
    Metric("Bleu_1", "B1", "BLEU-1", "bleu"),
    Metric("Bleu_2", "B2", "BLEU-2", "bleu"),
    Metric("Bleu_3", "B3", "BLEU-3", "bleu"),
    Metric("Bleu_4", "B4", "BLEU-4", "bleu"),
    Metric("METEOR", "M", "METEOR", "meteor"),
    Metric("ROUGE_L", "R", "ROUGE-L", "rouge"),
    Metric("CIDEr", "C", "CIDEr", "cider"),
    Metric("SPICE", "S", "SPICE", "spice", spice=True),
    Metric("SPICE-L", "S-L", "SPICE-L", "spice", spice=True),
    Metric("Precision", "Pre", "SPICE precision", "precision", spice=True),
    Metric("Recall", "Re", "SPICE recall", "recall", spice=True),
)

METRICS: tuple[str, ...] = tuple(metric.key for metric in METRIC_TABLE)
COCO_METRICS: tuple[str, ...] = tuple(metric.key for metric in METRIC_TABLE if not metric.spice)
SPICE_METRICS: tuple[str, ...] = tuple(metric.key for metric in METRIC_TABLE if metric.spice)


__all__ = ["Metric", "METRIC_TABLE", "METRICS", "COCO_METRICS", "SPICE_METRICS"]
