"""`ase-mllm evaluate`: caption a dataset split with a model (resumable) and score it, or score a predictions file."""

from pathlib import Path

from ..evaluation.control import CONTROLS
from ..evaluation.predictions import PREDICTIONS_FILE
from ..evaluation.sharding import part_files
from .arguments import (
    DATASET_HELP, add_metric_arguments, add_quantization_option, check_aspect, check_choice, check_dataset, check_device,
    check_existing, check_max_tiles, check_model, check_output_folder, check_quantization, metric_options, non_empty,
    positive_int,
)


def add_parser(subparsers):
    command = subparsers.add_parser(
        "evaluate", help="caption a dataset split with a model and score it (Table I metrics), or score a predictions file",
        description="Caption a dataset split with the model into OUTPUT_DIR/predictions.jsonl (a batch at a time; a "
                    "killed run resumes where it stopped) and score it with the eleven AIC metrics; or, with "
                    "--predictions and --references, score an existing file.",
    )
    command.add_argument("--model", help="model folder or Hub id (omit with --predictions)")
    command.add_argument("--dataset", help=f"{DATASET_HELP}, or a save_to_disk folder")
    command.add_argument("--data-root", "--root", help="the dataset's folder, for a dataset name")
    command.add_argument("--split",
                         help="the split to caption (default: the evaluation split of the dataset's protocol: test, "
                              "or val for dpc2022's default; see --protocol)")
    command.add_argument("--protocol",
                         help="the protocol a dataset name is read and scored under (docs/datasets.md, Protocols): "
                              "dpc2022: aric (the default: ARIC's split, scored on val) or release (test.csv); every "
                              "other dataset has one. A folder from prepare-data records its own")
    command.add_argument("--predictions", help="score this predictions.jsonl instead of captioning")
    command.add_argument("--references", help="references JSON ({image_id: [refs]}) or JSONL, for --predictions")
    command.add_argument("--output-dir", default="outputs/evaluate",
                         help="predictions, references and metrics go here (default: %(default)s)")
    command.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default: %(default)s)")
    command.add_argument("--max-new-tokens", type=positive_int, default=128,
                         help="longest caption, in tokens (default: %(default)s)")
    command.add_argument("--min-new-tokens", type=positive_int,
                         help="shortest caption, in tokens (the metrics refuse a blank caption; a briefly trained "
                              "model may end at once)")
    command.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (default: %(default)s)")
    command.add_argument("--max-tiles", type=int, metavar="N",
                         help="at most N 448 px tiles per image (default: the model's own setting)")
    question = command.add_mutually_exclusive_group()
    question.add_argument("--prompt", type=non_empty, help="the question (default: the paper's prompt)")
    question.add_argument("--aspect", help="ask about one aspect, e.g. composition (as `ase-mllm caption --aspect`)")
    command.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images of the split")
    command.add_argument("--overwrite", action="store_true",
                         help="replace the captions and metrics already in --output-dir (by default a run resumes "
                              "them, and stops if they came from another model or other settings)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1 ... (default: cuda when available)")
    add_quantization_option(command)
    command.add_argument("--control", choices=CONTROLS,
                         help="also score the captions against the references of other photos (shuffled: a seeded "
                              "derangement within the split) and report the gap, which is what the captions owe to "
                              "the photos")
    command.add_argument("--control-seed", type=int, default=0, help="the derangement's seed (default: %(default)s)")
    command.add_argument("--update-model-card", action="store_true",
                         help="also write the results into the model folder's README.md (the Table I table and the "
                              "Hub's model-index metadata)")
    add_metric_arguments(command)
    command.set_defaults(handler=main, kept=kept)
    return command


def check_evaluate_arguments(args) -> None:
    """Everything `ase-mllm evaluate` can check before it loads a model (exits 2 with the usage otherwise)."""
    parser = args.parser
    if args.predictions:
        if not args.references:
            parser.error("argument --predictions: needs --references (the file to score against)")
        if args.update_model_card:
            parser.error("argument --update-model-card: needs --model and --dataset (the model the results belong to)")
        check_existing(parser, "--predictions", args.predictions)
        check_existing(parser, "--references", args.references)
    else:
        if not (args.model and args.dataset):
            parser.error("give --model and --dataset (or --predictions and --references)")
        check_model(parser, args.model)
        if args.update_model_card and not Path(args.model).expanduser().is_dir():
            parser.error(f"argument --update-model-card: --model {args.model!r} is not a local folder to write its card into")
        check_dataset(parser, "--dataset", args.dataset)
        check_existing(parser, "--data-root", args.data_root, "folder")
        check_protocol(parser, args.dataset, args.protocol)
        check_max_tiles(parser, args.max_tiles)
        check_aspect(parser, args.aspect)
        check_device(parser, args.device)
        check_quantization(parser, args.quantization)
    check_existing(parser, "--spice-corenlp-dir", args.spice_corenlp_dir, "folder")
    check_output_folder(parser, "--output-dir", args.output_dir)


def check_protocol(parser, dataset: str, protocol: str | None) -> None:
    """`--protocol` is one of the dataset name's protocols; a prepared folder records its own."""
    if protocol is None:
        return
    if Path(dataset).expanduser().is_dir():
        parser.error(f"argument --protocol: {dataset!r} is a prepared folder; it records the protocol it was prepared "
                     "under (prepare-data --protocol)")
    from ..data.protocols import protocol_names
    from ..data.registry import canonical_dataset_name

    name = canonical_dataset_name(dataset)
    check_choice(parser, "--protocol", protocol, protocol_names(name), f"{name} protocol")


def kept(args) -> str:
    """What a Ctrl-C leaves: the finished lines of predictions.jsonl (and of the parts of a multi-process run),
    from which the same command resumes."""
    predictions = Path(args.output_dir) / PREDICTIONS_FILE
    files = [path for path in [predictions, *part_files(predictions)] if path.is_file()]
    if args.predictions or not files:
        return "no predictions were written"
    finished = sum(path.read_bytes().count(b"\n") for path in files)
    where = f"{predictions} (and its {len(files) - 1} part file(s))" if len(files) > 1 else str(predictions)
    return f"{where} keeps {finished} finished caption(s); the same command resumes from there"


def write_card(model: str, output_dir: str, metrics: dict) -> None:
    """The results into the model folder's card (the Table I table and the Hub's `model-index`), naming the
    saliency source the run's processor used, as `run.json` records it."""
    import json

    from ..evaluation.run import RUN_FILE
    from ..hub.model_card import write_model_card

    run = json.loads((Path(output_dir) / RUN_FILE).read_text(encoding="utf-8"))
    write_model_card(model, metrics=metrics, saliency_source=run.get("saliency_source"))


def main(args) -> int:
    """Caption and score a split (or score a predictions file); print the Table I row."""
    check_evaluate_arguments(args)
    from ..evaluation.metrics import format_table, score_predictions_file
    from ..evaluation.run import evaluate_model
    from ..inference.captioning import critique_prompt

    options = {**metric_options(args), "control": args.control, "control_seed": args.control_seed}
    if args.predictions:
        metrics = score_predictions_file(args.predictions, args.references, args.output_dir, **options)
    else:
        from ..evaluation.run import default_split

        metrics = evaluate_model(
            args.model, args.dataset, args.split or default_split(args.dataset, args.protocol), args.output_dir,
            root=args.data_root, batch_size=args.batch_size,
            generation_config={"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams,
                               **({"min_new_tokens": args.min_new_tokens} if args.min_new_tokens else {})},
            prompt=critique_prompt(args.prompt, args.aspect), max_patches=args.max_tiles, limit=args.limit,
            device=args.device, overwrite=args.overwrite,
            quantization=args.quantization, protocol=args.protocol, **options,
        )
        if metrics is None:  # another process of `accelerate launch`: the main one scores and reports
            return 0
        if args.update_model_card:
            write_card(args.model, args.output_dir, metrics)
    print(format_table(metrics))
    print(f"[evaluate] wrote {Path(args.output_dir) / 'metrics.json'} and metrics.md"
          + (f"; the results are in {Path(args.model) / 'README.md'}" if args.update_model_card else ""))
    return 0
