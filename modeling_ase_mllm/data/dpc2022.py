"""The DPC2022 reader.

Paths as ARIC's code reads them (`PengZai/ARIC` at 0ad0d28: `config.py`'s `--data_root`, `--comments_root`,
`--test_and_val_root`, `--image_root`; `data.py`). ARIC's captioner trains on
`anotation/comments/train_split_by_val_scored_comment_id_pair.csv`, one row per (image `ID`, sentence `comment`,
`sum_score`, `norm_sum_score`), and is scored on `anotation/test_and_val/val.csv` against every `score_comments`
sentence of each image's JSON (`image_caption_demo.py`, `generation_eval.py`, `DPC2022_for_generate.readData_from_id`);
no ARIC script reads `test.csv`. That is protocol `aric` (`data.protocols`), the default; `release` trains on
`anotation/train/train.csv` and scores `test.csv`.

The release was re-packed to pass Baidu's review (PengZai/ARIC issues #1 to #3), so an id whose `<ID>.json` is
missing is skipped and counted, like a missing image; ARIC reads a sentence with `str()`, so a number is its text.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from datasets import DatasetDict

from .errors import RecordLocation, UnavailableRecordWarning
from .records import (
    SplitCollector, image_folder, optional_number, read_csv_rows, read_json_file, require_field, require_file,
    resolve_path, select_splits,
)
from .schema import ARS_FIELDS, make_example


# Layout of the ARIC release (the folder name 'anotation' is spelled as in the release), by protocol
# (`data.protocols`): the protocols differ in what `train` is.
DPC2022_EVAL_FILES: dict[str, str] = {
    "val": "anotation/test_and_val/val.csv",
    "test": "anotation/test_and_val/test.csv",
}
DPC2022_SPLIT_FILES: dict[str, dict[str, str]] = {
    "aric": {"train": "anotation/comments/train_split_by_val_scored_comment_id_pair.csv", **DPC2022_EVAL_FILES},
    "release": {"train": "anotation/train/train.csv", **DPC2022_EVAL_FILES},
}
# A split file with this column holds (image, sentence) pairs, as ARIC's training file; without it, image ids.
PAIR_COLUMN = "comment"
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
    relevance = {name: optional_number(entry.get(key), loc, f"{field_name}.{key}") for name, key in ARS_FIELDS.items()}
    return sentence_text(text, loc, f"{field_name}.comment.comment"), relevance


def sentence_text(value: Any, loc: RecordLocation, field_name: str) -> str:
    """A sentence as ARIC reads it (`str(...)`): text as is, a number as its text, null as no sentence (dropped with
    its scores, like a blank one); anything else is named."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise loc.error(field_name, f"expected the sentence text, got {type(value).__name__} {value!r:.60}")


def _dpc2022_example(path: Path, image_id: str, image_dir: Path, reference_field: str) -> dict:
    record = read_json_file(path, "DPC2022 per-image annotation file")
    loc = RecordLocation(path, record_id=image_id)
    entries = require_field(record, reference_field, list, loc)
    if reference_field == "score_comments":
        pairs = [_dpc2022_relevance(entry, loc, f"score_comments[{i}]") for i, entry in enumerate(entries)]
        references, relevance = [text for text, _ in pairs], [rel for _, rel in pairs]
    else:
        references = [sentence_text(text, loc, f"{reference_field}[{i}]") for i, text in enumerate(entries)]
        relevance = []
    return make_example(
        "dpc2022",
        image_id,
        image_dir / f"{image_id}.jpg",
        references=references,
        reference_relevance=relevance,
        score=optional_number(record.get("avg_all_users_score"), loc, "avg_all_users_score"),
    )


def _dpc2022_pair_examples(path: Path, image_dir: Path) -> list[dict]:
    """ARIC's training file, one row per (``ID``, ``comment``, ``sum_score``, ``norm_sum_score``): one example per
    image (in order of first appearance), its sentences in file order, with ARS and normalised ARS (the other
    relevance components and the image score are not in this file: null)."""
    sentences: dict[str, list[tuple[str, dict]]] = {}
    for row_number, row in read_csv_rows(path, ("ID", PAIR_COLUMN), "DPC2022 comment-pair file"):
        loc = RecordLocation(path, row_number)
        image_id = normalize_numeric_id(row["ID"] or "")
        if not image_id:
            raise loc.error("ID", "empty image id")
        relevance = {name: None for name in ARS_FIELDS}
        relevance.update(ars=optional_number(row.get("sum_score"), loc, "sum_score"),
                         ars_normalized=optional_number(row.get("norm_sum_score"), loc, "norm_sum_score"))
        sentences.setdefault(image_id, []).append((row[PAIR_COLUMN] or "", relevance))
    return [
        make_example("dpc2022", image_id, image_dir / f"{image_id}.jpg", references=[text for text, _ in pairs],
                     reference_relevance=[relevance for _, relevance in pairs])
        for image_id, pairs in sentences.items()
    ]


def _has_column(path: Path, column: str) -> bool:
    require_file(path, "DPC2022 split file")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return column in (next(csv.reader(handle), None) or [])


def load_dpc2022(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    protocol: str = "aric",
    split_files: Mapping[str, str | os.PathLike] | None = None,
    annotation_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    reference_field: str = "score_comments",
) -> DatasetDict:
    """Read DPC2022 (ARIC, Zhong et al., AAAI 2023) with the release's split files.

    A split file with a ``comment`` column is a training file of (image, sentence) pairs, as ARIC's: its sentences
    are the references (with their ``sum_score``/``norm_sum_score`` as ``ars``/``ars_normalized``). Otherwise each
    ``ID`` of the split CSV names ``<annotation_dir>/<ID>.json``: by default the references are the scored sentences
    of ``score_comments`` and ``reference_relevance`` holds their aesthetic-relevance components (``ars`` =
    ``sum_score`` ...); with ``reference_field="clean_comments"`` the cleaned sentences are used and
    ``reference_relevance`` is empty. ``score`` is ``avg_all_users_score``. An id without its JSON is skipped and
    counted (:class:`UnavailableRecordWarning`).

    Args:
        root: the DPC2022 folder.
        splits: subset of the split names; all by default.
        protocol: ``"aric"`` (train = ARIC's comment-pair file) or ``"release"`` (train = ``train.csv``);
            see :mod:`modeling_ase_mllm.data.protocols`.
        split_files: split name -> CSV path (relative to ``root``); default: the protocol's
            (:data:`DPC2022_SPLIT_FILES`).
        annotation_dir: folder of the per-image JSON files (default ``anotation/clean_and_all_score``).
        image_dir: folder of ``<ID>.jpg`` images (default ``img_256x256``).
        reference_field: ``"score_comments"`` or ``"clean_comments"``.

    Returns:
        DatasetDict: splits ``train``, ``val``, ``test`` (or those of ``split_files``).
    """
    if reference_field not in ("score_comments", "clean_comments"):
        raise ValueError(f"dpc2022: reference_field must be score_comments or clean_comments, not {reference_field!r}")
    if protocol not in DPC2022_SPLIT_FILES:
        raise ValueError(f"dpc2022: unknown protocol {protocol!r}; it has {list(DPC2022_SPLIT_FILES)}")
    root = Path(root).resolve()
    split_files = dict(DPC2022_SPLIT_FILES[protocol] if split_files is None else split_files)
    annotation_dir = resolve_path(root, annotation_dir, DPC2022_ANNOTATION_DIR)
    image_dir = image_folder(root, image_dir, DPC2022_IMAGE_DIR, "DPC2022")
    chosen = select_splits(tuple(split_files), splits, "dpc2022")
    collector = SplitCollector("dpc2022", chosen, requested=splits)
    for split in chosen:
        split_path = resolve_path(root, split_files[split], ".")
        if _has_column(split_path, PAIR_COLUMN):
            for example in _dpc2022_pair_examples(split_path, image_dir):
                collector.add(split, example)
            continue
        for _, image_id in _dpc2022_split_ids(split_path):
            json_path = annotation_dir / f"{image_id}.json"
            if not json_path.is_file():
                collector.skip(UnavailableRecordWarning, str(json_path), split)
                continue
            collector.add(split, _dpc2022_example(json_path, image_id, image_dir, reference_field))
    return collector.finish()
