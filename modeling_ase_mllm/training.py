"""Fine-tuning ASE-MLLM with `transformers.Trainer` or TRL's `SFTTrainer`, fully or with PEFT LoRA.

- :class:`AseMllmDataCollator`: TRL vision-format examples (`images` + `messages`) → a training batch whose labels
  are the assistant's answer tokens only (answer + `<|im_end|>`), for `transformers.Trainer`. TRL's `SFTTrainer`
  needs no collator: `assistant_only_loss=True` gives the same labels.
- :func:`apply_freezing`: the :class:`~modeling_ase_mllm.recipes.FreezingPreset` by parameter name (works on a
  plain model and on a PEFT-wrapped one).
- :func:`lora_config_for`: LoRA on the language model's projections only; IAS weights and projector in
  `modules_to_save`.
- :func:`train`: a recipe + data → a trained, saved model (`ase-mllm train`, `examples/train.py`).

Heavy optional dependencies (trl, peft, datasets) are imported where they are used, so `ase-mllm demo` does not
need the `train` extra.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .precompute import SALIENCY_COLUMN
from .recipes import TINY_MODEL, FreezingPreset, TrainingRecipe, load_recipe


# The IAS components (`modeling_ase_mllm.py`): one saliency MLP, and per IAS-ViT block the cross-attention, its two
# norms and its gate. Module names, so that PEFT's `modules_to_save` (which matches module-name suffixes) takes them.
IAS_MODULE_NAMES = (
    "saliency_embeddings",
    "saliency_query_norm",
    "saliency_key_value_norm",
    "saliency_cross_attention",
    "saliency_gate",
)
# Where the weight-carrying saliency model (EAT, `AseMllmModel.saliency_model`) lives; always frozen.
EAT_MODULE_NAMES = ("saliency_model",)
# LoRA targets: the language model's attention and MLP projections and nothing else (the ViT has `q_proj` too).
# `qkv_proj`/`gate_up_proj` cover the fused projections of Phi-3 (InternVL2-4B). PEFT full-matches a string.
LLM_LORA_TARGET_MODULES = (
    r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o|qkv)_proj|mlp\.(gate|up|down|gate_up)_proj)"
)

# Parameter name → part of the model; the first match wins, so EAT, LoRA weights and PEFT's frozen copies of
# `modules_to_save` modules are recognised before the parts they sit in, and IAS before the rest of the ViT.
PARAMETER_GROUPS = (
    ("eat", re.compile(r"(^|\.)(" + "|".join(EAT_MODULE_NAMES) + r")\.")),
    ("lora", re.compile(r"\.lora_")),
    ("peft_frozen", re.compile(r"\.original_module\.")),
    ("ias", re.compile(r"(^|\.)(" + "|".join(IAS_MODULE_NAMES) + r")\.")),
    ("vision", re.compile(r"(^|\.)vision_tower\.")),
    ("projector", re.compile(r"(^|\.)multi_modal_projector\.")),
    ("llm", re.compile(r"(^|\.)(language_model|lm_head)\.")),
)


# ------------------------------------------------------------------------------------------------ collator


def attach_images(messages: list[dict], images: list) -> list[dict]:
    """The conversation with the k-th `{"type": "image"}` entry holding `images[k]`, as `apply_chat_template` wants."""
    entries = sum(item.get("type") == "image" for message in messages if isinstance(message["content"], list)
                  for item in message["content"])
    if entries != len(images):
        raise ValueError(f"the conversation has {entries} image entries but the example has {len(images)} images")
    pending = iter(images)

    def fill(item: dict) -> dict:
        return {**item, "image": next(pending)} if item.get("type") == "image" else item

    return [
        {**message, "content": [fill(item) for item in message["content"]]}
        if isinstance(message["content"], list) else message
        for message in messages
    ]


def assistant_only_labels(
    input_ids: torch.Tensor, assistant_masks: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """`input_ids` where the chat template's `{% generation %}` mask is 1 (and not padding), -100 elsewhere."""
    keep = (assistant_masks == 1) & (attention_mask == 1)
    return input_ids.masked_fill(~keep, -100)


@dataclass
class AseMllmDataCollator:
    """Collate TRL vision-format examples for `transformers.Trainer`.

    Each example holds `images` (a list, one per `{"type": "image"}` entry, in order; or a single `image`) and
    `messages`. The processor's chat template renders and tokenises them, tiles the images and computes their
    saliency maps; labels are -100 everywhere except the assistant's answer and its `<|im_end|>`.

    Padding is on the right for training (the processor pads on the left by default, for generation): with a
    causal mask, right padding keeps every real token at the same position as in an unpadded sequence, and the
    model masks the padding's labels anyway. This matches TRL's `SFTTrainer`, so both trainers see identical
    batches.

    Args:
        processor ([`AseMllmProcessor`]): tokenizer + tiling/saliency image processor.
        padding_side (`str`, defaults to `"right"`).
    """

    processor: Any
    padding_side: str = "right"

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        conversations = [attach_images(example["messages"], example_images(example)) for example in examples]
        processor_kwargs = {"padding": True, "padding_side": self.padding_side}
        if all(example.get(SALIENCY_COLUMN) is not None for example in examples):
            # Precomputed EAT + LayerCAM maps (`precompute_saliency`): the model does not run EAT again.
            maps = [m for example in examples for m in example[SALIENCY_COLUMN]]
            processor_kwargs["image_saliency"] = maps
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs=processor_kwargs,
        )
        batch = dict(batch)
        assistant_masks = batch.pop("assistant_masks")
        batch["labels"] = assistant_only_labels(batch["input_ids"], assistant_masks, batch["attention_mask"])
        return batch


def example_images(example: dict) -> list:
    if example.get("images") is not None:
        return list(example["images"])
    return [example["image"]] if example.get("image") is not None else []


# ------------------------------------------------------------------------------------------------ freezing


def parameter_group(name: str) -> str:
    """The part of ASE-MLLM a parameter belongs to: `eat`, `ias`, `lora`, `peft_frozen`, `vision`, `projector`, `llm`.

    Works on plain names (`model.vision_tower...`) and PEFT-wrapped ones (`base_model.model.model...`); the copy
    that PEFT keeps of a `modules_to_save` module (`original_module`) is `peft_frozen`.
    """
    for group, pattern in PARAMETER_GROUPS:
        if pattern.search(name):
            return group
    raise ValueError(f"parameter {name!r} belongs to no known part of ASE-MLLM")


def is_trainable(name: str, preset: FreezingPreset) -> bool:
    group = parameter_group(name)
    return {
        "eat": False,
        "peft_frozen": False,
        "lora": preset.llm == "lora",
        "ias": preset.ias,
        "vision": preset.vision == "train",
        "projector": preset.projector == "train",
        "llm": preset.llm == "full",
    }[group]


def apply_freezing(model: torch.nn.Module, preset: FreezingPreset) -> list[str]:
    """Set `requires_grad` by `preset`; with `ias=False` also zero every saliency gate. Returns the trainable names.

    Call it on the model the trainer trains (after PEFT wrapping, before `train()`): PEFT's `modules_to_save`
    makes whole modules trainable, and this narrows them back to the preset.
    """
    if not preset.ias:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(".weight") and ".saliency_gate." in name:
                    parameter.zero_()
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, preset))
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


# ------------------------------------------------------------------------------------------------ LoRA


def lora_modules_to_save(preset: FreezingPreset) -> list[str]:
    """The modules trained in full next to LoRA: the IAS components (or the whole ViT) and the projector."""
    modules = ["vision_tower"] if preset.vision == "train" else list(IAS_MODULE_NAMES) if preset.ias else []
    if preset.projector == "train":
        modules.append("multi_modal_projector")
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

    Raises `ValueError` if the regex matches no module of `model` (an unexpected LLM family).
    """
    from peft import LoraConfig

    preset = preset or FreezingPreset(llm="lora")
    targets = [name for name, _ in model.named_modules() if re.fullmatch(LLM_LORA_TARGET_MODULES, name)]
    if not targets:
        raise ValueError(f"no module of {type(model).__name__} matches the LoRA target regex {LLM_LORA_TARGET_MODULES}")
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=LLM_LORA_TARGET_MODULES,
        modules_to_save=lora_modules_to_save(preset),
        task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------------------------------------ trainers


def world_size() -> int:
    """Processes of this run (`accelerate launch`/`torchrun` set `WORLD_SIZE`), without starting distributed state."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(recipe: TrainingRecipe, output_dir: str | Path, max_steps: int | None = None, **overrides):
    """`SFTConfig` (trainer `sft`) or `TrainingArguments` (trainer `hf`) from the recipe's `training` fields.

    Fixed here, not in recipes: the gradient accumulation that gives `effective_batch_size` on this many
    processes; SFT's `assistant_only_loss=True` and `max_length=None` (truncation would cut image tokens); the raw
    `images`/`messages` columns kept for the collator; CPU and no bf16 where there is no accelerator.
    """
    fields = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "disable_tqdm": False,
        **recipe.training,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps(world_size()),
        **overrides,
    }
    if max_steps is not None:
        fields["max_steps"] = max_steps
    if not torch.accelerator.is_available():
        fields.update(use_cpu=True, bf16=False, fp16=False)  # and the model in float32 (`load_model_and_processor`)
    if recipe.trainer == "sft":
        from trl import SFTConfig

        return SFTConfig(**fields, assistant_only_loss=True, max_length=None)
    from transformers import TrainingArguments

    return TrainingArguments(**fields, remove_unused_columns=False)


def build_trainer(recipe: TrainingRecipe, model, processor, train_dataset, args):
    """The recipe's trainer around `model`, with LoRA (if `llm: lora`) and the freezing preset applied."""
    peft_config = None
    if recipe.freeze.llm == "lora":
        peft_config = lora_config_for(
            model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout, preset=recipe.freeze
        )
    if recipe.trainer == "sft":
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train_dataset, processing_class=processor, peft_config=peft_config
        )
    else:
        from transformers import Trainer

        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=AseMllmDataCollator(processor),
            processing_class=processor,
        )
    apply_freezing(trainer.model, recipe.freeze)
    return trainer


def count_trainable(model: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters (elements) per part of the model, for the start-of-run summary."""
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            group = parameter_group(name)
            counts[group] = counts.get(group, 0) + parameter.numel()
    return counts


# ------------------------------------------------------------------------------------------------ data and model


def load_training_conversations(data: str, recipe: TrainingRecipe, data_root: str | None = None):
    """Training conversations from a dataset name (`pccd`, `mini_aic`, ... with `data_root`) or a saved dataset.

    A folder written by `save_to_disk` may hold a `DatasetDict` (the recipe's `data.train_split` is used) or a
    `Dataset`, in the AIC schema (converted with the recipe's `data` settings) or already as conversations
    (`images` + `messages`).
    """
    from datasets import DatasetDict, load_from_disk

    from .aic_datasets import load_aic_dataset
    from .conversations import to_conversations

    if Path(data).is_dir():
        dataset = load_from_disk(data)
    else:
        dataset = load_aic_dataset(data, data_root, splits=[recipe.data.train_split])
    if isinstance(dataset, DatasetDict):
        if recipe.data.train_split not in dataset:
            raise ValueError(f"{data}: no split {recipe.data.train_split!r} (has {list(dataset)})")
        dataset = dataset[recipe.data.train_split]
    if "messages" in dataset.column_names:
        return dataset
    settings = recipe.data
    return to_conversations(
        dataset, settings.conversations, settings.aspect_conditioned, seed=settings.seed, prompt=settings.prompt
    )


def assistant_texts(conversations) -> list[str]:
    return [
        item["text"]
        for messages in conversations["messages"]
        for message in messages
        if message["role"] == "assistant"
        for item in message["content"]
        if item.get("text")
    ]


def load_model_and_processor(model_path: str, recipe: TrainingRecipe, conversations=None):
    """The checkpoint and its processor, tiling at most `recipe.max_patches` tiles per image.

    The model is loaded in the recipe's `dtype` (float32 on CPU). `model_path == "tiny"` builds a random tiny
    ASE-MLLM whose tokenizer is trained on the training critiques (CPU demos and tests); the same data gives the
    same tokenizer and model in every process and on resume.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if model_path == TINY_MODEL:
        from .tiny import build_processor, build_tiny_model, build_tokenizer

        corpus = assistant_texts(conversations) if conversations is not None else []
        processor = build_processor(build_tokenizer(corpus))
        model = build_tiny_model(seed=0)
    else:
        from .convert import check_tokenizer_is_ours

        check_tokenizer_is_ours(model_path)
        processor = AutoProcessor.from_pretrained(model_path)
        # CPU runs train in float32 (bf16 is forced off there, see `training_arguments`).
        dtype = getattr(torch, recipe.dtype) if torch.accelerator.is_available() else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype)
    processor.image_processor.max_patches = recipe.max_patches
    return model.train(), processor


# ------------------------------------------------------------------------------------------------ entry point


def train(
    recipe: str | TrainingRecipe,
    data: str | None = None,
    model: str | None = None,
    data_root: str | None = None,
    output_dir: str | None = None,
    max_steps: int | None = None,
    resume: bool | str | None = None,
):
    """Fine-tune as `recipe` says and save the result (model or adapter, and processor) in `output_dir`.

    Args:
        recipe: a recipe name (`configuration/recipes/<name>.yaml`), a path, or a loaded recipe.
        data: dataset name or `save_to_disk` folder; defaults to the recipe's `dataset`.
        model: checkpoint path or Hub id; defaults to the recipe's `model`.
        data_root: the dataset's folder, for a dataset name.
        output_dir: defaults to `outputs/train/<recipe name>`.
        max_steps: stop after this many optimizer steps (overrides the recipe's epochs).
        resume: `True` continues from the last checkpoint in `output_dir`, a path from that checkpoint.

    Returns:
        The trainer, after training and saving.
    """
    recipe = recipe if isinstance(recipe, TrainingRecipe) else load_recipe(recipe)
    data = data or recipe.dataset
    model_path = model or recipe.model
    for value, what, option in ((data, "dataset", "--data"), (model_path, "model", "--model")):
        if value is None:
            raise ValueError(f"recipe {recipe.name!r} names no {what}: pass {option}")
    output_dir = output_dir or str(Path("outputs") / "train" / recipe.name)
    conversations = load_training_conversations(data, recipe, data_root)
    model, processor = load_model_and_processor(model_path, recipe, conversations)
    args = training_arguments(recipe, output_dir, max_steps)
    trainer = build_trainer(recipe, model, processor, conversations, args)
    check_sharding_engine(trainer)
    if trainer.is_world_process_zero():
        counts = ", ".join(f"{group} {count:,}" for group, count in sorted(count_trainable(trainer.model).items()))
        print(
            f"[train] recipe {recipe.name}: {len(conversations)} conversations, {args.world_size} process(es), "
            f"gradient accumulation {args.gradient_accumulation_steps}; trainable parameters: {counts}"
        )
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model(output_dir)
    trainer.save_state()  # trainer_state.json: the loss curve (log_history) next to the model
    if trainer.is_world_process_zero():
        print(f"[train] saved to {output_dir}")
    return trainer


def check_sharding_engine(trainer) -> None:
    """Refuse a launch that asked for FSDP or DeepSpeed and would silently get plain DDP.

    accelerate turns an FSDP launch into FSDP only from a multi-accelerator state (CUDA, XPU, NPU, HPU, ...): on
    the CPU, `accelerate launch --config_file fsdp.yaml` trains with DDP, every process holding the whole model.
    """
    for engine, flag, enabled in (("FSDP", "ACCELERATE_USE_FSDP", trainer.is_fsdp_enabled),
                                  ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", trainer.is_deepspeed_enabled)):
        if os.environ.get(flag, "false").lower() == "true" and not enabled:
            kind = str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1]
            raise ValueError(
                f"the launch asks for {engine}, but accelerate runs it only on accelerators (GPUs, XPUs, NPUs, HPUs "
                f"...); here it would train as {kind}, each process holding the whole model. On the CPU, launch "
                "with configuration/accelerate/ddp.yaml"
            )


def train_from_args(args):
    """:func:`train` with the arguments of `ase-mllm train` (parsed by `modeling_ase_mllm.cli`); returns the trainer."""
    return train(
        args.recipe,
        data=args.data,
        model=args.model,
        data_root=args.data_root,
        output_dir=getattr(args, "output_dir", None),
        max_steps=args.max_steps,
        resume=args.resume,
    )


def run_train_command(args) -> int:
    train_from_args(args)
    return 0


__all__ = [
    "AseMllmDataCollator",
    "IAS_MODULE_NAMES",
    "EAT_MODULE_NAMES",
    "LLM_LORA_TARGET_MODULES",
    "run_train_command",
    "apply_freezing",
    "build_trainer",
    "lora_config_for",
    "load_model_and_processor",
    "load_training_conversations",
    "parameter_group",
    "train",
    "train_from_args",
    "training_arguments",
]
