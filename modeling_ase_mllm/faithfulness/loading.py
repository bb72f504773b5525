"""EAT alone, for the saliency report: from an ASE-MLLM folder or Hub id (only its EAT tensors are read, never the
language model's), or from an EAT checkpoint (the released `.pth`, or `ase-mllm convert-eat`'s safetensors)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..configuration_ase_mllm import AseMllmEatConfig, AseMllmSaliencyConfig
from ..eat_ase_mllm import EatModel


# Where EAT's tensors sit in a saved ASE-MLLM state dict (`<...>.saliency_model.<EAT's own name>`), in every family.
EAT_KEY_MARKER = "saliency_model."
WEIGHT_INDEXES = ("model.safetensors.index.json", "model.safetensors")


@dataclass
class LoadedEat:
    """EAT and what the report needs beside it."""

    eat: EatModel
    layer: str  # the LayerCAM layer the model uses (its config's, or the default)
    target: str  # what LayerCAM differentiates (`top_bin` or `mean_score`)
    image_processor: object  # an `AseMllmImageProcessor`: EAT's input and the spectral-residual control
    description: str


def eat_state_from_shards(shards: list[Path]) -> dict[str, torch.Tensor]:
    """The EAT tensors of a saved ASE-MLLM checkpoint, under EAT's own names (the rest of each shard is not read)."""
    from safetensors import safe_open

    state = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a dict)
                if EAT_KEY_MARKER in key:
                    state[key.split(EAT_KEY_MARKER, 1)[1]] = tensors.get_tensor(key)
    return state


def model_weight_files(model: str) -> list[Path]:
    """The safetensors files of a folder or Hub id that hold EAT's tensors (a Hub id downloads only those)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        from ..convert.shards import source_shards

        return source_shards(folder)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        index = json.loads(Path(hf_hub_download(model, WEIGHT_INDEXES[0])).read_text(encoding="utf-8"))
    except EntryNotFoundError:
        return [Path(hf_hub_download(model, WEIGHT_INDEXES[1]))]
    shards = dict.fromkeys(name for key, name in index["weight_map"].items() if EAT_KEY_MARKER in key)
    return [Path(hf_hub_download(model, name)) for name in shards]


def load_model_eat(model: str, device: str = "cpu") -> LoadedEat:
    """EAT of an ASE-MLLM folder or Hub id, in float32, with the model's LayerCAM layer and target."""
    from transformers import AutoConfig, AutoImageProcessor

    config = AutoConfig.from_pretrained(model, trust_remote_code=True)
    saliency = getattr(config, "saliency_config", None)
    if saliency is None or saliency.source != "eat_layercam":
        source = getattr(saliency, "source", None)
        raise ValueError(f"model {model!r} has no EAT (its saliency source is {source!r}, not 'eat_layercam')")
    eat = EatModel(saliency.eat_config)
    state = eat_state_from_shards(model_weight_files(model))
    missing = sorted(set(eat.state_dict()) - set(state))
    if missing:
        raise ValueError(f"model {model!r}: its weights lack {len(missing)} EAT tensor(s), e.g. {missing[0]!r}")
    eat.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    try:
        image_processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=True)
    except OSError:  # a folder saved without its processor: EAT's input is the same for every ASE-MLLM processor
        from ..image_processing_ase_mllm import AseMllmImageProcessor

        image_processor = AseMllmImageProcessor()
    return LoadedEat(eat.to(device).eval().requires_grad_(False), saliency.layercam_layer_name,
                     saliency.layercam_target, image_processor, f"the EAT of {model}")


def load_checkpoint_eat(checkpoint: str, eat_config: str | None = None, device: str = "cpu") -> LoadedEat:
    """EAT from a checkpoint file with the released architecture (DAT-Base at 224 px) or `eat_config` (a JSON of
    `AseMllmEatConfig` fields); LayerCAM's defaults of a new ASE-MLLM config."""
    from ..convert.eat import load_eat_weights
    from ..image_processing_ase_mllm import AseMllmImageProcessor

    config = AseMllmEatConfig.from_json_file(eat_config) if eat_config else AseMllmEatConfig()
    eat = load_eat_weights(EatModel(config), checkpoint)
    defaults = AseMllmSaliencyConfig(eat_config=config)
    return LoadedEat(eat.float().to(device).eval().requires_grad_(False), defaults.layercam_layer_name,
                     defaults.layercam_target, AseMllmImageProcessor(), f"EAT checkpoint {checkpoint}")


__all__ = ["LoadedEat", "load_model_eat", "load_checkpoint_eat", "eat_state_from_shards"]
