"""The RPCD reader.

Two namings of the same files exist, both written by Aestheval's scraper (`mediatechnologycenter/Aestheval`,
`aestheval/data/datautils/reddit_scraper.py`):

* by year (e78199b to 3ab80c6, the copies the paper's authors prepared): `<year>/photocritique/<year>-photocritique-
  submissions.csv`, `<year>/photocritique/comments/<year>-photocritique-submission_<id>-comments.csv`,
  `<year>/photocritique/images/<year>-photocritique-submission_<id>-image.<ext>`; the prepared JSON's `im_paths` are
  `<year>/photocritique/images/...` (`aestheval/data/reddit/prepare_dataset.py` at 3ab80c6; a record is printed in
  `experiments/reddit_eva.ipynb` at f72fd12), and the id is what follows `submission_` (`aestheval/data/datasets/
  reddit.py` at 3ab80c6). Until 69374ac the split files listed these image paths instead of ids;
* by chunk of ids (since 96c91fd, `scrape_posts_by_ids`): `photocritique/submissions_<k>.csv`,
  `photocritique/comments/submissions_<k>/<id>-comments.csv`, `photocritique/images/submissions_<k>/<id>-image.<ext>`;
  `im_paths` are `submissions_<k>/<id>-image.<ext>` and the id is the file name up to its first `-`.

The scraper names an image by the response's content type whatever it is (`<id>-image.html; charset=utf-8` for an
error page, `.gif`), so raw mode applies the filter Aestheval's preparation applies before it writes the JSON
(`filter_bad_images`, `prepare_dataset.py`): a .jpeg/.jpg/.png file that opens, longest edge above 256 px; and it
drops discussion threads, as that script does.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from datasets import DatasetDict

from .errors import AICDataError, FilteredImageWarning, RecordLocation, UnavailableRecordWarning
from .records import (
    SplitCollector, optional_number, read_csv_rows, read_json_file, require_field, require_file, resolve_path,
    select_splits,
)
from .schema import PCCD_ASPECTS, make_example


RPCD_SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Where the split id files are published, for the error that finds them missing.
RPCD_SPLITS_PUBLISHED = (
    "the split id files are published on Zenodo (record 6985507) and in github.com/mediatechnologycenter/Aestheval "
    "under aestheval/data/reddit/ (train_ids.csv, validation_ids.csv, test_ids.csv): put them in the dataset folder "
    "or point at them with split_dir= / --split-dir"
)
RPCD_COMMENTS_JSON = "reddit_photocritique_image_comments.json"
RPCD_SUBREDDIT = "photocritique"
# Text found in comment bodies that carry no critique: deletions and moderation/bot notices (lower case).
RPCD_NON_CRITIQUE_MARKERS = (
    "[deleted]",
    "[removed]",
    "i am a bot, and this action was performed automatically",
    "has been marked as abandoned",
)
# Aestheval's filter_bad_images: the extensions it accepts and the longest edge an image must exceed.
RPCD_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
RPCD_MIN_LONGEST_EDGE = 256


def read_id_file(path: Path, what: str, published: str | None = None) -> list[str]:
    """Read a one-id-per-line file (first CSV column; blank lines ignored)."""
    require_file(path, what, published)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return [row[0].strip() for row in csv.reader(handle) if row and row[0].strip()]


def _rpcd_split_ids(split_dir: Path, splits: Sequence[str]) -> dict[str, tuple[Path, list[str]]]:
    """Split -> (its id file, its submission ids); a line that is an image path (the files before Aestheval's
    69374ac) gives the id in it."""
    files = {split: split_dir / f"{split}_ids.csv" for split in splits}
    return {
        split: (path, [rpcd_id_from_image_path(line) for line in read_id_file(path, "RPCD split id file",
                                                                              RPCD_SPLITS_PUBLISHED)])
        for split, path in files.items()
    }


def rpcd_id_from_image_path(image_path: str) -> str:
    """Submission id from an RPCD image (or comments) file name in either naming:
    ``2016/photocritique/images/2016-photocritique-submission_5es9dz-image.jpeg`` -> ``5es9dz`` (what follows
    ``submission_``, Aestheval's rule for that naming), ``submissions_3/abc123-image.jpg`` -> ``abc123``."""
    name = os.path.basename(image_path)
    if "submission_" in name:
        name = name.split("submission_", 1)[1]
    return name.split("-")[0]


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


@dataclass(frozen=True)
class _Post:
    """A scraped post: its author, where its comments and image live, and whether it is a discussion thread."""

    author_id: str
    comments: Path
    images: Path
    prefix: str  # what comes before the id in its file names: "" or "<year>-photocritique-submission_"
    discussion_thread: bool


def _rpcd_submission_files(root: Path) -> list[tuple[Path, Path, Path, str]]:
    """(submissions CSV, comments folder, images folder, file-name prefix) of every scraped submissions file, in
    both namings (see the module's docstring)."""
    found = []
    for csv_path in sorted((root / RPCD_SUBREDDIT).glob("*.csv")):  # by chunk: photocritique/submissions_<k>.csv
        sub = csv_path.parent
        found.append((csv_path, sub / "comments" / csv_path.stem, sub / "images" / csv_path.stem, ""))
    for csv_path in sorted(root.glob(f"*/{RPCD_SUBREDDIT}/*-{RPCD_SUBREDDIT}-submissions.csv")):  # by year
        year, sub = csv_path.name.split("-")[0], csv_path.parent
        found.append((csv_path, sub / "comments", sub / "images", f"{year}-{RPCD_SUBREDDIT}-submission_"))
    return found


def _rpcd_submissions(root: Path) -> dict[str, _Post]:
    """Map submission id -> post, from every scraped submissions file."""
    posts: dict[str, _Post] = {}
    for csv_path, comments, images, prefix in _rpcd_submission_files(root):
        for _, row in read_csv_rows(csv_path, ("id", "author_id"), "RPCD submissions file"):
            # Aestheval's prepare_dataset.py drops posts whose title says they are a discussion thread.
            thread = "discussion thread" in _cell(row, "title").lower()
            posts.setdefault(_cell(row, "id"), _Post(_cell(row, "author_id"), comments, images, prefix, thread))
    return posts


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
    """Map submission id -> image file for files named ``[<prefix>]<id>-image.<ext>``; where an id has several
    files, an accepted extension wins (Aestheval looks for .jpeg, .jpg, .png only)."""
    if not folder.is_dir():
        return {}
    images: dict[str, Path] = {}
    for name in sorted(os.listdir(folder)):
        if "-image" in name:
            image_id = rpcd_id_from_image_path(name)
            if image_id not in images or name.lower().endswith(RPCD_IMAGE_EXTENSIONS):
                images[image_id] = folder / name
    return images


def rpcd_image_filter(path: Path) -> str | None:
    """Why Aestheval's `filter_bad_images` drops the image at `path`, or None when it keeps it: an extension other
    than .jpeg/.jpg/.png, a file that does not open, a longest edge of 256 px or less. Only the header is read here;
    `ase-mllm prepare-data` decodes every image once (`data.decoding`)."""
    from PIL import Image

    if not path.name.lower().endswith(RPCD_IMAGE_EXTENSIONS):
        return "their image is not a .jpeg/.jpg/.png file (Aestheval's filter_bad_images)"
    try:
        with Image.open(path) as image:
            longest = max(image.size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "their image file does not open (Aestheval's filter_bad_images)"
    if longest <= RPCD_MIN_LONGEST_EDGE:
        return f"their image's longest edge is {RPCD_MIN_LONGEST_EDGE} px or less (Aestheval's filter_bad_images)"
    return None


def _rpcd_examples_from_raw(root: Path, wanted: set[str]) -> tuple[dict[str, tuple[dict, str]], dict[str, tuple[str, str]]]:
    """From the scraper's files: submission id -> (example, image path), and submission id -> (why it is dropped,
    what to show) for the posts Aestheval's preparation drops."""
    posts = _rpcd_submissions(root)
    images_by_folder: dict[Path, dict[str, Path]] = {}
    examples: dict[str, tuple[dict, str]] = {}
    dropped: dict[str, tuple[str, str]] = {}
    for image_id in sorted(wanted & posts.keys()):
        post = posts[image_id]
        comments_path = post.comments / f"{post.prefix}{image_id}-comments.csv"
        if not comments_path.is_file():
            continue  # never downloaded: reported as unavailable
        if post.discussion_thread:
            dropped[image_id] = ("they are discussion threads (Aestheval's prepare_dataset.py)", image_id)
            continue
        if post.images not in images_by_folder:
            images_by_folder[post.images] = _rpcd_images_in(post.images)
        image = images_by_folder[post.images].get(image_id)
        hint = str(post.images / f"{post.prefix}{image_id}-image.*")
        why = rpcd_image_filter(image) if image is not None else None
        if why is not None:
            dropped[image_id] = (why, image.name)
            continue
        critiques = _rpcd_first_level_critiques(comments_path, post.author_id)
        examples[image_id] = (make_example("rpcd", image_id, image, references=critiques), hint)
    return examples, dropped


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
    Comments come from one of two sources, each in both namings of the module's docstring:

    * ``"json"``: Aestheval's prepared ``reddit_photocritique_image_comments.json`` (columns ``im_paths``,
      ``first_level_comments_values`` and optionally ``aspect_prediction``, which fills
      ``reference_aspect_probs``);
    * ``"raw"``: the scraper's files, ``photocritique/submissions_*.csv`` plus
      ``photocritique/comments/<chunk>/<id>-comments.csv``, or ``<year>/photocritique/...``; first-level comments by
      others than the post's author are kept, deleted/removed bodies and bot notices dropped, and the posts that
      Aestheval's preparation drops (discussion threads, images that fail `filter_bad_images`) are dropped and
      reported in one :class:`FilteredImageWarning` per reason.

    ``"auto"`` uses the JSON when it exists. Split ids without data (deleted posts) are skipped and
    reported in one :class:`UnavailableRecordWarning`.

    Args:
        root: the RPCD folder.
        splits: subset of ``("train", "validation", "test")``; all by default.
        split_dir: folder of the ``*_ids.csv`` files (default ``root``), e.g. Aestheval's ``aestheval/data/reddit``
            or the files of Zenodo record 6985507.
        source: ``"auto"``, ``"json"`` or ``"raw"``.
        comments_file: the prepared JSON (default ``root/reddit_photocritique_image_comments.json``).
        image_root: extra folder that the JSON's ``im_paths`` are relative to (``root``,
            ``root/photocritique/images`` and ``root/images`` are always tried).

    Returns:
        DatasetDict: splits ``train``, ``validation``, ``test`` with :data:`AIC_FEATURES`; a split that ends empty
        raises :class:`EmptySplitError` when asked for by name and is left out otherwise.
    """
    root = Path(root).resolve()
    chosen = select_splits(RPCD_SPLITS, splits, "rpcd")
    split_ids = _rpcd_split_ids(resolve_path(root, split_dir, "."), chosen)
    comments_path = resolve_path(root, comments_file, RPCD_COMMENTS_JSON)
    if source not in ("auto", "json", "raw"):
        raise ValueError(f"rpcd: source must be 'auto', 'json' or 'raw', got {source!r}")
    dropped: dict[str, tuple[str, str]] = {}
    if source == "json" or (source == "auto" and comments_path.is_file()):
        bases = [root, root / RPCD_SUBREDDIT / "images", root / "images"]
        if image_root is not None:
            bases.insert(0, resolve_path(root, image_root, "."))
        examples = _rpcd_examples_from_json(comments_path, bases)
        release = f"the posts of {comments_path.name}"
    else:
        if not _rpcd_submission_files(root):
            raise FileNotFoundError(
                f"{root}: no RPCD release found: neither {RPCD_COMMENTS_JSON} nor the scraper's submissions files "
                f"({RPCD_SUBREDDIT}/submissions_<k>.csv or <year>/{RPCD_SUBREDDIT}/<year>-{RPCD_SUBREDDIT}-submissions.csv)"
            )
        wanted = {image_id for _, ids in split_ids.values() for image_id in ids}
        examples, dropped = _rpcd_examples_from_raw(root, wanted)
        release = "the scraped posts with comments"
    collector = SplitCollector("rpcd", chosen, requested=splits)
    for split, (path, ids) in split_ids.items():
        for image_id in ids:
            if image_id in dropped:
                why, shown = dropped[image_id]
                collector.skip(FilteredImageWarning, shown, split, why)
            elif image_id not in examples:
                collector.skip(UnavailableRecordWarning, f"{split}/{image_id}", split)
            else:
                example, hint = examples[image_id]
                collector.add(split, example, hint)
        if ids and not any(image_id in examples or image_id in dropped for image_id in ids):
            first = next(iter(examples.items()), None)
            collector.unmatched_hint[split] = (
                f"0 of {len(ids)} ids of {path} matched {release}; the first id there is {ids[0]!r}, "
                + (f"the first post there {first[0]!r} (image {first[1][1]!r})" if first else f"and {release} are none")
            )
    return collector.finish()
