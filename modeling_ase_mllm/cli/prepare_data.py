"""`ase-mllm prepare-data`: read an AIC dataset release, decode every image once, and save it as a
`datasets.DatasetDict` that `train` and `evaluate` load."""

import os
from pathlib import Path

from .arguments import DATASET_HELP, check_choice, check_existing, check_output_folder, positive_int


# The readers whose split files are published apart from the release (`--split-dir`).
SPLIT_DIR_DATASETS = ("pccd", "rpcd")


def add_parser(subparsers):
    command = subparsers.add_parser(
        "prepare-data", help="read a dataset release (PCCD, RPCD, DPC2022, AVA-Captions) and save it",
        description="Read an AIC dataset release, decode every image once (in parallel; a file that does not decode "
                    "is left out by name), and save it as a datasets.DatasetDict (save_to_disk, images embedded) with "
                    "the protocol it follows. A split that ends empty is left out with a warning; one asked for with "
                    "--split is an error.")
    command.add_argument("--dataset", required=True, help=DATASET_HELP)
    command.add_argument("--data-root", "--root", help="the release's folder (not needed for mini_aic)")
    command.add_argument("--output-dir", "--out", required=True,
                         help="folder for DatasetDict.save_to_disk (replaced whole once everything is saved)")
    command.add_argument("--image-dir", help="image folder, if not the release's default place")
    command.add_argument("--split", action="append", dest="splits", help="read only this split (repeatable)")
    command.add_argument("--split-dir",
                         help="folder of the split files, where they are not in the release: PCCD's guru_*.json "
                              "(Aestheval's aestheval/data/PCCD/), RPCD's *_ids.csv (Zenodo 6985507 or Aestheval's "
                              "aestheval/data/reddit/)")
    command.add_argument("--protocol",
                         help="which splits train and which score (docs/datasets.md, Protocols): dpc2022: aric (the "
                              "default: train on ARIC's comment-pair file, evaluate on val) or release (train.csv, "
                              "test.csv); every other dataset has one")
    command.add_argument("--num-proc", type=positive_int, default=min(os.cpu_count() or 1, 16),
                         help="processes that decode the images (default: one per processor, %(default)s here)")
    command.add_argument("--strict", action="store_true",
                         help="stop when an image file does not decode, instead of leaving its row out")
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """Read a dataset release, decode its images, and save it as a `DatasetDict` (embedding the images)."""
    from ..data.protocols import get_protocol, protocol_names
    from ..data.registry import DATASET_NAMES, canonical_dataset_name

    parser = args.parser
    try:
        name = canonical_dataset_name(args.dataset)
    except ValueError:
        check_choice(parser, "--dataset", args.dataset.lower(), DATASET_NAMES, "dataset")
    if name != "mini_aic" and args.data_root is None:
        parser.error(f"argument --data-root: {name} needs the folder of its release")
    check_existing(parser, "--data-root", args.data_root, "folder")
    check_existing(parser, "--image-dir", args.image_dir, "folder")
    check_existing(parser, "--split-dir", args.split_dir, "folder")
    if args.split_dir and name not in SPLIT_DIR_DATASETS:
        parser.error(f"argument --split-dir: {name} keeps its split files in its release; only "
                     f"{' and '.join(SPLIT_DIR_DATASETS)} take them from elsewhere")
    if args.protocol is not None:
        check_choice(parser, "--protocol", args.protocol, protocol_names(name), f"{name} protocol")
    protocol = get_protocol(name, args.protocol)
    check_output_folder(parser, "--output-dir", args.output_dir)
    from ..data.prepared import check_output_folder as replaceable, drop_undecodable, save_prepared

    if (problem := replaceable(Path(args.output_dir))) is not None:
        parser.error(f"argument --output-dir: {problem}")
    from ..data.registry import load_aic_dataset

    options = {"splits": args.splits} if args.splits else {}
    if args.image_dir:
        options["image_root" if name == "rpcd" else "image_dir"] = args.image_dir
    if args.split_dir:
        options["split_dir"] = str(Path(args.split_dir).resolve())
    left_out = {}
    dataset_dict = showing_warnings(left_out, lambda: load_aic_dataset(name, args.data_root, protocol.name, **options))
    dataset_dict, undecodable = showing_warnings(
        left_out, lambda: drop_undecodable(dataset_dict, name, args.splits or (), args.num_proc, args.strict))
    info = {
        "dataset": name,
        "protocol": protocol.to_dict(),
        "splits": {split: len(dataset) for split, dataset in dataset_dict.items()},
        "left_out": left_out,
        "undecodable": {split: [path for path, _ in rows] for split, rows in undecodable.items()},
    }
    save_prepared(dataset_dict, args.output_dir, info)
    for split, dataset in dataset_dict.items():
        bad = len(undecodable.get(split, ()))
        print(f"{name} {split}: {len(dataset)} images, {sum(len(refs) for refs in dataset['references'])} references"
              + (f" ({bad} undecodable image(s) left out)" if bad else ""))
    for split, cause in left_out.items():
        print(f"{name} {split}: left out, no rows ({cause})")
    print(f"protocol: {protocol.describe()}")
    print(f"saved to {args.output_dir}")
    return 0


def showing_warnings(left_out: dict, work):
    """`work()`, its warnings shown as they are, and the splits it leaves out (`EmptySplitWarning`) recorded in
    `left_out` (split -> why), for the folder's record."""
    import warnings

    from ..data.errors import EmptySplitWarning

    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return work()
    finally:  # shown also when `work` fails: what it skipped before failing explains the failure
        for warning in caught:
            if isinstance(warning.message, EmptySplitWarning):
                left_out[warning.message.split] = warning.message.cause
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def kept(args) -> str:
    return f"{args.output_dir} is as it was: it is replaced only once the whole dataset is saved"
