"""A tiny checkpoint of the Qwen-VL-Chat family written in Qwen-VL-Chat's own format (its parameter names and fused
layouts, `qwen.tiktoken`, its `config.json`). The family's tiny tokenizer, processor and models are conftest.py's
fixtures.

The Qwen-format writer is the conversion's inverse, written from Qwen-VL's layouts (not from our converter): the
LLM's `c_attn` stacks q, k, v; the ViT's `in_proj` interleaves them per head; the Resampler's `in_proj_weight`
(a `torch.nn.MultiheadAttention`) stacks them; `visual.proj` is applied as `x @ proj`.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from modeling_ase_mllm.convert.twin import is_added_weight
from modeling_ase_mllm.testing.tiny_qwen_vl import write_tiny_tiktoken


# Our names -> Qwen-VL's, for the tensors that are only renamed (`{}` is a block index).
QWEN_NAMES = {
    "model.language_model.embed_tokens.weight": "transformer.wte.weight",
    "model.language_model.norm.weight": "transformer.ln_f.weight",
    "lm_head.weight": "lm_head.weight",
    "model.language_model.layers.{}.input_layernorm.weight": "transformer.h.{}.ln_1.weight",
    "model.language_model.layers.{}.post_attention_layernorm.weight": "transformer.h.{}.ln_2.weight",
    "model.language_model.layers.{}.self_attn.o_proj.weight": "transformer.h.{}.attn.c_proj.weight",
    "model.language_model.layers.{}.mlp.up_proj.weight": "transformer.h.{}.mlp.w1.weight",
    "model.language_model.layers.{}.mlp.gate_proj.weight": "transformer.h.{}.mlp.w2.weight",
    "model.language_model.layers.{}.mlp.down_proj.weight": "transformer.h.{}.mlp.c_proj.weight",
    "model.vision_tower.embeddings.patch_embedding.weight": "transformer.visual.conv1.weight",
    "model.vision_tower.embeddings.position_embedding": "transformer.visual.positional_embedding",
    "model.multi_modal_projector.query": "transformer.visual.attn_pool.query",
    "model.multi_modal_projector.position_embedding": "transformer.visual.attn_pool.pos_embed",
    "model.multi_modal_projector.kv_proj.weight": "transformer.visual.attn_pool.kv_proj.weight",
}
for ours, theirs in (("pre_layernorm", "ln_pre"),):
    for kind in ("weight", "bias"):
        QWEN_NAMES[f"model.vision_tower.{ours}.{kind}"] = f"transformer.visual.{theirs}.{kind}"
for ours, theirs in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
    for kind in ("weight", "bias"):
        QWEN_NAMES[f"model.vision_tower.encoder.layers.{{}}.{ours}.{kind}"] = \
            f"transformer.visual.transformer.resblocks.{{}}.{theirs}.{kind}"
for ours, theirs in (("layer_norm_q", "attn_pool.ln_q"), ("layer_norm_kv", "attn_pool.ln_kv"),
                     ("attention.projection_layer", "attn_pool.attn.out_proj"), ("layer_norm_post", "ln_post")):
    for kind in ("weight", "bias"):
        QWEN_NAMES[f"model.multi_modal_projector.{ours}.{kind}"] = f"transformer.visual.{theirs}.{kind}"


def qwen_state_dict(model) -> dict[str, torch.Tensor]:
    """`model`'s weights (IAS and EAT left out) as Qwen-VL-Chat names and lays them out."""
    ours = {name: tensor for name, tensor in model.state_dict().items() if not is_added_weight(name)}
    heads = model.config.vision_config.num_attention_heads
    out = {}
    for layer in range(model.config.text_config.num_hidden_layers):
        prefix = f"model.language_model.layers.{layer}.self_attn"
        for kind in ("weight", "bias"):
            out[f"transformer.h.{layer}.attn.c_attn.{kind}"] = torch.cat(
                [ours.pop(f"{prefix}.{part}_proj.{kind}") for part in "qkv"])
    for layer in range(model.config.vision_config.num_hidden_layers):
        prefix = f"model.vision_tower.encoder.layers.{layer}.self_attn"
        for kind in ("weight", "bias"):
            q, k, v = (ours.pop(f"{prefix}.{part}_proj.{kind}") for part in "qkv")
            per_head = torch.stack([t.reshape(heads, -1, *t.shape[1:]) for t in (q, k, v)], dim=1)
            out[f"transformer.visual.transformer.resblocks.{layer}.attn.in_proj.{kind}"] = per_head.reshape(-1, *q.shape[1:])
    for kind in ("weight", "bias"):
        out[f"transformer.visual.attn_pool.attn.in_proj_{kind}"] = torch.cat(
            [ours.pop(f"model.multi_modal_projector.attention.{part}_proj.{kind}") for part in "qkv"])
    out["transformer.visual.proj"] = ours.pop("model.multi_modal_projector.proj.weight").t()
    for name, tensor in ours.items():
        parts = name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        key = name if index is None else ".".join(parts[:index] + ["{}"] + parts[index + 1:])
        target = QWEN_NAMES[key] if index is None else QWEN_NAMES[key].format(parts[index])
        out[target] = tensor
    return {name: tensor.contiguous() for name, tensor in out.items()}


def qwen_config(model) -> dict:
    """Qwen-VL-Chat's `config.json` for `model`'s shapes."""
    config, text, vision = model.config, model.config.text_config, model.config.vision_config
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "torch_dtype": "float32",
        "vocab_size": text.vocab_size, "hidden_size": text.hidden_size, "intermediate_size": 2 * text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "kv_channels": text.hidden_size // text.num_attention_heads, "layer_norm_epsilon": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings, "seq_length": config.seq_length,
        "rotary_emb_base": 10000, "rotary_pct": 1.0, "no_bias": True, "scale_attn_weights": True,
        "use_dynamic_ntk": True, "use_logn_attn": True, "tie_word_embeddings": False,
        "visual": {"heads": vision.num_attention_heads, "image_size": vision.image_size,
                   "image_start_id": config.start_image_token_id, "layers": vision.num_hidden_layers,
                   "mlp_ratio": vision.intermediate_size / vision.hidden_size,
                   "output_dim": config.resampler_config.hidden_size, "patch_size": vision.patch_size,
                   "width": vision.hidden_size},
    }


def write_qwen_vl_checkpoint(model, folder: Path, shards: int = 3, fmt: str = "safetensors") -> Path:
    """`model` as a Qwen-VL-Chat folder: `shards` weight files (safetensors or `.bin`) with their index, config,
    generation config (Qwen-VL-Chat's, with the tiny tokenizer's ids) and `qwen.tiktoken`."""
    folder.mkdir(parents=True, exist_ok=True)
    state = qwen_state_dict(model)
    names = list(state)
    weight_map = {}
    for index in range(shards):
        part = names[index::shards]
        suffix = "safetensors" if fmt == "safetensors" else "bin"
        stem = "model" if fmt == "safetensors" else "pytorch_model"
        file_name = f"{stem}-{index + 1:05d}-of-{shards:05d}.{suffix}"
        tensors = {name: state[name] for name in part}
        if fmt == "safetensors":
            save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    index_name = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(qwen_config(model), indent=2))
    eos = model.config.text_config.eos_token_id
    (folder / "generation_config.json").write_text(json.dumps(
        {"chat_format": "chatml", "eos_token_id": eos, "pad_token_id": eos, "max_window_size": 6144,
         "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.3}))
    write_tiny_tiktoken(folder / "qwen.tiktoken")
    return folder
