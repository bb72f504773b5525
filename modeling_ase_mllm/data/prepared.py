"""A prepared dataset folder (what `ase-mllm prepare-data` writes): every image decoded once, the folder written
whole or not at all, and a record of what it holds.

* :func:`drop_undecodable` decodes every image of every split in parallel (`datasets.Dataset.map(num_proc=...)`,
  with its progress bar) and leaves out the rows whose image does not decode, by name, so that a truncated JPEG or an
  error page saved as an image stops nothing hours into training;
* :func:`save_prepared` writes `DatasetDict.save_to_disk` (images embedded) into a temporary folder beside the
  target and moves it into place, with :data:`INFO_FILE` (dataset, protocol, rows, what was left out and why);
* :func:`prepared_info` reads that record back, so that `train` and `evaluate` can say which protocol a folder
  follows and why a split is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

from datasets import DatasetDict, Image

from .errors import AICDataError, UndecodableImageWarning
from .records import MAX_WARNING_EXAMPLES, keep_nonempty_splits


# Beside `dataset_dict.json` in a prepared folder: what the folder holds (`datasets` ignores other files).
INFO_FILE = "aic_dataset.json"
ERROR_COLUMN = "_decode_error"


def decode_error(image: dict[str, Any]) -> str | None:
    """Why the image (`{"bytes", "path"}`, as `datasets.Image(decode=False)` gives it) does not decode, or None.

    The whole image is decoded (`PIL.Image.load`), so a truncated file fails here, as it would at training time.
    """
    from PIL import Image as PILImage

    try:
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        with PILImage.open(source) as picture:
            picture.load()
    except Exception as error:  # noqa: BLE001  (whatever a file makes Pillow raise, the row is left out by name)
        return f"{type(error).__name__}: {error}".strip()
    return None


def _decode_batch(images: list[dict]) -> dict[str, list]:
    return {ERROR_COLUMN: [decode_error(image) for image in images]}


def drop_undecodable(
    splits: DatasetDict, dataset: str, requested: Sequence[str] = (), num_proc: int | None = None, strict: bool = False
) -> tuple[DatasetDict, dict[str, list[tuple[str, str]]]]:
    """Decode every image once; leave out the rows whose image does not decode.

    Args:
        splits: the reader's splits (column `image`).
        dataset: its name, for messages.
        requested: the splits asked for by name (an empty one is then an error, see `records.keep_nonempty_splits`).
        num_proc: decoding processes (`datasets.Dataset.map`); at most one per row.
        strict: raise an `AICDataError` naming the files instead of leaving them out.

    Returns:
        (the splits without those rows and without splits left empty, split -> [(image file, reason)]).
    """
    kept, failed = {}, {}
    for name, split in splits.items():
        processes = min(num_proc or 1, len(split))
        undecoded = split.cast_column("image", Image(decode=False))
        errors = undecoded.map(
            _decode_batch, input_columns="image", batched=True, batch_size=16, remove_columns=split.column_names,
            num_proc=processes if processes > 1 else None, desc=f"decoding {dataset} {name}",
        )[ERROR_COLUMN]
        bad = [index for index, error in enumerate(errors) if error is not None]
        if bad:
            paths = undecoded.select(bad)["image"]
            failed[name] = [(image.get("path") or f"row {index}", errors[index]) for index, image in zip(bad, paths)]
        kept[name] = split.select([index for index, error in enumerate(errors) if error is None]) if bad else split
    if strict and failed:
        listed = [f"{path} ({reason})" for rows in failed.values() for path, reason in rows]
        raise AICDataError(f"{dataset}: {len(listed)} image(s) do not decode (--strict): " + "; ".join(listed[:10])
                           + ("; ..." if len(listed) > 10 else ""))
    for name, rows in failed.items():
        shown = ", ".join(f"{path} ({reason})" for path, reason in rows[:MAX_WARNING_EXAMPLES])
        more = ", ..." if len(rows) > MAX_WARNING_EXAMPLES else ""
        warnings.warn(f"{dataset}: skipped {len(rows)} of {len(splits[name])} rows of split {name!r} because their "
                      f"image file does not decode (e.g. {shown}{more})", UndecodableImageWarning, stacklevel=2)

    def cause(name: str) -> str:
        return f"none of its {len(splits[name])} images decodes (e.g. {failed[name][0][0]}: {failed[name][0][1]})"

    return keep_nonempty_splits(DatasetDict(kept), dataset, requested, cause), failed


def check_output_folder(path: Path) -> str | None:
    """Why `path` cannot receive a prepared dataset (it holds other files that replacing it would delete), or None."""
    if not path.is_dir() or not any(path.iterdir()) or (path / "dataset_dict.json").is_file():
        return None
    return f"{str(path)!r} holds files but no prepared dataset; give an empty or a new folder (it is replaced whole)"


def save_prepared(splits: DatasetDict, output_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """`splits.save_to_disk` (images embedded) plus :data:`INFO_FILE`, written beside `output_dir` and moved into its
    place once complete: a killed run leaves the folder as it was (empty, or the previous preparation)."""
    target = Path(output_dir).resolve()
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        splits.save_to_disk(str(partial))
        (partial / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def prepared_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The record `save_prepared` wrote into `folder`, or None (a folder saved some other way)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def missing_split_message(folder: str | os.PathLike, split: str, available: Sequence[str]) -> str:
    """What `train` and `evaluate` say when a prepared folder has no split `split`: what it has, and, when
    prepare-data left the split out, why."""
    message = f"{folder}: no split {split!r} (it has {', '.join(map(repr, available)) or 'none'})"
    left_out = ((prepared_info(folder) or {}).get("left_out") or {}).get(split)
    if left_out:
        message += f"; prepare-data left it out: {left_out}"
    return message


def load_split(dataset: str, split: str, root: str | None = None, protocol: str | None = None):
    """One split, for training and evaluation alike: from a reader name (`pccd`, `rpcd`, `dpc2022`, `ava_captions`,
    `mini_aic`; only that split is read), a saved DatasetDict, or a saved Dataset (which is the split itself). A
    missing split is a `ValueError` naming it, what there is, and, for a folder that prepare-data wrote, why
    prepare-data left it out."""
    from datasets import Dataset, load_from_disk

    from .registry import load_aic_dataset

    if not Path(dataset).is_dir():
        return load_aic_dataset(dataset, root, splits=[split], protocol=protocol)[split]
    splits = load_from_disk(dataset)
    if isinstance(splits, Dataset):  # a folder holding one saved split is that split
        return splits
    if split not in splits:
        raise ValueError(missing_split_message(dataset, split, list(splits)))
    return splits[split]


__all__ = ["INFO_FILE", "check_output_folder", "decode_error", "drop_undecodable", "load_split",
           "missing_split_message", "prepared_info", "save_prepared"]
