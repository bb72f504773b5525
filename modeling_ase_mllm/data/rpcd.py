"""The RPCD reader."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from datasets import DatasetDict

from .errors import AICDataError, RecordLocation, UnavailableRecordWarning
from .records import (
    SplitCollector, optional_number, read_csv_rows, read_json_file, require_dir, require_field, require_file,
    resolve_path, select_splits,
)
from .schema import PCCD_ASPECTS, make_example


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
    require_file(path, what)
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
    probs = [optional_number(entry[aspect], loc, f"{field_name}.{aspect}") for aspect in PCCD_ASPECTS]
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
    chosen = select_splits(RPCD_SPLITS, splits, "rpcd")
    split_ids = _rpcd_split_ids(resolve_path(root, split_dir, "."), chosen)
    comments_path = resolve_path(root, comments_file, RPCD_COMMENTS_JSON)
    if source not in ("auto", "json", "raw"):
        raise ValueError(f"rpcd: source must be 'auto', 'json' or 'raw', got {source!r}")
    if source == "json" or (source == "auto" and comments_path.is_file()):
        bases = [root, root / RPCD_SUBREDDIT / "images", root / "images"]
        if image_root is not None:
            bases.insert(0, resolve_path(root, image_root, "."))
        examples = _rpcd_examples_from_json(comments_path, bases)
    else:
        subreddit_dir = root / RPCD_SUBREDDIT
        require_dir(subreddit_dir, "RPCD scraped folder", f"or provide {RPCD_COMMENTS_JSON}")
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

