"""Small, fully offline builds of the Qwen-VL-Chat family: a tiktoken BPE trained on the spot (converted as
`ase-mllm convert` converts Qwen's), its processor and random models.

Used by the tests; nothing here downloads anything. Needs `tiktoken` (the `convert` extra), as converting does.
"""

import base64
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from ..configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig
from ..convert.qwen_vl import TIKTOKEN_FILE, qwen_tokenizer_from_tiktoken
from ..image_processing_ase_mllm_qwen_vl import AseMllmQwenVLImageProcessor
from ..modeling_ase_mllm import set_saliency_gates
from ..modeling_ase_mllm_qwen_vl import AseMllmQwenVLForConditionalGeneration
from ..presets import load_model_preset
from ..processing_ase_mllm_qwen_vl import AseMllmQwenVLProcessor
from .tiny import BASE_CORPUS


# Mergeable ranks of the tiny BPE: 256 bytes + 144 merges, so Qwen's special tokens start at id 400 and the image
# tokens `<img>`, `</img>`, `<imgpad>` are 614, 615, 616, as `configuration/models/tiny-qwen-vl.json` says.
TINY_RANKS = 400


def write_tiny_tiktoken(path: str | Path, corpus: Iterable[str] = (), num_ranks: int = TINY_RANKS) -> Path:
    """Train a byte-level BPE of `num_ranks` ranks with tiktoken's own trainer and Qwen's regex on `BASE_CORPUS` +
    `corpus`, and write it as a tiktoken file (`base64(token) rank` per line), the format of `qwen.tiktoken`."""
    from tiktoken._educational import bpe_train
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = bpe_train("\n".join([*BASE_CORPUS, *corpus]), num_ranks, PRETOKENIZE_REGEX, visualise=None)
    if len(ranks) != num_ranks:
        raise ValueError(f"the corpus allows only {len(ranks)} ranks, not {num_ranks}")
    path = Path(path)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_qwen_vl_tokenizer(corpus: Iterable[str] = ()):
    """A tiny Qwen-VL tokenizer: `write_tiny_tiktoken`, converted by `convert.qwen_vl.qwen_tokenizer_from_tiktoken`."""
    with tempfile.TemporaryDirectory() as folder:
        return qwen_tokenizer_from_tiktoken(write_tiny_tiktoken(Path(folder) / TIKTOKEN_FILE, corpus))


def build_qwen_vl_processor(tokenizer=None, system_prompt: str = "", saliency_config=None,
                            **image_processor_kwargs) -> AseMllmQwenVLProcessor:
    """An `AseMllmQwenVLProcessor` around the tiny tokenizer (no system prompt by default, to keep sequences short),
    with the saliency settings of `saliency_config` (a model config's) when given."""
    image_processor = (AseMllmQwenVLImageProcessor(**image_processor_kwargs) if saliency_config is None
                       else AseMllmQwenVLImageProcessor.from_saliency_config(saliency_config, **image_processor_kwargs))
    return AseMllmQwenVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else build_qwen_vl_tokenizer(),
        system_prompt=system_prompt,
    )


def tiny_qwen_vl_config(**overrides) -> AseMllmQwenVLConfig:
    """The `tiny-qwen-vl` preset with top-level `overrides`."""
    return load_model_preset("tiny-qwen-vl", **overrides)


def build_tiny_qwen_vl_model(config: AseMllmQwenVLConfig | None = None, seed: int = 0, gate: float | None = None):
    """A randomly initialised tiny model in fp32 eval mode; `gate` sets every saliency gate (default: config's)."""
    torch.manual_seed(seed)
    model = AseMllmQwenVLForConditionalGeneration(config if config is not None else tiny_qwen_vl_config())
    if gate is not None:
        set_saliency_gates(model, gate)
    return model.eval()


__all__ = [
    "TINY_RANKS",
    "build_qwen_vl_processor",
    "build_qwen_vl_tokenizer",
    "build_tiny_qwen_vl_model",
    "tiny_qwen_vl_config",
    "write_tiny_tiktoken",
]
