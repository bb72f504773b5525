"""Which weights train: the freezing presets, the same with PEFT LoRA, and the trainable-parameter summary.

The parts are the model's own parameter groups (`modeling_ase_mllm.PARAMETER_GROUPS`: eat, ias, vision, projector,
llm); PEFT adds LoRA weights and keeps frozen copies of `modules_to_save` modules, recognised here first.
"""

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Literal

import torch

from ..modeling_ase_mllm import PARAMETER_GROUPS, parameter_group, set_saliency_gates


VisionMode = Literal["frozen", "train"]
ProjectorMode = Literal["train", "frozen"]
LlmMode = Literal["full", "frozen", "lora"]
# The IAS modules, by name: PEFT's `modules_to_save` matches module-name suffixes.
IAS_MODULE_NAMES = dict(PARAMETER_GROUPS)["ias"]
# LoRA targets: the language model's attention and MLP projections and nothing else (the ViT has `q_proj` too).
# `qkv_proj`/`gate_up_proj` cover the fused projections of Phi-3 (InternVL2-4B). PEFT full-matches a string.
LLM_LORA_TARGET_MODULES = (
    r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o|qkv)_proj|mlp\.(gate|up|down|gate_up)_proj)"
)


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

    vision: VisionMode = "frozen"
    projector: ProjectorMode = "train"
    llm: LlmMode = "full"
    ias: bool = True

    def __post_init__(self):
        check_choices(self)


def check_choices(settings) -> None:
    """Every `Literal` field of the dataclass `settings` holds one of its values, and every `bool` field a bool
    (a recipe's values reach the command-line parser as defaults, which argparse does not check)."""
    hints = typing.get_type_hints(type(settings))
    for spec in dataclasses.fields(settings):
        value, kind = getattr(settings, spec.name), hints[spec.name]
        if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
            raise ValueError(f"`{spec.name}` must be one of {', '.join(typing.get_args(kind))}, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"`{spec.name}` must be true or false, got {value!r}")


def training_part(name: str) -> str:
    """The part a parameter trains with: `lora` and `peft_frozen` (PEFT's frozen copy of a `modules_to_save` module)
    for PEFT's own, else the model's group (`eat`, `ias`, `vision`, `projector`, `llm`)."""
    if ".lora_" in name:
        return "lora"
    if ".original_module." in name:
        return "peft_frozen"
    group = parameter_group(name)
    if group is None:
        raise ValueError(f"parameter {name!r} belongs to no known part of ASE-MLLM")
    return group


def is_trainable(name: str, preset: FreezingPreset) -> bool:
    return {
        "eat": False,
        "peft_frozen": False,
        "lora": preset.llm == "lora",
        "ias": preset.ias,
        "vision": preset.vision == "train",
        "projector": preset.projector == "train",
        "llm": preset.llm == "full",
    }[training_part(name)]


def apply_freezing(model: torch.nn.Module, preset: FreezingPreset) -> list[str]:
    """Set `requires_grad` by `preset`; with `ias=False` also zero every saliency gate. Returns the trainable names.

    Call it on the model the trainer trains (after PEFT wrapping, before `train()`): PEFT's `modules_to_save`
    makes whole modules trainable, and this narrows them back to the preset.
    """
    if not preset.ias:
        set_saliency_gates(model, 0.0)
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, preset))
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


def count_trainable(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters (elements) per part of the model, for the start-of-run summary."""
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = training_part(name)
            counts[part] = counts.get(part, 0) + parameter.numel()
    return counts


def lora_modules_to_save(preset: FreezingPreset) -> list[str]:
    """The modules trained in full next to LoRA: the IAS components (or the whole ViT) and the projector."""
    modules = list(dict(PARAMETER_GROUPS)["vision"]) if preset.vision == "train" else list(IAS_MODULE_NAMES) if preset.ias else []
    if preset.projector == "train":
        modules += dict(PARAMETER_GROUPS)["projector"]
    return modules


def lora_config_for(
    model: torch.nn.Module,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    preset: FreezingPreset | None = None,
):
    """A `peft.LoraConfig` for ASE-MLLM: LoRA on the LLM's q/k/v/o and gate/up/down projections only.

    The IAS weights (unless `preset.ias` is false), the projector (unless frozen) and, with `preset.vision ==
    "train"`, the whole ViT are trained in full and saved with the adapter (`modules_to_save`).

    Raises `ValueError` if the regex matches no module of `model` (an unexpected LLM family), or one outside its LLM.
    """
    from peft import LoraConfig

    preset = preset or FreezingPreset(llm="lora")
    targets = [name for name, _ in model.named_modules() if re.fullmatch(LLM_LORA_TARGET_MODULES, name)]
    if not targets:
        raise ValueError(f"no module of {type(model).__name__} matches the LoRA target regex {LLM_LORA_TARGET_MODULES}")
    outside = [name for name in targets if parameter_group(name) != "llm"]
    if outside:
        raise ValueError(f"the LoRA target regex matches modules outside the language model: {outside[:3]}")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=LLM_LORA_TARGET_MODULES,
        modules_to_save=lora_modules_to_save(preset),
        task_type="CAUSAL_LM",
    )


__all__ = [
    "FreezingPreset",
    "IAS_MODULE_NAMES",
    "LLM_LORA_TARGET_MODULES",
    "apply_freezing",
    "count_trainable",
    "is_trainable",
    "lora_config_for",
    "lora_modules_to_save",
    "training_part",
]
