"""`ase-mllm saliency-report`: is the saliency faithful? Every LayerCAM layer and control, scored side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from .arguments import (
    DATASET_HELP, check_dataset, check_device, check_existing, check_model, check_output_folder, positive_float,
    positive_int,
)


DEFAULT_OUTPUT_DIR = "outputs/saliency-report"


def percentile_list(text: str) -> list[int]:
    """`10,30,50,70,90`: whole numbers in 1..99, at least one."""
    import argparse

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(1 <= value <= 99 for value in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers in 1..99, got {text!r}")
    return values


def add_parser(subparsers):
    command = subparsers.add_parser(
        "saliency-report", help="score the saliency's faithfulness: every LayerCAM layer and control, side by side",
        description="For a model's EAT (only EAT is loaded) or an EAT checkpoint, and a set of photos, score LayerCAM "
                    "at each candidate layer and the controls (random map, centre Gaussian, spectral residual): "
                    "deletion and insertion AUC of EAT's mean rating, ROAD most- and least-relevant first, and a "
                    "cascading model-randomisation check. Writes report.md (table: mean and 95%% bootstrap "
                    "interval), report.json (every number), deletion/insertion/randomisation plots; a killed run "
                    "resumes where it stopped. See docs/saliency.md.")
    command.add_argument("images", nargs="*", metavar="IMAGE",
                         help="image files, or folders (their image files, sorted by name)")
    eat = command.add_mutually_exclusive_group(required=True)
    eat.add_argument("--model", help="an ASE-MLLM folder or Hub id: its EAT, LayerCAM layer and target")
    eat.add_argument("--eat", metavar="CHECKPOINT",
                     help="an EAT checkpoint instead: the released .pth or a safetensors file (see convert-eat)")
    command.add_argument("--eat-config", metavar="JSON",
                         help="with --eat: the EAT architecture as AseMllmEatConfig fields (default: the released "
                              "DAT-Base at 224 px)")
    command.add_argument("--dataset", help=f"photos of a dataset split instead: {DATASET_HELP}, or a save_to_disk folder")
    command.add_argument("--data-root", "--root", help="the dataset's folder, for a dataset name")
    command.add_argument("--split", default="test", help="the split, with --dataset (default: %(default)s)")
    command.add_argument("--limit", type=positive_int, metavar="N", help="only the first N photos")
    command.add_argument("--layers", default="candidates",
                         help="LayerCAM layers: 'candidates' (each stage's last block: output, first and second norm, "
                              "attention and MLP outputs), 'model' (the model's own), or comma-separated module paths "
                              "in EAT (default: %(default)s)")
    command.add_argument("--target", choices=["top_bin", "mean_score"],
                         help="what LayerCAM differentiates (default: the model's layercam_target)")
    command.add_argument("--steps", type=positive_int, default=16,
                         help="deletion/insertion steps (default: %(default)s)")
    command.add_argument("--road-percentiles", type=percentile_list, default=[10, 30, 50, 70, 90], metavar="P,P,...",
                         help="ROAD: the percentiles of pixels kept (default: 10,30,50,70,90)")
    command.add_argument("--no-road", action="store_true", help="leave ROAD out (its imputation is the slowest part)")
    command.add_argument("--no-randomisation", action="store_true", help="leave the model-randomisation check out")
    command.add_argument("--bootstrap", type=positive_int, default=1000, metavar="N",
                         help="bootstrap resamples of the 95%% intervals (default: %(default)s)")
    command.add_argument("--seed", type=int, default=0, help="seed of the random map, tie-breaks, ROAD noise, "
                                                             "randomised weights and bootstrap (default: %(default)s)")
    command.add_argument("--output-dir", "--out", default=DEFAULT_OUTPUT_DIR,
                         help="where results.jsonl, report.md, report.json and the plots go (default: %(default)s)")
    command.add_argument("--overwrite", action="store_true",
                         help="start afresh (by default a run resumes the results there, and stops if they came "
                              "from another EAT or other settings)")
    command.add_argument("--device", help="a torch device: cpu, cuda ... (default: cpu, where maps are bit-identical "
                                          "across runs; EAT's grid_sample backward is not deterministic on CUDA)")
    command.add_argument("--max-megapixels", type=positive_float, metavar="MP",
                         help="refuse a photo with more megapixels than this (default: Pillow's bomb threshold)")
    command.add_argument("--max-file-mb", type=positive_float, metavar="MB",
                         help="refuse a photo file larger than this (default: as `caption`)")
    command.set_defaults(handler=main, kept=kept)
    return command


def kept(args) -> str:
    results = Path(args.output_dir) / "results.jsonl"
    finished = results.read_bytes().count(b"\n") if results.is_file() else 0
    return f"{results} keeps {finished} finished photo(s); the same command resumes from there"


def check_arguments(args) -> None:
    parser = args.parser
    if args.model:
        check_model(parser, args.model)
        if args.eat_config:
            parser.error("argument --eat-config: only with --eat (a model folder carries its own EAT config)")
    else:
        check_existing(parser, "--eat", args.eat)
        check_existing(parser, "--eat-config", args.eat_config)
    if bool(args.images) == bool(args.dataset):
        parser.error("give the photos as IMAGE arguments (files or folders) or as --dataset, not both or neither")
    for image in args.images:
        if not Path(image).expanduser().exists():
            parser.error(f"argument IMAGE: no file or folder {image!r}")
    check_dataset(parser, "--dataset", args.dataset)
    check_existing(parser, "--data-root", args.data_root, "folder")
    check_device(parser, args.device)
    check_output_folder(parser, "--output-dir", args.output_dir)


def photo_inputs(args) -> list[tuple[str, object]]:
    """`(name, path or image)` of the photos: files as given, folders' image files sorted, or a split's rows."""
    from ..data.records import IMAGE_EXTENSIONS

    if args.dataset:
        from ..evaluation.run import load_split

        split = load_split(args.dataset, args.split, args.data_root)
        if args.limit is not None:
            split = split.select(range(min(args.limit, len(split))))
        if "image" not in split.column_names:
            raise ValueError(f"--dataset {args.dataset!r} split {args.split!r} has no 'image' column")
        ids = split["image_id"] if "image_id" in split.column_names else [f"row {i}" for i in range(len(split))]
        return [(str(image_id), LazyRow(split, index)) for index, image_id in enumerate(ids)]
    photos = []
    for item in args.images:
        path = Path(item).expanduser()
        if path.is_dir():
            photos += [(str(file), file) for file in sorted(path.rglob("*"))
                       if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            photos.append((str(item), path))
    return photos[: args.limit] if args.limit is not None else photos


class LazyRow:
    """A dataset row's image, decoded only when the photo's turn comes (memory stays at one photo)."""

    def __init__(self, split, index: int):
        self.split, self.index = split, index

    def image(self):
        return self.split[self.index]["image"]


def layer_sources(args, loaded) -> list[str]:
    from ..faithfulness.sources import CONTROL_SOURCES, candidate_layers, layercam_source

    if args.layers == "candidates":
        layers = list(candidate_layers(loaded.eat.config))
    elif args.layers == "model":
        layers = [loaded.layer]
    else:
        layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if loaded.layer not in layers:
        layers.append(loaded.layer)
    return list(CONTROL_SOURCES) + [layercam_source(layer) for layer in layers]


def main(args) -> int:
    """Score every source on the photos, resumably; write the report and print where it is."""
    check_arguments(args)
    from ..faithfulness.loading import load_checkpoint_eat, load_model_eat
    from ..faithfulness.report import markdown_table, run_report
    from ..inference.photos import DEFAULT_MAX_FILE_MB, PhotoLimits, read_photo

    photos = photo_inputs(args)
    if not photos:
        raise ValueError("no image files found in " + ", ".join(args.images))
    device = args.device or "cpu"
    if args.model:
        loaded = load_model_eat(args.model, device)
    else:
        loaded = load_checkpoint_eat(args.eat, args.eat_config, device)
    if args.target:
        loaded.target = args.target
    sources = layer_sources(args, loaded)
    limits = PhotoLimits(max_megapixels=args.max_megapixels, max_file_mb=args.max_file_mb or DEFAULT_MAX_FILE_MB)
    failed = []

    def read(source):
        return read_photo(source.image() if isinstance(source, LazyRow) else source, limits)

    def report_error(name, message):
        failed.append(name)
        print(f"{name}: ERROR {message}", file=sys.stderr)

    summary = run_report(loaded, photos, args.output_dir, sources, steps=args.steps,
                         road_percentiles=[] if args.no_road else args.road_percentiles,
                         randomisation=not args.no_randomisation, seed=args.seed, bootstrap=args.bootstrap,
                         overwrite=args.overwrite, read=read, on_error=report_error)
    print(markdown_table(summary))
    print(f"[saliency-report] {summary['photos']} photo(s); wrote {Path(args.output_dir) / 'report.md'}, report.json "
          "and the plots")
    if failed:
        print(f"{len(failed)} of {len(photos)} photo(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
