"""Find the declarative presets: model shapes, training recipes and accelerate configs (`configuration/`), and
processor presets (`processing/`).

In a source checkout (and an editable install) they are the repository's top-level folders; a regular install puts
them inside this package as `modeling_ase_mllm._configuration` / `._processing` (no top-level package of those
names is installed). `python -m modeling_ase_mllm.presets` lists every preset with its file, e.g. the accelerate
config to pass to `accelerate launch --config_file`.
"""

import json
from importlib import resources
from pathlib import Path


# Preset kind -> (top-level folder, subfolder, file suffix).
PRESET_KINDS = {
    "models": ("configuration", "models", ".json"),
    "recipes": ("configuration", "recipes", ".yaml"),
    "accelerate": ("configuration", "accelerate", ".yaml"),
}


def preset_root(kind: str) -> Path:
    """Folder of the `"configuration"` or `"processing"` presets."""
    if kind not in ("configuration", "processing"):
        raise ValueError(f"unknown preset kind {kind!r}")
    checkout = Path(__file__).resolve().parents[2] / kind
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files(f"modeling_ase_mllm._{kind}")))


def _folder(kind: str) -> tuple[Path, str]:
    if kind not in PRESET_KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; known: {', '.join(PRESET_KINDS)}")
    root, subfolder, suffix = PRESET_KINDS[kind]
    return preset_root(root) / subfolder, suffix


def list_presets(kind: str) -> list[str]:
    """The preset names of one kind (`models`, `recipes`, `accelerate`)."""
    folder, suffix = _folder(kind)
    return sorted(path.stem for path in folder.glob(f"*{suffix}"))


def preset_file(kind: str, name: str) -> Path:
    """The file of preset `name` of `kind`; a `ValueError` listing the known ones otherwise."""
    folder, suffix = _folder(kind)
    path = folder / f"{name}{suffix}"
    if not path.is_file():
        raise ValueError(f"unknown {kind} preset {name!r}; available: {', '.join(list_presets(kind))}")
    return path


def list_model_presets() -> list[str]:
    return list_presets("models")


def load_model_preset_dict(name: str) -> dict:
    data = json.loads(preset_file("models", name).read_text(encoding="utf-8"))
    data.pop("_comment", None)
    return data


def load_model_preset(name: str, **overrides):
    """An `AseMllmConfig` from `configuration/models/<name>.json`, with top-level `overrides` applied."""
    from ..configuration_ase_mllm import AseMllmConfig

    data = load_model_preset_dict(name)
    data.pop("model_type", None)
    data.update(overrides)
    return AseMllmConfig(**data)


def main() -> None:
    """Print every preset: kind, name, file."""
    for kind in PRESET_KINDS:
        for name in list_presets(kind):
            print(f"{kind:<10} {name:<16} {preset_file(kind, name)}")
