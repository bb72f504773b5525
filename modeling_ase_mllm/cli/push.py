"""`ase-mllm push`: publish a saved ASE-MLLM folder to the Hugging Face Hub (`hub.publish`)."""

import json

from .arguments import check_existing, one_line


def add_parser(subparsers):
    command = subparsers.add_parser(
        "push", help="publish a saved ASE-MLLM folder to the Hugging Face Hub",
        description="Check that the folder carries its auto_map and remote code, then upload it with "
                    "HfApi.upload_folder (token from HF_TOKEN or `hf auth login`).")
    command.add_argument("folder", help="a saved ASE-MLLM folder")
    command.add_argument("--repo-id", required=True, help="e.g. you/ase-mllm-pccd")
    command.add_argument("--private", action="store_true", help="create the repo private")
    command.add_argument("--dry-run", action="store_true", help="list the files and auto_map; upload nothing")
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """Publish a saved folder to the Hub; `--dry-run` prints the plan (files and auto_map) instead."""
    check_existing(args.parser, "folder", args.folder, "folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(args.repo_id)
    except HFValidationError as error:
        args.parser.error(f"argument --repo-id: {args.repo_id!r} is not a Hub repo id (owner/name): {one_line(error)}")
    from ..hub.publish import push_folder

    result = push_folder(args.folder, args.repo_id, private=args.private or None, dry_run=args.dry_run)
    print(json.dumps({"repo_id": args.repo_id, "dry_run": args.dry_run, **result}, indent=2))
    return 0


def kept(args) -> str:
    return "no commit was made (the upload commits once, at the end); run it again"
