"""Conversion from InternVL checkpoints (OpenGVLab remote-code and transformers formats) to ASE-MLLM folders."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig, InternVLForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from modeling_ase_mllm.convert import convert_internvl_checkpoint
from modeling_ase_mllm.internvl_compat import build_internvl_twin, internvl_config_from_ase
from modeling_ase_mllm.processing_ase_mllm import INTERNVL2_5_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT, build_chat_template
from modeling_ase_mllm.tiny import build_processor, build_tiny_model, tiny_config


ROOT = Path(__file__).resolve().parent.parent
PROMPT = "<image>\nComment on this image from an aesthetic perspective."


# --- the test's own OpenGVLab layout -----------------------------------------------------------------------------


def opengvlab_state_dict(hf: dict, heads: int, kv_heads: int) -> dict:
    """transformers-InternVL names -> OpenGVLab names, building InternLM2's `wqkv` row by row: for every KV head,
    its `heads / kv_heads` query heads, then its key head, then its value head."""
    out = {}
    head_dim = None
    for name, tensor in hf.items():
        parts = name.split(".")
        if name.startswith("model.vision_tower.embeddings."):
            new = {"cls_token": "class_embedding", "position_embeddings": "position_embedding"}.get(parts[3])
            out[f"vision_model.embeddings.{new}" if new else name.replace(
                "model.vision_tower.embeddings.patch_embeddings.projection", "vision_model.embeddings.patch_embedding")] = tensor
        elif name.startswith("model.vision_tower.encoder.layer."):
            i, rest = parts[4], ".".join(parts[5:])
            if rest.startswith("attention.q_proj"):
                kind = parts[-1]
                fused = torch.cat([hf[f"model.vision_tower.encoder.layer.{i}.attention.{p}.{kind}"]
                                   for p in ("q_proj", "k_proj", "v_proj")])
                out[f"vision_model.encoder.layers.{i}.attn.qkv.{kind}"] = fused
                continue
            if rest.startswith(("attention.k_proj", "attention.v_proj")):
                continue
            rest = (rest.replace("attention.projection_layer", "attn.proj").replace("lambda_1", "ls1")
                    .replace("lambda_2", "ls2").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2"))
            out[f"vision_model.encoder.layers.{i}.{rest}"] = tensor
        elif name.startswith("model.multi_modal_projector."):
            index = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}[parts[2]]
            out[f"mlp1.{index}.{parts[3]}"] = tensor
        elif name == "model.language_model.embed_tokens.weight":
            out["language_model.model.tok_embeddings.weight"] = tensor
        elif name == "model.language_model.norm.weight":
            out["language_model.model.norm.weight"] = tensor
        elif name == "lm_head.weight":
            out["language_model.output.weight"] = tensor
        elif name.startswith("model.language_model.layers."):
            i, rest = parts[3], ".".join(parts[4:])
            prefix = f"language_model.model.layers.{i}"
            if rest == "self_attn.q_proj.weight":
                q = hf[f"model.language_model.layers.{i}.self_attn.q_proj.weight"]
                k = hf[f"model.language_model.layers.{i}.self_attn.k_proj.weight"]
                v = hf[f"model.language_model.layers.{i}.self_attn.v_proj.weight"]
                head_dim = q.shape[0] // heads
                rows = []
                for g in range(kv_heads):
                    for j in range(heads // kv_heads):
                        h = g * (heads // kv_heads) + j
                        rows.append(q[h * head_dim:(h + 1) * head_dim])
                    rows.append(k[g * head_dim:(g + 1) * head_dim])
                    rows.append(v[g * head_dim:(g + 1) * head_dim])
                out[f"{prefix}.attention.wqkv.weight"] = torch.cat(rows)
            elif rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                continue
            else:
                new = {"self_attn.o_proj.weight": "attention.wo.weight", "mlp.gate_proj.weight": "feed_forward.w1.weight",
                       "mlp.up_proj.weight": "feed_forward.w3.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
                       "input_layernorm.weight": "attention_norm.weight",
                       "post_attention_layernorm.weight": "ffn_norm.weight"}[rest]
                out[f"{prefix}.{new}"] = tensor
        else:
            raise AssertionError(f"unmapped {name}")
    return out


def internlm2_attention(wqkv, wo, hidden, heads, kv_heads, cos, sin):
    """InternLM2 attention computed straight from `wqkv`'s grouped layout (causal, no bias)."""
    batch, length, _ = hidden.shape
    groups = heads // kv_heads
    head_dim = wqkv.shape[0] // (heads + 2 * kv_heads)
    qkv = (hidden @ wqkv.T).view(batch, length, kv_heads, groups + 2, head_dim)
    q = qkv[..., :groups, :].reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = qkv[..., groups, :].transpose(1, 2)
    v = qkv[..., groups + 1, :].transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim) @ wo.T


# OpenGVLab conversation.py, "MPT" separator style, transcribed: (system template, user role, assistant role, sep).
OPENGVLAB_TEMPLATES = {
    "internlm2-chat": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "Hermes-2": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "phi3-chat": ("<|system|>\n{}", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
    "internvl2_5": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"),
}


def opengvlab_prompt(name: str, system: str, exchanges: list) -> str:
    """`Conversation.get_prompt()`: system + sep, then role + message + sep per turn; an open turn is its role."""
    system_template, user, assistant, sep = OPENGVLAB_TEMPLATES[name]
    prompt = system_template.format(system) + sep
    for question, answer in exchanges:
        prompt += user + question + sep + assistant
        if answer is not None:
            prompt += answer + sep
    return prompt


@pytest.mark.parametrize("name,system", [("internlm2-chat", INTERNVL2_SYSTEM_PROMPT), ("Hermes-2", INTERNVL2_SYSTEM_PROMPT),
                                         ("phi3-chat", INTERNVL2_SYSTEM_PROMPT), ("internvl2_5", INTERNVL2_5_SYSTEM_PROMPT)])
def test_chat_templates_render_opengvlab_conversations(name, system):
    tokenizer = build_processor().tokenizer
    processor = type(build_processor())(image_processor=build_processor().image_processor, tokenizer=tokenizer,
                                        chat_template=build_chat_template(name), system_prompt=system)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Warm light."}]},
        {"role": "user", "content": [{"type": "text", "text": "And the composition?"}]},
    ]
    expected = opengvlab_prompt(name, system, [("<image>\nComment on this image.", "Warm light."),
                                               ("And the composition?", None)])
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == expected


def write_shards(folder: Path, state: dict, shards: int) -> None:
    """Split by bytes (greedy, in key order) into `shards` files of about equal size, with an index."""
    sizes = {n: t.numel() * t.element_size() for n, t in state.items()}
    budget, parts, current, filled = sum(sizes.values()) / shards, [[] for _ in range(shards)], 0, 0
    for name in state:
        if parts[current] and filled + sizes[name] / 2 > budget * (current + 1) and current < shards - 1:
            current += 1
        parts[current].append(name)
        filled += sizes[name]
    weight_map = {}
    for index, part in enumerate(parts):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n].contiguous() for n in part}, str(folder / file))
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_opengvlab_checkpoint(folder: Path, config, state: dict, tokenizer, shards: int = 4,
                               template: str = "internlm2-chat") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text, vision = config.text_config, config.vision_config
    opengvlab = {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
        "select_layer": -1, "template": template, "ps_version": "v2",
        "vision_config": {
            "architectures": ["InternVisionModel"], "hidden_size": vision.hidden_size,
            "num_hidden_layers": vision.num_hidden_layers, "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size, "qkv_bias": vision.attention_bias,
            "qk_normalization": vision.use_qk_norm, "norm_type": vision.norm_type, "layer_norm_eps": vision.layer_norm_eps,
            "image_size": 448, "patch_size": 14, "drop_path_rate": 0.0, "use_flash_attn": False,
        },
        "llm_config": {
            "architectures": ["InternLM2ForCausalLM"], "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
            "rms_norm_eps": text.rms_norm_eps, "rope_theta": text.rope_parameters["rope_theta"],
            "max_position_embeddings": text.max_position_embeddings, "bias": False, "tie_word_embeddings": False,
            "pad_token_id": text.pad_token_id, "eos_token_id": text.eos_token_id, "bos_token_id": text.bos_token_id,
        },
    }
    (folder / "config.json").write_text(json.dumps(opengvlab, indent=2))
    tokenizer.save_pretrained(folder)
    write_shards(folder, state, shards)


@pytest.fixture(scope="module")
def source_model():
    return build_tiny_model(seed=11, gate=0.0)


@pytest.fixture(scope="module")
def reference(source_model):
    return build_internvl_twin(source_model)


def sample_inputs():
    from conftest import random_image

    processor = build_processor(saliency_source="spectral_residual")
    return processor(images=[random_image(300, 700, seed=1), random_image(200, 200, seed=2)],
                     text=[PROMPT, "Hello <image> there"], return_tensors="pt", padding=True)


def test_opengvlab_internlm2_checkpoint_converts_to_identical_logits(tmp_path, source_model, reference):
    config = source_model.config
    heads, kv_heads = config.text_config.num_attention_heads, config.text_config.num_key_value_heads
    assert heads != kv_heads  # GQA
    opengvlab = opengvlab_state_dict(reference.state_dict(), heads, kv_heads)
    assert "language_model.model.layers.0.attention.wqkv.weight" in opengvlab
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in opengvlab and "mlp1.3.weight" in opengvlab

    # The wqkv layout, checked on its own: InternLM2 attention from wqkv equals the Llama layer of the reference.
    layer = reference.model.language_model.layers[0].self_attn
    hidden = torch.randn(2, 7, config.text_config.hidden_size)
    positions = torch.arange(7)[None].expand(2, -1)
    cos, sin = reference.model.language_model.rotary_emb(hidden, positions)
    with torch.no_grad():
        llama = layer(hidden, position_embeddings=(cos, sin), attention_mask=None)[0]
        direct = internlm2_attention(opengvlab["language_model.model.layers.0.attention.wqkv.weight"],
                                     opengvlab["language_model.model.layers.0.attention.wo.weight"],
                                     hidden, heads, kv_heads, cos, sin)
    assert (llama - direct).abs().max() < 1e-5

    source = tmp_path / "InternVL2-tiny"
    processor = build_processor()
    write_opengvlab_checkpoint(source, config, opengvlab, processor.tokenizer, shards=4)
    with pytest.warns(UserWarning, match="spectral_residual"):
        summary = convert_internvl_checkpoint(source, tmp_path / "ase", max_shard_size=200_000)
    assert summary["format"] == "opengvlab" and summary["saliency_source"] == "spectral_residual"
    assert all("saliency_" in name for name in summary["new_weights"]) and summary["new_weights"]
    index = json.loads((tmp_path / "ase" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded output with an index

    # The tokenizer and the conversation template (internlm2-chat: no newline after <|im_end|>) are carried over,
    # and generation stops at <|im_end|> as InternVL's chat() does.
    converted_processor = AutoProcessor.from_pretrained(tmp_path / "ase")
    assert converted_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    assert converted_processor.apply_chat_template(turns, add_generation_prompt=True) == opengvlab_prompt(
        "internlm2-chat", converted_processor.system_prompt, [("<image>\nQ", None)])
    stop = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop in GenerationConfig.from_pretrained(tmp_path / "ase").eos_token_id
    assert summary["conversation_template"] == "internlm2-chat"

    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    assert not any(p.abs().sum() for n, p in converted.named_parameters() if n.endswith("saliency_gate.weight"))
    inputs = sample_inputs()
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert (ours - theirs).abs().max() < 1e-5


def test_transformers_internvl_folder_converts_to_identical_logits(tmp_path, reference):
    source = tmp_path / "internvl-hf"
    reference.save_pretrained(source)
    build_processor().tokenizer.save_pretrained(source)
    eat_state = build_tiny_model(seed=3).model.saliency_model.state_dict()
    eat_file = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in eat_state.items()}, str(eat_file))
    eat_config = tiny_config().saliency_config.eat_config.to_dict()
    summary = convert_internvl_checkpoint(source, tmp_path / "ase", eat=eat_file, eat_config=eat_config)
    assert summary["format"] == "transformers" and summary["saliency_source"] == "eat_layercam"
    assert any(name.startswith("model.saliency_model.") for name in summary["new_weights"])
    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    for name, tensor in eat_state.items():
        assert torch.equal(converted.model.saliency_model.state_dict()[name], tensor), name
    inputs = sample_inputs()
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert torch.equal(ours, theirs)


MEMORY_CHILD = """
import sys, warnings
import modeling_ase_mllm.convert as convert
warnings.simplefilter("ignore")

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
convert.convert_internvl_checkpoint(sys.argv[1], sys.argv[2], max_shard_size=int(sys.argv[3]))
print(before, status("VmHWM:"))
"""


@pytest.mark.slow
def test_conversion_holds_about_two_shards_in_memory(tmp_path):
    """4 source shards of ~35 MB: the converter's peak RSS (VmHWM, reset just before converting) grows by less than
    2.6 shards, where loading the checkpoint whole would need all 4."""
    config = tiny_config(text_config={**tiny_config().text_config.to_dict(), "hidden_size": 512, "intermediate_size": 1536,
                                      "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4,
                                      "vocab_size": 16384})
    model = build_tiny_model(config, seed=1)
    state = opengvlab_state_dict(build_internvl_twin(model).state_dict(), 8, 4)
    total = sum(t.numel() * t.element_size() for t in state.values())
    del model
    source = tmp_path / "src"
    write_opengvlab_checkpoint(source, config, state, build_processor().tokenizer, shards=4)
    sizes = sorted(p.stat().st_size for p in source.glob("*.safetensors"))
    shard = sum(sizes) / len(sizes)
    print(f"\nsource shards (MiB): {[round(size / 2**20, 1) for size in sizes]}")
    del state
    run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(source), str(tmp_path / "out"), str(int(shard))],
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    before, after = (int(v) * 1024 for v in run.stdout.split()[-2:])
    growth = after - before
    print(f"\n4 shards of {shard / 2**20:.1f} MiB ({total / 2**20:.1f} MiB in all): peak RSS grew {growth / 2**20:.1f} MiB")
    assert growth < 2.6 * shard and 3.5 * shard < total  # measured 2.3 shards: one output shard, its serialisation, one input tensor
