"""Find and load the declarative presets of `configuration/` and `processing/`.

In a source checkout (and an editable install) they are the repository's top-level folders; a regular install
puts them inside this package as `modeling_ase_mllm._configuration` / `._processing`.
"""

import json
from importlib import resources
from pathlib import Path

from .configuration_ase_mllm import AseMllmConfig
from .configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig


def preset_root(kind: str) -> Path:
    """Folder of the `"configuration"` or `"processing"` presets."""
    if kind not in ("configuration", "processing"):
        raise ValueError(f"unknown preset kind {kind!r}")
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files(f"modeling_ase_mllm._{kind}")))


def list_model_presets() -> list[str]:
    return sorted(path.stem for path in (preset_root("configuration") / "models").glob("*.json"))


def load_model_preset_dict(name: str) -> dict:
    path = preset_root("configuration") / "models" / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(list_model_presets())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("_comment", None)
    return data


def load_model_preset(name: str, **overrides) -> AseMllmConfig | AseMllmQwenVLConfig:
    """The config of `configuration/models/<name>.json` (its `model_type` picks the family: `AseMllmConfig` or
    `AseMllmQwenVLConfig`), with top-level `overrides` applied."""
    data = load_model_preset_dict(name)
    config_class = AseMllmQwenVLConfig if data.pop("model_type", None) == AseMllmQwenVLConfig.model_type else AseMllmConfig
    data.update(overrides)
    return config_class(**data)
