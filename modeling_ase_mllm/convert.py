"""Build an ASE-MLLM checkpoint from an InternVL2/2.5/3 checkpoint folder (and, optionally, the EAT `.pth`).

    ase-mllm convert OpenGVLab/InternVL2-8B-folder out/ase-mllm-8b --eat AVA_AOT_....safetensors

Two source formats are recognised from the folder's `config.json`:

- *OpenGVLab remote code* (`architectures: ["InternVLChatModel"]`, `vision_config` + `llm_config`): fused ViT
  `attn.qkv`, projector `mlp1.{0,1,3}`, and an InternLM2, Qwen2 or Llama LLM under `language_model.`; InternLM2's
  grouped `wqkv` is de-interleaved into Llama `q/k/v_proj` (its rows are laid out per KV head as
  `[q_1 … q_groups, k, v]`, each `head_dim` rows), and its other names are renamed to Llama's.
- *transformers' native InternVL* (`model_type: "internvl"`): the names already match ours.

The conversion streams: each source shard is opened lazily (`safe_open`), every tensor is renamed or split and
appended to an output buffer that is written as a safetensors shard when it reaches `max_shard_size`, so at most
one source tensor and one output shard are in memory. The new IAS weights (zero gate) and the EAT weights are
added last; their names are returned and written to `conversion.json`. Every floating tensor is written in one dtype:
the source's (its config's `torch_dtype`, else its first floating tensor's) unless `dtype` is given.

The tokenizer (with its special tokens) is carried over as a `tokenizers` tokenizer (`tokenizer.json`) of
transformers' own class, so the converted folder runs no tokenizer remote code. InternLM2's tokenizer (InternVL2-2B,
8B, 26B) is remote code over a SentencePiece BPE model; it is rebuilt from its `tokenizer.model` with transformers'
SentencePiece extractor, and the rebuilt tokenizer must encode a probe text (the chat template rendered, every added
token, whitespace and Unicode edge cases) exactly as the source's does, or the conversion stops. Reading a
`tokenizer.model` needs `sentencepiece` and `protobuf` (`pip install "ase-mllm[convert]"`). The prompt format
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
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration_ase_mllm import AseMllmConfig
from .eat_ase_mllm import EatModel
from .eat_checkpoint import load_eat_weights
from .image_processing_ase_mllm import AseMllmImageProcessor
from .internvl_compat import ase_config_from_internvl, is_ias_key
from .modeling_ase_mllm import AseMllmVisionModel, copy_remote_code
from .processing_ase_mllm import (
    CONVERSATION_STYLES,
    IMAGE_CONTEXT_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_PLACEHOLDER,
    IMAGE_START_TOKEN,
    AseMllmProcessor,
    build_chat_template,
)


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


# ------------------------------------------------------------------------------------------------ tokenizer

# Text the carried-over tokenizer must encode exactly as the source's, beside the chat template and every added
# token: runs of spaces, leading and trailing blanks, tabs and newlines, digits, CJK, full-width letters, emoji.
PROBE_TEXTS = (
    " A photo,  two spaces;   three.\n\n\tTabbed 2024-06-01 ",
    "全角ＡＢＣ与中文标点：构图、光线。 🙂📷\n",
)


def check_sentencepiece_backends(source: Path) -> None:
    """A `tokenizer.model` is read with sentencepiece and protobuf: name what is missing before transformers tries
    (it would report a missing `tiktoken` instead)."""
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    model = source / "tokenizer.model"
    available = {"sentencepiece": is_sentencepiece_available(), "protobuf": is_protobuf_available()}
    missing = [name for name, found in available.items() if not found]
    if model.is_file() and missing:
        raise ImportError(
            f"{model} is a SentencePiece model: reading it needs {' and '.join(missing)} "
            '(pip install "ase-mllm[convert]").'
        )


def sentencepiece_bpe(model_file: str):
    """A SentencePiece BPE model as a `tokenizers` tokenizer that encodes as sentencepiece does.

    transformers' SentencePiece extractor reads the vocabulary, merges and user-defined pieces, and its builder makes
    the byte-fallback BPE with sentencepiece's normalization. sentencepiece's dummy prefix (a `▁` before every text
    it encodes, so before every stretch of text between two added tokens) becomes a normalizer, which `tokenizers`
    too applies stretch by stretch; the decoder drops it again.
    """
    from tokenizers import decoders, normalizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    extractor = SentencePieceExtractor(model_file)
    if extractor.proto.trainer_spec.model_type != 2:  # sentencepiece's ModelType.BPE
        raise ValueError(f"{model_file}: only SentencePiece BPE models can be rebuilt (InternLM2's is one)")
    pieces = extractor.extract(BPE)
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(extractor.proto, pieces["vocab"], pieces["merges"])
    tokenizer.add_tokens(pieces["additional_special_tokens"])
    if extractor.proto.normalizer_spec.add_dummy_prefix:
        tokenizer.normalizer = normalizers.Sequence([tokenizer.normalizer, normalizers.Prepend("▁")])
        tokenizer.decoder = decoders.Sequence([tokenizer.decoder, decoders.Strip(" ", 1, 0)])
    return tokenizer


def native_tokenizer(tokenizer, source: Path):
    """The source's tokenizer if it is one of transformers' own, else the same tokenizer as a `tokenizers` one
    (saved as `tokenizer.json`), with the same added tokens at the same ids and the same special tokens."""
    from transformers import PreTrainedTokenizerFast

    if type(tokenizer).__module__.startswith("transformers."):
        return tokenizer
    if tokenizer.is_fast:
        backend = tokenizer.backend_tokenizer
    elif str(getattr(tokenizer, "vocab_file", "")).endswith(".model"):
        backend = sentencepiece_bpe(tokenizer.vocab_file)
    else:
        raise ValueError(
            f"{source}: its tokenizer {type(tokenizer).__name__} is remote code with neither a `tokenizers` backend "
            "nor a SentencePiece model, so it cannot be carried over without its code."
        )
    native = PreTrainedTokenizerFast(
        tokenizer_object=backend, added_tokens_decoder=tokenizer.added_tokens_decoder, **tokenizer.special_tokens_map,
        extra_special_tokens=tokenizer.extra_special_tokens, add_bos_token=getattr(tokenizer, "add_bos_token", False),
        add_eos_token=getattr(tokenizer, "add_eos_token", False), padding_side=tokenizer.padding_side,
        model_max_length=tokenizer.model_max_length,
        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
    )
    moved = {token.content: index for index, token in tokenizer.added_tokens_decoder.items()
             if native.convert_tokens_to_ids(token.content) != index}
    if moved:
        raise ValueError(f"{source}: the rebuilt tokenizer gives these added tokens other ids: {moved}")
    return native


def remote_tokenizer(folder: str | Path):
    """The folder's remote-code tokenizer classes (`auto_map` of its `tokenizer_config.json`: a slow, fast pair),
    or None when its tokenizer is one of transformers' own."""
    config = Path(folder) / "tokenizer_config.json"
    return json.loads(config.read_text()).get("auto_map", {}).get("AutoTokenizer") if config.is_file() else None


def load_source_tokenizer(source: Path):
    """The source's tokenizer; a remote-code one as its slow class (the reference the rebuild is checked against).

    transformers 5's `AutoTokenizer` always takes the fast class of a remote [slow, fast] pair, and InternLM2's
    remote fast class, built by transformers 5, does not encode as sentencepiece does.
    """
    from transformers import AutoTokenizer
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote = remote_tokenizer(source)
    if isinstance(remote, (list, tuple)) and remote[0]:
        return get_class_from_dynamic_module(remote[0], str(source)).from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=True)


def check_tokenizer_is_ours(folder: str | Path) -> None:
    """A model folder whose tokenizer is remote code (converted before tokenizers were carried over as
    `tokenizer.json`) is named, with the fix, instead of failing deep in transformers for want of
    `trust_remote_code`."""
    if remote := remote_tokenizer(folder):
        raise ValueError(
            f"{Path(folder) / 'tokenizer_config.json'}: the tokenizer is remote code ({remote}); convert the InternVL "
            "source again with `ase-mllm convert`, which writes it as a tokenizer.json that needs no code."
        )


def check_same_encoding(source_tokenizer, tokenizer, texts, source: Path) -> None:
    """Every text encodes to the same ids with both tokenizers, or the conversion stops, naming the first that does
    not and where the two part."""
    for text in texts:
        expected, got = source_tokenizer(text)["input_ids"], tokenizer(text)["input_ids"]
        if expected != got:
            at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
            raise ValueError(
                f"{source}: the tokenizer rebuilt from {type(source_tokenizer).__name__} encodes {text[:80]!r} "
                f"differently from it (from token {at}: {expected[at:at + 5]} expected, {got[at:at + 5]} given); "
                "nothing was converted."
            )


def probe_texts(processor, tokenizer) -> list[str]:
    """The chat template rendered (system message, an image, a reply, a second turn) with the image tokens in
    place, every added token between words and on its own, and `PROBE_TEXTS`."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": " The light is warm,  and soft."}]},
        {"role": "user", "content": [{"type": "text", "text": "And the composition?\n"}]},
    ]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = processor.start_image_token + processor.context_image_token * 3 + processor.end_image_token
    added = sorted(tokenizer.get_added_vocab())
    between_words = [f"a{token}b {token} {token}\n" for token in added]
    return [chat.replace(IMAGE_PLACEHOLDER, image), *between_words, "".join(added), *PROBE_TEXTS]


# ------------------------------------------------------------------------------------------------ streaming


def source_shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{folder} has no model.safetensors(.index.json); convert .bin checkpoints to safetensors first.")


class ShardWriter:
    """Collects tensors and writes `model-0000k.safetensors` shards of at most `max_shard_size` bytes."""

    def __init__(self, folder: Path, max_shard_size: int):
        self.folder, self.max_shard_size = folder, max_shard_size
        self.buffer: dict[str, torch.Tensor] = {}
        self.size = 0
        self.files: list[tuple[str, list[str]]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.buffer or any(name in names for _, names in self.files):
            raise ValueError(f"tensor {name!r} produced twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self.buffer and self.size + nbytes > self.max_shard_size:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.size += nbytes

    def flush(self) -> None:
        if not self.buffer:
            return
        name = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.buffer, str(self.folder / name), metadata={"format": "pt"})
        self.files.append((name, list(self.buffer)))
        self.buffer, self.size = {}, 0

    def finish(self) -> None:
        self.flush()
        total = len(self.files)
        weight_map, final = {}, []
        for index, (name, names) in enumerate(self.files, start=1):
            target = f"model-{index:05d}-of-{total:05d}.safetensors"
            (self.folder / name).rename(self.folder / target)
            weight_map.update({key: target for key in names})
            final.append(target)
        total_size = sum((self.folder / f).stat().st_size for f in final)
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


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
        if not is_ias_key(f"{prefix}{name}.") or is_ias_key(f"{prefix}{name.rpartition('.')[0]}."):
            continue  # not IAS, or inside an IAS module already handled
        module.to_empty(device="cpu")
        for submodule in module.modules():
            vision._init_weights(submodule)
        for key, tensor in module.state_dict(prefix=f"{prefix}{name}.").items():
            yield key, tensor.to(dtype)
        module.to_empty(device="meta")


def source_dtype(raw: dict, shards: list[Path]) -> torch.dtype:
    """The dtype the source declares (`dtype` or `torch_dtype` in its config), else its first floating tensor's."""
    declared = getattr(torch, str(raw.get("dtype") or raw.get("torch_dtype")), None)
    if isinstance(declared, torch.dtype):
        return declared
    for shard in shards:
        with safe_open(str(shard), framework="pt") as tensors:
            for name in tensors.keys():
                if (tensor := tensors.get_tensor(name)).is_floating_point():
                    return tensor.dtype
    raise ValueError(f"{shards[0]}: no floating-point tensor")


def convert_internvl_checkpoint(
    source: str | Path,
    output: str | Path,
    eat: str | Path | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    dtype: torch.dtype | None = None,
    eat_config: dict | None = None,
) -> dict:
    """Convert an InternVL checkpoint folder (OpenGVLab or transformers format) into an ASE-MLLM folder.

    Every floating tensor (converted, new IAS, EAT) is written in `dtype`, by default the source's. `eat_config`
    overrides the EAT architecture (default: the released AVA DAT-Base); the EAT file is checked strictly against it,
    and the tokenizer against the source's, before anything is written.

    Returns a summary: the source format, the number of converted tensors, the new IAS and EAT weights.
    """
    from transformers import GenerationConfig, InternVLConfig

    source, output = Path(source), Path(output)
    raw = json.loads((source / "config.json").read_text())
    if "llm_config" in raw:
        check_pixel_shuffle(raw, source / "config.json")
    elif raw.get("model_type") != "internvl":
        raise ValueError(f"{source / 'config.json'}: neither an OpenGVLab InternVL (llm_config) nor a transformers InternVL config.")
    check_sentencepiece_backends(source)
    source_tokenizer = load_source_tokenizer(source)
    tokenizer = native_tokenizer(source_tokenizer, source)
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
    if tokenizer is not source_tokenizer:
        check_same_encoding(source_tokenizer, tokenizer, probe_texts(processor, tokenizer), source)
    shards = source_shards(source)
    dtype = source_dtype(raw, shards) if dtype is None else dtype
    eat_weights = {}
    if eat is not None:
        checked = load_eat_weights(EatModel(config.saliency_config.eat_config), eat)
        eat_weights = {f"model.saliency_model.{k}": v for k, v in checked.state_dict().items()}

    output.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(output, max_shard_size)
    converted = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as tensors:
            names = list(tensors.keys())
        for name in names:
            # A tensor from `safe_open` is a view of the file's memory map, which stays mapped, with every page read
            # from it resident, while any tensor from it lives; one map per tensor lets each tensor's pages go with
            # it, so that only the output buffer's are resident (one map per shard kept up to a shard more).
            with safe_open(str(shard), framework="pt") as tensors:
                source_tensor = tensors.get_tensor(name)
            for target, tensor in convert_tensor(name, source_tensor, config.text_config):
                writer.add(target, tensor.to(dtype) if tensor.is_floating_point() else tensor)
                converted += 1
    added = []
    for name, tensor in itertools.chain(new_ias_weights(config, dtype), eat_weights.items()):
        writer.add(name, tensor.to(dtype) if tensor.is_floating_point() else tensor)
        added.append(name)
    writer.finish()

    config.architectures = ["AseMllmForConditionalGeneration"]
    config.dtype = dtype
    config.save_pretrained(output)
    copy_remote_code(output)
    stop_tokens = stop_token_ids(tokenizer, style, config.text_config.eos_token_id)
    GenerationConfig(eos_token_id=stop_tokens, pad_token_id=tokenizer.pad_token_id).save_pretrained(output)
    processor.save_pretrained(output)
    summary = {"format": fmt, "converted_tensors": converted, "new_weights": sorted(added),
               "saliency_source": config.saliency_config.source, "conversation_template": style,
               "eos_token_id": stop_tokens, "dtype": str(dtype).removeprefix("torch."),
               "tokenizer": type(tokenizer).__name__}
    (output / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_convert(args) -> int:
    """`ase-mllm convert` (its arguments: `modeling_ase_mllm.cli`)."""
    dtype = getattr(torch, args.dtype) if args.dtype else None
    summary = convert_internvl_checkpoint(args.source, args.output, args.eat, args.max_shard_size, dtype)
    print(f"{summary['format']} checkpoint -> {args.output}: {summary['converted_tensors']} tensors converted, "
          f"{len(summary['new_weights'])} new (IAS, zero gate{', EAT' if args.eat else ''}); saliency source "
          f"{summary['saliency_source']!r}. New weights listed in {Path(args.output) / 'conversion.json'}.")
    return 0


__all__ = ["convert_internvl_checkpoint", "split_internlm2_wqkv", "ase_config_from_opengvlab", "run_convert"]
