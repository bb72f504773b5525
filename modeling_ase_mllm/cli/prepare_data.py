"""`ase-mllm prepare-data`: read an AIC dataset release and save it as a `datasets.DatasetDict`."""

from .arguments import DATASET_HELP, check_choice, check_existing, check_output_folder


def add_parser(subparsers):
    command = subparsers.add_parser(
        "prepare-data", help="read a dataset release (PCCD, RPCD, DPC2022, AVA-Captions) and save it",
        description="Read an AIC dataset release and save it as a datasets.DatasetDict (save_to_disk, images "
                    "embedded).")
    command.add_argument("--dataset", required=True, help=DATASET_HELP)
    command.add_argument("--data-root", "--root", help="the release's folder (not needed for mini_aic)")
    command.add_argument("--output-dir", "--out", required=True, help="folder for DatasetDict.save_to_disk")
    command.add_argument("--image-dir", help="image folder, if not the release's default place")
    command.add_argument("--split", action="append", dest="splits", help="read only this split (repeatable)")
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """Read a dataset release and save it as a `DatasetDict` (embedding the images)."""
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
    check_output_folder(parser, "--output-dir", args.output_dir)
    from ..data.registry import load_aic_dataset

    options = {"splits": args.splits} if args.splits else {}
    if args.image_dir:
        options["image_root" if name == "rpcd" else "image_dir"] = args.image_dir
    dataset_dict = load_aic_dataset(name, args.data_root, **options)
    # save_to_disk embeds the image bytes, so the saved dataset no longer needs the release folder.
    dataset_dict.save_to_disk(args.output_dir)
    for split, dataset in dataset_dict.items():
        print(f"{name} {split}: {len(dataset)} images, {sum(len(refs) for refs in dataset['references'])} references")
    print(f"saved to {args.output_dir}")
    return 0


def kept(args) -> str:
    return f"{args.output_dir} may be incomplete: prepare it again"
