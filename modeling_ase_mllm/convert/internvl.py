"""Build an ASE-MLLM checkpoint from an InternVL2/2.5/3 checkpoint folder (and, optionally, the EAT `.pth`).

    ase-mllm convert OpenGVLab/InternVL2-8B-folder out/ase-mllm-8b --eat AVA_AOT_....safetensors

Two source formats are recognised from the folder's `config.json`:

- *OpenGVLab remote code* (`architectures: ["InternVLChatModel"]`, `vision_config` + `llm_config`): fused ViT
  `attn.qkv`, projector `mlp1.{0,1,3}`, and an InternLM2, Qwen2 or Llama LLM under `language_model.`; InternLM2's
  grouped `wqkv` is de-interleaved into Llama `q/k/v_proj` (its rows are laid out per KV head as
  `[q_1 … q_groups, k, v]`, each `head_dim` rows), and its other names are renamed to Llama's.
- *transformers' native InternVL* (`model_type: "internvl"`): the names already match ours.

The conversion streams (`shards.py`): each source shard is opened lazily (`safe_open`), every tensor is renamed or
split and appended to an output buffer that is written as a safetensors shard when it reaches `max_shard_size`, so at
most one source tensor and one output shard are in memory. The new IAS weights (zero gate, initialised with `seed`)
and the EAT weights are added last; their names are returned and written to `conversion.json`. Every floating tensor
is written in one dtype: the one the source's weights are stored in, unless `dtype` is given. The folder is written
by `checkpoint.write_checkpoint`: whole or not at all, an existing one replaced only with `overwrite`.

The tokenizer (with its special tokens) is carried over as a `tokenizers` tokenizer (`tokenizer.json`) of
transformers' own class (`tokenizer.py`), so the converted folder runs no tokenizer remote code. The prompt format
follows the source's OpenGVLab conversation template (`template` in its config: internlm2-chat, Hermes-2, phi3-chat
or internvl2_5), with `generation_config.json` stopping at its separator as InternVL's `chat()` does.

The LLM's legacy RoPE settings (`rope_scaling` with `type`, Phi-3's `"su"` and its top-level
`original_max_position_embeddings`) become transformers' current `rope_parameters`. A source whose pixel shuffle is
OpenGVLab's `ps_version: "v1"` (its default) is refused: v1 leaves every tile's feature map transposed, which our
model (and transformers' InternVL) do not reproduce. Without `--eat` the saliency source falls back to spectral
residual, with a warning.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from ..configuration_ase_mllm import AseMllmConfig
from ..image_processing_ase_mllm import AseMllmImageProcessor
from ..modeling_ase_mllm import AseMllmVisionModel, copy_remote_code, parameter_group
from ..processing_ase_mllm import (
    CONVERSATION_STYLES,
    IMAGE_CONTEXT_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_START_TOKEN,
    AseMllmProcessor,
    build_chat_template,
)
from .eat import converted_eat_weights
from .checkpoint import check_output, weights_dtype, write_checkpoint
from .shards import read_json, read_tensors, source_shards
from .tokenizer import check_same_encoding, check_sentencepiece_backends, load_source_tokenizer, native_tokenizer, probe_texts
from .twin import ase_config_from_internvl


DEFAULT_MAX_SHARD_SIZE = 5 * 2**30

# OpenGVLab InternViT / projector names -> transformers' InternVL names (a `{i}` is the block index).
VISION_RENAMES = (
    (r"^vision_model\.embeddings\.class_embedding$", "model.vision_tower.embeddings.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "model.vision_tower.embeddings.position_embeddings"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.attn\.proj\.", r"model.vision_tower.encoder.layer.\1.attention.projection_layer."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.attn\.(q_norm|k_norm)\.", r"model.vision_tower.encoder.layer.\1.attention.\2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls1$", r"model.vision_tower.encoder.layer.\1.lambda_1"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls2$", r"model.vision_tower.encoder.layer.\1.lambda_2"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm1\.", r"model.vision_tower.encoder.layer.\1.layernorm_before."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm2\.", r"model.vision_tower.encoder.layer.\1.layernorm_after."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"model.vision_tower.encoder.layer.\1.mlp."),
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
)
# InternLM2 -> Llama.
INTERNLM2_RENAMES = (
    (r"^language_model\.model\.tok_embeddings\.", "model.language_model.embed_tokens."),
    (r"^language_model\.output\.", "lm_head."),
    (r"^language_model\.model\.layers\.(\d+)\.attention\.wo\.", r"model.language_model.layers.\1.self_attn.o_proj."),
    (r"^language_model\.model\.layers\.(\d+)\.feed_forward\.w1\.", r"model.language_model.layers.\1.mlp.gate_proj."),
    (r"^language_model\.model\.layers\.(\d+)\.feed_forward\.w3\.", r"model.language_model.layers.\1.mlp.up_proj."),
    (r"^language_model\.model\.layers\.(\d+)\.feed_forward\.w2\.", r"model.language_model.layers.\1.mlp.down_proj."),
    (r"^language_model\.model\.layers\.(\d+)\.attention_norm\.", r"model.language_model.layers.\1.input_layernorm."),
    (r"^language_model\.model\.layers\.(\d+)\.ffn_norm\.", r"model.language_model.layers.\1.post_attention_layernorm."),
    (r"^language_model\.model\.norm\.", "model.language_model.norm."),
)
# Qwen2 / Llama LLMs keep their names under a new prefix; older transformers-InternVL folders used these prefixes.
GENERIC_RENAMES = (
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
)
FUSED_VIT_QKV = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
INTERNLM2_WQKV = re.compile(r"^language_model\.model\.layers\.(\d+)\.attention\.wqkv\.weight$")


def split_internlm2_wqkv(wqkv: torch.Tensor, num_heads: int, num_kv_heads: int) -> tuple[torch.Tensor, ...]:
    """InternLM2's fused `(heads + 2·kv_heads)·head_dim × hidden` weight -> Llama's q, k, v weights.

    The rows are grouped per KV head: `groups = heads / kv_heads` query heads, then that group's key, then its
    value. Query head `j` thus belongs to KV head `j // groups`, which is Llama's GQA convention.
    """
    groups = num_heads // num_kv_heads
    head_dim = wqkv.shape[0] // (num_heads + 2 * num_kv_heads)
    grouped = wqkv.reshape(num_kv_heads, groups + 2, head_dim, wqkv.shape[-1])
    q = grouped[:, :groups].reshape(num_heads * head_dim, -1)
    k = grouped[:, groups].reshape(num_kv_heads * head_dim, -1)
    v = grouped[:, groups + 1].reshape(num_kv_heads * head_dim, -1)
    return q.contiguous(), k.contiguous(), v.contiguous()


def rename(name: str, rules) -> str | None:
    for pattern, replacement in rules:
        if re.search(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def convert_opengvlab_tensor(name: str, tensor: torch.Tensor, text_config) -> Iterator[tuple[str, torch.Tensor]]:
    """One OpenGVLab tensor -> one or more tensors in our naming (nothing for unused buffers)."""
    if match := FUSED_VIT_QKV.match(name):
        layer, kind = match.groups()
        for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
            yield f"model.vision_tower.encoder.layer.{layer}.attention.{part}.{kind}", chunk.contiguous()
        return
    if match := INTERNLM2_WQKV.match(name):
        layer = match.group(1)
        q, k, v = split_internlm2_wqkv(tensor, text_config.num_attention_heads, text_config.num_key_value_heads)
        for part, weight in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            yield f"model.language_model.layers.{layer}.self_attn.{part}.weight", weight
        return
    target = rename(name, VISION_RENAMES) or rename(name, INTERNLM2_RENAMES) or rename(name, GENERIC_RENAMES)
    if target is None:
        if name.endswith("rotary_emb.inv_freq"):
            return  # recomputed from the config
        raise ValueError(f"tensor {name!r} has no ASE-MLLM counterpart; is this an InternVL2/2.5/3 checkpoint?")
    yield target, tensor


def convert_hf_tensor(name: str, tensor: torch.Tensor, text_config) -> Iterator[tuple[str, torch.Tensor]]:
    """transformers-InternVL names are ours (older folders get their prefixes moved)."""
    yield rename(name, GENERIC_RENAMES) or name, tensor


# ------------------------------------------------------------------------------------------------ configs


# RoPE types that transformers knows under another name (Phi-3's LongRoPE was first called "su").
LEGACY_ROPE_TYPES = {"su": "longrope"}


def rope_parameters(llm: dict) -> dict:
    """An LLM config's RoPE settings as transformers' current `rope_parameters`.

    Legacy configs keep them in `rope_scaling` (the kind under `type`) beside `rope_theta`; transformers 5 rejects
    Phi-3's `{"type": "su", ...}` because it renames "su" only after it has looked for the fields that LongRoPE
    needs. With the current name, transformers itself moves Phi-3's top-level `original_max_position_embeddings`
    in, as it does for every LongRoPE, YaRN and Llama-3 config.
    """
    rope = dict(llm.get("rope_parameters") or llm.get("rope_scaling") or {})
    rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
    rope.pop("type", None)
    rope["rope_type"] = LEGACY_ROPE_TYPES.get(rope_type, rope_type)
    if "rope_theta" in llm:
        rope.setdefault("rope_theta", float(llm["rope_theta"]))
    return rope


def internlm2_as_llama(llm: dict) -> dict:
    """InternLM2's config as a Llama config (same architecture under other names)."""
    text = {
        "model_type": "llama",
        "vocab_size": llm["vocab_size"],
        "hidden_size": llm["hidden_size"],
        "intermediate_size": llm["intermediate_size"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_attention_heads": llm["num_attention_heads"],
        "num_key_value_heads": llm.get("num_key_value_heads", llm["num_attention_heads"]),
        "hidden_act": llm.get("hidden_act", "silu"),
        "max_position_embeddings": llm.get("max_position_embeddings", 32768),
        "rms_norm_eps": llm.get("rms_norm_eps", 1e-6),
        "attention_bias": bool(llm.get("bias", False)),
        "tie_word_embeddings": bool(llm.get("tie_word_embeddings", False)),
        "bos_token_id": llm.get("bos_token_id"),
        "eos_token_id": llm.get("eos_token_id"),
        "pad_token_id": llm.get("pad_token_id"),
        # InternLM2's RoPE (plain, "linear" or "dynamic" NTK scaling) is Llama's.
        "rope_parameters": rope_parameters({"rope_theta": 10000.0, **llm}),
    }
    return text


def check_pixel_shuffle(source: dict, config_file: Path) -> None:
    """Only OpenGVLab's pixel shuffle "v2" is ours (and transformers' InternVL's); "v1", OpenGVLab's default when
    `ps_version` is absent, leaves each tile's feature grid transposed, so its image tokens would reach the LLM in
    another order and the converted model would compute something else."""
    version = source.get("ps_version")
    if version != "v2":
        given = f"ps_version {version!r}" if version is not None else "no ps_version (OpenGVLab's default is 'v1')"
        raise ValueError(
            f"{config_file}: {given}: only pixel shuffle 'v2' converts (every InternVL2, 2.5 and 3 release uses it); "
            "'v1' leaves every tile's feature map transposed, which ASE-MLLM, like transformers' InternVL, does not "
            "reproduce."
        )


def ase_config_from_opengvlab(source: dict, image_token_ids: dict[str, int]) -> AseMllmConfig:
    """Our config from an OpenGVLab `config.json` (dict) and the tokenizer's image-token ids."""
    vision, llm = source["vision_config"], source["llm_config"]
    architecture = (llm.get("architectures") or [""])[0]
    if architecture.startswith("InternLM2"):
        text = internlm2_as_llama(llm)
    else:
        dropped = ("architectures", "auto_map", "_name_or_path", "torch_dtype", "rope_scaling", "rope_theta")
        text = {k: v for k, v in llm.items() if k not in dropped} | {"rope_parameters": rope_parameters(llm)}
    vision_config = {
        "hidden_size": vision["hidden_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "intermediate_size": vision["intermediate_size"],
        "attention_bias": vision.get("qkv_bias", True),
        "use_qk_norm": vision.get("qk_normalization", False),
        "norm_type": vision.get("norm_type", "layer_norm"),
        "layer_norm_eps": vision.get("layer_norm_eps", 1e-6),
        "hidden_act": vision.get("hidden_act", "gelu"),
        "image_size": vision.get("image_size", 448),
        "patch_size": vision.get("patch_size", 14),
        "drop_path_rate": vision.get("drop_path_rate", 0.0),
    }
    patches = vision_config["image_size"] // vision_config["patch_size"]
    ratio = source.get("downsample_ratio", 0.5)
    return AseMllmConfig(
        vision_config=vision_config,
        text_config=text,
        downsample_ratio=ratio,
        projector_hidden_act="gelu",
        image_seq_length=int(patches * ratio) ** 2,
        vision_feature_layer=source.get("select_layer", -1),
        tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
        **image_token_ids,
    )



def conversation_style(template: str | None, source: Path) -> str:
    """The OpenGVLab conversation template the source was trained with (its config's `template`); transformers'
    InternVL folders (InternVL2.5/3) use `internvl2_5`."""
    if template is None:
        return "internvl2_5"
    if template not in CONVERSATION_STYLES:
        raise ValueError(
            f"{source / 'config.json'}: conversation template {template!r} is not supported "
            f"(known: {sorted(CONVERSATION_STYLES)})."
        )
    return template


def stop_token_ids(tokenizer, style: str, eos_token_id) -> list[int]:
    """Generation stops at the template's turn separator (as InternVL's `chat()` does) and at the LLM's EOS."""
    separator = CONVERSATION_STYLES[style][2].strip()
    ids = [tokenizer.convert_tokens_to_ids(separator)] if separator in tokenizer.get_vocab() else []
    eos = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
    return list(dict.fromkeys([*ids, *(e for e in eos if e is not None)]))


def new_ias_weights(
    config: AseMllmConfig, dtype: torch.dtype, vision_class=AseMllmVisionModel
) -> Iterator[tuple[str, torch.Tensor]]:
    """Initial IAS-ViT weights (zero gate) in `dtype`, one IAS module at a time.

    The vision tower (`vision_class`: InternViT's IAS-ViT, or Qwen-VL's) is built on the `meta` device, so none of
    the ViT's own weights is allocated (1.2 GB in float32 at InternViT-300M); each IAS module in turn is
    materialised on the CPU, initialised by the tower's own `_init_weights` (as a freshly built model initialises
    it), yielded in `dtype` and released.
    """
    prefix = "model.vision_tower."
    with torch.device("meta"):
        vision = vision_class(config.vision_config)
    for name, module in vision.named_modules():
        if parameter_group(f"{prefix}{name}") != "ias" or parameter_group(f"{prefix}{name.rpartition('.')[0]}") == "ias":
            continue  # not IAS, or inside an IAS module already handled
        module.to_empty(device="cpu")
        for submodule in module.modules():
            vision._init_weights(submodule)
        for key, tensor in module.state_dict(prefix=f"{prefix}{name}.").items():
            yield key, tensor.to(dtype)
        module.to_empty(device="meta")


def convert_internvl_checkpoint(
    source: str | Path,
    output: str | Path,
    eat: str | Path | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    dtype: torch.dtype | None = None,
    eat_config: dict | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Convert an InternVL checkpoint folder (OpenGVLab or transformers format) into an ASE-MLLM folder.

    Every floating tensor (converted, new IAS, EAT) is written in `dtype`, by default the one the source's weights
    are stored in (`checkpoint.weights_dtype`). `eat_config` overrides the EAT architecture (default: the released
    AVA DAT-Base); the EAT file is checked strictly against it, and the tokenizer against the source's, before
    anything is written. The new IAS weights are initialised with `seed`. `output` is written whole or not at all
    (`checkpoint.write_checkpoint`); a folder with something in it is replaced only with `overwrite`.

    Returns a summary (also `conversion.json`): the source format, the number of converted tensors, the new IAS and
    EAT weights, the dtype written and the source's, the seed.
    """
    from transformers import GenerationConfig, InternVLConfig

    source, output = Path(source), Path(output)
    check_output(output, source, overwrite)
    config_file = source / "config.json"
    raw = read_json(config_file)
    if "llm_config" in raw:
        check_pixel_shuffle(raw, config_file)
    elif raw.get("model_type") != "internvl":
        raise ValueError(f"{config_file}: neither an OpenGVLab InternVL (llm_config) nor a transformers InternVL config.")
    check_sentencepiece_backends(source)
    source_tokenizer = load_source_tokenizer(source)
    tokenizer, reference = native_tokenizer(source_tokenizer, source)
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN),
        "start_image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_START_TOKEN),
        "end_image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN),
    }
    if "llm_config" in raw:
        fmt, config, convert_tensor = "opengvlab", ase_config_from_opengvlab(raw, ids), convert_opengvlab_tensor
    else:
        fmt, config, convert_tensor = "transformers", ase_config_from_internvl(InternVLConfig.from_pretrained(source)), convert_hf_tensor
        ids = {k: v for k, v in ids.items() if k != "image_token_id"}
        for key, value in ids.items():
            setattr(config, key, value)
    if eat_config is not None:
        config.saliency_config.eat_config = type(config.saliency_config.eat_config)(**eat_config)
    if eat is None:
        warnings.warn("no EAT checkpoint given: the saliency source falls back to 'spectral_residual' (no weights).",
                      stacklevel=2)
        config.saliency_config.source = "spectral_residual"
    style = conversation_style(raw.get("template"), source)
    processor = AseMllmProcessor(
        image_processor=AseMllmImageProcessor(saliency_source=config.saliency_config.source), tokenizer=tokenizer,
        chat_template=build_chat_template(style), system_prompt=CONVERSATION_STYLES[style][3],
    )
    if reference is not None:
        check_same_encoding(reference, tokenizer, probe_texts(processor, tokenizer), source)
    shards = source_shards(source)
    dtype, source_dtype = weights_dtype(raw, shards, config_file, dtype)
    eat_weights = {} if eat is None else converted_eat_weights(config.saliency_config.eat_config, eat)
    stop_tokens = stop_token_ids(tokenizer, style, config.text_config.eos_token_id)

    def save(folder: Path) -> None:
        config.architectures = ["AseMllmForConditionalGeneration"]
        config.dtype = dtype
        config.save_pretrained(folder)
        copy_remote_code(folder)
        GenerationConfig(eos_token_id=stop_tokens, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
        processor.save_pretrained(folder)

    converted = (pair for shard in shards for name, tensor in read_tensors(shard)
                 for pair in convert_tensor(name, tensor, config.text_config))
    new = itertools.chain(new_ias_weights(config, dtype), eat_weights.items())
    summary = {"format": fmt, "saliency_source": config.saliency_config.source, "conversation_template": style,
               "eos_token_id": stop_tokens, "tokenizer": type(tokenizer).__name__, "source_dtype": source_dtype}
    return write_checkpoint(output, converted, new, source=source, dtype=dtype, seed=seed,
                            max_shard_size=max_shard_size, overwrite=overwrite, save=save, summary=summary)
