"""The one writer of a converted checkpoint, for every source format: whole or not at all, in one dtype, repeatable.

    check_output(output, source, overwrite)            # before any work: refuse what must not be written into
    dtype, record = weights_dtype(raw, files, config_file, requested)
    summary = write_checkpoint(output, converted, new, dtype=dtype, seed=seed, ..., save=save, summary=summary)

`write_checkpoint` streams the converted tensors, then the new ones (IAS, EAT), into output shards (`ShardWriter`),
lets `save(folder)` add the config, processor and generation config, writes `conversion.json`, and only then puts
the folder at `output` (`utils.files.replace_folder`): it is built beside `output` under a temporary name, so a
conversion killed at any point leaves no folder there, or the complete one that was there before. An existing
folder is replaced only when asked (`overwrite`), and whole: no file of the old checkpoint survives beside the new.

The new weights are initialised under `torch.manual_seed(seed)` (torch's global generator is left as it was), so
the same source, EAT file, dtype and seed give the same bytes in every file.

Precision: every floating tensor is written in one dtype, by default the one the source's weights are stored in
(most of their elements, when they mix dtypes). A `torch_dtype` in the source's config that says otherwise does not
change the numbers: it is reported once and both are recorded in `conversion.json` (`source_dtype`).
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..utils.files import partial_folder, replace_folder
from .shards import ShardWriter, declared_dtype, dtype_name, stored_dtypes


def check_output(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, the source (or holds it), or a folder with something in it unless
    `overwrite`, which replaces it whole once the new checkpoint is complete."""
    resolved, origin = output.resolve(), source.resolve()
    if resolved == origin or resolved in origin.parents:
        raise ValueError(f"{output}: the output would replace the source folder {source}; give another folder")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} is a file; give a folder to write the checkpoint into")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output} is not empty: pass --overwrite to replace it (it is replaced whole, once the new checkpoint "
            "is complete), or give another folder"
        )


def weights_dtype(raw: dict, files: list[Path], config_file: Path, requested: torch.dtype | None):
    """`(dtype to write, record)`: `requested`, else the dtype the weights are stored in.

    The record (`conversion.json`'s `source_dtype`) holds the stored dtype(s) and the config's; a config that
    declares another dtype than the stored one is reported once, as are weights stored in several dtypes.
    """
    counts = stored_dtypes(files)
    stored = max(counts, key=counts.get) if counts else None
    declared = declared_dtype(raw)
    dtype = requested or stored or declared or torch.float32
    record = {"stored": dtype_name(stored) if stored else None, "config": dtype_name(declared) if declared else None}
    if len(counts) > 1:
        record["stored_elements"] = {dtype_name(key): value for key, value in sorted(counts.items(), key=str)}
        warnings.warn(f"{files[0].parent}: the weights are stored in several dtypes "
                      f"({', '.join(sorted(map(dtype_name, counts)))}); every tensor is written as {dtype_name(dtype)}.",
                      stacklevel=3)
    if stored is not None and declared is not None and stored != declared:
        chosen = "as asked (--dtype)" if requested else f"the weights' own; --dtype {dtype_name(declared)} for the config's"
        warnings.warn(f"{config_file}: torch_dtype says {dtype_name(declared)}, but the weights are stored in "
                      f"{dtype_name(stored)}; writing {dtype_name(dtype)} ({chosen}).", stacklevel=3)
    return dtype, record


def write_checkpoint(
    output: Path,
    converted: Iterable[tuple[str, torch.Tensor]],
    new: Iterable[tuple[str, torch.Tensor]],
    *,
    source: Path,
    dtype: torch.dtype,
    seed: int,
    max_shard_size: int,
    overwrite: bool,
    save: Callable[[Path], None],
    summary: dict,
) -> dict:
    """Write the checkpoint whole at `output` (see the module docstring); returns `summary` completed with the
    counts, the new weights' names, the dtype and the seed, as written to `conversion.json`."""
    check_output(output, source, overwrite)
    folder = partial_folder(output)
    try:
        writer, converted_count, added = ShardWriter(folder, max_shard_size), 0, []
        for name, tensor in converted:
            writer.add(name, tensor.to(dtype) if tensor.is_floating_point() else tensor)
            converted_count += 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, tensor in new:
                writer.add(name, tensor.to(dtype) if tensor.is_floating_point() else tensor)
                added.append(name)
        writer.finish()
        save(folder)
        summary = {"format": summary["format"], "converted_tensors": converted_count, "new_weights": sorted(added),
                   **summary, "dtype": dtype_name(dtype), "seed": seed}
        (folder / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        check_output(output, source, overwrite)  # nothing else wrote there meanwhile
        replace_folder(folder, output)
    except BaseException as error:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"No space left on device for the conversion into {output}: nothing was "
                                        "written there") from error
        raise
    return summary


def saliency_source_for(eat) -> str:
    """A converted model's saliency source: `eat_layercam` with an EAT checkpoint; without one, for every source
    format, the fallback `spectral_residual` (no weights), said with a warning."""
    if eat is not None:
        return "eat_layercam"
    warnings.warn("no EAT checkpoint given: the saliency source falls back to 'spectral_residual' (no weights).",
                  stacklevel=3)
    return "spectral_residual"


def eat_checkpoint_weights(config, eat) -> dict[str, torch.Tensor]:
    """The EAT checkpoint `eat`, checked against `config.saliency_config.eat_config`, under the model's names
    (`model.saliency_model.*`), its file's name and SHA-256 recorded in that config; empty without one."""
    if eat is None:
        return {}
    from .eat import converted_eat_weights

    return converted_eat_weights(config.saliency_config.eat_config, eat)


def folder_saver(config, architecture: str, dtype: torch.dtype, processor, eos_token_id, pad_token_id
                 ) -> Callable[[Path], None]:
    """`write_checkpoint`'s `save` for every family: the config (for `architecture`, in `dtype`), the remote code,
    the generation config (greedy, stopping at `eos_token_id`) and the processor."""
    from transformers import GenerationConfig

    from ..modeling_ase_mllm import copy_remote_code

    def save(folder: Path) -> None:
        config.architectures = [architecture]
        config.dtype = dtype
        config.save_pretrained(folder)
        copy_remote_code(folder)
        GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id).save_pretrained(folder)
        processor.save_pretrained(folder)

    return save


__all__ = ["check_output", "weights_dtype", "write_checkpoint", "saliency_source_for", "eat_checkpoint_weights",
           "folder_saver"]
