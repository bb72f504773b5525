"""EAT + LayerCAM for the vLLM plugin: the per-tile saliency maps of each image, computed where autograd works.

vLLM runs its models under `torch.inference_mode()`, where LayerCAM's backward pass is impossible, so the plugin's
multimodal processor computes the maps, in the API-server process, before the request reaches the engine. This
module holds that part; it imports no vLLM, so the dev environment tests it against the model's own maps.

- One EAT per model folder and dtype in a process, read from the folder's safetensors (only the `eat` group of
  `PARAMETER_GROUPS`), built and loaded outside inference mode: parameters made under it could not take part in
  LayerCAM's backward, and vLLM profiles its multimodal processor under it.
- One map per image, from that image alone: vLLM caches processor outputs by the image's hash, so a map must not
  depend on what else was in the request (our EAT is batch-invariant anyway).
- LayerCAM hooks a module of the shared EAT, so calls are serialised: two at once would see each other's activations.
"""

import json
import threading
from pathlib import Path

import torch
from safetensors import safe_open

from ...eat_ase_mllm import EatModel
from ...image_processing_ase_mllm import has_thumbnail
from ...modeling_ase_mllm import PARAMETER_GROUPS, parameter_group
from ...saliency_ase_mllm import map_saliency_to_tiles


# EAT's module inside `AseMllmForConditionalGeneration` (its weights are `model.saliency_model.*`).
EAT_MODULE = dict(PARAMETER_GROUPS)["eat"][0] + "."
_LOCK = threading.RLock()


def safetensors_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files: those its index names, or every `*.safetensors` of an unsharded folder."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}: the EAT + LayerCAM saliency needs the model's weights")
    return files


def model_folder(model: str, revision: str | None = None) -> Path:
    """A local folder as it is; a Hub id through huggingface_hub's cache (vLLM has already downloaded it)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, allow_patterns=["*.safetensors", "*.json"]))


def load_eat(folder: Path, eat_config, dtype: torch.dtype) -> EatModel:
    """The frozen EAT of the checkpoint in `folder`, on the CPU in `dtype` (strict: every weight present)."""
    state = {}
    for file in safetensors_files(folder):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                if parameter_group(name) == "eat":
                    state[name.partition(EAT_MODULE)[2]] = weights.get_tensor(name)
    if not state:
        raise ValueError(f"the checkpoint in {folder} holds no EAT weights (its saliency source is not 'eat_layercam'); "
                         "ask for the source it was saved with")
    with torch.inference_mode(False):
        eat = EatModel(eat_config)
        eat.load_state_dict(state)
        return eat.to(dtype).requires_grad_(False).eval()


_EATS: dict[tuple, EatModel] = {}


def eat_for(model: str, revision: str | None, saliency_config, dtype: torch.dtype) -> EatModel:
    """The EAT of a served model, loaded once per process and (folder, EAT config, dtype)."""
    folder = model_folder(model, revision).resolve()
    key = (folder, saliency_config.eat_config.to_json_string(), dtype)
    with _LOCK:
        if key not in _EATS:
            _EATS[key] = load_eat(folder, saliency_config.eat_config, dtype)
        return _EATS[key]


def tile_saliency_maps(eat: EatModel, saliency_config, saliency_pixel_values: torch.Tensor,
                       tile_grids: torch.Tensor) -> torch.Tensor:
    """The IASM's per-tile maps: EAT + LayerCAM on each whole image alone, resampled onto that image's tiles.

    Args:
        saliency_pixel_values: `(num_images, 3, 224, 224)` EAT inputs, from the image processor.
        tile_grids: `(num_images, 2)` each image's `(cols, rows)`.
    Returns:
        `(num_tiles, G, G)` float32 maps in [0, 1], aligned with the image processor's `pixel_values`.
    """
    maps = []
    for pixels, (cols, rows) in zip(saliency_pixel_values, tile_grids.tolist(), strict=True):
        with _LOCK:  # LayerCAM exits inference mode and enables grad itself (`eat_ase_mllm.layer_cam`)
            image_map = eat.layer_cam(pixels[None], saliency_config.layercam_layer_name, saliency_config.layercam_target)
        maps.append(map_saliency_to_tiles(image_map[0], (cols, rows), has_thumbnail(cols, rows), saliency_config.grid_size))
    return torch.cat(maps)
