"""Declarative fine-tuning recipes (`configuration/recipes/*.yaml`).

A recipe names the base checkpoint, the data and its conversation format, which parts of the model train
(:class:`FreezingPreset`), the LoRA settings, the processor's tiling, the effective batch size and the
`SFTConfig` / `TrainingArguments` fields. A recipe may start from another with `inherit: <name>`; nested
mappings merge key by key, so `pccd-no-ias.yaml` is `inherit: pccd` plus `ias: false`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .presets import preset_root


VISION_MODES = ("frozen", "train")
PROJECTOR_MODES = ("train", "frozen")
LLM_MODES = ("full", "frozen", "lora")
TRAINERS = ("sft", "hf")
DTYPES = ("float32", "bfloat16", "float16")
# The special `model` value that builds a random tiny ASE-MLLM (CPU demos and tests; nothing to download).
TINY_MODEL = "tiny"


@dataclass(frozen=True)
class FreezingPreset:
    """Which parts of ASE-MLLM train. The EAT saliency model, when present, is always frozen.

    Args:
        vision: `"frozen"` keeps InternViT's own weights fixed, `"train"` trains them; the IAS weights follow `ias`
            either way.
        projector: `"train"` or `"frozen"` for the MLP projector.
        llm: `"full"` (every language-model weight and the LM head), `"frozen"`, or `"lora"` (frozen base weights,
            trainable LoRA adapters on the attention and MLP projections).
        ias: train the IAS components (saliency embeddings, cross-attentions, their norms, gates). `False` is the
            Table II ablation: the gates are set to zero and frozen, so the model is a plain fine-tuned InternVL.
    """

    vision: str = "frozen"
    projector: str = "train"
    llm: str = "full"
    ias: bool = True

    def __post_init__(self):
        for name, allowed in (("vision", VISION_MODES), ("projector", PROJECTOR_MODES), ("llm", LLM_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"freezing `{name}` must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.ias, bool):
            raise ValueError(f"`ias` must be true or false, got {self.ias!r}")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


@dataclass(frozen=True)
class DataSettings:
    """How an AIC split becomes training conversations (see `conversations.to_conversations`)."""

    train_split: str = "train"
    conversations: str = "all"
    aspect_conditioned: bool = False
    prompt: str = "Comment on this image from an aesthetic perspective."
    seed: int = 0


@dataclass(frozen=True)
class TrainingRecipe:
    """One fine-tuning run, as read from a recipe file; `training` holds `SFTConfig` / `TrainingArguments` fields."""

    name: str
    model: str | None = None
    base_model: str | None = None
    dataset: str | None = None
    dtype: str = "float32"
    trainer: str = "sft"
    ias: bool = True
    freeze: FreezingPreset = field(default_factory=FreezingPreset)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    max_patches: int = 12
    effective_batch_size: int = 16
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"recipe {self.name!r}: `trainer` must be one of {TRAINERS}, got {self.trainer!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"recipe {self.name!r}: `dtype` must be one of {DTYPES}, got {self.dtype!r}")
        if self.effective_batch_size < 1:
            raise ValueError(f"recipe {self.name!r}: `effective_batch_size` must be >= 1")

    @property
    def per_device_batch_size(self) -> int:
        return int(self.training.get("per_device_train_batch_size", 1))

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Steps that make `effective_batch_size` = per-device batch × processes × accumulation, exactly."""
        per_step = self.per_device_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ValueError(
                f"recipe {self.name!r}: effective batch {self.effective_batch_size} is not a multiple of "
                f"per-device batch {self.per_device_batch_size} × {world_size} process(es)"
            )
        return self.effective_batch_size // per_step


def list_recipes() -> list[str]:
    return sorted(path.stem for path in (preset_root("configuration") / "recipes").glob("*.yaml"))


def recipe_file(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, or the name of one in `configuration/recipes/`."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    bundled = preset_root("configuration") / "recipes" / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise ValueError(f"unknown recipe {str(name_or_path)!r}: not a file, and not one of {', '.join(list_recipes())}")


def merge_settings(base: dict, override: dict) -> dict:
    """`override` on top of `base`; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_recipe_settings(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> dict:
    """The recipe's settings with every `inherit:` resolved (a parent is looked up beside the child first)."""
    path = recipe_file(name_or_path).resolve()
    if path in seen:
        raise ValueError(f"recipe inheritance loops through {path}")
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: a recipe must be a mapping, got {type(settings).__name__}")
    parent = settings.pop("inherit", None)
    if parent is None:
        return settings
    sibling = path.parent / f"{parent}.yaml"
    base = read_recipe_settings(sibling if sibling.is_file() else parent, seen + (path,))
    return merge_settings(base, settings)


def _section(cls, settings: dict, key: str, recipe: str):
    values = settings.get(key) or {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"recipe {recipe!r}: unknown `{key}` field(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def load_recipe(name_or_path: str | Path) -> TrainingRecipe:
    """Read and check a recipe; unknown fields are errors, so a typo cannot be silently ignored."""
    name = Path(name_or_path).stem
    settings = read_recipe_settings(name_or_path)
    settings.pop("description", None)
    known = {f.name for f in dataclasses.fields(TrainingRecipe)} - {"name"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown field(s) {unknown}; known: {sorted(known)}")
    freeze_settings = settings.get("freeze") or {}
    if "ias" in freeze_settings:
        raise ValueError(f"recipe {name!r}: set `ias` at the top level of the recipe, not under `freeze`")
    ias = settings.get("ias", True)
    freeze = _section(FreezingPreset, {"freeze": {**freeze_settings, "ias": ias}}, "freeze", name)
    return TrainingRecipe(
        name=name,
        **{key: value for key, value in settings.items() if key not in ("freeze", "lora", "data")},
        freeze=freeze,
        lora=_section(LoraSettings, settings, "lora", name),
        data=_section(DataSettings, settings, "data", name),
    )


__all__ = [
    "FreezingPreset",
    "LoraSettings",
    "DataSettings",
    "TrainingRecipe",
    "TINY_MODEL",
    "list_recipes",
    "load_recipe",
    "recipe_file",
]
