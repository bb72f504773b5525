"""`bench/full_size_cost.py` counts exactly: on the tiny preset every part of the forward equals its closed form, the
training step of a frozen ViT is the forward plus twice the trained parts, and the parameter counts are the
documented ones (`test_full_size.py`)."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from full_size import build_pair, load_config, twin_inputs  # noqa: E402
from full_size_cost import MetaChecksPass, count_flops, counting_inputs, measure_preset, prepare_training  # noqa: E402
from modeling_ase_mllm.eat_ase_mllm import eat_parameter_count  # noqa: E402
from modeling_ase_mllm.training.recipes import parse_recipe  # noqa: E402
from test_full_size import documented_ias_parameters  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return measure_preset("tiny")


def closed_forms(config, tiles: int, sequence: int) -> dict[str, int]:
    """FLOPs (2 per multiply-accumulate; biases, norms, softmax not counted) of each part of one forward."""
    vision, text = config.vision_config, config.text_config
    c, n, patch = vision.hidden_size, (vision.image_size[0] // vision.patch_size[0]) ** 2 + 1, vision.patch_size[0]
    patch_embedding = 2 * (n - 1) * 3 * patch * patch * c
    block = 2 * (4 * n * c * c + 2 * n * n * c + 2 * n * c * vision.intermediate_size)
    cross_attention = 2 * (4 * n * c * c + 2 * n * n * c)
    saliency_embedding = 2 * n * (1 * vision.saliency_embed_dim + vision.saliency_embed_dim * c)
    h, heads, kv = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head_dim = h // heads
    layer = 2 * sequence * (2 * h * h + 2 * h * kv * head_dim + 3 * h * text.intermediate_size)
    layer += 2 * 2 * sequence * sequence * head_dim * heads  # scores and mixing over the full square
    shuffled = 4 * c  # pixel shuffle at ratio 0.5 stacks 2 × 2 tokens
    return {
        "vision": tiles * (patch_embedding + vision.num_hidden_layers * block),
        "ias": tiles * (len(vision.ias_layer_indices) * cross_attention + saliency_embedding),
        "projector": 2 * tiles * config.image_seq_length * (shuffled * h + h * h),
        "llm": text.num_hidden_layers * layer + 2 * sequence * h * text.vocab_size,
        "lm_head_per_position": 2 * h * text.vocab_size,
    }


def test_every_part_of_the_forward_equals_its_closed_form(tiny):
    config = load_config("tiny")
    expected = closed_forms(config, tiny["tiles"], tiny["sequence"])
    ours, internvl = tiny["models"]["ase_mllm"], tiny["models"]["internvl"]
    for part in ("vision", "ias", "projector", "llm"):
        assert ours["forward"][part] == expected[part], part
    assert {part: internvl["forward"][part] for part in ("vision", "projector", "llm")} == {
        part: ours["forward"][part] for part in ("vision", "projector", "llm")}
    assert internvl["forward"]["total"] == sum(internvl["forward"][p] for p in ("vision", "projector", "llm"))
    # Prefill keeps the logits of the last position only.
    dropped = (tiny["sequence"] - 1) * expected["lm_head_per_position"]
    for model in (ours, internvl):
        assert model["forward"]["total"] - model["prefill"]["total"] == dropped


def test_eat_and_layercam_are_the_rest_of_the_extra(tiny):
    """What ASE-MLLM's forward spends beyond InternVL's and its IAS is EAT + LayerCAM, counted alone on one image
    (LayerCAM's backward runs outside any module's forward, so it is booked as `other`)."""
    ours, internvl = tiny["models"]["ase_mllm"], tiny["models"]["internvl"]
    saliency = ours["forward"]["eat"] + ours["forward"]["other"]
    assert ours["forward"]["other"] > 0 and saliency == tiny["saliency_per_image"]
    assert ours["forward"]["total"] - internvl["forward"]["total"] == ours["forward"]["ias"] + saliency


def test_a_step_with_a_frozen_vit_is_the_forward_plus_twice_the_trained_parts(tiny):
    """With no trainable weight in the ViT no backward runs there, and every trained matrix product costs twice its
    forward (input and weight gradients): InternVL's full-LLM step, and ASE-MLLM's with its IAS frozen."""
    internvl = tiny["models"]["internvl"]
    trained = internvl["forward"]["projector"] + internvl["forward"]["llm"]
    assert internvl["training"]["pccd-full"]["flops"] == internvl["forward"]["total"] + 2 * trained

    recipe = parse_recipe(recipe="pccd-full", overrides={"ias": False})[0]
    config = load_config("tiny")
    inputs = counting_inputs(config)
    model = prepare_training(build_pair(config)[0], recipe, is_ours=True)
    step = count_flops(lambda: model(**inputs, labels=inputs["input_ids"]).loss.backward(), model)["total"]
    ours = tiny["models"]["ase_mllm"]
    assert step == ours["forward"]["total"] + 2 * trained
    # Training the IAS weights needs the gradient through the ViT blocks as well.
    assert ours["training"]["pccd-full"]["flops"] > step + 2 * ours["forward"]["ias"]


def test_parameter_counts_are_the_documented_ones(tiny):
    config = load_config("tiny")
    ours, internvl = tiny["models"]["ase_mllm"], tiny["models"]["internvl"]
    ias = documented_ias_parameters(config.vision_config)
    assert ours["parameters"] - internvl["parameters"] == ias + eat_parameter_count(config.saliency_config.eat_config)
    full = {name: m["training"]["pccd-full"] for name, m in tiny["models"].items()}
    assert full["ase_mllm"]["trainable"] - full["internvl"]["trainable"] == ias
    # LoRA r=16 on every q/k/v/o/gate/up/down of the LLM; projector (and IAS) trained in full, PEFT keeping a copy.
    text, r = config.text_config, parse_recipe(recipe="pccd")[0].lora_r
    h, kv_width, inner = text.hidden_size, text.num_key_value_heads * (text.hidden_size // text.num_attention_heads), text.intermediate_size
    lora = text.num_hidden_layers * r * ((h + h) * 2 + (h + kv_width) * 2 + (h + inner) * 3)
    c = config.vision_config.hidden_size
    projector = 2 * 4 * c + (4 * c * h + h) + (h * h + h)
    for name, in_full in (("internvl", projector), ("ase_mllm", projector + ias)):
        step = tiny["models"][name]["training"]["pccd"]
        assert step["trainable"] == lora + in_full
        assert step["parameters"] == tiny["models"][name]["parameters"] + lora + in_full


def test_grid_sample_is_counted_analytically():
    """4 multiply-accumulates per sampled value forward; 4 per value for each gradient backward."""
    with torch.device("meta"):
        layer = torch.nn.Identity()
        image = torch.empty(2, 3, 10, 10, requires_grad=True)
        grid = torch.empty(2, 5, 7, 2, requires_grad=True)
    counts = count_flops(lambda: F.grid_sample(image, grid, align_corners=True).sum().backward(), layer)
    assert counts["total"] == 8 * 2 * 3 * 5 * 7 * (1 + 2)


def test_the_stock_counter_agrees_where_it_runs():
    """On InternVL (no LayerCAM, token ids on the CPU) torch's FlopCounterMode runs unchanged and counts the same."""
    config = load_config("tiny")
    twin = build_pair(config)[1]
    inputs = twin_inputs(counting_inputs(config))
    with torch.no_grad(), FlopCounterMode(display=False) as stock:
        twin(**inputs)
    with torch.no_grad():
        assert count_flops(lambda: twin(**inputs), twin)["total"] == stock.get_total_flops() > 0


def test_no_count_can_depend_on_a_value_a_meta_tensor_does_not_have():
    values = torch.ones(3, device="meta")
    with MetaChecksPass():
        assert bool(torch.isfinite(values).all())
        with pytest.raises(RuntimeError, match="read from a meta tensor"):
            int(values.sum())
