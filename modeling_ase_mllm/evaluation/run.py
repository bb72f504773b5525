"""An evaluation run (`ase-mllm evaluate`): caption a dataset split with a model (resumable), then score it.

Captioning appends one JSON line per image to `predictions.jsonl` after every batch, so a killed run restarts
where it stopped: finished images are never captioned again, and batches keep the boundaries they had in the
uninterrupted run (the split's order, cut every `batch_size` images), so the file comes out the same.

`run.json` beside it records what produced the captions (the weights' fingerprint, prompt, generation settings,
tiles, saliency source, dataset and split). A run resumes only from captions made with the same settings; other
settings stop with a message naming what differs (`overwrite=True` / `--overwrite` starts the folder afresh).

Under `accelerate launch` the batches are dealt out to the processes, which write part files that the main
process merges into `predictions.jsonl` (the same bytes as one process writes) before it scores (`sharding.py`).
"""

import json
import sys
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from ..inference.captioning import critique_prompt, load_model_and_processor
from ..inference.chat import batch_chat
from ..utils.quantization import describe_precision
from .predictions import (
    METRICS_FILE, METRICS_TABLE_FILE, PREDICTIONS_FILE, append_predictions, read_finished,
    read_predictions,
)
from .sharding import Shards, current_shards, merge_parts, part_files, part_path


REFERENCES_FILE = "references.json"
RUN_FILE = "run.json"
# Everything a run writes into its folder; `overwrite` removes exactly these.
RUN_OUTPUTS = (PREDICTIONS_FILE, REFERENCES_FILE, RUN_FILE, METRICS_FILE, METRICS_TABLE_FILE, "control_pairs.json")
# Recorded for the reader but free to differ on resume: the path may move, and a limit selects rows to score.
INFORMATIONAL_SETTINGS = ("model", "limit")


class StaleRunError(ValueError):
    """The output folder holds captions made by another model or with other settings."""


def model_run_settings(model, processor, prompt: str, generation_config: dict | None, max_patches: int | None) -> dict:
    """What decides the captions on the model's side: weights, dtype, saliency source, processor, decoding."""
    from ..data.fingerprint import settings_fingerprint, weights_fingerprint  # torch: not at import (`--help` is fast)

    image_processor = processor.image_processor
    generation = {k: v for k, v in model.generation_config.to_diff_dict().items() if k != "transformers_version"}
    return {
        "model": str(getattr(model, "name_or_path", "") or ""),
        "model_fingerprint": weights_fingerprint(model),
        "revision": getattr(model.config, "_commit_hash", None),
        "dtype": str(model.dtype).removeprefix("torch."),
        # The processor's: the source that made the maps the model received (the model refuses any other).
        "saliency_source": image_processor.saliency_source,
        "processor_fingerprint": settings_fingerprint([
            image_processor.to_dict(), getattr(processor, "chat_template", None),
            getattr(processor, "system_prompt", None),
        ]),
        "prompt": prompt,
        "generation": {**generation, **(generation_config or {})},
        "max_tiles": max_patches or image_processor.max_patches,
    }


def check_run(output_dir, settings: dict) -> None:
    """Raise `StaleRunError` if `output_dir` holds captions made with settings other than `settings`.

    Only the keys present in both records are compared, so the cheap settings can be checked before the model is
    loaded and the model's own ones after.
    """
    output_dir = Path(output_dir)
    if not (output_dir / PREDICTIONS_FILE).is_file():
        return
    run_file = output_dir / RUN_FILE
    if not run_file.is_file():
        raise StaleRunError(
            f"{output_dir / PREDICTIONS_FILE} has no {RUN_FILE} saying which model and settings produced it, so it "
            "cannot be resumed; pass --overwrite (overwrite=True) to start afresh, or choose another output folder"
        )
    recorded = json.loads(run_file.read_text(encoding="utf-8"))
    differing = [
        key for key in settings
        if key in recorded and key not in INFORMATIONAL_SETTINGS and recorded[key] != settings[key]
    ]
    if differing:
        details = "; ".join(f"{key}: {recorded[key]!r} there, {settings[key]!r} now" for key in differing)
        model = f" (model {recorded.get('model')!r})" if "model_fingerprint" in differing else ""
        raise StaleRunError(
            f"{output_dir} holds captions of another run{model}: {details}. Pass --overwrite (overwrite=True) to "
            "replace them, or choose another output folder"
        )


def clear_run(output_dir) -> None:
    """Remove what a previous run wrote into `output_dir` (and nothing else)."""
    for path in [*(Path(output_dir) / name for name in RUN_OUTPUTS), *part_files(Path(output_dir) / PREDICTIONS_FILE)]:
        path.unlink(missing_ok=True)


def caption_split(
    model,
    processor,
    dataset,
    output_dir,
    prompt: str | None = None,
    batch_size: int = 8,
    generation_config: dict | None = None,
    max_patches: int | None = None,
    progress: bool = True,
    run_info: dict | None = None,
    overwrite: bool = False,
    shards: Shards | None = None,
) -> Path:
    """Caption every example of `dataset` (columns `image_id`, `image`) into `output_dir/predictions.jsonl`.

    Resumes the captions already in the folder when `run.json` shows the same model and settings (`run_info`
    adds the caller's: dataset, split, limit); otherwise raises `StaleRunError`. `overwrite` starts afresh.
    `shards` (default: this launch's processes) share the batches; every process returns once the main one has
    merged their parts.
    """
    question = prompt or critique_prompt()
    settings = {**model_run_settings(model, processor, question, generation_config, max_patches), **(run_info or {})}
    images_kwargs = {"max_patches": max_patches} if max_patches else {}

    def caption(pending: list[int]) -> list[str]:
        images = [dataset[i]["image"].convert("RGB") for i in pending]
        answers = batch_chat(model, processor, images, [question] * len(pending), generation_config, images_kwargs)
        return [answer.strip() for answer in answers]

    ids = [str(image_id) for image_id in dataset["image_id"]]
    return predict_split(ids, output_dir, settings, caption, batch_size, progress=progress, overwrite=overwrite,
                         shards=shards)


def predict_split(ids: list[str], output_dir, settings: dict, predict, batch_size: int = 8, value_key: str = "caption",
                  progress: bool = True, overwrite: bool = False, shards: Shards | None = None,
                  desc: str = "captioning") -> Path:
    """Append `{"image_id": id, value_key: value}` for every id to `output_dir/predictions.jsonl`, one batch at a
    time, resumably and shared among `shards`: what `caption_split` and the score evaluation (`scores.py`) run.

    Args:
        ids: the split's image ids, in order (batches are cut every `batch_size` of them, as in one uninterrupted run).
        settings: what decides the values, recorded in `run.json`; a folder holding values of other settings raises
            `StaleRunError` (`overwrite` starts afresh).
        predict: the values of the images at some indices of `ids`, in that order.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = output_dir / PREDICTIONS_FILE
    shards = shards or current_shards()
    duplicates = [image_id for image_id, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise ValueError(f"dataset has repeated image_id(s): {sorted(duplicates)[:5]}")

    def prepare_folder() -> None:
        if overwrite:
            clear_run(output_dir)
        check_run(output_dir, settings)
        if not predictions_path.is_file() and not part_files(predictions_path):
            (output_dir / RUN_FILE).write_text(json.dumps(settings, indent=1, default=str) + "\n", encoding="utf-8")
        merge_parts(predictions_path, ids, value_key)  # the parts a killed multi-process run left

    shards.main_first(prepare_folder)
    finished = read_finished(predictions_path, value_key)
    batches = [range(start, min(start + batch_size, len(ids))) for start in range(0, len(ids), batch_size)]
    mine = shards.mine([batch for batch in batches if any(ids[i] not in finished for i in batch)])
    target = predictions_path if shards.world_size == 1 else part_path(predictions_path, shards.rank)
    remaining = sum(len(batch) for batch in mine)
    if shards.world_size == 1:
        total, done = len(ids), len(ids) - remaining
    else:  # the main process shows its own share
        total, done, desc = remaining, 0, f"{desc} (process 1 of {shards.world_size})"
    bar = tqdm(total=total, initial=done, desc=desc, unit="image", disable=not progress or not shards.is_main)
    for batch in mine:
        pending = [i for i in batch if ids[i] not in finished]
        values = predict(pending)
        append_predictions(target, [{"image_id": ids[i], value_key: value} for i, value in zip(pending, values)])
        bar.update(len(batch))
    bar.close()
    shards.main_first(lambda: merge_parts(predictions_path, ids, value_key))
    return predictions_path


def write_references(dataset, output_dir) -> Path:
    """`image_id → references` of the split (a Dataset, or that mapping itself), next to the predictions: what the
    metrics are computed against."""
    path = Path(output_dir) / REFERENCES_FILE
    references = dataset if isinstance(dataset, dict) else {
        str(row["image_id"]): list(row["references"]) for row in dataset.select_columns(["image_id", "references"])
    }
    path.write_text(json.dumps(references, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def dataset_protocol(dataset: str, protocol: str | None = None):
    """The `data.protocols.Protocol` that `dataset` (a reader name, or a folder prepare-data wrote) was read under, or
    None for a folder that does not record one."""
    from ..data.prepared import prepared_info
    from ..data.protocols import Protocol, get_protocol

    if Path(dataset).is_dir():
        recorded = (prepared_info(dataset) or {}).get("protocol")
        try:
            return Protocol(**recorded) if isinstance(recorded, dict) else None
        except TypeError:  # a record edited by hand: treated as none
            return None
    from ..data.registry import canonical_dataset_name

    return get_protocol(canonical_dataset_name(dataset), protocol)


def default_split(dataset: str, protocol: str | None = None) -> str:
    """The split `evaluate` scores when none is named: the protocol's evaluation split (`test` when unknown)."""
    found = dataset_protocol(dataset, protocol)
    return found.eval_split if found is not None else "test"


def protocol_record(dataset: str, split: str, protocol: str | None = None, scored: int | None = None,
                    total: int | None = None) -> dict:
    """What `metrics.json` says about the protocol a number follows: `protocol` (the `Protocol` as a dict, or None when
    the split is not its evaluation split, only `scored` of its `total` images were scored, or the folder records
    none) and `protocol_note` (a sentence)."""
    found = dataset_protocol(dataset, protocol)
    if scored is not None and total is not None and scored < total:
        return {"protocol": None, "protocol_note": f"only the first {scored} of the {total} images of split {split!r} "
                "were scored (--limit): this number follows no published protocol"}
    if found is None:
        return {"protocol": None, "protocol_note": f"{dataset} does not record its protocol (a folder that "
                "`ase-mllm prepare-data` did not write); compare its numbers with care"}
    if found.eval_split != split:
        return {"protocol": None, "protocol_note": f"split {split!r} is not the evaluation split of {found.dataset} "
                f"protocol {found.name!r} ({found.eval_split!r}): this number follows no published protocol"}
    return {"protocol": found.to_dict(), "protocol_note": found.describe()}


def evaluate_model(
    model_path: str,
    dataset: str,
    split: str = "test",
    output_dir: str = "outputs/evaluate",
    root: str | None = None,
    batch_size: int = 8,
    generation_config: dict | None = None,
    prompt: str | None = None,
    max_patches: int | None = None,
    limit: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    quantization: str | None = None,
    protocol: str | None = None,
    control: str | None = None,
    control_seed: int = 0,
    **metric_options,
) -> dict:
    """Caption `dataset[split]` with the model (resuming if interrupted), then score it; returns the metrics.

    Exactly the first `limit` rows are scored, also when the folder holds captions of more rows. `metrics.json` names
    the dataset and split it scored and the protocol the number follows (`protocol_record`; `protocol`: a dataset
    name's protocol, its default if None); `control="shuffled"` adds the grounding control (`control.py`).
    Under `accelerate launch` the processes share the captioning and the main one scores; the
    others return None. `quantization` loads the language model quantised (`utils.quantization`), and the run
    records it: a resumed run must use the same.
    """
    from .metrics import score_with_control, write_metrics

    question = prompt or critique_prompt()
    run_info = {
        "dataset": str(Path(dataset).resolve()) if Path(dataset).is_dir() else dataset,
        "data_root": str(Path(root).resolve()) if root is not None else None,
        "split": split,
        "limit": limit,
        "quantization": quantization,
    }
    found = dataset_protocol(dataset, protocol)
    run_info["protocol"] = found.name if found is not None else None
    if not overwrite:  # fail before the model loads when the cheap settings already differ
        check_run(output_dir, {**run_info, "prompt": question, **({"max_tiles": max_patches} if max_patches else {})})
    from ..data.prepared import load_split

    data = load_split(dataset, split, root, protocol)
    total = len(data)
    if limit is not None:
        data = data.select(range(min(limit, total)))
    shards = current_shards()
    model, processor = load_model_and_processor(model_path, device=device or shards.device, quantization=quantization)
    if quantization is not None and shards.is_main:
        print(f"[evaluate] {describe_precision(model, quantization)}", file=sys.stderr, flush=True)
    predictions_path = caption_split(
        model, processor, data, output_dir, question, batch_size, generation_config, max_patches,
        run_info=run_info, overwrite=overwrite, shards=shards,
    )
    if not shards.is_main:
        return None
    references = {str(row["image_id"]): list(row["references"]) for row in data.select_columns(["image_id", "references"])}
    write_references(references, output_dir)
    predictions = {k: v for k, v in read_predictions(predictions_path).items() if k in references}
    metrics = score_with_control(predictions, references, control, control_seed, output_dir, **metric_options)
    metrics.update(dataset=dataset_label(dataset), split=split,
                   **protocol_record(dataset, split, protocol, len(data), total))
    write_metrics(metrics, output_dir)
    return metrics


def dataset_label(dataset: str) -> str:
    """How results name a dataset: its reader's name (`pccd`), or a saved dataset's folder name."""
    from ..data.registry import canonical_dataset_name

    return Path(dataset).name if Path(dataset).is_dir() else canonical_dataset_name(dataset)
