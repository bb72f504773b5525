"""The Qwen-VL-Chat family (paper Table III): gate 0 is Qwen-VL without the IAS blocks, batched = one by one,
Qwen-VL's preprocessing and prompt, the context-length warning, and the full-size parameter count.

Parity with Qwen-VL-Chat's own remote code (logits within 1e-5, the same greedy tokens) is checked outside the
repository, its code not being ours to commit: see README "ASE-MLLM on Qwen-VL-Chat".
"""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from transformers.testing_utils import CaptureLogger

from conftest import PROMPT, random_image, user_turn
from modeling_ase_mllm import AseMllmQwenVLConfig, AseMllmQwenVLForConditionalGeneration
from modeling_ase_mllm.eat_ase_mllm import eat_parameter_count
from modeling_ase_mllm.modeling_ase_mllm import parameter_group, set_saliency_gates
from modeling_ase_mllm.modeling_ase_mllm_qwen_vl import AseMllmQwenVLVisionLayer, logger as qwen_vl_logger
from modeling_ase_mllm.presets import load_model_preset


def messages_with(image, prompt: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]


@pytest.fixture
def inputs(qwen_vl_processor):
    return qwen_vl_processor.apply_chat_template(
        messages_with(random_image(300, 700, seed=3)), add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )


# ------------------------------------------------------------------------------------------------ model


def test_gate_zero_equals_the_model_without_ias_blocks(make_qwen_vl_model, inputs):
    """At gate 0 every IAS block computes exactly its ViT block: the same weights without any IAS block (Qwen-VL's
    model, built of CLIP's encoder layers) give bit-equal logits and the same greedy tokens."""
    ours = make_qwen_vl_model(gate=0.0, seed=1)
    vision = {**ours.config.vision_config.to_dict(), "ias_layers": []}
    plain = make_qwen_vl_model(vision_config=vision)
    assert not any(layer.has_saliency_cross_attention for layer in plain.model.vision_tower.encoder.layers)
    missing, unexpected = plain.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and unexpected and all(".saliency_" in key for key in unexpected)
    with torch.no_grad():
        ours_logits, plain_logits = ours(**inputs).logits, plain(**inputs).logits
    assert torch.equal(ours_logits, plain_logits)
    kwargs = dict(max_new_tokens=8, do_sample=False)
    assert torch.equal(ours.generate(**inputs, **kwargs), plain.generate(**inputs, **kwargs))

    # The comparison is sharp: opening the gates moves the logits.
    set_saliency_gates(ours, 0.5)
    with torch.no_grad():
        assert (ours(**inputs).logits - plain_logits).abs().max().item() > 1e-4


def test_ias_blocks_are_configurable_and_documented_in_size(make_qwen_vl_model):
    """`ias_layers` picks the blocks (default: all); per IAS block 4C² + 9C parameters, once 2D + DC + C."""
    every = make_qwen_vl_model()
    assert [layer.has_saliency_cross_attention for layer in every.model.vision_tower.encoder.layers] == [True, True]
    one = make_qwen_vl_model(vision_config={**every.config.vision_config.to_dict(), "ias_layers": [1]})
    assert [layer.has_saliency_cross_attention for layer in one.model.vision_tower.encoder.layers] == [False, True]
    c, d = every.config.vision_config.hidden_size, every.config.vision_config.saliency_embed_dim
    ias = lambda model: sum(p.numel() for n, p in model.named_parameters() if parameter_group(n) == "ias")
    assert ias(every) - ias(one) == 4 * c * c + 9 * c
    assert ias(one) == 4 * c * c + 9 * c + 2 * d + d * c + c
    with pytest.raises(ValueError, match="ias_layers"):
        AseMllmQwenVLConfig(vision_config={"num_hidden_layers": 2, "ias_layers": [2]})


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="image_seq_length"):
        AseMllmQwenVLConfig(image_seq_length=100)
    with pytest.raises(ValueError, match="Resampler's `hidden_size`"):
        AseMllmQwenVLConfig(resampler_config={"hidden_size": 512, "num_attention_heads": 4})
    with pytest.raises(ValueError, match="num_queries"):
        AseMllmQwenVLConfig(resampler_config={"num_queries": 250}, image_seq_length=250)


def test_config_round_trip(tmp_path):
    config = load_model_preset("tiny-qwen-vl", seq_length=300)
    config.save_pretrained(tmp_path)
    loaded = AseMllmQwenVLConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.text_config.model_type == "qwen2" and loaded.resampler_config.num_queries == 256
    assert loaded.image_special_token_ids == [616, 614, 615] and loaded.seq_length == 300


def test_batch_of_two_prompts_gives_the_tokens_of_one_at_a_time(make_qwen_vl_model, qwen_vl_processor):
    """Left-padded: a two-image prompt and a shorter one-image prompt, batched, vs each alone."""
    model = make_qwen_vl_model(gate=0.5, seed=7)
    samples = [
        ([random_image(500, 400, seed=2), random_image(120, 90, seed=3)], user_turn(2, "Compare these two photos.")),
        ([random_image(448, 448, seed=4)], user_turn(1, "Comment.")),
    ]
    kwargs = dict(max_new_tokens=8, do_sample=False)
    texts = [qwen_vl_processor.apply_chat_template(turn, add_generation_prompt=True) for _, turn in samples]
    batch = qwen_vl_processor(images=[images for images, _ in samples], text=texts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # the second prompt is padded on the left
    batched = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
    for index, (images, _) in enumerate(samples):
        single = qwen_vl_processor(images=images, text=[texts[index]], return_tensors="pt")
        alone = model.generate(**single, **kwargs)[0, single["input_ids"].shape[1]:]
        assert torch.equal(alone, batched[index, : alone.shape[0]]), f"sample {index}"


def test_images_are_encoded_once_and_eat_saliency_steers_the_vit(make_qwen_vl_model, inputs):
    """The default source (EAT + LayerCAM, one map per image) reaches the IAS blocks: another map changes the
    logits once the gates are open; and generate() runs the ViT once, at prefill."""
    model = make_qwen_vl_model(gate=0.5)
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(**inputs, max_new_tokens=4, do_sample=False)
    handle.remove()
    assert calls == [1]
    eat_maps = model.get_saliency_maps(**inputs)
    assert eat_maps.shape == (1, 32, 32) and eat_maps.min() >= 0 and eat_maps.max() <= 1
    with torch.no_grad():
        from_eat = model(**inputs).logits
        inverted = model(**{**inputs, "saliency_maps": 1 - eat_maps}).logits
    assert (from_eat - inverted).abs().max().item() > 1e-4


def test_contexts_past_seq_length_warn_that_qwen_vl_would_differ(make_qwen_vl_model, inputs):
    length = inputs["input_ids"].shape[1]
    model = make_qwen_vl_model(seq_length=length + 2)
    with CaptureLogger(qwen_vl_logger) as within:
        model.generate(**inputs, max_new_tokens=2, do_sample=False)  # contexts of length .. length + 1
    assert within.out == ""
    with CaptureLogger(qwen_vl_logger) as past:
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # .. length + 3
    assert f"the context is {length + 3} tokens, past Qwen-7B's seq_length {length + 2}" in past.out
    # Qwen-7B applies neither logn scaling nor dynamic NTK in training: nothing to warn about there.
    short = make_qwen_vl_model(seq_length=16).train()
    with CaptureLogger(qwen_vl_logger) as training:
        short(**inputs)
    assert training.out == ""


def test_gradient_checkpointing_gives_the_same_gradients(make_qwen_vl_model, inputs):
    grads = []
    for checkpointing in (False, True):
        model = make_qwen_vl_model(gate=0.5).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.model.vision_tower.encoder.layers[0].gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("saliency_cross_attention" in n for n in grads[0])
    assert any("multi_modal_projector.attention" in n for n in grads[0])
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


# ------------------------------------------------------------------------------------------------ processor


def test_prompt_is_chatml_with_qwen_vl_pictures(qwen_vl_processor):
    """Qwen-VL-Chat's `chat()` layout (system message, `\\n` between turns) with `from_list_format`'s pictures."""
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Ok."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
    ]
    text = qwen_vl_processor.apply_chat_template(conversation, add_generation_prompt=True)  # no system message
    assert text == (
        "<|im_start|>user\nPicture 1: <image>\nPicture 2: <image>\nHi<|im_end|>\n"
        "<|im_start|>assistant\nOk.<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <image>\nAnd this?<|im_end|>\n<|im_start|>assistant\n"
    )
    from modeling_ase_mllm.processing_ase_mllm_qwen_vl import AseMllmQwenVLProcessor

    default = AseMllmQwenVLProcessor(image_processor=qwen_vl_processor.image_processor, tokenizer=qwen_vl_processor.tokenizer)
    assert default.apply_chat_template(conversation[:1]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPicture 1: ")


def test_each_image_is_one_448_picture_of_256_pad_tokens(qwen_vl_processor):
    """No tiles, whatever the size (also when asked for them); the whole image resized to 448 × 448 BICUBIC and
    normalised with OpenAI CLIP's mean and std, computed here with PIL and NumPy."""
    panorama = random_image(100, 1600, seed=5)
    out = qwen_vl_processor(images=[panorama], text=["<image>\nHi"], return_tensors="pt",
                            images_kwargs={"max_patches": 12})
    assert out["pixel_values"].shape == (1, 3, 448, 448) and out["tile_grids"].tolist() == [[1, 1]]
    ids = out["input_ids"][0].tolist()
    tokenizer = qwen_vl_processor.tokenizer
    start, end, pad = tokenizer.convert_tokens_to_ids(["<img>", "</img>", "<imgpad>"])
    assert ids.count(pad) == 256 and ids[ids.index(start) + 257] == end
    assert qwen_vl_processor._get_num_multimodal_tokens(image_sizes=[(100, 1600)]).num_image_tokens == [258]

    resized = np.asarray(panorama.resize((448, 448), PIL.Image.BICUBIC), dtype=np.float64) / 255
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    expected = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1)).float()
    assert (out["pixel_values"][0] - expected).abs().max().item() < 1e-5

    maps = qwen_vl_processor(images=[panorama], text=["<image>\nHi"], return_tensors="pt",
                             images_kwargs={"saliency_source": "spectral_residual"})["saliency_maps"]
    assert maps.shape == (1, 32, 32)


def test_prompts_holding_qwen_vl_image_tokens_are_rejected(qwen_vl_processor):
    with pytest.raises(ValueError, match=r"text\[0\] already contains '<imgpad>'"):
        qwen_vl_processor(images=[random_image(64, 64)], text=["<image><imgpad>"])
    with pytest.raises(ValueError, match="2 '<image>' placeholder"):
        qwen_vl_processor(images=[random_image(64, 64)], text=["<image><image>"])


# ------------------------------------------------------------------------------------------------ full size


# Qwen-VL-Chat's parameters, counted (`sum(p.numel() for p in model.parameters())`) from its own remote code
# (`QWenLMHeadModel` built on the meta device from its `config.json`), outside this repository; it includes the
# Resampler's sin-cos `pos_embed`, a parameter there as here.
QWEN_VL_CHAT_PARAMETERS = 9_656_935_168


def qwen_vl_chat_closed_form(config) -> int:
    """Qwen-VL-Chat's parameters from its shapes: ViT-bigG (no class token, no final norm), Resampler, Qwen-7B."""
    c, m, blocks = config.vision_config.hidden_size, config.vision_config.intermediate_size, config.vision_config.num_hidden_layers
    patch, positions = config.vision_config.patch_size, config.vision_config.num_position_embeddings
    o, queries = config.resampler_config.hidden_size, config.resampler_config.num_queries
    h, i, v, layers = (config.text_config.hidden_size, config.text_config.intermediate_size,
                       config.text_config.vocab_size, config.text_config.num_hidden_layers)
    vit = 3 * patch * patch * c + positions * c + 2 * c + blocks * (2 * 2 * c + 4 * c * c + 4 * c + 2 * c * m + m + c)
    resampler = 2 * queries * o + c * o + 4 * o * o + 4 * o + 3 * 2 * o + o * o  # + ln_post and proj
    llm = 2 * v * h + layers * (2 * h + 4 * h * h + 3 * h + 3 * h * i) + h
    return vit + resampler + llm


def test_qwen_vl_chat_preset_is_qwen_vl_chat_plus_exactly_the_ias_parameters():
    config = load_model_preset("qwen-vl-chat")
    assert config.to_dict() == AseMllmQwenVLConfig().to_dict()  # the preset spells out the class defaults
    with torch.device("meta"):
        ours = AseMllmQwenVLForConditionalGeneration(config)
    vision = config.vision_config
    c, d = vision.hidden_size, vision.saliency_embed_dim
    ias = len(vision.ias_layer_indices) * (4 * c * c + 9 * c) + (2 * d + d * c + c)
    eat = eat_parameter_count(config.saliency_config.eat_config)
    total = sum(p.numel() for p in ours.parameters())
    print(f"qwen-vl-chat: ASE-MLLM {total:,} = Qwen-VL-Chat {QWEN_VL_CHAT_PARAMETERS:,} + IAS {ias:,} + EAT {eat:,}")
    assert qwen_vl_chat_closed_form(config) == QWEN_VL_CHAT_PARAMETERS
    assert total == QWEN_VL_CHAT_PARAMETERS + ias + eat
    assert sum(p.numel() for n, p in ours.named_parameters() if parameter_group(n) == "ias") == ias
    assert len(vision.ias_layer_indices) == 48 and ias == 532_775_040
    shapes = {name: tuple(p.shape) for name, p in ours.named_parameters()}
    assert shapes["model.vision_tower.embeddings.position_embedding"] == (256, 1664)
    assert shapes["model.vision_tower.encoder.layers.47.mlp.fc1.weight"] == (8192, 1664)
    assert shapes["model.multi_modal_projector.kv_proj.weight"] == (4096, 1664)
    assert shapes["model.multi_modal_projector.attention.q_proj.weight"] == (4096, 4096)
    assert shapes["model.language_model.layers.31.mlp.gate_proj.weight"] == (11008, 4096)
    assert shapes["model.language_model.embed_tokens.weight"] == shapes["lm_head.weight"] == (151936, 4096)
    assert isinstance(ours.model.vision_tower.encoder.layers[0], AseMllmQwenVLVisionLayer)
    assert all(p.device.type == "meta" for p in ours.parameters())
    assert json.loads(json.dumps(config.to_dict()))["image_token_id"] == 151859
