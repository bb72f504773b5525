"""Streaming a sharded safetensors checkpoint: the source's shards in order, and an output written shard by shard.

At most one source tensor and one output shard are in memory; a converter yields renamed tensors into a
`ShardWriter`, which writes `model-0000k-of-0000n.safetensors` and the index.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def source_shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder} has no model.safetensors(.index.json); convert .bin checkpoints to safetensors first.")


class ShardWriter:
    """Collects tensors and writes `model-0000k.safetensors` shards of at most `max_shard_size` bytes."""

    def __init__(self, folder: Path, max_shard_size: int):
        self.folder, self.max_shard_size = folder, max_shard_size
        self.buffer: dict[str, torch.Tensor] = {}
        self.size = 0
        self.files: list[tuple[str, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.buffer or any(name in names for _, names in self.files):
            raise ValueError(f"tensor {name!r} produced twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + nbytes > self.max_shard_size:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.size += nbytes

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.buffer, str(self.folder / name), metadata={"format": "pt"})
        self.files.append((name, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def finish(self) -> None:
        self.flush()
        total = len(self.files)
        weight_map, final = {}, []
        for index, (name, names) in enumerate(self.files, start=1):
            target = f"model-{index:05d}-of-{total:05d}.safetensors"
            (self.folder / name).rename(self.folder / target)
            weight_map.update({key: target for key in names})
            final.append(target)
        total_size = sum((self.folder / f).stat().st_size for f in final)
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def source_dtype(raw: dict, shards: list[Path]) -> torch.dtype:
    """The dtype the source declares (`dtype` or `torch_dtype` in its config), else its first floating tensor's."""
    declared = getattr(torch, str(raw.get("dtype") or raw.get("torch_dtype")), None)
    if isinstance(declared, torch.dtype):
        return declared
    for shard in shards:
        with safe_open(str(shard), framework="pt") as tensors:
            for name in tensors.keys():
                if (tensor := tensors.get_tensor(name)).is_floating_point():
                    return tensor.dtype
    raise ValueError(f"{shards[0]}: no floating-point tensor")

