"""Small, fully offline ASE-MLLM builds: a byte-level BPE tokenizer trained on the spot, and random models.

Used by the tests, the benches and the demo; nothing here downloads anything.
"""

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..configuration_ase_mllm import AseMllmConfig
from ..data.prompts import AESTHETIC_PROMPT, aspect_prompt
from ..image_processing_ase_mllm import AseMllmImageProcessor
from ..modeling_ase_mllm import AseMllmForConditionalGeneration, set_saliency_gates
from ..presets import load_model_preset
from ..processing_ase_mllm import AseMllmProcessor


# Their order fixes their ids (0..5), which `configuration/models/tiny.json` relies on.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]

# A few sentences of our own, so that a tokenizer trained on nothing else still splits English sensibly.
BASE_CORPUS = [
    AESTHETIC_PROMPT,
    aspect_prompt("composition"),
    "The composition is balanced and the subject sits on a third.",
    "The colors are warm and the lighting is soft, with gentle shadows.",
    "Focus is sharp on the eyes; the background blur separates the subject.",
    "The depth of field is shallow, which isolates the main subject nicely.",
    "Exposure is slightly too bright and the highlights are blown out.",
    "A strong leading line draws the eye into the frame.",
    "The horizon is tilted; straighten it and crop a little tighter.",
    "Great use of the camera: a fast shutter freezes the motion.",
    "My first impression is a calm and pleasing image.",
    "The subject of the photo is clear, but the frame feels cluttered.",
]


def build_tokenizer(corpus: Iterable[str] = (), vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (ids 0..5 = `SPECIAL_TOKENS`) on `BASE_CORPUS` + `corpus`.

    `<|im_end|>` is the end-of-sequence token and `<|endoftext|>` the padding token, as in InternVL2's
    InternLM2 chat models; generation pads on the left.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(BASE_CORPUS) + list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
    )


def build_processor(
    tokenizer: PreTrainedTokenizerFast | None = None, system_prompt: str = "", saliency_config=None,
    **image_processor_kwargs
) -> AseMllmProcessor:
    """An `AseMllmProcessor` around a tiny tokenizer (no system prompt by default, to keep sequences short), with the
    saliency settings of `saliency_config` (a model config's) when given."""
    image_processor = (AseMllmImageProcessor(**image_processor_kwargs) if saliency_config is None
                       else AseMllmImageProcessor.from_saliency_config(saliency_config, **image_processor_kwargs))
    return AseMllmProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
        system_prompt=system_prompt,
    )


def tiny_config(text_model_type: str = "llama", **overrides) -> AseMllmConfig:
    """The `tiny` preset; `text_model_type` swaps the LLM family (`llama`, `qwen2`, ...) at the same widths."""
    config = load_model_preset("tiny", **overrides)
    if text_model_type != config.text_config.model_type:
        text = config.text_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "dtype"):
            text.pop(key, None)
        config = load_model_preset("tiny", **{**overrides, "text_config": {**text, "model_type": text_model_type}})
    return config


# The CPU kernels of vLLM's attention (head sizes 32, 64, 80, ...), bitsandbytes and torchao (widths in multiples of
# 64) take LLM heads of this size; the tiny preset's are 16 (64 wide, 4 heads).
CPU_KERNEL_HEAD_DIM = 64


def tiny_vllm_config(**overrides) -> AseMllmConfig:
    """The `tiny` preset with LLM heads of `CPU_KERNEL_HEAD_DIM` (its width and head count unchanged), for vLLM's
    CPU attention."""
    return tiny_config(text_config={**tiny_config().text_config.to_dict(), "head_dim": CPU_KERNEL_HEAD_DIM}, **overrides)


# The tiny preset's language model at widths the CPU kernels of bitsandbytes and torchao accept (multiples of 64, head
# dimension 64), for quantised loads; the rest of the model is the preset's (it stays in floating point).
QUANTIZABLE_TEXT_WIDTHS = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
                           "num_key_value_heads": 1, "head_dim": CPU_KERNEL_HEAD_DIM}


def quantizable_tiny_config(**overrides) -> AseMllmConfig:
    """`tiny_config` whose language model has `QUANTIZABLE_TEXT_WIDTHS`."""
    text = {key: value for key, value in tiny_config().text_config.to_dict().items()
            if key not in ("architectures", "transformers_version", "dtype")}
    return tiny_config(**{**overrides, "text_config": {**text, **QUANTIZABLE_TEXT_WIDTHS}})


def build_tiny_model(config: AseMllmConfig | None = None, seed: int = 0, gate: float | None = None):
    """A randomly initialised model in fp32 eval mode; `gate` sets every saliency gate (default: config's)."""
    torch.manual_seed(seed)
    model = AseMllmForConditionalGeneration(config if config is not None else tiny_config())
    if gate is not None:
        set_saliency_gates(model, gate)
    return model.eval()
