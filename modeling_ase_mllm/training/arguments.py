"""ASE-MLLM's own fine-tuning settings: the script arguments beside `trl.SFTConfig` (TRL's `ScriptArguments` role).

A recipe (`configuration/recipes/*.yaml`) and the command line set both, through `TrlParser` (`recipes.py`): every
field below and every `SFTConfig` field is a key of a recipe file and a flag of `ase-mllm train`.
"""

from dataclasses import dataclass, field
from typing import Literal

from ..data.prompts import AESTHETIC_PROMPT
from ..utils.quantization import QUANTIZATION_SCHEMES
from .freezing import FreezingPreset, LlmMode, ProjectorMode, VisionMode, check_choices


# The `model` value that builds a random tiny ASE-MLLM (CPU demos and tests; nothing to download).
TINY_MODEL = "tiny"


@dataclass
class AseMllmScriptArguments:
    """What to fine-tune on what, which parts train, and how the data becomes conversations.

    The `SFTConfig` fields (optimizer, schedule, batch per device, precision, logging, saving ...) come with it; a
    recipe names values for both kinds of fields, and `base_recipe` lets one recipe start from another's values.
    """

    _argument_group_name = "ASE-MLLM (recipe, data, model, which parts train)"

    recipe: str | None = field(default=None, metadata={
        "help": "recipe name (a YAML file of configuration/recipes: pccd, dpc2022, mini ...) or path; its values are "
                "the defaults of every flag below and of every SFTConfig flag"})
    base_recipe: str | None = field(default=None, metadata={
        "help": "(in a recipe file) the recipe whose values this one starts from, by name or path beside it"})
    model: str | None = field(default=None, metadata={
        "help": f"checkpoint folder or Hub id to fine-tune ('{TINY_MODEL}' = a random tiny model)"})
    base_model: str | None = field(default=None, metadata={
        "help": "the Hub id `model` was converted from (recorded, not loaded)"})
    dataset: str | None = field(default=None, metadata={
        "aliases": ["--data"],
        "help": "dataset name (pccd, rpcd, dpc2022, ava_captions or mini_aic) or a save_to_disk folder"})
    data_root: str | None = field(default=None, metadata={
        "aliases": ["--root"], "help": "the dataset's folder, for a dataset name"})
    protocol: str | None = field(default=None, metadata={
        "help": "which splits train and which score (docs/datasets.md, Protocols; none: the dataset's default, the "
                "paper-comparable one): dpc2022: aric (ARIC's comment-pair file) or release (train.csv); a folder "
                "from prepare-data must have been prepared under it"})
    train_split: str = field(default="train", metadata={"help": "the split to train on"})
    conversations: Literal["all", "sample"] = field(default="all", metadata={
        "help": "all: one example per (image, critique); sample: one critique per image, drawn with "
                "conversation_seed"})
    aspect_conditioned: bool = field(default=False, metadata={
        "help": "ask about each critique's aspect where the dataset labels aspects"})
    prompt: str = field(default=AESTHETIC_PROMPT, metadata={"help": "the question (default: the paper's)"})
    conversation_seed: int = field(default=0, metadata={"help": "seed of the critique drawn per image (sample)"})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={
        "help": "the weights' dtype on an accelerator (float32 on CPU); with `bf16: true`, float32 is mixed precision"})
    trainer: Literal["sft", "hf"] = field(default="sft", metadata={
        "help": "sft: TRL's SFTTrainer; hf: transformers.Trainer with AseMllmDataCollator"})
    ias: bool = field(default=True, metadata={
        "help": "train the IAS components; false is the Table II ablation (gates zeroed and frozen)"})
    vision: VisionMode = field(default="frozen", metadata={
        "help": "InternViT's own weights (the IAS weights follow --ias)"})
    projector: ProjectorMode = field(default="train", metadata={"help": "the MLP projector"})
    llm: LlmMode = field(default="full", metadata={
        "help": "the language model: every weight, none, or LoRA adapters on its projections"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (llm: lora)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (llm: lora)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (llm: lora)"})
    quantization: Literal[QUANTIZATION_SCHEMES] | None = field(default=None, metadata={
        "help": "QLoRA (with llm: lora): load the language model's linear layers quantised, 8bit or 4bit "
                "(bitsandbytes, NF4) or int8-weight-only (torchao); EAT, the ViT, the IAS modules and the projector "
                'stay in floating point. Needs pip install "ase-mllm[quant]"'})
    max_patches: int = field(default=12, metadata={"help": "at most this many 448 px tiles per image in training"})
    effective_batch_size: int | None = field(default=16, metadata={
        "help": "per-device batch × processes × gradient accumulation: sets gradient_accumulation_steps for the "
                "processes at launch (none: leave it as given)"})
    resume: str | None = field(default=None, metadata={
        "nargs": "?", "const": "last",
        "help": "continue from the newest complete checkpoint in output_dir (an interrupted save is skipped, and "
                "named), or from the checkpoint given"})
    overwrite: bool = field(default=False, metadata={
        "help": "start again in an output_dir that holds an earlier run: its checkpoints and trainer_state.json are "
                "deleted first (without it, or --resume, such a run stops before anything is written)"})
    bad_images: Literal["stop", "skip"] = field(default="stop", metadata={
        "help": "an image that does not decode, found before step 0 (every image is decoded once): stop, naming "
                "the example and the file, or skip its examples and count them"})
    long_critiques: Literal["truncate", "skip"] = field(default="truncate", metadata={
        "help": "an example longer than max_length tokens (default: the model's positions), found before step 0: "
                "cut its critique to fit, or skip it; either is counted"})

    def __post_init__(self):
        check_choices(self)
        if self.quantization is not None and self.quantization not in QUANTIZATION_SCHEMES:
            raise ValueError(f"`quantization` must be one of {', '.join(QUANTIZATION_SCHEMES)}, got {self.quantization!r}")
        if self.quantization is not None and self.llm != "lora":
            raise ValueError(f"`quantization: {self.quantization}` trains LoRA adapters on a frozen quantised language "
                             f"model: it needs `llm: lora`, got `llm: {self.llm}`")
        if self.effective_batch_size is not None and self.effective_batch_size < 1:
            raise ValueError(f"`effective_batch_size` must be >= 1, got {self.effective_batch_size}")

    @property
    def freezing(self) -> FreezingPreset:
        """Which parts of the model train."""
        return FreezingPreset(vision=self.vision, projector=self.projector, llm=self.llm, ias=self.ias)


__all__ = ["AseMllmScriptArguments", "TINY_MODEL"]
