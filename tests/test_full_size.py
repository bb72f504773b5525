"""Full-size presets build on the `meta` device: InternVL's parameters plus exactly the documented IAS ones and
the EAT saliency model (DAT-Base + 10-bin head)."""

import pytest
import torch
from transformers import InternVLForConditionalGeneration

from modeling_ase_mllm import AseMllmForConditionalGeneration
from modeling_ase_mllm.eat_ase_mllm import eat_parameter_count
from modeling_ase_mllm.convert.twin import internvl_config_from_ase, is_added_weight
from modeling_ase_mllm.presets import load_model_preset


def documented_ias_parameters(vision) -> int:
    """README, "IAS-ViT parameters": per IAS block and once for the saliency embedding."""
    c, d = vision.hidden_size, vision.saliency_embed_dim
    norm = 2 * c if vision.norm_type == "layer_norm" else c
    per_block = (
        2 * norm  # LN_q, LN_kv
        + 4 * c * c  # q, k, v, o
        + (3 * c if vision.attention_bias else 0) + c  # q/k/v biases (as the self-attention), o bias
        + (2 * c if vision.use_qk_norm else 0)  # q/k RMSNorm (as the self-attention)
        + c  # per-channel gate
    )
    embedding = (1 * d + d) + (d * c + c)  # MLP 1 -> d -> c
    return per_block * len(vision.ias_layer_indices) + embedding


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", ["internvl2-1b", "internvl2-2b", "internvl2-4b", "internvl2-8b"])
def test_preset_is_internvl_plus_ias_parameters(preset):
    config = load_model_preset(preset)
    with torch.device("meta"):
        ours = AseMllmForConditionalGeneration(config)
        reference = InternVLForConditionalGeneration(internvl_config_from_ase(config))
    extra = documented_ias_parameters(config.vision_config)
    eat = eat_parameter_count(config.saliency_config.eat_config)
    print(f"{preset}: ASE-MLLM {count(ours):,} = InternVL {count(reference):,} + IAS {extra:,} + EAT {eat:,}")
    assert eat == count(ours.model.saliency_model) == 86_878_166
    assert count(ours) == count(reference) + extra + eat
    ours_keys, reference_keys = set(ours.state_dict()), set(reference.state_dict())
    assert reference_keys <= ours_keys and all(is_added_weight(k) for k in ours_keys - reference_keys)
    assert all(p.device.type == "meta" for p in ours.parameters())


def test_internvl2_8b_shapes():
    config = load_model_preset("internvl2-8b")
    with torch.device("meta"):
        model = AseMllmForConditionalGeneration(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert len(model.model.vision_tower.encoder.layer) == 24
    assert shapes["model.vision_tower.encoder.layer.23.saliency_cross_attention.q_proj.weight"] == (1024, 1024)
    assert shapes["model.vision_tower.encoder.layer.0.saliency_gate.weight"] == (1024,)
    assert shapes["model.multi_modal_projector.linear_1.weight"] == (4096, 4096)  # LayerNorm(4096) -> 4096
    assert shapes["model.language_model.embed_tokens.weight"] == (92553, 4096)
    assert shapes["lm_head.weight"] == (92553, 4096)  # untied, as InternVL2-8B
    assert shapes["model.language_model.layers.0.self_attn.k_proj.weight"] == (1024, 4096)  # 8 KV heads × 128
    assert config.image_token_id == 92546 and config.image_seq_length == 256
    # The 8B IAS additions: 24 blocks × (4·1024² + 9·1024) + (2·256 + 256·1024 + 1024).
    assert documented_ias_parameters(config.vision_config) == 24 * (4 * 1024**2 + 9 * 1024) + 2 * 256 + 256 * 1024 + 1024
