"""The one schema every AIC dataset reader returns (documented in ``docs/datasets.md``), and building its rows.

Splits of different datasets can be concatenated because they share :data:`AIC_FEATURES`; per-reference lists
are either aligned with ``references`` or empty when the dataset has no such label.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from datasets import Dataset, Features, Image, List, Value

# PCCD's seven aspects, in the order of PCCD's per-record `score` list.
PCCD_ASPECTS: tuple[str, ...] = (
    "general_impression",
    "subject_of_photo",
    "composition",
    "use_of_camera",
    "depth_of_field",
    "color_lighting",
    "focus",
)

# DPC2022 aesthetic-relevance components per sentence: our field name -> key in a `score_comments` entry.
ARS_FIELDS: dict[str, str] = {
    "ars": "sum_score",
    "ars_normalized": "norm_sum_score",
    "tfidf": "tfidf",
    "length": "length",
    "aesthetic": "aesthetic",
    "objective": "objective",
    "sentiment": "sentiment",
    "clip": "clip_score",
    "clip_normalized": "norm_clip_score",
}

# One schema for every dataset, so that splits of different datasets can be concatenated. Per-reference
# lists are either aligned with `references` or empty when the dataset has no such label.
AIC_FEATURES = Features(
    {
        "dataset": Value("string"),
        "image_id": Value("string"),
        "image": Image(mode="RGB"),
        "references": List(Value("string")),
        "reference_aspects": List(Value("string")),
        "reference_aspect_probs": List(List(Value("float64"), length=len(PCCD_ASPECTS))),
        "reference_relevance": List({name: Value("float64") for name in ARS_FIELDS}),
        "score": Value("float64"),
        "aspect_scores": {aspect: Value("float64") for aspect in PCCD_ASPECTS},
    }
)


def make_example(
    dataset: str,
    image_id: str,
    image: str | os.PathLike | None,
    references: Sequence[str],
    reference_aspects: Sequence[str] = (),
    reference_aspect_probs: Sequence[Sequence[float]] = (),
    reference_relevance: Sequence[Mapping[str, float | None]] = (),
    score: float | None = None,
    aspect_scores: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """Build one example of :data:`AIC_FEATURES`, dropping blank critiques and their aligned labels.

    Args:
        dataset: short dataset name (``"pccd"``, ...).
        image_id: stable id of the image within the dataset.
        image: path of the image file (absolute), or anything ``datasets.Image`` encodes.
        references: critiques; surrounding whitespace is stripped and blank ones are dropped.
        reference_aspects / reference_aspect_probs / reference_relevance: per-critique labels, each
            either aligned with ``references`` or empty.
        score: image-level aesthetic score, on the dataset's own scale.
        aspect_scores: PCCD-style per-aspect scores (missing aspects become ``None``).

    Returns:
        dict[str, Any]: the example.
    """
    aligned = {
        "reference_aspects": list(reference_aspects),
        "reference_aspect_probs": [list(probs) for probs in reference_aspect_probs],
        "reference_relevance": [dict(entry) for entry in reference_relevance],
    }
    for name, values in aligned.items():
        if values and len(values) != len(references):
            raise ValueError(f"{dataset} {image_id}: {name} has {len(values)} entries for {len(references)} references")
    kept = [i for i, text in enumerate(references) if text and text.strip()]
    example = {
        "dataset": dataset,
        "image_id": str(image_id),
        "image": str(image) if isinstance(image, (str, os.PathLike)) else image,
        "references": [references[i].strip() for i in kept],
        "score": score,
        "aspect_scores": None if aspect_scores is None else {a: aspect_scores.get(a) for a in PCCD_ASPECTS},
    }
    for name, values in aligned.items():
        example[name] = [values[i] for i in kept] if values else []
    return {name: example[name] for name in AIC_FEATURES}  # column order of the schema


def dataset_from_rows(rows: list[dict[str, Any]], features: Features) -> Dataset:
    """``Dataset.from_list`` that also accepts no rows (an empty split keeps its schema)."""
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)

