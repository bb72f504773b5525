"""Publish a saved ASE-MLLM folder to the Hugging Face Hub with `huggingface_hub`'s own upload.

    ase-mllm push outputs/demo/model --repo-id you/ase-mllm-pccd [--private] [--dry-run]

The token comes from the usual places (`HF_TOKEN`, `hf auth login`). Before uploading, the folder is checked: its
`config.json` and processor config must carry the `auto_map` and every remote-code file must be present, so that
`AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True)` works where this package is not
installed; the model card's usage snippet is pointed at the repo id. `--dry-run` prints exactly the files that
`HfApi.upload_folder` would send (the same `filter_repo_objects` over the same patterns) and the `auto_map`.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from ..configuration_ase_mllm import AUTO_MAP
from ..modeling_ase_mllm import remote_code_files
from .model_card import write_model_card


# Training leftovers that do not belong in a model repository.
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "**/__pycache__/**", "__pycache__/**", "*.pyc", "*.pth"]


def check_folder(folder: Path) -> dict:
    """The `auto_map`s the folder publishes; a `ValueError` naming what is missing."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json: save the model with `save_pretrained` first.")
    config_map = json.loads(config_file.read_text()).get("auto_map", {})
    processor_file = folder / "processor_config.json"
    processor_map = json.loads(processor_file.read_text()).get("auto_map", {}) if processor_file.is_file() else {}
    problems = [f"config.json auto_map lacks {k}" for k in AUTO_MAP if k not in config_map]
    problems += [f"missing remote-code file {path.name}" for path in remote_code_files() if not (folder / path.name).is_file()]
    if not processor_file.is_file():
        problems.append("missing processor_config.json (save the processor too)")
    if problems:
        raise ValueError(f"{folder} is not publishable: " + "; ".join(problems) + ".")
    return {"config.json": config_map, "processor_config.json": processor_map}


def upload_plan(folder: str | Path) -> dict:
    """What `HfApi.upload_folder(folder, ignore_patterns=IGNORE_PATTERNS)` sends, and the `auto_map`s."""
    folder = Path(folder).resolve()
    auto_map = check_folder(folder)
    relpaths = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
    files = list(filter_repo_objects(relpaths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))
    return {"files": files, "auto_map": auto_map}


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, dry_run: bool = False,
                token: str | None = None, commit_message: str = "Upload ASE-MLLM") -> dict:
    """Publish `folder` as model repo `repo_id` (created if needed); with `dry_run`, only return the plan."""
    folder = Path(folder)
    plan = upload_plan(folder)
    if dry_run:
        return plan
    write_model_card(folder, model_id=repo_id)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                               commit_message=commit_message, ignore_patterns=list(IGNORE_PATTERNS))
    return {**plan, "commit": str(commit)}


__all__ = ["push_folder", "upload_plan", "IGNORE_PATTERNS"]
