"""Build an ASE-MLLM folder from a Qwen-VL-Chat checkpoint folder (and, optionally, the EAT weights).

    ase-mllm convert path/to/Qwen-VL-Chat out/ase-mllm-qwen-vl-chat --eat AVA_AOT_....safetensors

The source is Qwen-VL-Chat's remote-code format (`config.json` with `model_type: "qwen"` and a `visual` section,
`qwen.tiktoken`, sharded safetensors or `.bin`). The conversion streams: each weight file is opened lazily
(safetensors: one memory map per tensor; `.bin`: `torch.load(weights_only=True, mmap=True)`), each tensor is
renamed or split and appended to an output shard (`shards.ShardWriter`), so about one source tensor and one output
shard are in memory; the folder is written whole or not at all (`checkpoint.write_checkpoint`). Names (Qwen-VL → ours):

- `transformer.visual.conv1` / `positional_embedding` / `ln_pre` → `model.vision_tower.embeddings.patch_embedding` /
  `.embeddings.position_embedding` / `.pre_layernorm`; per block `ln_1`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`,
  `attn.out_proj` → CLIP's `layer_norm1`, `layer_norm2`, `mlp.fc1`, `mlp.fc2`, `self_attn.out_proj`; the fused
  `attn.in_proj` is laid out per head as `[q_h, k_h, v_h]` and is split into `self_attn.{q,k,v}_proj`;
- `transformer.visual.attn_pool.*` (the Resampler), `ln_post` and `proj` → `model.multi_modal_projector.*`
  (`nn.MultiheadAttention`'s stacked `in_proj` split into q/k/v; `proj`, applied as `x @ proj`, transposed into a
  bias-free `Linear`);
- Qwen-7B → qwen2: `wte` → `embed_tokens`, `c_attn` (stacked q, k, v, with bias) split, `attn.c_proj` → `o_proj`,
  `mlp.w2` → `gate_proj` (the one under SiLU), `mlp.w1` → `up_proj`, `mlp.c_proj` → `down_proj`, `ln_1`/`ln_2`/`ln_f`
  → `input_layernorm`/`post_attention_layernorm`/`norm`.

The tokenizer, Qwen's tiktoken BPE, becomes a `tokenizers` tokenizer (`tokenizer.json`, transformers' own class;
no remote code, no tiktoken needed to use it) with transformers' tiktoken converter, Qwen2's pre-tokenizer regex
(the same as Qwen's), an NFC normalizer (Qwen normalises every text to NFC first) and Qwen's special tokens at
Qwen's ids. Before anything is written, it must encode a probe (the chat template rendered with image tokens,
every special token, whitespace, CJK, combining accents) exactly as Qwen's tokenizer encodes text (NFC, then
tiktoken with every special token allowed); reading `qwen.tiktoken` needs `tiktoken` (`pip install
"ase-mllm[convert]"`). `generation_config.json` stops where Qwen-VL-Chat's `chat()` stops: at its EOS
(`<|endoftext|>`) and at its ChatML stop words `<|im_end|>` and `<|im_start|>`; decoding is greedy unless asked.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig
from ..image_processing_ase_mllm_qwen_vl import AseMllmQwenVLImageProcessor
from ..modeling_ase_mllm import copy_remote_code
from ..modeling_ase_mllm_qwen_vl import AseMllmQwenVLVisionModel
from ..processing_ase_mllm_qwen_vl import (
    QWEN_VL_IMAGE_END_TOKEN,
    QWEN_VL_IMAGE_PAD_TOKEN,
    QWEN_VL_IMAGE_START_TOKEN,
    AseMllmQwenVLProcessor,
)
from .eat import converted_eat_weights
from .internvl import DEFAULT_MAX_SHARD_SIZE, new_ias_weights
from .checkpoint import check_output, weights_dtype, write_checkpoint
from .shards import read_json, read_tensors, weight_files
from .tokenizer import check_same_encoding, probe_texts


TIKTOKEN_FILE = "qwen.tiktoken"
# Qwen's special tokens, numbered in this order after the mergeable ranks (151643 of them in Qwen-VL-Chat, so
# `<|endoftext|>` is 151643, `<img>` 151857, `</img>` 151858, `<imgpad>` 151859).
QWEN_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    *(f"<|extra_{index}|>" for index in range(205)),
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<quad>",
    "</quad>",
    QWEN_VL_IMAGE_START_TOKEN,
    QWEN_VL_IMAGE_END_TOKEN,
    QWEN_VL_IMAGE_PAD_TOKEN,
)
# Where Qwen-VL-Chat's `chat()` stops besides its EOS (`<|endoftext|>`): the ChatML stop words.
CHATML_STOP_TOKENS = ("<|im_end|>", "<|im_start|>")
# Text beside `tokenizer.PROBE_TEXTS` that the carried-over tokenizer must encode as Qwen's: decomposed accents that
# NFC composes, Qwen-VL's grounding tags.
QWEN_PROBE_TEXTS = (
    "Cafe\u0301 cre\u0300me: A\u030a, n\u0303 ",
    "<ref>the dog</ref><box>(517,508),(589,611)</box> and <quad>(1,2),(3,4),(5,6),(7,8)</quad>",
)


# ------------------------------------------------------------------------------------------------ tokenizer


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """A tiktoken BPE file (`base64(token) rank` per line), checked to number its tokens 0..n-1."""
    try:
        from tiktoken.load import load_tiktoken_bpe
    except ImportError as error:
        raise ImportError(f'{path} is a tiktoken BPE file: reading it needs tiktoken (pip install "ase-mllm[convert]").') from error
    ranks = load_tiktoken_bpe(str(path))
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: the ranks are not 0..{len(ranks) - 1}, so the special tokens' ids would not be Qwen's")
    return ranks


def qwen_tokenizer_from_tiktoken(path: str | Path):
    """Qwen's tiktoken tokenizer as a `PreTrainedTokenizerFast` (ids: the ranks, then `QWEN_VL_SPECIAL_TOKENS`).

    transformers' `TikTokenConverter` builds the byte-level BPE (merges recovered from the ranks) with Qwen2's
    pre-tokenizer regex, which is Qwen's; Qwen's NFC normalisation becomes the normalizer. Special tokens are matched
    anywhere in the text, as Qwen's tokenizer allows them by default. `<|im_end|>` is the EOS and `<|endoftext|>`
    the padding, as in Qwen's chat models; padding is on the left.
    """
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = load_tiktoken_ranks(path)
    backend = TikTokenConverter(vocab_file=str(path), pattern=PRETOKENIZE_REGEX,
                                extra_special_tokens=QWEN_VL_SPECIAL_TOKENS).converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_VL_SPECIAL_TOKENS[1:]), padding_side="left", model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )
    moved = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_VL_SPECIAL_TOKENS
             if tokenizer.convert_tokens_to_ids(token) != len(ranks) + QWEN_VL_SPECIAL_TOKENS.index(token)}
    if moved:
        raise ValueError(f"{path}: the converted tokenizer gives these special tokens other ids than Qwen's: {moved}")
    return tokenizer


class QwenTiktokenEncoding:
    """How Qwen's own tokenizer encodes text: NFC, then tiktoken with Qwen's regex and every special token allowed.
    The reference the converted tokenizer is checked against; `encoding(text)["input_ids"]` as a tokenizer's call."""

    def __init__(self, path: str | Path):
        import tiktoken
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        ranks = load_tiktoken_ranks(path)
        specials = {token: len(ranks) + index for index, token in enumerate(QWEN_VL_SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding("qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens=specials)

    def __call__(self, text: str) -> dict[str, list[int]]:
        normalized = unicodedata.normalize("NFC", text)
        return {"input_ids": self.encoding.encode(normalized, allowed_special="all", disallowed_special=())}


def qwen_probe_texts(processor, tokenizer) -> list[str]:
    """`tokenizer.probe_texts` (chat template, every special token, whitespace and CJK) plus `QWEN_PROBE_TEXTS`."""
    return [*probe_texts(processor, tokenizer), *QWEN_PROBE_TEXTS]


def convert_qwen_tokenizer(tiktoken_file: str | Path, processor_kwargs: dict | None = None):
    """The processor of a Qwen-VL folder: its tokenizer converted, checked against Qwen's encoding on the probe.

    Returns an `AseMllmQwenVLProcessor`; raises `ValueError` naming the first probe text encoded differently.
    """
    tokenizer = qwen_tokenizer_from_tiktoken(tiktoken_file)
    processor_kwargs = {"image_processor": AseMllmQwenVLImageProcessor(), **(processor_kwargs or {})}
    processor = AseMllmQwenVLProcessor(tokenizer=tokenizer, **processor_kwargs)
    texts = qwen_probe_texts(processor, tokenizer)
    check_same_encoding(QwenTiktokenEncoding(tiktoken_file), tokenizer, texts, Path(tiktoken_file).parent)
    return processor


# ------------------------------------------------------------------------------------------------ config


def is_qwen_vl_folder(folder: str | Path) -> bool:
    """A Qwen-VL checkpoint folder in its remote-code format (`model_type: "qwen"` with a `visual` section)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    raw = read_json(config)
    return raw.get("model_type") == "qwen" and isinstance(raw.get("visual"), dict)


def check_qwen_vl_config(raw: dict, config_file: Path) -> None:
    """Refuse what qwen2 (or our ViT) would compute differently, naming the field."""
    problems = []
    if raw.get("quantization_config"):
        problems.append(f"it is quantized ({raw['quantization_config'].get('quant_method')}); convert the unquantized "
                        "Qwen-VL-Chat")
    if raw.get("rotary_pct", 1.0) != 1.0:
        problems.append(f"rotary_pct {raw['rotary_pct']} (qwen2 rotates the whole head)")
    if not raw.get("no_bias", True):
        problems.append("no_bias false (qwen2 has no MLP or output-projection bias)")
    if not raw.get("scale_attn_weights", True):
        problems.append("scale_attn_weights false (qwen2 scales attention by head_dim^-1/2)")
    if raw.get("kv_channels", 128) * raw["num_attention_heads"] != raw["hidden_size"]:
        problems.append(f"kv_channels × heads ≠ hidden_size ({raw.get('kv_channels')} × {raw['num_attention_heads']})")
    visual = raw["visual"]
    if visual["output_dim"] != raw["hidden_size"]:
        problems.append(f"visual.output_dim {visual['output_dim']} ≠ hidden_size {raw['hidden_size']}")
    if problems:
        raise ValueError(f"{config_file}: cannot convert: " + "; ".join(problems))


def ase_config_from_qwen_vl(raw: dict, token_ids: dict[str, int], generation: dict | None = None) -> AseMllmQwenVLConfig:
    """Our config from Qwen-VL's `config.json` (dict), the tokenizer's image-token ids and its generation config.

    Qwen's fixed choices that its config does not hold: 256 Resampler queries and a 16 × 16 ViT position table
    (`visual.py`), `output_dim // 128` Resampler heads, LayerNorm eps 1e-6 and exact GELU in the ViT.
    """
    generation = generation or {}
    visual = raw["visual"]
    eos = generation.get("eos_token_id", raw.get("eos_token_id"))
    text = {
        "model_type": "qwen2",
        "vocab_size": raw["vocab_size"],
        "hidden_size": raw["hidden_size"],
        # Qwen's MLP is two projections of `intermediate_size // 2` each (w1, w2).
        "intermediate_size": raw["intermediate_size"] // 2,
        "num_hidden_layers": raw["num_hidden_layers"],
        "num_attention_heads": raw["num_attention_heads"],
        "num_key_value_heads": raw["num_attention_heads"],
        "max_position_embeddings": raw.get("max_position_embeddings", 8192),
        "rms_norm_eps": raw.get("layer_norm_epsilon", 1e-6),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(raw.get("rotary_emb_base", 10000))},
        "attention_dropout": raw.get("attn_dropout_prob", 0.0),
        "use_sliding_window": False,
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
        "bos_token_id": None,
        "eos_token_id": eos,
        "pad_token_id": generation.get("pad_token_id", eos),
    }
    vision = {
        "hidden_size": visual["width"],
        "num_hidden_layers": visual["layers"],
        "num_attention_heads": visual["heads"],
        "intermediate_size": int(visual["width"] * visual["mlp_ratio"]),
        "image_size": visual["image_size"],
        "patch_size": visual["patch_size"],
    }
    resampler = {"hidden_size": visual["output_dim"], "num_attention_heads": visual["output_dim"] // 128}
    return AseMllmQwenVLConfig(
        vision_config=vision, resampler_config=resampler, text_config=text, seq_length=raw.get("seq_length", 2048),
        tie_word_embeddings=text["tie_word_embeddings"], **token_ids,
    )


# ------------------------------------------------------------------------------------------------ tensors


RENAMES = (
    (r"^transformer\.wte\.", "model.language_model.embed_tokens."),
    (r"^transformer\.ln_f\.", "model.language_model.norm."),
    (r"^lm_head\.", "lm_head."),
    (r"^transformer\.h\.(\d+)\.ln_1\.", r"model.language_model.layers.\1.input_layernorm."),
    (r"^transformer\.h\.(\d+)\.ln_2\.", r"model.language_model.layers.\1.post_attention_layernorm."),
    (r"^transformer\.h\.(\d+)\.attn\.c_proj\.", r"model.language_model.layers.\1.self_attn.o_proj."),
    (r"^transformer\.h\.(\d+)\.mlp\.w1\.", r"model.language_model.layers.\1.mlp.up_proj."),
    (r"^transformer\.h\.(\d+)\.mlp\.w2\.", r"model.language_model.layers.\1.mlp.gate_proj."),
    (r"^transformer\.h\.(\d+)\.mlp\.c_proj\.", r"model.language_model.layers.\1.mlp.down_proj."),
    (r"^transformer\.visual\.conv1\.", "model.vision_tower.embeddings.patch_embedding."),
    (r"^transformer\.visual\.positional_embedding$", "model.vision_tower.embeddings.position_embedding"),
    (r"^transformer\.visual\.ln_pre\.", "model.vision_tower.pre_layernorm."),
    (r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.ln_1\.", r"model.vision_tower.encoder.layers.\1.layer_norm1."),
    (r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.ln_2\.", r"model.vision_tower.encoder.layers.\1.layer_norm2."),
    (r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"model.vision_tower.encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"model.vision_tower.encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"model.vision_tower.encoder.layers.\1.mlp.fc2."),
    (r"^transformer\.visual\.attn_pool\.query$", "model.multi_modal_projector.query"),
    (r"^transformer\.visual\.attn_pool\.pos_embed$", "model.multi_modal_projector.position_embedding"),
    (r"^transformer\.visual\.attn_pool\.kv_proj\.", "model.multi_modal_projector.kv_proj."),
    (r"^transformer\.visual\.attn_pool\.ln_q\.", "model.multi_modal_projector.layer_norm_q."),
    (r"^transformer\.visual\.attn_pool\.ln_kv\.", "model.multi_modal_projector.layer_norm_kv."),
    (r"^transformer\.visual\.attn_pool\.attn\.out_proj\.", "model.multi_modal_projector.attention.projection_layer."),
    (r"^transformer\.visual\.ln_post\.", "model.multi_modal_projector.layer_norm_post."),
)
LLM_C_ATTN = re.compile(r"^transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)$")
VIT_IN_PROJ = re.compile(r"^transformer\.visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj\.(weight|bias)$")
RESAMPLER_IN_PROJ = re.compile(r"^transformer\.visual\.attn_pool\.attn\.in_proj_(weight|bias)$")
VISUAL_PROJ = "transformer.visual.proj"


def split_per_head_qkv(tensor: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Qwen-VL's ViT `in_proj` (`3·width` rows, or a bias) → q, k, v.

    Its rows are laid out per head, `[q_h, k_h, v_h]` with `head_dim` rows each (its attention views the output as
    `(heads, 3·head_dim)` and splits the last axis), not as three stacked blocks.
    """
    per_head = tensor.reshape(num_heads, 3, tensor.shape[0] // (3 * num_heads), *tensor.shape[1:])
    return tuple(per_head[:, part].reshape(-1, *tensor.shape[1:]).contiguous() for part in range(3))


def convert_qwen_vl_tensor(name: str, tensor: torch.Tensor, config: AseMllmQwenVLConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """One Qwen-VL tensor → one or more tensors in our naming."""
    parts = ("q_proj", "k_proj", "v_proj")
    if match := LLM_C_ATTN.match(name):
        layer, kind = match.groups()
        for part, chunk in zip(parts, tensor.chunk(3, dim=0)):
            yield f"model.language_model.layers.{layer}.self_attn.{part}.{kind}", chunk.contiguous()
        return
    if match := VIT_IN_PROJ.match(name):
        layer, kind = match.groups()
        for part, chunk in zip(parts, split_per_head_qkv(tensor, config.vision_config.num_attention_heads)):
            yield f"model.vision_tower.encoder.layers.{layer}.self_attn.{part}.{kind}", chunk
        return
    if match := RESAMPLER_IN_PROJ.match(name):
        for part, chunk in zip(parts, tensor.chunk(3, dim=0)):
            yield f"model.multi_modal_projector.attention.{part}.{match.group(1)}", chunk.contiguous()
        return
    if name == VISUAL_PROJ:
        yield "model.multi_modal_projector.proj.weight", tensor.t().contiguous()
        return
    for pattern, replacement in RENAMES:
        if re.search(pattern, name):
            yield re.sub(pattern, replacement, name), tensor
            return
    raise ValueError(f"tensor {name!r} has no ASE-MLLM counterpart; is this a Qwen-VL(-Chat) checkpoint?")


def generation_stop_ids(tokenizer, generation: dict) -> list[int]:
    """Qwen-VL-Chat's stops: its EOS (`<|endoftext|>`) and, for its `chatml` format, `<|im_end|>` and `<|im_start|>`."""
    eos = generation.get("eos_token_id", tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    stops = eos if isinstance(eos, list) else [eos]
    if generation.get("chat_format", "chatml") == "chatml":
        stops += [tokenizer.convert_tokens_to_ids(token) for token in CHATML_STOP_TOKENS]
    return list(dict.fromkeys(stops))


# ------------------------------------------------------------------------------------------------ conversion


def convert_qwen_vl_checkpoint(
    source: str | Path,
    output: str | Path,
    eat: str | Path | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    dtype: torch.dtype | None = None,
    eat_config: dict | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Convert a Qwen-VL-Chat folder (remote-code format) into an ASE-MLLM folder of the Qwen-VL family.

    Every floating tensor (converted, new IAS, EAT) is written in `dtype`, by default the one the source's weights
    are stored in (`checkpoint.weights_dtype`). The config, the tokenizer (against Qwen's encoding) and the EAT file
    are checked before anything is written; the new IAS weights are initialised with `seed`; `output` is written
    whole or not at all, an existing folder replaced only with `overwrite` (`checkpoint.write_checkpoint`). Returns a
    summary, also written to `conversion.json`.
    """
    from transformers import GenerationConfig

    source, output = Path(source), Path(output)
    check_output(output, source, overwrite)
    config_file = source / "config.json"
    raw = read_json(config_file)
    if not is_qwen_vl_folder(source):
        raise ValueError(f"{config_file}: not a Qwen-VL checkpoint (model_type 'qwen' with a 'visual' section)")
    check_qwen_vl_config(raw, config_file)
    tiktoken_file = source / TIKTOKEN_FILE
    if not tiktoken_file.is_file():
        raise FileNotFoundError(f"{source} has no {TIKTOKEN_FILE}: Qwen-VL's tokenizer is needed to convert it")
    generation_file = source / "generation_config.json"
    generation = read_json(generation_file) if generation_file.is_file() else {}
    if eat is None:
        warnings.warn("no EAT checkpoint given: the saliency source falls back to 'spectral_residual' (no weights).",
                      stacklevel=2)
    source_name = "eat_layercam" if eat is not None else "spectral_residual"
    processor = convert_qwen_tokenizer(
        tiktoken_file, {"image_processor": AseMllmQwenVLImageProcessor(saliency_source=source_name)}
    )
    tokenizer = processor.tokenizer
    token_ids = {"image_token_id": processor.image_token_id, "start_image_token_id": processor.start_image_token_id,
                 "end_image_token_id": processor.end_image_token_id}
    if raw["visual"].get("image_start_id", token_ids["start_image_token_id"]) != token_ids["start_image_token_id"]:
        raise ValueError(f"{config_file}: visual.image_start_id {raw['visual']['image_start_id']} is not the tokenizer's "
                         f"<img> ({token_ids['start_image_token_id']})")
    config = ase_config_from_qwen_vl(raw, token_ids, generation)
    config.saliency_config.source = source_name
    if eat_config is not None:
        config.saliency_config.eat_config = type(config.saliency_config.eat_config)(**eat_config)
    files = weight_files(source)
    dtype, source_dtype = weights_dtype(raw, files, config_file, dtype)
    eat_weights = {} if eat is None else converted_eat_weights(config.saliency_config.eat_config, eat)
    stops = generation_stop_ids(tokenizer, generation)

    def save(folder: Path) -> None:
        config.architectures = ["AseMllmQwenVLForConditionalGeneration"]
        config.dtype = dtype
        config.save_pretrained(folder)
        copy_remote_code(folder)
        GenerationConfig(eos_token_id=stops, pad_token_id=config.text_config.pad_token_id).save_pretrained(folder)
        processor.save_pretrained(folder)

    converted = (pair for path in files for name, tensor in read_tensors(path)
                 for pair in convert_qwen_vl_tensor(name, tensor, config))
    new = itertools.chain(new_ias_weights(config, dtype, vision_class=AseMllmQwenVLVisionModel), eat_weights.items())
    summary = {"format": "qwen-vl", "saliency_source": source_name, "eos_token_id": stops,
               "tokenizer": type(tokenizer).__name__, "source_dtype": source_dtype}
    return write_checkpoint(output, converted, new, source=source, dtype=dtype, seed=seed,
                            max_shard_size=max_shard_size, overwrite=overwrite, save=save, summary=summary)


__all__ = [
    "QWEN_VL_SPECIAL_TOKENS",
    "QwenTiktokenEncoding",
    "ase_config_from_qwen_vl",
    "convert_qwen_tokenizer",
    "convert_qwen_vl_checkpoint",
    "convert_qwen_vl_tensor",
    "is_qwen_vl_folder",
    "qwen_tokenizer_from_tiktoken",
    "split_per_head_qkv",
]
