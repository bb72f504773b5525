"""With every saliency gate at zero, ASE-MLLM is transformers' InternVL given the same weights and inputs."""

import pytest
import torch

from conftest import user_turn
from modeling_ase_mllm.convert.twin import build_internvl_twin, is_added_weight
from modeling_ase_mllm.modeling_ase_mllm import set_saliency_gates
from modeling_ase_mllm.testing.tiny import tiny_config


@pytest.fixture
def batch(processor, two_images):
    text = [processor.apply_chat_template(user_turn(), add_generation_prompt=True) for _ in two_images]
    text[1] = text[1].replace("aesthetic perspective", "aesthetic point of view, briefly")  # unequal lengths
    return processor(images=two_images, text=text, return_tensors="pt", padding=True)


@pytest.mark.parametrize("text_model_type", ["llama", "qwen2"])
def test_logits_equal_internvl_at_zero_gate(make_model, batch, text_model_type):
    model = make_model(text_model_type, gate=0.0)
    twin = build_internvl_twin(model)
    assert batch["pixel_values"].shape[0] == 5  # 3 tiles + thumbnail, and 1 tile
    with torch.no_grad():
        ours = model(**batch).logits
        reference = twin(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
        ).logits
    diff = (ours - reference).abs().max().item()
    print(f"{text_model_type}: max |logits - InternVL| = {diff:.3e}")
    assert diff <= 1e-5

    # The comparison is sharp: opening the gates moves the logits away from InternVL's.
    set_saliency_gates(model, 0.5)
    with torch.no_grad():
        gated = model(**batch).logits
    assert (gated - reference).abs().max().item() > 1e-4


def test_rms_norm_qk_norm_vit_equals_internvl(make_model, batch):
    """The InternViT-6B flavour (RMSNorm, qk-norm, no qkv bias) is covered too."""
    from modeling_ase_mllm.presets import load_model_preset

    vision = {**load_model_preset("tiny").vision_config.to_dict(), "norm_type": "rms_norm", "use_qk_norm": True,
              "attention_bias": False}
    model = make_model(gate=0.0, vision_config=vision)
    assert model.model.vision_tower.encoder.layer[0].saliency_cross_attention.q_norm.__class__.__name__.endswith("RMSNorm")
    twin = build_internvl_twin(model)
    with torch.no_grad():
        ours = model(**batch).logits
        reference = twin(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
        ).logits
    assert (ours - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("text_model_type", ["llama", "qwen2"])
def test_greedy_generate_equals_internvl(make_model, batch, text_model_type):
    model = make_model(text_model_type, gate=0.0, seed=3)
    twin = build_internvl_twin(model)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    ours = model.generate(**batch, **kwargs)
    reference = twin.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"], **kwargs
    )
    assert ours.shape[1] == batch["input_ids"].shape[1] + 8
    assert torch.equal(ours, reference)


def test_state_dict_is_internvl_plus_ias_keys(make_model):
    model = make_model()
    twin_keys = set(build_internvl_twin(model).state_dict())
    ours = set(model.state_dict())
    assert twin_keys <= ours
    extra = ours - twin_keys
    assert extra and all(is_added_weight(key) for key in extra)
    assert any(key.endswith("saliency_gate.weight") for key in extra)


@pytest.mark.parametrize("tied", [False, True])
def test_a_twin_sharing_the_weights_is_the_copied_twin(make_model, batch, tied):
    """`share_weights=True` (built on `meta`, handed the model's own tensors and buffers) computes what a copied twin
    computes, holds no tensor of its own, and keeps a tied head tied."""
    text = {**tiny_config().text_config.to_dict(), "tie_word_embeddings": tied}
    model = make_model(gate=0.0, tie_word_embeddings=tied, text_config=text)
    copied, shared = build_internvl_twin(model), build_internvl_twin(model, share_weights=True)
    ours = {tensor.data_ptr() for tensor in [*model.parameters(), *model.buffers()]}
    assert all(tensor.data_ptr() in ours for tensor in [*shared.parameters(), *shared.buffers()])
    assert (shared.lm_head.weight is shared.model.language_model.embed_tokens.weight) == tied
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        assert torch.equal(shared(**inputs).logits, copied(**inputs).logits)
