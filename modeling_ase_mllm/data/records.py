"""Reading an AIC release from disk, shared by the readers: typed fields, files and folders, splits, skips.

Images are referenced by absolute path and decoded lazily; every error names the file, the record and the field
(:mod:`modeling_ase_mllm.data.errors`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from datasets import DatasetDict

from .errors import (
    AICDataError,
    AICDataWarning,
    AnnotationFileNotFoundError,
    EmptyReferencesWarning,
    EmptySplitError,
    EmptySplitWarning,
    MissingImageWarning,
    RecordLocation,
    UnavailableRecordWarning,
    UndecodableImageWarning,
)
from .schema import AIC_FEATURES, dataset_from_rows

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_WARNING_EXAMPLES = 3


# ------------------------------------------------------------------------------------- field helpers


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def require_field(record: Mapping[str, Any], key: str, types: type | tuple[type, ...], loc: RecordLocation) -> Any:
    """Return ``record[key]``, raising :class:`AICDataError` if it is absent or not of ``types``."""
    if not isinstance(record, Mapping):
        raise loc.error(None, f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise loc.error(key, "required field is missing")
    value = record[key]
    # bool is an int subclass; a flag where a number or text belongs is a malformed record.
    if isinstance(value, bool) or not isinstance(value, types):
        raise loc.error(key, f"expected {_type_names(types)}, got {type(value).__name__} {value!r:.60}")
    return value


# Spellings of "no score" in PCCD (the crawler stores 'NA', sometimes cut to 'N').
_MISSING_NUMBER_TEXT = {"", "n", "na", "n/a", "none", "null", "nan", "-"}


def optional_number(value: Any, loc: RecordLocation, field_name: str) -> float | None:
    """Parse a score that may be a number, numeric text, or a 'not available' marker (-> ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise loc.error(field_name, f"expected a number, got bool {value!r}")
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _MISSING_NUMBER_TEXT:
            return None
        try:
            return float(text)
        except ValueError:
            raise loc.error(field_name, f"expected a number or 'NA', got {value!r:.60}") from None
    raise loc.error(field_name, f"expected a number, got {type(value).__name__} {value!r:.60}")


def optional_text(record: Mapping[str, Any], key: str, loc: RecordLocation) -> str:
    """Return a required text field; JSON ``null`` counts as an empty critique."""
    value = require_field(record, key, (str, type(None)), loc)
    return value or ""


# -------------------------------------------------------------------------------------- file helpers


def resolve_path(root: Path, path: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """``path`` if given (relative paths are taken from ``root``), else ``root / default``."""
    chosen = Path(default if path is None else path)
    return chosen if chosen.is_absolute() else root / chosen


def require_file(path: Path, what: str, published: str | None = None) -> Path:
    """`path`, which must be a file; `published` says where a missing one comes from."""
    if not path.is_file():
        raise AnnotationFileNotFoundError(f"{path}: {what} not found" + (f"; {published}" if published else ""))
    return path


def require_dir(path: Path, what: str, hint: str) -> Path:
    # A wrong image folder would otherwise show up only as "every image missing".
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} not found ({hint})")
    return path


def image_folder(root: Path, image_dir: str | os.PathLike | None, default: str | Sequence[str], dataset: str) -> Path:
    """The dataset's image folder (``image_dir``, or the first of the ``default`` folders under ``root`` that exists),
    which must exist."""
    defaults = [default] if isinstance(default, str) else list(default)
    if image_dir is None:
        image_dir = next((name for name in defaults if (root / name).is_dir()), defaults[0])
    return require_dir(resolve_path(root, image_dir, "."), f"{dataset} image folder", "set image_dir / --image-dir")


def read_json_file(path: Path, what: str = "annotation file") -> Any:
    """Load a JSON file; raise an :class:`AICDataError` that names the file and position if it is bad."""
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise AICDataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise AICDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_csv_rows(path: Path, required_columns: Sequence[str], what: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(data_row_number, row)`` from a CSV file with a header; rows are numbered from 1."""
    require_file(path, what)
    # utf-8-sig: spreadsheet tools often prepend a byte-order mark, which would hide the first column name.
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required_columns if name not in (reader.fieldnames or [])]
        if missing:
            raise AICDataError(f"{path}: header lacks required column(s) {missing} (has {reader.fieldnames})")
        yield from enumerate(reader, start=1)


def find_image(directory: Path, stem: str) -> Path | None:
    """Return ``directory/stem`` if it exists, else ``directory/stem.<ext>`` for a known image extension."""
    exact = directory / stem
    if exact.is_file():
        return exact
    for extension in IMAGE_EXTENSIONS:
        for candidate in (directory / f"{stem}{extension}", directory / f"{stem}{extension.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def select_splits(available: Sequence[str], requested: Sequence[str] | None, dataset: str) -> list[str]:
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(f"{dataset}: unknown split(s) {unknown}; this dataset has {list(available)}")
    return list(requested)



# Why a record was skipped, as the warnings and the empty-split errors say it.
SKIP_REASONS: dict[type[AICDataWarning], str] = {
    MissingImageWarning: "their image file is missing",
    EmptyReferencesWarning: "they have no non-empty critique",
    UnavailableRecordWarning: "the split lists them but the release has no data for them",
    UndecodableImageWarning: "their image file does not decode",
}


@dataclass
class _SkipTally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_WARNING_EXAMPLES:
            self.examples.append(example)

    def describe(self, why: str, total: int | None = None) -> str:
        """``"2 of 7 records because <why> (e.g. a, b)"`` (without ``of ... records`` when `total` is None)."""
        more = ", ..." if self.count > len(self.examples) else ""
        of = f" of {total} records" if total is not None else ""
        return f"{self.count}{of} because {why} (e.g. {', '.join(self.examples)}{more})"


class SplitCollector:
    """Collect examples per split, skip unusable ones, report each skip reason in one warning, and refuse to end
    with an empty split (see :func:`keep_nonempty_splits`).

    Args:
        dataset: the reader's name, for messages.
        splits: the splits to read.
        requested: the splits the caller asked for by name (None: none by name, all by default); an empty one is
            an error, while an empty split read by default is left out with a warning.
    """

    def __init__(self, dataset: str, splits: Sequence[str], requested: Sequence[str] | str | None = None):
        self.dataset = dataset
        self.rows: dict[str, list[dict]] = {name: [] for name in splits}
        self.requested = [requested] if isinstance(requested, str) else list(requested or [])
        self.records_seen = 0
        self.seen_per_split: dict[str, int] = {name: 0 for name in splits}
        # (split, reason, why) -> tally; `why` refines a reason (FilteredImageWarning: which rule).
        self._skips: dict[tuple[str | None, type[AICDataWarning], str], _SkipTally] = {}
        # Set by a reader to say why split ids matched nothing (e.g. "the first id was ..., the first image ...").
        self.unmatched_hint: dict[str, str] = {}

    def skip(self, reason: type[AICDataWarning], example: str, split: str | None = None, why: str | None = None) -> None:
        """Count a record that is skipped before it becomes an example."""
        self.records_seen += 1
        if split is not None:
            self.seen_per_split[split] += 1
        self._tally(split, reason, example, why)

    def add(self, split: str, example: dict[str, Any], missing_image_hint: str | None = None) -> None:
        """Add ``example`` unless its image is missing (checked first) or it has no critique."""
        self.records_seen += 1
        self.seen_per_split[split] += 1
        image = example["image"]
        if image is None or (isinstance(image, str) and not os.path.isfile(image)):
            self._tally(split, MissingImageWarning, missing_image_hint or str(image))
        elif not example["references"]:
            self._tally(split, EmptyReferencesWarning, f"{split}/{example['image_id']}")
        else:
            self.rows[split].append(example)

    def _tally(self, split, reason, example: str, why: str | None = None) -> None:
        self._skips.setdefault((split, reason, why or SKIP_REASONS.get(reason, reason.__name__)), _SkipTally()).add(example)

    def skipped(self) -> dict[tuple[type[AICDataWarning], str], _SkipTally]:
        """The skips of every split, by (reason, why)."""
        merged: dict[tuple[type[AICDataWarning], str], _SkipTally] = {}
        for (_, reason, why), tally in self._skips.items():
            total = merged.setdefault((reason, why), _SkipTally())
            for example in tally.examples:
                total.add(example)
            total.count += tally.count - len(tally.examples)
        return merged

    def empty_cause(self, split: str) -> str:
        """Why `split` ended with no rows: what its records were skipped for, with examples."""
        seen = self.seen_per_split.get(split, 0)
        if not seen:
            return "its split file lists no records"
        causes = [tally.describe(why) for (name, _, why), tally in self._skips.items() if name == split]
        hint = self.unmatched_hint.get(split)
        return f"all {seen} of its records were skipped: " + "; ".join(causes) + (f". {hint}" if hint else "")

    def finish(self) -> DatasetDict:
        """Emit one warning per skip reason and return the splits that have rows as a :class:`DatasetDict`."""
        for (reason, why), tally in self.skipped().items():
            warnings.warn(f"{self.dataset}: skipped {tally.describe(why, self.records_seen)}", reason, stacklevel=3)
        splits = DatasetDict({name: dataset_from_rows(rows, AIC_FEATURES) for name, rows in self.rows.items()})
        return keep_nonempty_splits(splits, self.dataset, self.requested, self.empty_cause)


def keep_nonempty_splits(splits: DatasetDict, dataset: str, requested: Sequence[str], cause) -> DatasetDict:
    """`splits` without its empty ones: an empty split in `requested` raises :class:`EmptySplitError`, any other
    is left out with an :class:`EmptySplitWarning`; no split left at all is an error too. `cause(split)` says why a
    split is empty. (A `save_to_disk` folder with an empty split cannot be loaded back by `datasets` 5.)"""
    empty = [name for name, split in splits.items() if len(split) == 0]
    asked = [name for name in empty if name in requested]
    if asked:
        raise EmptySplitError("; ".join(f"{dataset}: split {name!r} has no rows: {cause(name)}" for name in asked))
    if empty and len(empty) == len(splits):
        raise EmptySplitError("; ".join(f"{dataset}: split {name!r} has no rows: {cause(name)}" for name in empty))
    for name in empty:
        why = cause(name)
        warnings.warn(EmptySplitWarning(f"{dataset}: split {name!r} has no rows and is left out: {why}", name, why),
                      stacklevel=3)
    return DatasetDict({name: split for name, split in splits.items() if name not in empty})
