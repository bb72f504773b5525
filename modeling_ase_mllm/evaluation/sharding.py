"""Share a split's work among the processes of `accelerate launch` (or `torchrun`), and fold the shards back.

A run on N processes cuts the split into the batches a one-process run would make (so every image is captioned
in the same batch, hence to the same caption) and deals the unfinished batches out round-robin. Each process
appends its captions to its own part file (`predictions.jsonl.part-00003`); the main process then merges the
parts into `predictions.jsonl` in the split's order and scores once. A killed run leaves its part files; the
next run, on any number of processes, merges them first and does only what is missing.

    accelerate launch --multi_gpu --num_processes 8 -m modeling_ase_mllm.cli evaluate --model M --dataset D

Without `accelerate launch` (WORLD_SIZE unset or 1) nothing here touches `torch.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .predictions import merge_predictions


PART_SUFFIX = ".part-"


@dataclass(frozen=True)
class Shards:
    """This process's place in the run: `rank` of `world_size`, and the device `accelerate` gives it."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: Sequence) -> list:
        """This process's share of `items`: every `world_size`-th one, from its rank."""
        return list(items[self.rank :: self.world_size])

    def main_first(self, work: Callable[[], object]) -> object:
        """Run `work` on the main process while the others wait; every process returns its result or raises its
        error (so a refused run stops everywhere, with the same message, instead of leaving the others waiting)."""
        if self.world_size == 1:
            return work()
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        outcome = [None]
        PartialState().wait_for_everyone()
        if self.is_main:
            try:
                outcome = [("ok", work())]
            except Exception as error:  # noqa: BLE001  (handed to every process, raised there)
                outcome = [("error", error)]
        broadcast_object_list(outcome, from_process=0)
        status, value = outcome[0]
        if status == "error":
            raise value
        return value


def current_shards() -> Shards:
    """The shards of this run: accelerate's process state under a distributed launcher, one shard otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shards()
    import torch
    from accelerate import PartialState

    # Without an accelerator, accelerate joins the processes (gloo) only when asked for the CPU.
    state = PartialState(cpu=not torch.accelerator.is_available())
    if state.num_processes != world_size:
        raise RuntimeError(f"the launcher started {world_size} processes but accelerate joined {state.num_processes}; "
                           "launch with a multi-process config (configuration/accelerate/ddp.yaml)")
    return Shards(rank=state.process_index, world_size=state.num_processes, device=str(state.device))


def part_path(path: Path, rank: int) -> Path:
    """Where process `rank` appends its share of `path`."""
    return path.with_name(f"{path.name}{PART_SUFFIX}{rank:05d}")


def part_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}{PART_SUFFIX}*"))


def merge_parts(path: Path, order: Sequence[str], value_key: str = "caption") -> int:
    """Fold the part files of the predictions file `path` into it, then delete them; returns the captions (or other
    `value_key` values) added (`predictions.merge_predictions`: those of `order`, the split's ids, in that order)."""
    return merge_predictions(path, part_files(path), order, value_key)


__all__ = ["Shards", "current_shards", "merge_parts", "part_files", "part_path"]
