"""`ase-mllm evaluate`: caption a dataset split with a model (resumable), then score it with the AIC metrics.

Captioning appends one JSON line per image to `predictions.jsonl` after every batch, so a killed run restarts
where it stopped: finished images are never captioned again, and batches keep the boundaries they had in the
uninterrupted run (the split's order, cut every `batch_size` images), so the file comes out the same.
"""

import json
import os
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from .captioning import critique_prompt, load_model_and_processor


PREDICTIONS_FILE = "predictions.jsonl"
REFERENCES_FILE = "references.json"


def read_finished(predictions_path: Path) -> dict[str, str]:
    """`image_id → caption` already in the file. A torn last line (the run died mid-write) is cut off."""
    if not predictions_path.is_file():
        return {}
    data = predictions_path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(predictions_path, "r+b") as handle:
            handle.truncate(len(complete))
    finished = {}
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        record = json.loads(line)
        if "image_id" not in record or "caption" not in record:
            raise ValueError(f"{predictions_path}:{number}: expected keys 'image_id' and 'caption', got {sorted(record)}")
        finished[str(record["image_id"])] = record["caption"]
    return finished


def append_predictions(predictions_path: Path, records: list[dict]) -> None:
    """Append whole lines and flush them to disk before the next batch starts."""
    with open(predictions_path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def caption_split(
    model,
    processor,
    dataset,
    output_dir,
    prompt: str | None = None,
    batch_size: int = 8,
    generation_config: dict | None = None,
    max_tiles: int | None = None,
    progress: bool = True,
) -> Path:
    """Caption every example of `dataset` (columns `image_id`, `image`) into `output_dir/predictions.jsonl`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = output_dir / PREDICTIONS_FILE
    finished = read_finished(predictions_path)
    ids = [str(image_id) for image_id in dataset["image_id"]]
    duplicates = [image_id for image_id, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise ValueError(f"dataset has repeated image_id(s): {sorted(duplicates)[:5]}")
    batches = [range(start, min(start + batch_size, len(ids))) for start in range(0, len(ids), batch_size)]
    todo = [batch for batch in batches if any(ids[i] not in finished for i in batch)]
    images_kwargs = {"max_patches": max_tiles} if max_tiles else {}
    question = prompt or critique_prompt()
    bar = tqdm(total=len(ids), initial=len(ids) - sum(len(b) for b in todo), desc="captioning", unit="image",
               disable=not progress)
    for batch in todo:
        pending = [i for i in batch if ids[i] not in finished]
        images = [dataset[i]["image"].convert("RGB") for i in pending]
        answers = model.batch_chat(processor, images, [question] * len(pending), generation_config, images_kwargs)
        append_predictions(predictions_path, [{"image_id": ids[i], "caption": a.strip()} for i, a in zip(pending, answers)])
        bar.update(len(batch))
    bar.close()
    return predictions_path


def write_references(dataset, output_dir) -> Path:
    """`image_id → references` of the split, next to the predictions (what the metrics are computed against)."""
    path = Path(output_dir) / REFERENCES_FILE
    references = {str(row["image_id"]): list(row["references"]) for row in dataset.select_columns(["image_id", "references"])}
    path.write_text(json.dumps(references, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def load_split(dataset: str, split: str, root: str | None = None):
    """A split from a reader name (`pccd`, `rpcd`, `dpc2022`, `ava_captions`, `mini_aic`) or a saved DatasetDict."""
    from datasets import load_from_disk

    from .aic_datasets import load_aic_dataset

    if Path(dataset).is_dir():
        splits = load_from_disk(dataset)
    else:
        splits = load_aic_dataset(dataset, root) if root is not None else load_aic_dataset(dataset)
    if split not in splits:
        raise ValueError(f"split {split!r} not in {dataset!r}; it has {sorted(splits)}")
    return splits[split]


def evaluate_model(
    model_path: str,
    dataset: str,
    split: str = "test",
    output_dir: str = "outputs/evaluate",
    root: str | None = None,
    batch_size: int = 8,
    generation_config: dict | None = None,
    prompt: str | None = None,
    max_tiles: int | None = None,
    limit: int | None = None,
    device: str | None = None,
    **metric_options,
) -> dict:
    """Caption `dataset[split]` with the model (resuming if interrupted), then score it; returns the metrics."""
    from .metrics import score_predictions_file

    data = load_split(dataset, split, root)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    model, processor = load_model_and_processor(model_path, device=device)
    predictions = caption_split(model, processor, data, output_dir, prompt, batch_size, generation_config, max_tiles)
    references = write_references(data, output_dir)
    return score_predictions_file(predictions, references, output_dir, **metric_options)


def add_evaluate_command(subparsers) -> None:
    """Register `ase-mllm evaluate`."""
    from .metrics import add_metric_arguments

    command = subparsers.add_parser(
        "evaluate", help="caption a dataset split with a model and score it (Table I metrics), or score a predictions file"
    )
    command.add_argument("--model", help="model folder or Hub id (omit with --predictions)")
    command.add_argument("--dataset", help="pccd, rpcd, dpc2022, ava_captions, mini_aic, or a save_to_disk folder")
    command.add_argument("--data-root", help="the dataset's folder, for a dataset name")
    command.add_argument("--split", default="test")
    command.add_argument("--predictions", help="score this predictions.jsonl instead of captioning")
    command.add_argument("--references", help="references JSON/JSONL for --predictions")
    command.add_argument("--output-dir", default="outputs/evaluate")
    command.add_argument("--batch-size", type=int, default=8)
    command.add_argument("--max-new-tokens", type=int, default=128)
    command.add_argument("--num-beams", type=int, default=1)
    command.add_argument("--max-tiles", type=int)
    command.add_argument("--prompt", help="default: the paper's prompt")
    command.add_argument("--limit", type=int, help="only the first N images of the split")
    command.add_argument("--device")
    add_metric_arguments(command)
    command.set_defaults(handler=run_evaluate_command)


def run_evaluate_command(args) -> int:
    from .metrics import format_table, metric_options, score_predictions_file

    options = metric_options(args)
    if args.predictions:
        if not args.references:
            raise SystemExit("--predictions needs --references")
        metrics = score_predictions_file(args.predictions, args.references, args.output_dir, **options)
    else:
        if not (args.model and args.dataset):
            raise SystemExit("give --model and --dataset (or --predictions and --references)")
        metrics = evaluate_model(
            args.model, args.dataset, args.split, args.output_dir, root=args.data_root, batch_size=args.batch_size,
            generation_config={"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams},
            prompt=args.prompt, max_tiles=args.max_tiles, limit=args.limit, device=args.device, **options,
        )
    print(format_table(metrics))
    print(f"[evaluate] wrote {Path(args.output_dir) / 'metrics.json'} and metrics.md")
    return 0
