"""`ase-mllm evaluate-score`: EAT's aesthetic score against human ratings (AVA, or a folder with a CSV of scores)."""

from pathlib import Path

from ..evaluation.predictions import METRICS_FILE, METRICS_TABLE_FILE, PREDICTIONS_FILE
from ..inference.photos import DEFAULT_MAX_FILE_MB
from .arguments import (
    check_device, check_existing, check_model, check_output_folder, photo_limits, positive_float, positive_int,
)


def add_parser(subparsers):
    command = subparsers.add_parser(
        "evaluate-score", help="evaluate the aesthetic score against human ratings (AVA: SRCC, PLCC, accuracy, EMD)",
        description="Score every photo of AVA's split (AVA.txt and EAT's split list) or of a folder rated by a CSV "
                    "with the model's EAT alone, into OUTPUT_DIR/predictions.jsonl (a batch at a time; a killed run "
                    "resumes where it stopped; under accelerate launch the processes share the batches), then report "
                    "SRCC and PLCC (scipy), binary accuracy at 5.0 and, on AVA, the EMD (r=2) to the vote "
                    "distributions.")
    command.add_argument("--model", required=True, help="model folder (with config.json) or Hub id (owner/name)")
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--ava", metavar="ROOT", help="AVA's folder: AVA.txt, images/<id>.jpg and EAT's split lists")
    source.add_argument("--images", metavar="FOLDER", help="a folder of photos, rated by --scores")
    command.add_argument("--scores", metavar="CSV", help="with --images: a CSV with columns image (file name) and score")
    command.add_argument("--split", default="test", help="with --ava: the split list to read, SPLIT.csv (default: "
                                                          "%(default)s)")
    command.add_argument("--split-dir", help="with --ava: the folder of EAT's split lists (default: ROOT)")
    command.add_argument("--images-dir", help="with --ava: the folder of AVA's photos (default: ROOT/images)")
    command.add_argument("--output-dir", default="outputs/evaluate-score",
                         help="predictions, run.json and metrics go here (default: %(default)s)")
    command.add_argument("--batch-size", type=positive_int, default=16, help="photos per batch (default: %(default)s)")
    command.add_argument("--limit", type=positive_int, metavar="N", help="only the first N photos")
    command.add_argument("--overwrite", action="store_true",
                         help="replace the scores already in --output-dir (by default a run resumes them, and stops "
                              "if they came from another model or other settings)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1 ... (default: cpu, or accelerate's)")
    command.add_argument("--update-model-card", action="store_true",
                         help="also write the results into the model folder's README.md (its model-index)")
    command.add_argument("--max-megapixels", type=positive_float, metavar="MP",
                         help="refuse a photo with more megapixels than this (default: Pillow's threshold)")
    command.add_argument("--max-file-mb", type=positive_float, metavar="MB", default=DEFAULT_MAX_FILE_MB,
                         help="refuse a photo file larger than this (default: %(default)g)")
    command.set_defaults(handler=main, kept=kept)
    return command


def kept(args) -> str:
    predictions = Path(args.output_dir) / PREDICTIONS_FILE
    finished = predictions.read_bytes().count(b"\n") if predictions.is_file() else 0
    return f"{predictions} keeps {finished} finished score(s); the same command resumes from there"


def main(args) -> int:
    """Score the rated photos with EAT and print the metrics."""
    parser = args.parser
    check_model(parser, args.model)
    if args.images and not args.scores:
        parser.error("argument --images: needs --scores (the CSV of the photos' scores)")
    if args.scores and not args.images:
        parser.error("argument --scores: goes with --images")
    check_existing(parser, "--ava", args.ava, "folder")
    check_existing(parser, "--images", args.images, "folder")
    check_existing(parser, "--scores", args.scores)
    check_existing(parser, "--split-dir", args.split_dir, "folder")
    check_device(parser, args.device)
    if args.update_model_card and not Path(args.model).expanduser().is_dir():
        parser.error(f"argument --update-model-card: --model {args.model!r} is not a local folder")
    check_output_folder(parser, "--output-dir", args.output_dir)
    from ..evaluation.scores import evaluate_scores, format_score_table, load_ava, load_scored_folder

    if args.ava:
        rated, dataset, split = load_ava(args.ava, args.split, args.split_dir, args.images_dir), "ava", args.split
    else:
        rated, dataset, split = load_scored_folder(args.images, args.scores), Path(args.images).name, None
    rated = rated[: args.limit] if args.limit else rated
    metrics = evaluate_scores(args.model, rated, args.output_dir, dataset, split, args.batch_size, args.device,
                              args.overwrite, photo_limits(args))
    if metrics is None:  # another process of `accelerate launch`: the main one reports
        return 0
    print(format_score_table(metrics))
    if args.update_model_card:
        from ..hub.model_card import write_model_card

        write_model_card(args.model, score_metrics=metrics)
    print(f"[evaluate-score] wrote {Path(args.output_dir) / METRICS_FILE} and {METRICS_TABLE_FILE}"
          + (f"; the results are in {Path(args.model) / 'README.md'}" if args.update_model_card else ""))
    return 0
