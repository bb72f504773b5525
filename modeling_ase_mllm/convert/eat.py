"""The released EAT AVA checkpoint: read the `.pth` safely, convert it to safetensors once, load it strictly.

The authors publish `AVA_AOT_vacc_0.8259_srcc_0.7596_vlcc_0.7710.pth` (Google Drive, linked from
woshidandan/Image-Aesthetics-and-Quality-Assessment), saved with `torch.save(model.state_dict())`. Download it
yourself; nothing here fetches weights. Then:

    ase-mllm convert-eat AVA_AOT_vacc_0.8259_srcc_0.7596_vlcc_0.7710.pth      # writes eat.safetensors once

and pass the `.safetensors` (or the `.pth`) to `load_eat_weights(model, path)` or `ase-mllm convert --eat`.
`.pth` files are read with `torch.load(weights_only=True)`: tensors only, no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..configuration_ase_mllm import AseMllmEatConfig
from ..eat_ase_mllm import EatModel


# Wrappers seen around state dicts: `{"model": ...}` (DAT's ImageNet release), `{"state_dict": ...}`.
WRAPPER_KEYS = ("model", "state_dict")


def read_eat_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The EAT state dict in the released naming, from a `.pth` (weights only) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EAT checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"EAT checkpoint {path}: cannot be read as a weights-only PyTorch file ({error}).") from error
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"EAT checkpoint {path}: expected a state dict of tensors, got {type(state).__name__}.")
    # `nn.DataParallel` checkpoints prefix every key with `module.`.
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_eat_weights(target: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load an EAT checkpoint strictly into `target`: an `EatModel`, or an ASE-MLLM model (its saliency model).

    Raises a `ValueError` naming the file and the missing, unexpected or mis-shaped keys.
    """
    eat = target
    for attribute in ("model", "saliency_model"):
        if not isinstance(eat, EatModel) and getattr(eat, attribute, None) is not None:
            eat = getattr(eat, attribute)
    if not isinstance(eat, EatModel):
        raise ValueError(f"{type(target).__name__} holds no EAT model (is its saliency source 'eat_layercam'?).")
    state = read_eat_checkpoint(path)
    expected = eat.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mis_shaped:
        details = "; ".join(
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped))
            if keys
        )
        raise ValueError(f"EAT checkpoint {path} does not match the configured EAT: {details}.")
    eat.load_state_dict(state, strict=True)
    return target


def converted_eat_weights(eat_config: AseMllmEatConfig, path: str | Path) -> dict[str, torch.Tensor]:
    """EAT's weights from the checkpoint `path`, checked strictly against `eat_config`, under their names in an
    ASE-MLLM checkpoint (`model.saliency_model.*`); records the file's name and SHA-256 in `eat_config`
    (`weights_file`, `weights_sha256`: the model card shows them, and the aesthetic score counts as trained)."""
    from ..utils.files import sha256_of

    checked = load_eat_weights(EatModel(eat_config), path)
    eat_config.weights_file, eat_config.weights_sha256 = Path(path).name, sha256_of(Path(path))
    return {f"model.saliency_model.{k}": v for k, v in checked.state_dict().items()}


def convert_eat_checkpoint(path: str | Path, output: str | Path | None = None,
                           config: AseMllmEatConfig | None = None) -> Path:
    """Check a `.pth` against EAT (strict) and write it as safetensors; an existing output is reused.

    Args:
        path: the released `.pth`.
        output: the `.safetensors` to write (default: next to `path`, same stem).
        config: the EAT architecture (default: the released AVA DAT-Base).
    Returns:
        The safetensors path.
    """
    output = Path(output) if output is not None else Path(path).with_suffix(".safetensors")
    if output.is_file():
        return output
    eat = load_eat_weights(EatModel(config or AseMllmEatConfig()), path)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in eat.state_dict().items()}, str(output), metadata={"format": "pt"})
    return output


__all__ = ["read_eat_checkpoint", "load_eat_weights", "converted_eat_weights", "convert_eat_checkpoint"]
