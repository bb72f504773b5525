"""Score evaluation (`ase-mllm evaluate-score`): EAT's aesthetic score against human ratings, as the field reports it.

Two sources of ratings:

- AVA, read from its standard files: `AVA.txt` (one line per image: index, image id, the ten vote counts for the
  ratings 1..10, two tag ids and a challenge id) and the split lists EAT's code uses (its `clean_split.py` writes
  `train.csv` / `val.csv` / `test.csv` with an `image_id` column; `AVA/dataset.py` reads `<images>/<image_id>.jpg`).
  The true score is the mean rating of the votes, the true distribution the votes normalised to sum 1.
- Any folder of photos with a CSV of scores (columns `image` (a file name in the folder) and `score`).

Metrics (`score_metrics`), as EAT's `validate` reports them: SRCC and PLCC of the score (scipy's `spearmanr` and
`pearsonr`), binary accuracy at 5.0 (a score at or below 5.00 is low, for prediction and truth alike), and, where
vote distributions are known, the EMD with r = 2: per image, the root mean square of the difference between the
CDFs of EAT's raw outputs and of the normalised votes (EAT's `EDMLoss` on a batch of one), averaged over images.

The run is `run.predict_split`'s: one line per image in `predictions.jsonl` (`{"image_id", "rating": {"score",
"rating_outputs"}}`), resumable after a kill and shared among the processes of `accelerate launch`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..inference.photos import PhotoLimits


# One image per line of AVA.txt: index, image id, ten vote counts (ratings 1..10), two tag ids, a challenge id.
AVA_COLUMNS = 15
AVA_RATINGS = 10
# A score at or below this is "low" (EAT's `validate`: `np.where(score <= 5.00, 0, 1)`).
LOW_SCORE_THRESHOLD = 5.0
# The same metrics as an `evaluate` module (`evaluate.load(SCORE_EVALUATE_MODULE_PATH)`), beside the AIC one.
SCORE_EVALUATE_MODULE_PATH = str(Path(__file__).parent / "aesthetic_score_metrics")
# `predictions.jsonl`'s key for each image's EAT rating.
RATING_KEY = "rating"
# The score metrics: JSON key, what the card and table call them, the Hub's metric type.
SCORE_METRICS = (("srcc", "SRCC", "spearmanr"), ("plcc", "PLCC", "pearsonr"), ("accuracy", "Accuracy (5.0)", "accuracy"),
                 ("emd", "EMD (r=2)", "emd"))


@dataclass(frozen=True)
class RatedImage:
    """One photo with its human rating: the mean score, and the ten vote counts where known (AVA)."""

    image_id: str
    path: Path
    score: float
    votes: tuple[int, ...] | None = None


def mean_rating(votes) -> float:
    """The mean rating 1..10 of vote counts."""
    return sum(rating * count for rating, count in enumerate(votes, start=1)) / sum(votes)


def read_ava_txt(path: Path) -> dict[str, tuple[int, ...]]:
    """`image_id → ten vote counts` of every line of AVA.txt; a malformed line is a `ValueError` naming it."""
    votes = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != AVA_COLUMNS or not all(field.isdigit() for field in fields):
                raise ValueError(f"{path}:{number}: expected {AVA_COLUMNS} whole numbers (index, image id, ten vote "
                                 f"counts, two tag ids, challenge id), got {line.strip()[:120]!r}")
            counts = tuple(int(field) for field in fields[2 : 2 + AVA_RATINGS])
            if not sum(counts):
                raise ValueError(f"{path}:{number}: image {fields[1]} has no votes")
            votes[fields[1]] = counts
    return votes


def read_split_ids(path: Path) -> list[str]:
    """The `image_id` column of one of EAT's split lists (`train.csv` / `test.csv`)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "image_id" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no `image_id` column (EAT's split lists have one); found {reader.fieldnames}")
        return [str(int(float(row["image_id"]))) for row in reader]


def load_ava(root, split: str = "test", split_dir=None, images_dir=None) -> list[RatedImage]:
    """AVA's `split` as EAT evaluates it: the ids of `<split_dir>/<split>.csv` (default: `root`), their votes from
    `root/AVA.txt`, their photos `<images_dir>/<id>.jpg` (default: `root/images`)."""
    root = Path(root)
    split_file = Path(split_dir or root) / f"{split}.csv"
    for path in (root / "AVA.txt", split_file):
        if not path.is_file():
            raise FileNotFoundError(f"AVA: no {path} (the dataset's AVA.txt, and EAT's split list {split}.csv)")
    votes = read_ava_txt(root / "AVA.txt")
    images = Path(images_dir or root / "images")
    rated = []
    for image_id in read_split_ids(split_file):
        if image_id not in votes:
            raise ValueError(f"{split_file}: image {image_id} is not in {root / 'AVA.txt'}")
        rated.append(RatedImage(image_id, images / f"{image_id}.jpg", mean_rating(votes[image_id]), votes[image_id]))
    return rated


def load_scored_folder(folder, scores_csv) -> list[RatedImage]:
    """Photos of `folder` rated by a CSV with columns `image` (a file name in the folder) and `score`."""
    folder, rated = Path(folder), []
    with open(scores_csv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"image", "score"} <= set(reader.fieldnames or []):
            raise ValueError(f"{scores_csv}: needs the columns `image` and `score`, found {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            try:
                score = float(row["score"])
            except ValueError:
                raise ValueError(f"{scores_csv}:{number}: score {row['score']!r} is not a number") from None
            rated.append(RatedImage(row["image"], folder / row["image"], score))
    return rated


def emd(predicted, votes) -> float:
    """EMD with r = 2 between a predicted distribution over the ratings 1..10 (EAT's raw outputs) and vote counts:
    the root mean square of the difference of their CDFs."""
    import numpy as np

    target = np.asarray(votes, dtype=np.float64)
    difference = np.cumsum(np.asarray(predicted, dtype=np.float64)) - np.cumsum(target / target.sum())
    return float(np.sqrt(np.mean(difference**2)))


def score_metrics(predicted: list[float], true: list[float], rating_outputs: list | None = None,
                  votes: list | None = None) -> dict:
    """SRCC, PLCC (scipy), accuracy at `LOW_SCORE_THRESHOLD` and, with `rating_outputs` and `votes`, the mean EMD."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    if len(predicted) != len(true) or len(predicted) < 2:
        raise ValueError(f"score metrics need 2 or more images with a prediction and a rating, got {len(predicted)}")
    predicted_array, true_array = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    low = LOW_SCORE_THRESHOLD
    metrics = {
        "srcc": float(spearmanr(predicted_array, true_array).statistic),
        "plcc": float(pearsonr(predicted_array, true_array).statistic),
        "accuracy": float(np.mean((predicted_array <= low) == (true_array <= low))),
        "num_images": len(predicted),
    }
    if rating_outputs is not None and votes is not None:
        metrics["emd"] = float(np.mean([emd(p, v) for p, v in zip(rating_outputs, votes)]))
    return metrics


def format_score_table(metrics: dict) -> str:
    """The metrics as one Markdown table row (n/a where absent)."""
    header = "| " + " | ".join(column for _, column, _ in SCORE_METRICS) + " |"
    cells = [f"{metrics[key]:.4f}" if isinstance(metrics.get(key), float) else "n/a" for key, _, _ in SCORE_METRICS]
    return "\n".join([header, "|" + "---|" * len(SCORE_METRICS), "| " + " | ".join(cells) + " |"])


def evaluate_scores(model: str, rated: list[RatedImage], output_dir, dataset: str, split: str | None = None,
                    batch_size: int = 16, device: str | None = None, overwrite: bool = False,
                    limits: PhotoLimits = PhotoLimits(), progress: bool = True) -> dict | None:
    """Score every photo of `rated` with the model's EAT alone (resumable, sharded as caption evaluation), then
    write `metrics.json` and `metrics.md`; returns the metrics (None on processes other than the main one).

    A photo that cannot be read stops the run with its name: a score evaluation over a silently smaller set would
    not be comparable.
    """
    import torch  # noqa: F401  (before the model code, which needs it)

    from ..data.fingerprint import settings_fingerprint, weights_fingerprint
    from ..faithfulness.loading import load_model_eat
    from ..inference.photos import read_photo
    from ..scoring_ase_mllm import eat_inputs, eat_is_trained, score_with_eat
    from .predictions import read_finished, write_metrics_files
    from .run import predict_split
    from .sharding import current_shards

    shards = current_shards()
    loaded = load_model_eat(model, device=device or shards.device or "cpu")
    settings = {"task": "score", "model": model, "model_fingerprint": weights_fingerprint(loaded.eat),
                "processor_fingerprint": settings_fingerprint(loaded.image_processor.to_dict()),
                "dataset": dataset, "split": split}

    def predict(pending: list[int]) -> list[dict]:
        photos = []
        for index in pending:
            try:
                photos.append(read_photo(rated[index].path, limits))
            except (ValueError, OSError) as error:
                raise ValueError(f"image {rated[index].image_id}: {error}") from error
        output = score_with_eat(loaded.eat, eat_inputs(loaded.image_processor, photos))
        return [{"score": float(score), "rating_outputs": outputs}
                for score, outputs in zip(output.scores, output.rating_outputs.tolist())]

    ids = [image.image_id for image in rated]
    path = predict_split(ids, output_dir, settings, predict, batch_size, value_key=RATING_KEY, progress=progress,
                         overwrite=overwrite, shards=shards, desc="scoring")
    if not shards.is_main:
        return None
    ratings = read_finished(path, RATING_KEY)
    has_votes = all(image.votes is not None for image in rated)
    metrics = score_metrics([ratings[i]["score"] for i in ids], [image.score for image in rated],
                            [ratings[i]["rating_outputs"] for i in ids] if has_votes else None,
                            [image.votes for image in rated] if has_votes else None)
    metrics.update(task="score", dataset=dataset, split=split, trained=eat_is_trained(loaded.eat.config))
    write_metrics_files(metrics, format_score_table(metrics), output_dir)
    return metrics


__all__ = ["RatedImage", "load_ava", "load_scored_folder", "read_ava_txt", "read_split_ids", "emd", "score_metrics",
           "evaluate_scores", "format_score_table", "SCORE_METRICS", "LOW_SCORE_THRESHOLD", "SCORE_EVALUATE_MODULE_PATH"]
