"""Streaming a sharded checkpoint: the source's shards in order, and an output written shard by shard.

At most one source tensor and one output shard are in memory; a converter yields renamed tensors into a
`ShardWriter`, which writes `model-0000k-of-0000n.safetensors` and the index. InternVL sources are safetensors
(`source_shards`); Qwen-VL-Chat's may also be PyTorch `.bin` files (`weight_files`, read by `read_tensors`).
A source file that cannot be read (not JSON, truncated, missing) is named with what is wrong with it, as a
`ValueError` or `OSError`: bad input, not our bug. `stored_dtypes` reads the dtypes the weights are stored in.
"""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


# safetensors' names of the floating dtypes (its format's `dtype` field) -> torch's.
SAFETENSORS_FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                            "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or an error that names the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a JSON file (not UTF-8 text: {error.reason} at byte {error.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def indexed_files(index: Path) -> list[Path]:
    """The weight files an index names, in order, each checked to exist."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: no `weight_map` of tensor names to files")
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(errno.ENOENT, f"missing weight file (named by {index.name})", str(file))
    return files


def source_shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return indexed_files(index)
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
        try:
            save_file(self.buffer, str(self.folder / name), metadata={"format": "pt"})
        except SafetensorError as error:  # safetensors reports its I/O errors so; they are the disk's, not ours
            raise write_error(error, self.folder / name) from None
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


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (sharded or not), else PyTorch `.bin` (sharded or not)."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            return indexed_files(index)
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder} has no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of one weight file, one at a time (a `.bin` is read with `weights_only=True`, memory-mapped)."""
    if path.suffix == ".safetensors":
        names = safetensors_header(path)
        for name in names:
            # A tensor from `safe_open` is a view of the file's memory map, which stays mapped, with every page read
            # from it resident, while any tensor from it lives; one map per tensor lets each tensor's pages go with
            # it, so that only the output buffer's are resident (one map per shard kept up to a shard more).
            with safe_open(str(path), framework="pt") as tensors:
                tensor = tensors.get_tensor(name)
            yield name, tensor
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise ValueError(f"{path}: not a weights-only PyTorch checkpoint: {error}") from error
    for name in list(state):
        yield name, state.pop(name)


def write_error(error: Exception, path: Path) -> OSError:
    """An error of safetensors' writer as the `OSError` it is, naming the file (a full disk says so)."""
    text = str(error)
    code = errno.ENOSPC if "No space left" in text else errno.EIO
    return OSError(code, f"{os.strerror(code)} while writing ({text})" if code == errno.EIO else os.strerror(code),
                   str(path))


def safetensors_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """`{tensor name: (safetensors dtype, shape)}` of a complete safetensors file, or an error naming it (a truncated
    or corrupt file: safetensors checks that its header covers the whole file)."""
    try:
        with safe_open(str(path), framework="pt") as tensors:
            return {name: (view.get_dtype(), view.get_shape())
                    for name in tensors.keys() for view in [tensors.get_slice(name)]}
    except SafetensorError as error:
        raise ValueError(f"{path}: not a complete safetensors file ({error}); is it truncated?") from None


def stored_dtypes(files: list[Path]) -> Counter:
    """How many elements of each floating dtype the weight files store (safetensors: from the headers only)."""
    counts = Counter()
    for path in files:
        if path.suffix == ".safetensors":
            for dtype, shape in safetensors_header(path).values():
                if dtype in SAFETENSORS_FLOAT_DTYPES:
                    counts[SAFETENSORS_FLOAT_DTYPES[dtype]] += max(1, torch.Size(shape).numel())
        else:
            for _, tensor in read_tensors(path):
                if tensor.is_floating_point():
                    counts[tensor.dtype] += max(1, tensor.numel())
    return counts


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def declared_dtype(raw: dict) -> torch.dtype | None:
    """The dtype a config declares (`dtype`, or `torch_dtype` as older transformers wrote it), if any."""
    declared = getattr(torch, str(raw.get("dtype") or raw.get("torch_dtype")), None)
    return declared if isinstance(declared, torch.dtype) else None
