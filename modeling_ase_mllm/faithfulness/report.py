"""The saliency report: every source scored on every photo, resumable, then summarised as Markdown, JSON and plots.

Each photo's numbers go to `results.jsonl` as one whole line, flushed to disk, as soon as the photo is done, so a
killed run resumes where it stopped (a torn last line is cut off) and ends with the numbers of an uninterrupted
run, bit for bit: every number of a photo depends only on EAT, the settings and that photo (its own seed; EAT fed
one image at a time). `run.json` records the settings; a folder holding results of other settings is refused
unless `overwrite`. The summary (`report.md`, `report.json`, `deletion.png`, `insertion.png`,
`randomisation.png`) is written each under a temporary name, then renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..evaluation.predictions import complete_lines
from ..evaluation.run import StaleRunError
from ..utils.files import write_atomically
from .metrics import (
    RANDOMISATION_CASCADE, CascadingRandomisation, area_under_curve, blur_substrate, eat_score, mean_and_interval,
    perturbation_curves, pointing_hit, rank_correlation, relevance_order, road_changes, structural_similarity,
    upsample_map,
)
from .sources import CONTROL_SOURCES, LAYERCAM_PREFIX, Photo, check_sources, source_map


RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILES = ("report.md", "report.json", "deletion.png", "insertion.png", "randomisation.png")
DEFAULT_ROAD_PERCENTILES = (10, 30, 50, 70, 90)
# The table's columns: key in a photo's record, heading, which way is better.
METRIC_COLUMNS = (
    ("deletion_auc", "deletion AUC", "lower"),
    ("insertion_auc", "insertion AUC", "higher"),
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("randomised_spearman", "Spearman, randomised", "lower"),
    ("randomised_ssim", "SSIM, randomised", "lower"),
    ("pointing", "pointing game", "higher"),
)


def report_settings(loaded, sources: list[str], photo_names: list[str], steps: int, road_percentiles,
                    randomisation: bool, seed: int) -> dict:
    """What decides the numbers; a run resumes only from results made with the same."""
    from ..data.fingerprint import settings_fingerprint, weights_fingerprint

    return {
        "eat": loaded.description,  # informational: the same weights may move
        "eat_fingerprint": weights_fingerprint(loaded.eat),
        "image_size": loaded.eat.config.image_size,
        "layercam_target": loaded.target,
        "model_layer": loaded.layer,
        "sources": list(sources),
        "steps": steps,
        "road_percentiles": list(road_percentiles),
        "randomisation": randomisation,
        "seed": seed,
        "photos": settings_fingerprint(photo_names),
        "image_processor": settings_fingerprint(loaded.image_processor.to_dict()),
    }


def check_or_start_run(output_dir: Path, settings: dict, overwrite: bool) -> None:
    """Start `output_dir` afresh (`overwrite`, or nothing there), or check that its results are of `settings`."""
    results, run_file = output_dir / RESULTS_FILE, output_dir / RUN_FILE
    if overwrite:
        for name in (RESULTS_FILE, RUN_FILE, *SUMMARY_FILES):
            (output_dir / name).unlink(missing_ok=True)
    if results.is_file() and run_file.is_file():
        recorded = json.loads(run_file.read_text(encoding="utf-8"))
        differing = [key for key in settings if key != "eat" and recorded.get(key) != settings[key]]
        if differing:
            details = "; ".join(f"{key}: {recorded.get(key)!r} there, {settings[key]!r} now" for key in differing)
            raise StaleRunError(f"{output_dir} holds a saliency report of other settings ({details}); pass "
                                "--overwrite (overwrite=True) to replace it, or choose another output folder")
        return
    if results.is_file():
        raise StaleRunError(f"{results} has no {RUN_FILE} saying what produced it; pass --overwrite to start afresh")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_file, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def append_record(path: Path, record: dict) -> None:
    """One photo's numbers as one whole line, on disk before the next photo starts."""
    with open(path, "ab") as handle:
        handle.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: Path) -> dict[str, dict]:
    """`photo name -> record` of the finished photos (a torn last line is cut off the file)."""
    records = {}
    for number, line in enumerate(complete_lines(path), start=1):
        record = json.loads(line)
        if "photo" not in record:
            raise ValueError(f"{path}:{number}: a record without 'photo'")
        records[record["photo"]] = record
    return records


def score_map(eat, photo: Photo, saliency: torch.Tensor, context: dict) -> dict:
    """Deletion/insertion curves and AUCs, ROAD changes and the pointing game of one `(h, w)` map of `photo`."""
    side = photo.pixels.shape[-1]
    pixel_map = upsample_map(saliency.cpu(), side).numpy()
    order = relevance_order(pixel_map, context["tiebreak"])
    deletion, insertion = perturbation_curves(eat, context["pixels"], context["substrate"], order, context["steps"],
                                              context["score"], context["blurred_score"])
    numbers = {"deletion": deletion, "insertion": insertion, "deletion_auc": area_under_curve(deletion),
               "insertion_auc": area_under_curve(insertion)}
    if context["road_percentiles"]:
        changes = road_changes(eat, context["pixels"], pixel_map, context["road_percentiles"], photo.seed,
                               context["score"])
        numbers.update(road_morf_changes=changes["morf"], road_lerf_changes=changes["lerf"],
                       road_morf=float(np.mean(changes["morf"])), road_lerf=float(np.mean(changes["lerf"])))
    if photo.region is not None:
        numbers["pointing"] = float(pointing_hit(pixel_map, photo.region))
    return numbers


def photo_context(eat, photo: Photo, steps: int, road_percentiles) -> dict:
    """What every map of `photo` shares: its input, the blurred substrate, their ratings and the tie-break order."""
    device = next(eat.parameters()).device
    pixels = photo.pixels.to(device)
    substrate = blur_substrate(pixels)
    side = pixels.shape[-1]
    return {
        "pixels": pixels, "substrate": substrate, "steps": steps, "road_percentiles": list(road_percentiles),
        "score": eat_score(eat, pixels), "blurred_score": eat_score(eat, substrate),
        "tiebreak": np.random.default_rng(photo.seed).permutation(side * side),
    }


def score_photo(eat, photo: Photo, sources: list[str], target: str, image_processor, steps: int = 16,
                road_percentiles=DEFAULT_ROAD_PERCENTILES, randomiser: CascadingRandomisation | None = None) -> dict:
    """Every number of one photo: per source, `score_map`'s, and with `randomiser` the maps' Spearman and SSIM
    against the original at each step of the cascade."""
    context = photo_context(eat, photo, steps, road_percentiles)
    maps = {source: source_map(source, eat, photo, target, image_processor) for source in sources}
    record = {"photo": photo.name, "score": context["score"], "blurred_score": context["blurred_score"],
              "sources": {source: score_map(eat, photo, maps[source], context) for source in sources}}
    if randomiser is not None:
        originals = {source: maps[source].cpu().numpy() for source in sources}
        for _, model in randomiser.steps():
            for source in sources:
                changed = source_map(source, model, photo, target, image_processor).cpu().numpy()
                numbers = record["sources"][source]
                numbers.setdefault("spearman", []).append(rank_correlation(originals[source], changed))
                numbers.setdefault("ssim", []).append(structural_similarity(originals[source], changed))
        for numbers in record["sources"].values():
            numbers["randomised_spearman"], numbers["randomised_ssim"] = numbers["spearman"][-1], numbers["ssim"][-1]
    return record


def eat_input(image, image_processor, side: int) -> torch.Tensor:
    """EAT's `(3, side, side)` input of a decoded photo, as the model's processor makes it."""
    batch = image_processor([image], saliency_source="eat_layercam", max_patches=1, saliency_image_size=side,
                            return_tensors="pt")
    return batch["saliency_pixel_values"][0]


def run_report(loaded, photos: list[tuple[str, object]], output_dir, sources: list[str], steps: int = 16,
               road_percentiles=DEFAULT_ROAD_PERCENTILES, randomisation: bool = True, seed: int = 0,
               bootstrap: int = 1000, regions: dict | None = None, overwrite: bool = False, read=None,
               progress: bool = True, on_error=None) -> dict:
    """Score `sources` on `photos` (`(name, image or path)`, in order) with `loaded` (a `loading.LoadedEat`),
    resuming `output_dir`; write the summary and return it (`report.json`'s content).

    `regions`: `name -> (top, left, height, width)` in EAT input pixels, for the pointing game. `read`: decodes an
    input to RGB (default `inference.captioning.read_photo`); a photo it refuses is reported through `on_error(name,
    message)`, recorded, and left out of the summary.
    """
    from tqdm.auto import tqdm

    from ..inference.photos import PER_FILE_ERRORS, read_photo
    from .sources import photo_seed

    names = [name for name, _ in photos]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"photos must have distinct names; given twice: {', '.join(twice[:5])}")
    if not photos:
        raise ValueError("no photos to score")
    check_sources(sources, loaded.eat)
    output_dir = Path(output_dir)
    settings = report_settings(loaded, sources, names, steps, road_percentiles, randomisation, seed)
    check_or_start_run(output_dir, settings, overwrite)
    results = output_dir / RESULTS_FILE
    done = read_records(results)
    read = read or read_photo
    randomiser = CascadingRandomisation(loaded.eat, seed) if randomisation else None
    side = loaded.eat.config.image_size
    bar = tqdm(total=len(photos), initial=sum(name in done for name in names), unit="photo",
               desc="saliency report", disable=not progress)
    for name, source in photos:
        if name in done:
            continue
        try:
            image = read(source)
            photo = Photo(name, image, eat_input(image, loaded.image_processor, side), photo_seed(seed, name),
                          (regions or {}).get(name))
        except PER_FILE_ERRORS as error:
            # Not recorded: the next run tries the photo again.
            done[name] = {"photo": name, "error": str(error)}
            if on_error is not None:
                on_error(name, str(error))
        else:
            done[name] = score_photo(loaded.eat, photo, sources, loaded.target, loaded.image_processor, steps,
                                     road_percentiles, randomiser)
            append_record(results, done[name])
        bar.update(1)
    bar.close()
    summary = summarise([done[name] for name in names], settings, seed, bootstrap)
    write_summary(summary, output_dir)
    return summary


def summarise(records: list[dict], settings: dict, seed: int = 0, bootstrap: int = 1000) -> dict:
    """Per source and metric, the mean and 95 % bootstrap interval over the photos; the mean curves."""
    scored = [record for record in records if "sources" in record]
    summary = {"settings": settings, "photos": len(scored), "failed": [r["photo"] for r in records if "error" in r],
               "cascade": [name for name, _ in RANDOMISATION_CASCADE], "sources": {}}
    for source in settings["sources"]:
        per_photo = [record["sources"][source] for record in scored]
        metrics = {}
        for key, _, _ in METRIC_COLUMNS:
            values = [numbers[key] for numbers in per_photo if numbers.get(key) is not None]
            metrics[key] = mean_and_interval(values, seed, bootstrap) if values else None
        curves = {}
        for key in ("deletion", "insertion", "spearman", "ssim"):
            rows = [numbers[key] for numbers in per_photo if key in numbers]
            if rows and all(value is not None for row in rows for value in row):
                curves[key] = np.mean(np.asarray(rows, dtype=np.float64), axis=0).tolist()
        summary["sources"][source] = {"metrics": metrics, "curves": curves}
    summary["per_photo"] = records
    return summary


def source_label(source: str, model_layer: str | None) -> str:
    if source.startswith(LAYERCAM_PREFIX):
        layer = source.removeprefix(LAYERCAM_PREFIX)
        return f"LayerCAM `{layer}`" + (" (the model's)" if layer == model_layer else "")
    return {"random": "random map", "centre_gaussian": "centre Gaussian", "spectral_residual": "spectral residual"}[source]


def format_cell(interval: dict | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval['mean']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def markdown_table(summary: dict) -> str:
    """The table: one row per source, one column per metric present, `mean [95 % interval]`."""
    sources = summary["sources"]
    columns = [(key, heading, better) for key, heading, better in METRIC_COLUMNS
               if any(entry["metrics"].get(key) for entry in sources.values())]
    model_layer = summary["settings"].get("model_layer")
    lines = ["| source | " + " | ".join(f"{heading} ({'↓' if better == 'lower' else '↑'})"
                                       for _, heading, better in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for source, entry in sources.items():
        cells = [format_cell(entry["metrics"].get(key)) for key, _, _ in columns]
        lines.append(f"| {source_label(source, model_layer)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(summary: dict) -> str:
    settings = summary["settings"]
    failed = summary["failed"]
    return "\n".join([
        "# Saliency report",
        "",
        f"{settings['eat']}; LayerCAM differentiates `{settings['layercam_target']}`, the metrics score EAT's mean "
        f"rating Σ i·y_i; {summary['photos']} photo(s) scored" + (f", {len(failed)} failed ({', '.join(failed[:5])})"
                                                                 if failed else "") + ".",
        "",
        f"Each cell: the mean over the photos and its 95 % bootstrap interval. Deletion/insertion: {settings['steps']} "
        "steps on a blurred substrate; ROAD: pytorch-grad-cam's noisy linear imputation, mean rating change over "
        f"percentiles {settings['road_percentiles']}; randomised: after re-initialising EAT's "
        f"{' → '.join(summary['cascade'])} (the cascade's last step). What each metric means: docs/saliency.md.",
        "",
        markdown_table(summary),
        "",
        "![deletion curves](deletion.png) ![insertion curves](insertion.png) "
        "![randomisation](randomisation.png)",
        "",
    ])


def write_summary(summary: dict, output_dir: Path) -> None:
    """`report.json`, `report.md` and the three plots, each complete or absent."""
    write_atomically(output_dir / "report.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    write_atomically(output_dir / "report.md", markdown_report(summary))
    for name, key, ylabel, xlabel in (
        ("deletion.png", "deletion", "EAT mean rating", "fraction of pixels deleted (most relevant first)"),
        ("insertion.png", "insertion", "EAT mean rating", "fraction of pixels inserted (most relevant first)"),
        ("randomisation.png", "spearman", "Spearman ρ with the original map", "randomised, from the top down"),
    ):
        write_atomically(output_dir / name, plot_curves(summary, key, ylabel, xlabel))


def plot_curves(summary: dict, key: str, ylabel: str, xlabel: str) -> bytes:
    """A PNG of every source's mean `key` curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    sources = [(source, entry["curves"][key]) for source, entry in summary["sources"].items() if key in entry["curves"]]
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(sources))))
    model_layer = summary["settings"].get("model_layer")
    for (source, curve), colour in zip(sources, colours):
        control = source in CONTROL_SOURCES
        if key == "spearman":
            xs = range(len(curve))
            axes.set_xticks(list(xs), summary["cascade"], fontsize=8)
        else:
            xs = np.linspace(0, 1, len(curve))
        axes.plot(xs, curve, color="0.4" if control else colour, linestyle="--" if control else "-",
                  linewidth=2.5 if source == LAYERCAM_PREFIX + str(model_layer) else 1.2,
                  label=source_label(source, model_layer).replace("`", ""))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


__all__ = ["run_report", "score_photo", "score_map", "photo_context", "summarise", "markdown_table", "RESULTS_FILE",
           "RUN_FILE", "DEFAULT_ROAD_PERCENTILES", "METRIC_COLUMNS"]
