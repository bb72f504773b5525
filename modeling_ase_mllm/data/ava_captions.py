"""The AVA-Captions reader.

The authors' files (`V-Sense/Aesthetic-Image-Captioning-ICCVW-2019`, README at a5a6947): the main file's `split`
comes from `clean_comment_json.py`, which shuffles the comment lines and gives 5,000 to `test`, 5,000 to `val` and
the rest to `train`. `AVA_FULL_VALIDATION.json` is a COCO caption file of 9,362 images (their README): not that
5,000-image `val` split, so it is read as a split of its own, `full_validation` (COCO pipelines such as the one the
authors trained with keep one such file for the val and test images together; we could not confirm which images it
holds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from datasets import DatasetDict

from .errors import AICDataError, RecordLocation
from .records import SplitCollector, image_folder, read_json_file, require_field, resolve_path, select_splits
from .schema import make_example


AVA_CAPTIONS_FILE = "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json"
# What a COCO caption file without splits (AVA_FULL_VALIDATION.json) is called: not `val` (see above).
AVA_COCO_SPLIT = "full_validation"


def _ava_image_id(image: Any, loc: RecordLocation, id_keys: Sequence[str], name_key: str) -> str:
    if not isinstance(image, Mapping):
        raise loc.error(None, f"expected a JSON object, got {type(image).__name__}")
    for key in id_keys:
        if image.get(key) is not None:
            value = require_field(image, key, (int, str), loc)
            return str(value)
    return Path(require_field(image, name_key, str, loc)).stem


def _ava_karpathy_examples(path: Path, images: list, image_dir: Path, text_field: str) -> Iterator[tuple[str, dict]]:
    """Per-image records with ``filename``, ``split`` and ``sentences`` (the format of AVA-Captions)."""
    for index, image in enumerate(images):
        loc = RecordLocation(path, index)
        image_id = _ava_image_id(image, loc, ("imgid", "cocoid"), "filename")
        loc = loc.with_id(image_id)
        filename = require_field(image, "filename", str, loc)
        split = require_field(image, "split", str, loc)
        sentences = require_field(image, "sentences", list, loc)
        texts = [
            require_field(sentence, text_field, str, RecordLocation(path, f"{index}.sentences[{i}]", image_id))
            for i, sentence in enumerate(sentences)
        ]
        yield split, make_example("ava_captions", image_id, image_dir / filename, references=texts)


def _ava_coco_examples(path: Path, data: Mapping[str, Any], image_dir: Path) -> Iterator[dict]:
    """A COCO caption file: ``images`` (``id``, optional ``file_name``), ``annotations`` (``image_id``, ``caption``)."""
    captions: dict[str, list[str]] = {}
    for index, annotation in enumerate(data["annotations"]):
        loc = RecordLocation(path, f"annotations[{index}]")
        image_id = str(require_field(annotation, "image_id", (int, str), loc))
        captions.setdefault(image_id, []).append(require_field(annotation, "caption", str, loc.with_id(image_id)))
    for index, image in enumerate(data["images"]):
        loc = RecordLocation(path, f"images[{index}]")
        image_id = str(require_field(image, "id", (int, str), loc))
        filename = image.get("file_name") or f"{image_id}.jpg"
        yield make_example("ava_captions", image_id, image_dir / filename, references=captions.get(image_id, []))


def load_ava_captions(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    annotation_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    text_field: str = "clean",
    coco_split: str = AVA_COCO_SPLIT,
) -> DatasetDict:
    """Read AVA-Captions (Ghosal et al., ICCVW 2019) from its JSON release.

    The main file (``CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json``) lists images with their own
    ``split`` (``train``/``val``/``test``) and ``sentences``; each sentence's ``text_field`` (``"clean"``
    or ``"raw"``) is a reference. A COCO caption file (``images`` + ``annotations``, e.g.
    ``AVA_FULL_VALIDATION.json``, 9,362 images) has no split field and is returned as the single split
    ``coco_split`` (``full_validation``: it is not the main file's 5,000-image ``val``).
    AVA-Captions has no attribute labels.

    Args:
        root: the AVA-Captions folder.
        splits: subset of the split names found in the file; all by default.
        annotation_file: JSON file (default ``root/CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json``).
        image_dir: folder of the AVA images (default ``root/images``).
        text_field: sentence field used as reference text.
        coco_split: split name for a COCO caption file.

    Returns:
        DatasetDict: the file's split names (in order of first appearance) with :data:`AIC_FEATURES`.
    """
    root = Path(root).resolve()
    path = resolve_path(root, annotation_file, AVA_CAPTIONS_FILE)
    image_dir = image_folder(root, image_dir, "images", "AVA")
    data = read_json_file(path, "AVA-Captions file")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise AICDataError(f"{path}: expected a JSON object with an 'images' list")
    if isinstance(data.get("annotations"), list):
        pairs: Iterable[tuple[str, dict]] = ((coco_split, ex) for ex in _ava_coco_examples(path, data, image_dir))
    else:
        pairs = _ava_karpathy_examples(path, data["images"], image_dir, text_field)
    by_split: dict[str, list[dict]] = {}
    for split, example in pairs:
        by_split.setdefault(split, []).append(example)
    chosen = select_splits(tuple(by_split), splits, "ava_captions")
    collector = SplitCollector("ava_captions", chosen, requested=splits)
    for split in chosen:
        for example in by_split[split]:
            collector.add(split, example)
    return collector.finish()

