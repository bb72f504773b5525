"""The DPC2022 reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from datasets import DatasetDict

from .errors import AnnotationFileNotFoundError, RecordLocation
from .records import (
    SplitCollector, image_folder, optional_number, read_csv_rows, read_json_file, require_field, resolve_path,
    select_splits,
)
from .schema import ARS_FIELDS, make_example


# Layout of the ARIC release (the folder name 'anotation' is spelled as in the release).
DPC2022_SPLIT_FILES: dict[str, str] = {
    "train": "anotation/train/train.csv",
    "val": "anotation/test_and_val/val.csv",
    "test": "anotation/test_and_val/test.csv",
}
DPC2022_ANNOTATION_DIR = "anotation/clean_and_all_score"
DPC2022_IMAGE_DIR = "img_256x256"


def normalize_numeric_id(raw: str) -> str:
    """``"245925.0"`` -> ``"245925"``: pandas may write integer ids as floats."""
    text = raw.strip()
    if text.endswith(".0") and text[:-2].isdigit():
        return text[:-2]
    return text


def _dpc2022_split_ids(path: Path) -> list[tuple[int, str]]:
    ids = []
    for row_number, row in read_csv_rows(path, ("ID",), "DPC2022 split file"):
        image_id = normalize_numeric_id(row["ID"] or "")
        if not image_id:
            raise RecordLocation(path, row_number).error("ID", "empty image id")
        ids.append((row_number, image_id))
    return ids


def _dpc2022_relevance(entry: Any, loc: RecordLocation, field_name: str) -> tuple[str, dict[str, float | None]]:
    """One ``score_comments`` entry -> (sentence, aesthetic-relevance components)."""
    if not isinstance(entry, Mapping):
        raise loc.error(field_name, f"expected an object, got {type(entry).__name__}")
    comment = entry.get("comment")
    # The release nests the sentence as {"comment": {"comment": text, ...}}; accept a bare string too.
    text = comment.get("comment") if isinstance(comment, Mapping) else comment
    if not isinstance(text, str):
        raise loc.error(f"{field_name}.comment.comment", f"expected the sentence text, got {type(text).__name__}")
    relevance = {name: optional_number(entry.get(key), loc, f"{field_name}.{key}") for name, key in ARS_FIELDS.items()}
    return text, relevance


def _dpc2022_example(path: Path, image_id: str, image_dir: Path, reference_field: str) -> dict:
    record = read_json_file(path, "DPC2022 per-image annotation file")
    loc = RecordLocation(path, record_id=image_id)
    entries = require_field(record, reference_field, list, loc)
    if reference_field == "score_comments":
        pairs = [_dpc2022_relevance(entry, loc, f"score_comments[{i}]") for i, entry in enumerate(entries)]
        references, relevance = [text for text, _ in pairs], [rel for _, rel in pairs]
    else:
        for i, text in enumerate(entries):
            if not isinstance(text, str):
                raise loc.error(f"{reference_field}[{i}]", f"expected str, got {type(text).__name__}")
        references, relevance = entries, []
    return make_example(
        "dpc2022",
        image_id,
        image_dir / f"{image_id}.jpg",
        references=references,
        reference_relevance=relevance,
        score=optional_number(record.get("avg_all_users_score"), loc, "avg_all_users_score"),
    )


def load_dpc2022(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    split_files: Mapping[str, str | os.PathLike] | None = None,
    annotation_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    reference_field: str = "score_comments",
) -> DatasetDict:
    """Read DPC2022 (ARIC, Zhong et al., AAAI 2023) with the release's ``train/val/test`` CSV splits.

    Each id of a split CSV (column ``ID``) names ``<annotation_dir>/<ID>.json``. By default the
    references are the scored sentences of ``score_comments`` and ``reference_relevance`` holds their
    aesthetic-relevance components (``ars`` = ``sum_score`` ...); with ``reference_field="clean_comments"``
    the cleaned sentences are used and ``reference_relevance`` is empty. ``score`` is
    ``avg_all_users_score``.

    Args:
        root: the DPC2022 folder.
        splits: subset of the split names; all by default.
        split_files: split name -> CSV path (relative to ``root``); default :data:`DPC2022_SPLIT_FILES`.
        annotation_dir: folder of the per-image JSON files (default ``anotation/clean_and_all_score``).
        image_dir: folder of ``<ID>.jpg`` images (default ``img_256x256``).
        reference_field: ``"score_comments"`` or ``"clean_comments"``.

    Returns:
        DatasetDict: splits ``train``, ``val``, ``test`` (or those of ``split_files``).
    """
    if reference_field not in ("score_comments", "clean_comments"):
        raise ValueError(f"dpc2022: reference_field must be score_comments or clean_comments, not {reference_field!r}")
    root = Path(root).resolve()
    split_files = dict(DPC2022_SPLIT_FILES if split_files is None else split_files)
    annotation_dir = resolve_path(root, annotation_dir, DPC2022_ANNOTATION_DIR)
    image_dir = image_folder(root, image_dir, DPC2022_IMAGE_DIR, "DPC2022")
    chosen = select_splits(tuple(split_files), splits, "dpc2022")
    collector = SplitCollector("dpc2022", chosen)
    for split in chosen:
        split_path = resolve_path(root, split_files[split], ".")
        for row_number, image_id in _dpc2022_split_ids(split_path):
            json_path = annotation_dir / f"{image_id}.json"
            if not json_path.is_file():
                where = RecordLocation(split_path, row_number, image_id).describe()
                raise AnnotationFileNotFoundError(
                    f"{json_path}: per-image annotation file not found (listed at {where})"
                )
            collector.add(split, _dpc2022_example(json_path, image_id, image_dir, reference_field))
    return collector.finish()

