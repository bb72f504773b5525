"""The Qwen-VL-Chat family (paper Table III): its config, Qwen-VL's preprocessing and prompt, the context-length
warning, and the full-size parameter count. What it shares with the InternVL family (gate 0 is the model without the
IAS blocks, batched = one by one, images encoded once, EAT steering the ViT, gradient checkpointing) is tested for both
families through the `family` fixture (test_saliency.py, test_generation.py).

Parity with Qwen-VL-Chat's own remote code (logits within 1e-5, the same greedy tokens) is checked outside the
repository, its code not being ours to commit: see README "ASE-MLLM on Qwen-VL-Chat".
"""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from transformers.testing_utils import CaptureLogger

from conftest import chat_inputs, random_image
from modeling_ase_mllm import AseMllmQwenVLConfig, AseMllmQwenVLForConditionalGeneration
from modeling_ase_mllm.eat_ase_mllm import eat_parameter_count
from modeling_ase_mllm.modeling_ase_mllm import parameter_group
from modeling_ase_mllm.modeling_ase_mllm_qwen_vl import AseMllmQwenVLVisionLayer, logger as qwen_vl_logger
from modeling_ase_mllm.presets import load_model_preset


@pytest.fixture
def inputs(qwen_vl_processor):
    return chat_inputs(qwen_vl_processor, random_image(300, 700, seed=3))


# ------------------------------------------------------------------------------------------------ model


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
