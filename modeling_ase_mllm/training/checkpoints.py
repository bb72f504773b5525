"""Trainer's checkpoints, told complete from interrupted: what `--resume` takes, what a new run may overwrite.

`Trainer._save_checkpoint` writes a `checkpoint-N` folder in place: the weights, then the optimizer, scheduler,
scaler and RNG states, and `trainer_state.json` last; `trainer_utils.get_last_checkpoint` then takes the highest N,
whatever it holds. So a run killed while saving leaves a folder that looks like the newest checkpoint. Here a
checkpoint is complete when its `trainer_state.json` reads and names step N (it is written after every other
file), and every weights and state file in it reads whole (safetensors: the header covers the file; `torch.save`
files: the zip directory at their end is there), so a folder half deleted by `save_total_limit`'s rotation does not
pass either. Nothing is written to mark a checkpoint: the checks read what Trainer wrote.

`DiskFullReporter` (a `TrainerCallback`) knows which checkpoint is being written, so that a full disk is reported
as one line naming it and the last complete checkpoint.
"""

from __future__ import annotations

import errno
import json
import shutil
import zipfile
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


TRAINER_STATE = "trainer_state.json"  # transformers.trainer.TRAINER_STATE_NAME
# Trainer's weight files: a whole model, sharded or not, or a PEFT adapter.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
# A full disk leaves less than this free on the checkpoint's file system when a write has failed.
FULL_DISK_BYTES = 1 << 20


def checkpoint_step(folder: Path) -> int | None:
    name = folder.name
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def checkpoint_problem(folder: Path, optimizer: bool = True) -> str | None:
    """Why `folder` is not a complete Trainer checkpoint, or None when it is. `optimizer`: the run saves its
    optimizer (not `save_only_model`), whose state must then be there."""
    from safetensors import SafetensorError, safe_open

    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return f"{TRAINER_STATE} missing, the save did not finish"
    try:
        step = json.loads(state_file.read_text(encoding="utf-8")).get("global_step")
    except (ValueError, UnicodeDecodeError):
        return f"{TRAINER_STATE} is cut short"
    if step != checkpoint_step(folder):
        return f"{TRAINER_STATE} is for step {step}"
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return "no weights file"
    if optimizer and not any(folder.glob("optimizer*")) and not any(folder.glob("global_step*")):
        return "no optimizer state"
    for file in sorted(folder.rglob("*")):
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except SafetensorError:
                return f"{file.name} is cut short"
        elif file.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(file):
            return f"{file.name} is cut short"
        elif file.name.endswith(".index.json"):
            try:
                shards = set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values())
            except (ValueError, KeyError, UnicodeDecodeError):
                return f"{file.name} is cut short"
            if missing := sorted(name for name in shards if not (file.parent / name).is_file()):
                return f"{missing[0]} (named by {file.name}) is missing"
    return None


def checkpoints(output_dir: Path, optimizer: bool = True) -> tuple[list[Path], dict[Path, str]]:
    """`(complete, incomplete)`: the complete `checkpoint-N` folders of `output_dir`, oldest first, and the others
    with what is wrong with each."""
    folders = sorted((path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                      if path.is_dir() and checkpoint_step(path) is not None), key=checkpoint_step)
    complete, incomplete = [], {}
    for folder in folders:
        problem = checkpoint_problem(folder, optimizer)
        if problem is None:
            complete.append(folder)
        else:
            incomplete[folder] = problem
    return complete, incomplete


def resume_checkpoint(output_dir: Path, requested: str, optimizer: bool = True) -> tuple[Path, dict[Path, str]]:
    """The checkpoint `--resume` continues from: `requested` ("last": the newest complete one in `output_dir`,
    else a folder), and the newer incomplete ones it skipped; a checkpoint that cannot be resumed is an error
    naming it and what is wrong with it."""
    if requested != "last":
        folder = Path(requested)
        if problem := checkpoint_problem(folder, optimizer):
            raise ValueError(f"--resume {requested}: not a complete checkpoint: {problem}")
        return folder, {}
    complete, incomplete = checkpoints(output_dir, optimizer)
    if not complete:
        found = "; ".join(f"{folder.name}: {problem}" for folder, problem in incomplete.items())
        raise FileNotFoundError(f"--resume: no complete checkpoint in {output_dir}" + (f" ({found})" if found else "")
                                + "; pass --overwrite instead to start again")
    newest = complete[-1]
    return newest, {folder: problem for folder, problem in incomplete.items()
                    if checkpoint_step(folder) > checkpoint_step(newest)}


def earlier_run(output_dir: Path) -> list[str]:
    """What a run already left in `output_dir` (its checkpoint folders, its `trainer_state.json`)."""
    folder = Path(output_dir)
    found = sorted((path.name for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                    if path.is_dir() and checkpoint_step(path) is not None), key=lambda name: int(name.rsplit("-", 1)[1]))
    return found + ([TRAINER_STATE] if (folder / TRAINER_STATE).is_file() else [])


def check_fresh_output(output_dir: Path, overwrite: bool, main_process: bool = True) -> list[str]:
    """A run that neither resumes nor overwrites must not start over the checkpoints of another in `output_dir`
    (Trainer would write over them step by step). With `overwrite` the earlier run's checkpoints and state are
    deleted first (by the main process); returns what was deleted."""
    found = earlier_run(output_dir)
    if not found:
        return []
    if not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a training run ({', '.join(found)}): pass --resume to continue it, or "
            "--overwrite to start again (its checkpoints are deleted first)"
        )
    if main_process:
        for name in found:
            path = Path(output_dir) / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return found


def is_disk_full(error: BaseException, path: Path) -> bool:
    """The error (or one it came from) is a full disk: ENOSPC, a writer's "No space left on device", or a failed
    write that left the file system of `path` all but full (torch's writer says only "file write failed")."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    existing = next((folder for folder in (path, *path.parents) if folder.exists()), None)
    return existing is not None and shutil.disk_usage(existing).free < FULL_DISK_BYTES


def disk_full_error(writing: Path, output_dir: Path, optimizer: bool = True) -> OSError:
    """One line for a full disk: what was being written, and the last complete checkpoint."""
    complete, _ = checkpoints(output_dir, optimizer)
    last = (f"the last complete checkpoint is {complete[-1]}: free some space, then the same command with --resume "
            "continues from it") if complete else "no checkpoint is complete yet"
    return OSError(errno.ENOSPC, f"No space left on device while writing {writing}; {last}")


class DiskFullReporter(TrainerCallback):
    """Remembers the checkpoint folder being written (from the step that decides to save until `on_save`), so
    that the run's error handler can name it."""

    def __init__(self, output_dir: str | Path):
        self.output_dir, self.writing = Path(output_dir), None

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.writing = self.output_dir / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"

    def on_save(self, args, state, control, **kwargs):
        self.writing = None


__all__ = [
    "DiskFullReporter",
    "check_fresh_output",
    "checkpoint_problem",
    "checkpoints",
    "disk_full_error",
    "earlier_run",
    "is_disk_full",
    "resume_checkpoint",
]
