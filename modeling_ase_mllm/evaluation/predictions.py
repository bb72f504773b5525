"""The files of an evaluation's captions and scores: `predictions.jsonl` and `metrics.json` (with `metrics.md`).

The one owner of their names and formats: reading (a torn last line of an append-only file cut off; a bad record
named by file and line), appending whole lines, merging part files in a given order, writing the metrics whole or
not at all. `run` (captioning), `sharding` (part files) and `metrics` (scoring) all go through here.
"""

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..utils.files import write_atomically


PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
METRICS_TABLE_FILE = "metrics.md"


class MetricInputError(ValueError):
    """Predictions or references that cannot be scored; the message names the offending ids."""


def kind(value) -> str:
    """`"an int (5)"`, `"null"`: what a JSON value that should have been a string is."""
    if value is None:
        return "null"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} ({shown})"


def json_lines(path) -> Iterator[tuple[int, object]]:
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
    for number, record in json_lines(path):
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            got = sorted(record) if isinstance(record, dict) else kind(record)
            raise MetricInputError(f"{path}:{number}: expected {{\"image_id\": ..., \"caption\": ...}}, got {got}")
        image_id = str(record["image_id"])
        if image_id in predictions:
            raise MetricInputError(f"{path}:{number}: image_id {image_id!r} predicted twice")
        predictions[image_id] = record["caption"]
    return predictions


def complete_lines(path: Path) -> list[str]:
    """The whole lines of an append-only file; a torn last line (the run died mid-write) is cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    return complete.decode("utf-8").splitlines()


def read_finished(predictions_path: Path, value_key: str = "caption") -> dict:
    """`image_id → caption` (or `value_key`'s value: the score evaluation's `score`) already in the file. A torn last
    line (the run died mid-write) is cut off."""
    finished = {}
    for number, line in enumerate(complete_lines(predictions_path), start=1):
        record = json.loads(line)
        if "image_id" not in record or value_key not in record:
            raise ValueError(f"{predictions_path}:{number}: expected keys 'image_id' and {value_key!r}, "
                             f"got {sorted(record)}")
        finished[str(record["image_id"])] = record[value_key]
    return finished


def append_predictions(predictions_path: Path, records: list[dict]) -> None:
    """Append whole lines and flush them to disk before the next batch starts."""
    with open(predictions_path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def merge_predictions(path: Path, parts: Sequence[Path], order: Sequence[str], value_key: str = "caption") -> int:
    """Fold the predictions files `parts` into `path`, then delete them; returns the captions (or other `value_key`
    values) added.

    The lines already in `path` stay as they are; the parts' captions follow, those of `order` (the split's ids)
    in that order, then any others as found. A torn last line of a part (its process was killed mid-write) is
    dropped. The merged file replaces `path` atomically, so a kill at any point loses nothing. An image with two
    different captions in two files is an error naming both.
    """
    if not parts:
        return 0
    existing = read_finished(path, value_key)
    found, source = {}, {}
    for part in parts:
        for key, value in read_finished(part, value_key).items():
            earlier = existing.get(key, found.get(key))
            if earlier is not None and earlier != value:
                raise ValueError(f"{part} and {source.get(key, path)} hold different captions for {key!r}; "
                                 "delete the output folder (or pass --overwrite) and run again")
            if key not in existing:
                found[key], source[key] = value, part
    rank = {key: index for index, key in enumerate(order)}
    added = sorted(found, key=lambda key: rank.get(key, len(rank)))
    merging = path.with_name(path.name + ".merging")
    if path.is_file():
        shutil.copyfile(path, merging)
    else:
        merging.write_bytes(b"")
    append_predictions(merging, [{"image_id": key, value_key: found[key]} for key in added])
    os.replace(merging, path)
    for part in parts:
        part.unlink()
    return len(added)


def write_metrics_files(metrics: dict, table: str, output_dir) -> None:
    """`metrics.json` (the scores) and `metrics.md` (their Table I, `table`) in `output_dir`, each complete or absent
    (a temporary name, then a rename)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_atomically(output_dir / METRICS_TABLE_FILE, table + "\n")


def read_metrics(output_dir) -> dict:
    """The `metrics.json` of `output_dir`."""
    return json.loads((Path(output_dir) / METRICS_FILE).read_text(encoding="utf-8"))


__all__ = [
    "PREDICTIONS_FILE", "METRICS_FILE", "METRICS_TABLE_FILE", "MetricInputError", "json_lines", "read_predictions",
    "complete_lines", "read_finished", "append_predictions", "merge_predictions", "write_metrics_files", "read_metrics",
]
