"""The eleven AIC metrics, computed as the MS-COCO caption evaluation computes them.

BLEU-1..4, METEOR, ROUGE-L and CIDEr come from pycocoevalcap 1.2 itself, after its PTB tokenizer, with the
whole split scored in one call (CIDEr-D takes its IDF over the scored corpus). SPICE, SPICE-L, Precision and
Recall come from the official SPICE jar (see `spice.py`), fed the same PTB-tokenized captions, as pycocoevalcap's
`COCOEvalCap` feeds them; when SPICE cannot run, or fails, the four are reported unavailable with the reason.

    score_predictions({"img1": "warm light ..."}, {"img1": ["ref a", "ref b"]})
"""

import json
import math
from collections.abc import Iterator
from pathlib import Path

from .spice import SpiceOptions, require_java, spice_scores
from .vocabulary import COCO_METRICS, METRIC_TABLE, SPICE_METRICS


# The folder `evaluate.load` takes: the eleven metrics as an `evaluate` module that loads offline.
EVALUATE_MODULE_PATH = str(Path(__file__).parent / "aic_metrics")


class MetricInputError(ValueError):
    """Predictions or references that cannot be scored; the message names the offending ids."""


def _some(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(repr(i) for i in ids[:limit]) + (f" (+{len(ids) - limit} more)" if len(ids) > limit else "")


def validate(predictions: dict[str, str], references: dict[str, list[str]]) -> None:
    """Reject what pycocoevalcap would mis-score or crash on, naming the ids.

    Blank captions are rejected too: the PTB tokenizer aligns captions by line and ROUGE-L divides by the
    candidate's length, so an empty caption cannot be scored faithfully.
    """
    if not predictions:
        raise MetricInputError("no predictions to score")
    missing_refs = set(predictions) - set(references)
    if missing_refs:
        raise MetricInputError(f"no references for predicted image_id(s) {_some(missing_refs)}")
    missing_preds = set(references) - set(predictions)
    if missing_preds:
        raise MetricInputError(f"no prediction for image_id(s) {_some(missing_preds)}")
    for image_id, refs in references.items():
        if not refs:
            raise MetricInputError(f"image_id {image_id!r} has an empty reference list")
        for index, reference in enumerate(refs):
            if not isinstance(reference, str):
                raise MetricInputError(f"image_id {image_id!r}: reference {index} is {_kind(reference)}, not a string")
            if not reference.strip():
                raise MetricInputError(f"image_id {image_id!r}: reference {index} is blank")
    for image_id, caption in predictions.items():
        if not isinstance(caption, str):
            raise MetricInputError(f"image_id {image_id!r}: the caption is {_kind(caption)}, not a string")
        if not caption.strip():
            raise MetricInputError(f"image_id {image_id!r} has a blank caption")


def _kind(value) -> str:
    """`"an int (5)"`, `"null"`: what a JSON value that should have been a string is."""
    if value is None:
        return "null"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} ({shown})"


def ptb_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer (lower-cases, splits clitics, drops punctuation tokens)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    return PTBTokenizer().tokenize({key: [{"caption": c} for c in values] for key, values in captions.items()})


def coco_scores(gts: dict[str, list[str]], res: dict[str, list[str]], meteor=None) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of the whole corpus, exactly as pycocoevalcap computes them.

    `gts`/`res`: PTB-tokenized references and predictions (`ptb_tokenize`). `meteor`: a
    `pycocoevalcap.meteor.meteor.Meteor` to reuse (its JVM takes seconds to start).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor_score = (meteor or Meteor()).compute_score(gts, res)[0]
    rouge, cider = Rouge().compute_score(gts, res)[0], Cider().compute_score(gts, res)[0]
    # In Table I order, as `COCO_METRICS` lists them: BLEU-1..4, METEOR, ROUGE-L, CIDEr.
    return dict(zip(COCO_METRICS, map(float, [*bleu, meteor_score, rouge, cider]), strict=True))


def score_predictions(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    pr_variant: str = "independent",
    spice: SpiceOptions | bool = True,
    meteor=None,
) -> dict:
    """All eleven metrics for `image_id → caption` against `image_id → references`.

    `spice`: `SpiceOptions` (True: the defaults, from the environment), or False to leave the four SPICE-family
    metrics out. Whatever happens to SPICE (no jars, no network, a Java failure), the seven others are returned.

    Returns `{metric: value or None, ..., "unavailable": {metric: reason}, "num_images": n, "pr_variant": ...,
    "spice_backend": "official" | None}`.
    """
    predictions = {str(k): v for k, v in predictions.items()}
    references = {str(k): list(v) for k, v in references.items()}
    validate(predictions, references)
    gts = ptb_tokenize(references)
    res = ptb_tokenize({key: [caption] for key, caption in predictions.items()})
    result: dict = dict(coco_scores(gts, res, meteor))
    if spice is False:
        scores, reason = None, "not computed (--no-spice)"
    else:
        options = spice if isinstance(spice, SpiceOptions) else SpiceOptions()
        scores, reason = spice_scores({key: res[key][0] for key in predictions}, gts, options, pr_variant)
    for name in SPICE_METRICS:
        result[name] = None if scores is None else scores[name]
    result.update(
        unavailable={} if scores is not None else {name: reason for name in SPICE_METRICS},
        num_images=len(predictions), pr_variant=pr_variant, spice_backend=None if scores is None else "official",
    )
    return result


def _json_lines(path) -> Iterator[tuple[int, object]]:
    """`(line number, value)` of each non-blank line of a JSON Lines file (UTF-8, with or without a BOM)."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise MetricInputError(f"{path}:{number}: not valid JSON ({error.msg}, column {error.colno})") from None


def read_predictions(path) -> dict[str, str]:
    """`predictions.jsonl`: one `{"image_id": ..., "caption": ...}` per line; names the line of a bad record."""
    predictions = {}
    for number, record in _json_lines(path):
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            got = sorted(record) if isinstance(record, dict) else _kind(record)
            raise MetricInputError(f"{path}:{number}: expected {{\"image_id\": ..., \"caption\": ...}}, got {got}")
        image_id = str(record["image_id"])
        if image_id in predictions:
            raise MetricInputError(f"{path}:{number}: image_id {image_id!r} predicted twice")
        predictions[image_id] = record["caption"]
    return predictions


def read_references(path_or_mapping) -> dict[str, list[str]]:
    """References from a mapping, a JSON object `{image_id: [refs]}`, or JSONL lines `{"image_id", "references"}`.

    Files are UTF-8, with or without a BOM; a malformed one is a `MetricInputError` naming the file (and line).
    """
    if isinstance(path_or_mapping, dict):
        return {str(k): list(v) for k, v in path_or_mapping.items()}
    path = Path(path_or_mapping)
    if path.suffix == ".jsonl":
        references = {}
        for number, row in _json_lines(path):
            if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("references"), list):
                got = sorted(row) if isinstance(row, dict) else _kind(row)
                raise MetricInputError(f"{path}:{number}: expected {{\"image_id\": ..., \"references\": [...]}}, got {got}")
            references[str(row["image_id"])] = list(row["references"])
        return references
    try:
        mapping = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise MetricInputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(mapping, dict):
        raise MetricInputError(f"{path}: expected a JSON object {{image_id: [references]}}, got {_kind(mapping)}")
    for image_id, refs in mapping.items():
        if not isinstance(refs, list):
            raise MetricInputError(f"{path}: image_id {image_id!r}: expected a list of references, got {_kind(refs)}")
    return {str(k): list(v) for k, v in mapping.items()}


def score_predictions_file(predictions_path, references, output_dir=None, **options) -> dict:
    """Score a `predictions.jsonl`; write `metrics.json` and `metrics.md` (Table I) next to it or in `output_dir`."""
    metrics = score_predictions(read_predictions(predictions_path), read_references(references), **options)
    write_metrics(metrics, output_dir or Path(predictions_path).parent)
    return metrics


def format_table_row(metrics: dict) -> str:
    """One Table I row from `metrics.json`'s keys: `| 0.682 | 0.454 | ... | n/a |` (3 decimals)."""
    cells = []
    for metric in METRIC_TABLE:
        value = metrics.get(metric.key)
        cells.append(f"{value:.3f}" if isinstance(value, (int, float)) and not math.isnan(value) else "n/a")
    return "| " + " | ".join(cells) + " |"


def format_table(metrics: dict) -> str:
    """A markdown table in the paper's Table I layout; each distinct reason for an `n/a` once, below it."""
    header = "| " + " | ".join(metric.column for metric in METRIC_TABLE) + " |"
    lines = [header, "|" + "---:|" * len(METRIC_TABLE), format_table_row(metrics)]
    reasons = list(dict.fromkeys((metrics.get("unavailable") or {}).values()))
    return "\n".join(lines + ([""] + [f"n/a: {reason}" for reason in reasons] if reasons else []))


def write_metrics(metrics: dict, output_dir) -> None:
    """Write `metrics.json` and `metrics.md` (Table I) into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (output_dir / "metrics.md").write_text(format_table(metrics) + "\n", encoding="utf-8")
