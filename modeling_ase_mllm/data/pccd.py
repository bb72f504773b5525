"""The PCCD reader.

PCCD's authors distribute `PCCD/raw.json` and `PCCD/images/` (image files named after each record's `title`), without
a split: `kunghunglu/DeepPhotoCritic-ICCV17`'s README as its pull request #3 has it (458b39c; master, 039bf5d, has no
dataset section), a Google Drive file that Aestheval's downloader fetches too
(`aestheval/data/data-tools/data_downloader.py` at f72fd12). The split that public PCCD code uses is
Aestheval's: `aestheval/data/PCCD/guru_{train,validation,test}.json` in `mediatechnologycenter/Aestheval` (at 3ab80c6
and since), full records in the authors' fields, read by Aestheval's `aestheval/data/datasets/pccd.py` (at da9e871) with
the images under `images/full/<title>`. It is not the ICCV 2017 split (`docs/datasets.md`, "Protocols").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from datasets import DatasetDict

from .errors import AICDataError, AnnotationFileNotFoundError, RecordLocation
from .records import (
    SplitCollector, find_image, image_folder, optional_number, optional_text, read_json_file, require_field,
    resolve_path, select_splits,
)
from .schema import PCCD_ASPECTS, make_example


PCCD_SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("guru_train.json",),
    "validation": ("guru_validation.json", "guru_val.json"),
    "test": ("guru_test.json",),
}


# Where the split files are published, for the error that finds them missing.
PCCD_SPLITS_PUBLISHED = (
    "the authors' release (raw.json + images/) has no split; the split files are published in "
    "github.com/mediatechnologycenter/Aestheval under aestheval/data/PCCD/ (guru_train.json, guru_validation.json, "
    "guru_test.json): put them in the release folder or point at them with split_dir= / --split-dir"
)
# The authors' release keeps the images in `images/`; Aestheval's copy in `images/full/`.
PCCD_IMAGE_DIRS = ("images/full", "images")


def _pccd_split_file(split_dir: Path, split: str) -> Path:
    candidates = [split_dir / name for name in PCCD_SPLIT_FILES[split]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = " or ".join(str(c) for c in candidates)
    raise AnnotationFileNotFoundError(f"{names}: PCCD split file for split {split!r} not found; {PCCD_SPLITS_PUBLISHED}")


def _pccd_example(record: Any, loc: RecordLocation, image_dir: Path) -> tuple[dict, str]:
    """Turn one PCCD record into an example; return it with the image path to report if missing."""
    # Aestheval's processed files rename `title` to `im_name`; both name the image file.
    id_key = "im_name" if isinstance(record, Mapping) and "title" not in record and "im_name" in record else "title"
    image_id = require_field(record, id_key, str, loc)
    if not image_id.strip():
        raise loc.error(id_key, "image name is empty")
    loc = loc.with_id(image_id)
    texts = [optional_text(record, aspect, loc) for aspect in PCCD_ASPECTS]
    image = find_image(image_dir, image_id)
    example = make_example(
        "pccd",
        image_id,
        image,
        references=texts,
        reference_aspects=PCCD_ASPECTS,
        score=optional_number(record.get("overall"), loc, "overall"),
        aspect_scores=_pccd_aspect_scores(record, loc),
    )
    return example, str(image_dir / image_id) + "[.jpg|.png|...]"


def _pccd_aspect_scores(record: Mapping[str, Any], loc: RecordLocation) -> dict[str, float | None] | None:
    if record.get("score") is None:
        return None
    scores = require_field(record, "score", list, loc)
    if len(scores) != len(PCCD_ASPECTS):
        raise loc.error("score", f"expected {len(PCCD_ASPECTS)} aspect scores, got {len(scores)}")
    return {aspect: optional_number(scores[i], loc, f"score[{i}]") for i, aspect in enumerate(PCCD_ASPECTS)}


def load_pccd(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    split_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Read PCCD (Chang et al., ICCV 2017) with the splits of its ``guru_{train,validation,test}.json`` files.

    Each record gives one example: the seven aspect critiques become ``references`` (in
    :data:`PCCD_ASPECTS` order, blank ones dropped) with ``reference_aspects``; ``score`` is the record's
    ``overall`` and ``aspect_scores`` its 7-item ``score`` list ('NA' -> ``None``). The photographer's own
    ``description`` is not a critique and is not used.

    Args:
        root: the PCCD folder.
        splits: subset of ``("train", "validation", "test")`` to read; all by default.
        split_dir: folder of the ``guru_*.json`` files (default ``root``; ``guru_val.json`` is accepted
            for the validation split), e.g. Aestheval's ``aestheval/data/PCCD``.
        image_dir: folder of the images (default ``root/images/full`` if it exists, else ``root/images``, the
            authors' release); an image is ``<title>`` with or without an image extension.

    Returns:
        DatasetDict: splits ``train``, ``validation``, ``test`` with :data:`AIC_FEATURES`.
    """
    root = Path(root).resolve()
    split_dir = resolve_path(root, split_dir, ".")
    image_dir = image_folder(root, image_dir, PCCD_IMAGE_DIRS, "PCCD")
    chosen = select_splits(tuple(PCCD_SPLIT_FILES), splits, "pccd")
    collector = SplitCollector("pccd", chosen, requested=splits)
    for split in chosen:
        path = _pccd_split_file(split_dir, split)
        records = read_json_file(path, "PCCD split file")
        if not isinstance(records, list):
            raise AICDataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        for index, record in enumerate(records):
            example, image_hint = _pccd_example(record, RecordLocation(path, index), image_dir)
            collector.add(split, example, image_hint)
    return collector.finish()

