"""Readers that turn aesthetic-image-captioning (AIC) releases on disk into ``datasets.DatasetDict``.

Every reader returns the same schema (:data:`AIC_FEATURES`, documented in ``docs/datasets.md``) and the
split names of the dataset's own split files. Images are referenced by absolute path and decoded lazily.

Error policy, shared by all readers:

* a missing or malformed annotation file raises :class:`AICDataError` (or its subclass
  :class:`AnnotationFileNotFoundError`) whose message names the file, the record (index and id) and the
  offending field;
* records whose image file is missing, or that have no non-empty critique, are skipped and counted; each
  reason is reported once per call as a warning (:class:`MissingImageWarning`,
  :class:`EmptyReferencesWarning`, :class:`UnavailableRecordWarning`) with the count and a few examples.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from datasets import Dataset, DatasetDict, Features, Image, List, Value

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

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_WARNING_EXAMPLES = 3


# ---------------------------------------------------------------------------------------------- errors


class AICDataError(ValueError):
    """An annotation file is malformed; the message names the file, the record and the field."""


class AnnotationFileNotFoundError(AICDataError, FileNotFoundError):
    """An annotation or split file that the reader needs does not exist."""


class AICDataWarning(UserWarning):
    """Base class of the warnings that report skipped records."""


class MissingImageWarning(AICDataWarning):
    """Records were skipped because their image file does not exist."""


class EmptyReferencesWarning(AICDataWarning):
    """Records were skipped because they have no non-empty critique."""


class UnavailableRecordWarning(AICDataWarning):
    """Ids listed in a split file have no downloaded data (e.g. deleted Reddit posts)."""


@dataclass(frozen=True)
class RecordLocation:
    """Where a record lives, for error messages.

    Attributes:
        file: annotation file holding the record.
        index: position of the record in the file (list index, CSV data row, ...), if any.
        record_id: the record's id, if known.
    """

    file: Path
    index: int | str | None = None
    record_id: str | None = None

    def describe(self) -> str:
        """Return e.g. ``"/r/guru_test.json: record 3 (id '12_tart')"``."""
        parts = [str(self.file)]
        if self.index is not None:
            record = f"record {self.index}"
            if self.record_id is not None:
                record += f" (id {self.record_id!r})"
            parts.append(record)
        elif self.record_id is not None:
            parts.append(f"record id {self.record_id!r}")
        return ": ".join(parts)

    def error(self, field_name: str | None, problem: str) -> AICDataError:
        """Build the error for a bad field (``field_name=None`` for the record as a whole)."""
        where = self.describe()
        if field_name is not None:
            where += f": field {field_name!r}"
        return AICDataError(f"{where}: {problem}")

    def with_id(self, record_id: str) -> "RecordLocation":
        return RecordLocation(self.file, self.index, record_id)


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


def _optional_number(value: Any, loc: RecordLocation, field_name: str) -> float | None:
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


def _optional_text(record: Mapping[str, Any], key: str, loc: RecordLocation) -> str:
    """Return a required text field; JSON ``null`` counts as an empty critique."""
    value = require_field(record, key, (str, type(None)), loc)
    return value or ""


# -------------------------------------------------------------------------------------- file helpers


def _resolve(root: Path, path: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """``path`` if given (relative paths are taken from ``root``), else ``root / default``."""
    chosen = Path(default if path is None else path)
    return chosen if chosen.is_absolute() else root / chosen


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AnnotationFileNotFoundError(f"{path}: {what} not found")
    return path


def _require_dir(path: Path, what: str, hint: str) -> Path:
    # A wrong image folder would otherwise show up only as "every image missing".
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} not found ({hint})")
    return path


def _image_folder(root: Path, image_dir: str | os.PathLike | None, default: str, dataset: str) -> Path:
    """The dataset's image folder (``image_dir`` or ``root/default``), which must exist."""
    return _require_dir(_resolve(root, image_dir, default), f"{dataset} image folder", "set image_dir / --image-dir")


def read_json_file(path: Path, what: str = "annotation file") -> Any:
    """Load a JSON file; raise an :class:`AICDataError` that names the file and position if it is bad."""
    _require_file(path, what)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise AICDataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise AICDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_csv_rows(path: Path, required_columns: Sequence[str], what: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(data_row_number, row)`` from a CSV file with a header; rows are numbered from 1."""
    _require_file(path, what)
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


def _select_splits(available: Sequence[str], requested: Sequence[str] | None, dataset: str) -> list[str]:
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(f"{dataset}: unknown split(s) {unknown}; this dataset has {list(available)}")
    return list(requested)


# ------------------------------------------------------------------------------------ building rows


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


@dataclass
class _SkipTally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_WARNING_EXAMPLES:
            self.examples.append(example)


class SplitCollector:
    """Collect examples per split, skip unusable ones, and report each skip reason in one warning."""

    def __init__(self, dataset: str, splits: Sequence[str]):
        self.dataset = dataset
        self.rows: dict[str, list[dict]] = {name: [] for name in splits}
        self.records_seen = 0
        self._skips: dict[type[AICDataWarning], _SkipTally] = {}

    def skip(self, reason: type[AICDataWarning], example: str) -> None:
        """Count a record that is skipped before it becomes an example."""
        self.records_seen += 1
        self._tally(reason, example)

    def add(self, split: str, example: dict[str, Any], missing_image_hint: str | None = None) -> None:
        """Add ``example`` unless its image is missing (checked first) or it has no critique."""
        self.records_seen += 1
        image = example["image"]
        if image is None or (isinstance(image, str) and not os.path.isfile(image)):
            self._tally(MissingImageWarning, missing_image_hint or str(image))
        elif not example["references"]:
            self._tally(EmptyReferencesWarning, f"{split}/{example['image_id']}")
        else:
            self.rows[split].append(example)

    def _tally(self, reason: type[AICDataWarning], example: str) -> None:
        self._skips.setdefault(reason, _SkipTally()).add(example)

    def finish(self) -> DatasetDict:
        """Emit one warning per skip reason and return the splits as a :class:`DatasetDict`."""
        for reason, tally in self._skips.items():
            warnings.warn(self._skip_message(reason, tally), reason, stacklevel=3)
        return DatasetDict({name: dataset_from_rows(rows, AIC_FEATURES) for name, rows in self.rows.items()})

    def _skip_message(self, reason: type[AICDataWarning], tally: _SkipTally) -> str:
        what = {
            MissingImageWarning: "their image file is missing",
            EmptyReferencesWarning: "they have no non-empty critique",
            UnavailableRecordWarning: "the split lists them but the release has no data for them",
        }.get(reason, reason.__name__)
        total = self.records_seen
        shown = ", ".join(tally.examples)
        more = ", ..." if tally.count > len(tally.examples) else ""
        return f"{self.dataset}: skipped {tally.count} of {total} records because {what} (e.g. {shown}{more})"


# ---------------------------------------------------------------------------------------------- PCCD

PCCD_SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("guru_train.json",),
    "validation": ("guru_validation.json", "guru_val.json"),
    "test": ("guru_test.json",),
}


def _pccd_split_file(split_dir: Path, split: str) -> Path:
    candidates = [split_dir / name for name in PCCD_SPLIT_FILES[split]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = " or ".join(str(c) for c in candidates)
    raise AnnotationFileNotFoundError(f"{names}: PCCD split file for split {split!r} not found")


def _pccd_example(record: Any, loc: RecordLocation, image_dir: Path) -> tuple[dict, str]:
    """Turn one PCCD record into an example; return it with the image path to report if missing."""
    # Aestheval's processed files rename `title` to `im_name`; both name the image file.
    id_key = "im_name" if isinstance(record, Mapping) and "title" not in record and "im_name" in record else "title"
    image_id = require_field(record, id_key, str, loc)
    if not image_id.strip():
        raise loc.error(id_key, "image name is empty")
    loc = loc.with_id(image_id)
    texts = [_optional_text(record, aspect, loc) for aspect in PCCD_ASPECTS]
    image = find_image(image_dir, image_id)
    example = make_example(
        "pccd",
        image_id,
        image,
        references=texts,
        reference_aspects=PCCD_ASPECTS,
        score=_optional_number(record.get("overall"), loc, "overall"),
        aspect_scores=_pccd_aspect_scores(record, loc),
    )
    return example, str(image_dir / image_id) + "[.jpg|.png|...]"


def _pccd_aspect_scores(record: Mapping[str, Any], loc: RecordLocation) -> dict[str, float | None] | None:
    if record.get("score") is None:
        return None
    scores = require_field(record, "score", list, loc)
    if len(scores) != len(PCCD_ASPECTS):
        raise loc.error("score", f"expected {len(PCCD_ASPECTS)} aspect scores, got {len(scores)}")
    return {aspect: _optional_number(scores[i], loc, f"score[{i}]") for i, aspect in enumerate(PCCD_ASPECTS)}


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
            for the validation split).
        image_dir: folder of the images (default ``root/images/full``); an image is ``<title>`` with or
            without an image extension.

    Returns:
        DatasetDict: splits ``train``, ``validation``, ``test`` with :data:`AIC_FEATURES`.
    """
    root = Path(root).resolve()
    split_dir = _resolve(root, split_dir, ".")
    image_dir = _image_folder(root, image_dir, "images/full", "PCCD")
    chosen = _select_splits(tuple(PCCD_SPLIT_FILES), splits, "pccd")
    collector = SplitCollector("pccd", chosen)
    for split in chosen:
        path = _pccd_split_file(split_dir, split)
        records = read_json_file(path, "PCCD split file")
        if not isinstance(records, list):
            raise AICDataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        for index, record in enumerate(records):
            example, image_hint = _pccd_example(record, RecordLocation(path, index), image_dir)
            collector.add(split, example, image_hint)
    return collector.finish()


# ---------------------------------------------------------------------------------------------- RPCD

RPCD_SPLITS: tuple[str, ...] = ("train", "validation", "test")
RPCD_COMMENTS_JSON = "reddit_photocritique_image_comments.json"
RPCD_SUBREDDIT = "photocritique"
# Text found in comment bodies that carry no critique: deletions and moderation/bot notices (lower case).
RPCD_NON_CRITIQUE_MARKERS = (
    "[deleted]",
    "[removed]",
    "i am a bot, and this action was performed automatically",
    "has been marked as abandoned",
)


def read_id_file(path: Path, what: str) -> list[str]:
    """Read a one-id-per-line file (first CSV column; blank lines ignored)."""
    _require_file(path, what)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [row[0].strip() for row in csv.reader(handle) if row and row[0].strip()]


def _rpcd_split_ids(split_dir: Path, splits: Sequence[str]) -> dict[str, list[str]]:
    return {split: read_id_file(split_dir / f"{split}_ids.csv", "RPCD split id file") for split in splits}


def rpcd_id_from_image_path(image_path: str) -> str:
    """Submission id from an RPCD image path such as ``submissions_3/abc123-image.jpg``."""
    return os.path.basename(image_path).split("-")[0]


def _rpcd_json_records(path: Path) -> Iterator[tuple[RecordLocation, Mapping[str, Any]]]:
    """Yield records from the comments JSON, stored column-wise (dict of lists) or as a list of records."""
    data = read_json_file(path, "RPCD comments file")
    if isinstance(data, list):
        for index, record in enumerate(data):
            yield RecordLocation(path, index), record
        return
    if not isinstance(data, dict):
        raise AICDataError(f"{path}: expected a JSON object of columns or a list of records, got {type(data).__name__}")
    columns = {name: values for name, values in data.items() if isinstance(values, list)}
    if "im_paths" not in columns:
        raise AICDataError(f"{path}: required column 'im_paths' is missing or not a list")
    length = len(columns["im_paths"])
    for name, values in columns.items():
        if len(values) != length:
            raise AICDataError(f"{path}: column {name!r} has {len(values)} rows, 'im_paths' has {length}")
    for index in range(length):
        yield RecordLocation(path, index), {name: values[index] for name, values in columns.items()}


def _rpcd_aspect_probs(record: Mapping[str, Any], n_comments: int, loc: RecordLocation) -> list[list[float]]:
    """Aestheval's predicted aspect probabilities per comment, in :data:`PCCD_ASPECTS` order."""
    predictions = record.get("aspect_prediction")
    if predictions is None:
        return []
    predictions = require_field(record, "aspect_prediction", list, loc)
    if len(predictions) != n_comments:
        raise loc.error("aspect_prediction", f"has {len(predictions)} entries for {n_comments} comments")
    return [_aspect_prob_vector(entry, loc, f"aspect_prediction[{i}]") for i, entry in enumerate(predictions)]


def _aspect_prob_vector(entry: Any, loc: RecordLocation, field_name: str) -> list[float]:
    # A text-classification pipeline returns [{"label": ..., "score": ...}, ...]; a plain mapping also works.
    if isinstance(entry, list) and all(isinstance(item, Mapping) for item in entry):
        entry = {item.get("label"): item.get("score") for item in entry}
    if not isinstance(entry, Mapping):
        raise loc.error(field_name, f"expected label scores, got {type(entry).__name__}")
    missing = [aspect for aspect in PCCD_ASPECTS if aspect not in entry]
    if missing:
        raise loc.error(field_name, f"lacks aspect label(s) {missing}")
    probs = [_optional_number(entry[aspect], loc, f"{field_name}.{aspect}") for aspect in PCCD_ASPECTS]
    if any(p is None for p in probs):
        raise loc.error(field_name, "aspect scores must be numbers")
    return probs


def _rpcd_image(bases: Sequence[Path], relative: str) -> Path:
    for base in bases:
        candidate = base / relative
        if candidate.is_file():
            return candidate
    return bases[0] / relative


def _rpcd_examples_from_json(path: Path, image_bases: Sequence[Path]) -> dict[str, tuple[dict, str]]:
    """Map submission id -> (example, image path) from the prepared comments JSON."""
    examples: dict[str, tuple[dict, str]] = {}
    for loc, record in _rpcd_json_records(path):
        image_path = require_field(record, "im_paths", str, loc)
        image_id = rpcd_id_from_image_path(image_path)
        loc = loc.with_id(image_id)
        comments = require_field(record, "first_level_comments_values", list, loc)
        for i, comment in enumerate(comments):
            if not isinstance(comment, (str, type(None))):
                raise loc.error(f"first_level_comments_values[{i}]", f"expected str, got {type(comment).__name__}")
        image = _rpcd_image(image_bases, image_path)
        example = make_example(
            "rpcd",
            image_id,
            image,
            references=[comment or "" for comment in comments],
            reference_aspect_probs=_rpcd_aspect_probs(record, len(comments), loc),
        )
        examples.setdefault(image_id, (example, str(image)))
    return examples


def _is_critique(body: Any) -> bool:
    if not isinstance(body, str) or not body.strip():
        return False
    lowered = body.lower()
    return not any(marker in lowered for marker in RPCD_NON_CRITIQUE_MARKERS)


def _cell(row: Mapping[str, Any], column: str) -> str:
    """A CSV cell as stripped text (short rows give ``None`` cells)."""
    return (row.get(column) or "").strip()


def _rpcd_submissions(subreddit_dir: Path) -> dict[str, tuple[str, str]]:
    """Map submission id -> (author id, chunk name) from the scraped ``submissions_*.csv`` files."""
    submissions: dict[str, tuple[str, str]] = {}
    for csv_path in sorted(subreddit_dir.glob("*.csv")):
        for _, row in read_csv_rows(csv_path, ("id", "author_id"), "RPCD submissions file"):
            submissions.setdefault(_cell(row, "id"), (_cell(row, "author_id"), csv_path.stem))
    return submissions


def _rpcd_first_level_critiques(path: Path, author_id: str) -> list[str]:
    """Top-level comments (parent is the post, id prefix ``t3_``) not written by the post's author."""
    columns = ("comment_parent_id", "comment_author", "comment_body")
    return [
        row["comment_body"]
        for _, row in read_csv_rows(path, columns, "RPCD comments file")
        if _cell(row, "comment_parent_id").startswith("t3_")
        and _cell(row, "comment_author") != author_id
        and _is_critique(row["comment_body"])
    ]


def _rpcd_images_in(folder: Path) -> dict[str, Path]:
    """Map submission id -> image file for files named ``<id>-image.<ext>``."""
    if not folder.is_dir():
        return {}
    return {name.split("-image")[0]: folder / name for name in os.listdir(folder) if "-image" in name}


def _rpcd_examples_from_raw(subreddit_dir: Path, wanted: set[str]) -> dict[str, tuple[dict, str]]:
    """Map submission id -> (example, image path) from the scraper's per-post comment CSV files."""
    submissions = _rpcd_submissions(subreddit_dir)
    images_by_chunk: dict[str, dict[str, Path]] = {}
    examples: dict[str, tuple[dict, str]] = {}
    for image_id in sorted(wanted & submissions.keys()):
        author_id, chunk = submissions[image_id]
        comments_path = subreddit_dir / "comments" / chunk / f"{image_id}-comments.csv"
        if not comments_path.is_file():
            continue  # never downloaded: reported as unavailable
        if chunk not in images_by_chunk:
            images_by_chunk[chunk] = _rpcd_images_in(subreddit_dir / "images" / chunk)
        image = images_by_chunk[chunk].get(image_id)
        hint = str(subreddit_dir / "images" / chunk / f"{image_id}-image.*")
        critiques = _rpcd_first_level_critiques(comments_path, author_id)
        examples[image_id] = (make_example("rpcd", image_id, image, references=critiques), hint)
    return examples


def load_rpcd(
    root: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    split_dir: str | os.PathLike | None = None,
    source: str = "auto",
    comments_file: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> DatasetDict:
    """Read RPCD (Nieto et al., 2022) with the released ``{train,validation,test}_ids.csv`` splits.

    One example per submission id in a split file; ``references`` are the post's first-level critiques.
    Comments come from one of two sources:

    * ``"json"``: Aestheval's prepared ``reddit_photocritique_image_comments.json`` (columns ``im_paths``,
      ``first_level_comments_values`` and optionally ``aspect_prediction``, which fills
      ``reference_aspect_probs``);
    * ``"raw"``: the scraper's files, ``photocritique/submissions_*.csv`` plus
      ``photocritique/comments/<chunk>/<id>-comments.csv``; first-level comments by others than the post's
      author are kept, deleted/removed bodies and bot notices dropped.

    ``"auto"`` uses the JSON when it exists. Split ids without data (deleted posts) are skipped and
    reported in one :class:`UnavailableRecordWarning`.

    Args:
        root: the RPCD folder.
        splits: subset of ``("train", "validation", "test")``; all by default.
        split_dir: folder of the ``*_ids.csv`` files (default ``root``).
        source: ``"auto"``, ``"json"`` or ``"raw"``.
        comments_file: the prepared JSON (default ``root/reddit_photocritique_image_comments.json``).
        image_root: extra folder that the JSON's ``im_paths`` are relative to (``root``,
            ``root/photocritique/images`` and ``root/images`` are always tried).

    Returns:
        DatasetDict: splits ``train``, ``validation``, ``test`` with :data:`AIC_FEATURES`.
    """
    root = Path(root).resolve()
    chosen = _select_splits(RPCD_SPLITS, splits, "rpcd")
    split_ids = _rpcd_split_ids(_resolve(root, split_dir, "."), chosen)
    comments_path = _resolve(root, comments_file, RPCD_COMMENTS_JSON)
    if source not in ("auto", "json", "raw"):
        raise ValueError(f"rpcd: source must be 'auto', 'json' or 'raw', got {source!r}")
    if source == "json" or (source == "auto" and comments_path.is_file()):
        bases = [root, root / RPCD_SUBREDDIT / "images", root / "images"]
        if image_root is not None:
            bases.insert(0, _resolve(root, image_root, "."))
        examples = _rpcd_examples_from_json(comments_path, bases)
    else:
        subreddit_dir = root / RPCD_SUBREDDIT
        _require_dir(subreddit_dir, "RPCD scraped folder", f"or provide {RPCD_COMMENTS_JSON}")
        wanted = {image_id for ids in split_ids.values() for image_id in ids}
        examples = _rpcd_examples_from_raw(subreddit_dir, wanted)
    collector = SplitCollector("rpcd", chosen)
    for split, ids in split_ids.items():
        for image_id in ids:
            if image_id not in examples:
                collector.skip(UnavailableRecordWarning, f"{split}/{image_id}")
                continue
            example, hint = examples[image_id]
            collector.add(split, example, hint)
    return collector.finish()


# ------------------------------------------------------------------------------------------- DPC2022

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
    relevance = {name: _optional_number(entry.get(key), loc, f"{field_name}.{key}") for name, key in ARS_FIELDS.items()}
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
        score=_optional_number(record.get("avg_all_users_score"), loc, "avg_all_users_score"),
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
    annotation_dir = _resolve(root, annotation_dir, DPC2022_ANNOTATION_DIR)
    image_dir = _image_folder(root, image_dir, DPC2022_IMAGE_DIR, "DPC2022")
    chosen = _select_splits(tuple(split_files), splits, "dpc2022")
    collector = SplitCollector("dpc2022", chosen)
    for split in chosen:
        split_path = _resolve(root, split_files[split], ".")
        for row_number, image_id in _dpc2022_split_ids(split_path):
            json_path = annotation_dir / f"{image_id}.json"
            if not json_path.is_file():
                where = RecordLocation(split_path, row_number, image_id).describe()
                raise AnnotationFileNotFoundError(
                    f"{json_path}: per-image annotation file not found (listed at {where})"
                )
            collector.add(split, _dpc2022_example(json_path, image_id, image_dir, reference_field))
    return collector.finish()


# -------------------------------------------------------------------------------------- AVA-Captions

AVA_CAPTIONS_FILE = "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json"


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
    coco_split: str = "val",
) -> DatasetDict:
    """Read AVA-Captions (Ghosal et al., ICCVW 2019) from its JSON release.

    The main file (``CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json``) lists images with their own
    ``split`` (``train``/``val``/``test``) and ``sentences``; each sentence's ``text_field`` (``"clean"``
    or ``"raw"``) is a reference. A COCO caption file (``images`` + ``annotations``, e.g.
    ``AVA_FULL_VALIDATION.json``) has no split field and is returned as the single split ``coco_split``.
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
    path = _resolve(root, annotation_file, AVA_CAPTIONS_FILE)
    image_dir = _image_folder(root, image_dir, "images", "AVA")
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
    chosen = _select_splits(tuple(by_split), splits, "ava_captions")
    collector = SplitCollector("ava_captions", chosen)
    for split in chosen:
        for example in by_split[split]:
            collector.add(split, example)
    return collector.finish()


# ------------------------------------------------------------------------------------------ registry


def _load_mini_aic(root: str | os.PathLike | None = None, **kwargs: Any) -> DatasetDict:
    from .mini_aic import load_mini_aic  # scikit-image is only needed for the mini set

    if root is not None:
        raise ValueError("mini_aic is bundled with the package and takes no root")
    return load_mini_aic(**kwargs)


DATASET_LOADERS: dict[str, Callable[..., DatasetDict]] = {
    "pccd": load_pccd,
    "rpcd": load_rpcd,
    "dpc2022": load_dpc2022,
    "ava_captions": load_ava_captions,
    "mini_aic": _load_mini_aic,
}


def canonical_dataset_name(name: str) -> str:
    """``"AVA-Captions"`` -> ``"ava_captions"``; raise ``ValueError`` for unknown names."""
    key = name.strip().lower().replace("-", "_")
    if key not in DATASET_LOADERS:
        raise ValueError(f"unknown AIC dataset {name!r}; known: {sorted(DATASET_LOADERS)}")
    return key


def load_aic_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> DatasetDict:
    """Load the AIC dataset ``name`` (see :data:`DATASET_LOADERS`) from ``root``.

    Args:
        name: ``pccd``, ``rpcd``, ``dpc2022``, ``ava_captions`` or ``mini_aic`` (case and ``-``/``_``
            insensitive).
        root: the dataset folder (``None`` for ``mini_aic``).
        **kwargs: passed to the dataset's reader.

    Returns:
        DatasetDict: the dataset's splits with :data:`AIC_FEATURES`.
    """
    key = canonical_dataset_name(name)
    if key != "mini_aic" and root is None:
        raise ValueError(f"{key}: root (the dataset folder) is required")
    return DATASET_LOADERS[key](root, **kwargs)
