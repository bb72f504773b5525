"""The eleven AIC metrics, computed as the MS-COCO caption evaluation computes them.

BLEU-1..4, METEOR, ROUGE-L and CIDEr come from pycocoevalcap 1.2 itself, after its PTB tokenizer, with the
whole split scored in one call (CIDEr-D takes its IDF over the scored corpus). SPICE, SPICE-L, Precision and
Recall come from the official SPICE jar (see `spice.py`), fed the same PTB-tokenized captions, as pycocoevalcap's
`COCOEvalCap` feeds them; when SPICE cannot run, or fails, the four are reported unavailable with the reason.

    score_predictions({"img1": "warm light ..."}, {"img1": ["ref a", "ref b"]})
"""

import json
import math
from pathlib import Path

from .predictions import MetricInputError, json_lines, kind, read_predictions, write_metrics_files
from .spice import SpiceOptions, require_java, spice_scores_grouped
from .vocabulary import COCO_METRICS, METRIC_TABLE, SPICE_METRICS


# The folder `evaluate.load` takes: the eleven metrics as an `evaluate` module that loads offline.
EVALUATE_MODULE_PATH = str(Path(__file__).parent / "aic_metrics")


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
                raise MetricInputError(f"image_id {image_id!r}: reference {index} is {kind(reference)}, not a string")
            if not reference.strip():
                raise MetricInputError(f"image_id {image_id!r}: reference {index} is blank")
    for image_id, caption in predictions.items():
        if not isinstance(caption, str):
            raise MetricInputError(f"image_id {image_id!r}: the caption is {kind(caption)}, not a string")
        if not caption.strip():
            raise MetricInputError(f"image_id {image_id!r} has a blank caption")


def ptb_tokenize(captions: dict) -> dict:
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
    gts, res = tokenize_pairs(predictions, references)
    return score_tokenized(gts, res, pr_variant, spice, meteor)


def tokenize_pairs(predictions: dict, references: dict) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Validate, then PTB-tokenize: `(gts, res)`, the references and the one-caption lists, by image id (the
    references' order)."""
    predictions = {str(k): v for k, v in predictions.items()}
    references = {str(k): list(v) for k, v in references.items()}
    validate(predictions, references)
    # One tokenizer run (one JVM) for both: it tokenizes line by line, so the result is that of two runs.
    tokens = ptb_tokenize({**{("ref", key): refs for key, refs in references.items()},
                           **{("res", key): [predictions[key]] for key in references}})
    return {key: tokens[("ref", key)] for key in references}, {key: tokens[("res", key)] for key in references}


def score_tokenized(gts: dict[str, list[str]], res: dict[str, list[str]], pr_variant: str = "independent",
                    spice: SpiceOptions | bool = True, meteor=None) -> dict:
    """`score_predictions` on PTB-tokenized references and captions (`tokenize_pairs`)."""
    return score_tokenized_runs(gts, {"": res}, pr_variant, spice, meteor)[""]


def score_tokenized_runs(gts: dict[str, list[str]], runs: dict[str, dict[str, list[str]]],
                         pr_variant: str = "independent", spice: SpiceOptions | bool = True, meteor=None) -> dict:
    """Several sets of captions (`runs`: label -> tokenized captions by image id) against the same references, each
    scored as `score_tokenized` scores it, with one METEOR process and one SPICE run for all; label -> result."""
    if meteor is None and len(runs) > 1:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
    results = {label: dict(coco_scores(gts, res, meteor)) for label, res in runs.items()}
    if spice is False:
        scores, reason = None, "not computed (--no-spice)"
    else:
        # SPICE is keyed by image; another run's pairings are told apart by their label ("p7 (shuffled)").
        def key(label, image_id):
            return f"{image_id} ({label})" if label else image_id

        options = spice if isinstance(spice, SpiceOptions) else SpiceOptions()
        candidates = {key(label, image_id): res[image_id][0] for label, res in runs.items() for image_id in res}
        references = {key(label, image_id): gts[image_id] for label, res in runs.items() for image_id in res}
        groups = [[key(label, image_id) for image_id in res] for label, res in runs.items()]
        scores, reason = spice_scores_grouped(candidates, references, groups, options, pr_variant)
    for index, (label, result) in enumerate(results.items()):
        for name in SPICE_METRICS:
            result[name] = None if scores is None else scores[index][name]
        result.update(
            unavailable={} if scores is not None else {name: reason for name in SPICE_METRICS},
            num_images=len(runs[label]), pr_variant=pr_variant, spice_backend=None if scores is None else "official",
        )
    return results


def read_references(path_or_mapping) -> dict[str, list[str]]:
    """References from a mapping, a JSON object `{image_id: [refs]}`, or JSONL lines `{"image_id", "references"}`.

    Files are UTF-8, with or without a BOM; a malformed one is a `MetricInputError` naming the file (and line).
    """
    if isinstance(path_or_mapping, dict):
        return {str(k): list(v) for k, v in path_or_mapping.items()}
    path = Path(path_or_mapping)
    if path.suffix == ".jsonl":
        references = {}
        for number, row in json_lines(path):
            if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("references"), list):
                got = sorted(row) if isinstance(row, dict) else kind(row)
                raise MetricInputError(f"{path}:{number}: expected {{\"image_id\": ..., \"references\": [...]}}, got {got}")
            references[str(row["image_id"])] = list(row["references"])
        return references
    try:
        mapping = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise MetricInputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(mapping, dict):
        raise MetricInputError(f"{path}: expected a JSON object {{image_id: [references]}}, got {kind(mapping)}")
    for image_id, refs in mapping.items():
        if not isinstance(refs, list):
            raise MetricInputError(f"{path}: image_id {image_id!r}: expected a list of references, got {kind(refs)}")
    return {str(k): list(v) for k, v in mapping.items()}


def score_with_control(predictions: dict, references: dict, control: str | None = None, control_seed: int = 0,
                       output_dir=None, **options) -> dict:
    """`score_predictions`, plus, with `control="shuffled"`, the grounding control (`control.py`) under the key
    `control`: the captions are tokenized once, and one METEOR process and one SPICE run score both pairings;
    `output_dir` receives `control_pairs.json`."""
    if control is None:
        return score_predictions(predictions, references, **options)
    from .control import CONTROLS, control_record, shuffled_captions, write_control_pairs

    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; the controls are {', '.join(CONTROLS)}")
    gts, res = tokenize_pairs(predictions, references)
    moved, pairs = shuffled_captions(res, control_seed)
    scored = score_tokenized_runs(gts, {"": res, "shuffled": moved}, **options)
    metrics = scored[""]
    metrics["control"] = control_record(control_seed, metrics, scored["shuffled"])
    if output_dir is not None:
        write_control_pairs(pairs, output_dir)
    return metrics


def score_predictions_file(predictions_path, references, output_dir=None, control: str | None = None,
                           control_seed: int = 0, **options) -> dict:
    """Score a `predictions.jsonl`; write `metrics.json` and `metrics.md` (Table I) next to it or in `output_dir`."""
    output_dir = Path(output_dir or Path(predictions_path).parent)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = score_with_control(read_predictions(predictions_path), read_references(references), control,
                                 control_seed, output_dir, **options)
    write_metrics(metrics, output_dir)
    return metrics


def _cell(value, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def format_table_row(metrics: dict, signed: bool = False) -> str:
    """One Table I row from `metrics.json`'s keys: `| 0.682 | 0.454 | ... | n/a |` (3 decimals; `signed`: with a sign,
    for gaps)."""
    return "| " + " | ".join(_cell(metrics.get(metric.key), signed) for metric in METRIC_TABLE) + " |"


def format_table(metrics: dict, protocol: bool = True) -> str:
    """A markdown table in the paper's Table I layout; each distinct reason for an `n/a` once, below it, and (with
    `protocol`) the protocol the numbers follow.

    With a grounding control (`metrics["control"]`) the table gets a first column and three rows: the critiques
    against their own photos' references (the Table I row), against other photos' (shuffled), and the gap.
    """
    columns = [metric.column for metric in METRIC_TABLE]
    control = metrics.get("control")
    if control:
        header = "| references | " + " | ".join(columns) + " |"
        rows = [
            "| own photo's (Table I) " + format_table_row(metrics),
            f"| another photo's (shuffled, seed {control['seed']}) " + format_table_row(control["metrics"]),
            "| gap (own − shuffled) " + format_table_row(control["gap"], signed=True),
        ]
        lines = [header, "|---|" + "---:|" * len(columns), *rows]
    else:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns), format_table_row(metrics)]
    reasons = list(dict.fromkeys([*(metrics.get("unavailable") or {}).values(),
                                  *((control or {}).get("unavailable") or {}).values()]))
    notes = [f"n/a: {reason}" for reason in reasons]
    if protocol and metrics.get("protocol_note"):
        notes.append(f"Protocol: {metrics['protocol_note']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def write_metrics(metrics: dict, output_dir) -> None:
    """Write `metrics.json` and `metrics.md` (Table I) into `output_dir`."""
    write_metrics_files(metrics, format_table(metrics), output_dir)
