"""generate(): images encoded once, batched left-padded output equals one-by-one output (both families), decoding
steps that do exactly what InternVL's do."""

import cProfile
import inspect
import pstats
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import PROMPT, chat_inputs, random_image, user_turn
from families import PHOTO_SIZE
from modeling_ase_mllm import modeling_ase_mllm, packaging_ase_mllm
from modeling_ase_mllm.convert.twin import build_internvl_twin


def _encode_calls(model):
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_generate_encodes_images_once_with_kv_cache_and_eat_saliency_steers_the_vit(family, two_images):
    """generate() runs the ViT once, at prefill, and cached decoding gives the tokens of a full re-run without cache;
    the default source (EAT + LayerCAM, one map per picture the ViT sees) reaches the IAS blocks: another map changes
    the logits once the gates are open."""
    model, processor = family.make_model(gate=0.5), family.processor
    text = [processor.apply_chat_template(user_turn(), add_generation_prompt=True)] * 2
    inputs = processor(images=two_images, text=text, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=family.tokenizer.pad_token_id)
    calls, handle = _encode_calls(model)
    out = model.generate(**inputs, **kwargs)
    handle.remove()
    assert out.shape == (2, inputs["input_ids"].shape[1] + 6)
    assert len(calls) == 1  # pre-encoded into `mm_encoder_outputs`, dropped after prefill

    # Cached decoding gives the tokens of a full re-run without cache.
    no_cache = model.generate(**inputs, **kwargs, use_cache=False)
    assert torch.equal(out, no_cache)

    photo = chat_inputs(processor, random_image(*PHOTO_SIZE, seed=3))
    eat_maps = model.get_saliency_maps(**photo)
    assert eat_maps.shape == family.photo_map_shape and eat_maps.min() >= 0 and eat_maps.max() <= 1
    with torch.no_grad():
        from_eat = model(**photo).logits
        inverted = model(**{**photo, "saliency_maps": 1 - eat_maps}).logits
    assert (from_eat - inverted).abs().max().item() > 1e-4


def test_batched_left_padded_generation_equals_one_by_one(family):
    """A batch mixing image sizes, a two-image sample and a text-only sample, vs each sample alone."""
    model, processor = family.make_model(gate=0.5, seed=7), family.processor
    samples = [
        ([random_image(300, 1000, seed=1)], user_turn(1)),
        ([random_image(500, 400, seed=2), random_image(120, 90, seed=3)], user_turn(2, "Compare these two photos.")),
        ([], [{"role": "user", "content": [{"type": "text", "text": "What makes a photo pleasing?"}]}]),
        ([random_image(448, 448, seed=4)], user_turn(1, "Comment on the composition of this image.")),
    ]
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    texts = [processor.apply_chat_template(turn, add_generation_prompt=True) for _, turn in samples]
    batch = processor(images=[images for images, _ in samples], text=texts, return_tensors="pt", padding=True)
    assert processor.tokenizer.padding_side == "left"
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 2  # really padded on the left
    batched = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]
    for index, (images, _) in enumerate(samples):
        single = processor(images=images or None, text=[texts[index]], return_tensors="pt")
        alone = model.generate(**single, **kwargs)[:, single["input_ids"].shape[1] :]
        # After EOS the batched row is padded while the single run stops: compare up to and including EOS.
        length = alone.shape[1]
        assert torch.equal(alone[0], batched[index, :length]), f"sample {index}"
        assert (batched[index, length:] == processor.tokenizer.pad_token_id).all(), f"sample {index}"


def test_sdpa_is_default_and_matches_eager(make_model, processor, two_images):
    model = make_model(gate=0.5)
    assert model.config._attn_implementation == "sdpa"
    assert model.model.vision_tower.config._attn_implementation == "sdpa"
    inputs = processor(images=two_images, text=["<image>\n" + PROMPT] * 2, return_tensors="pt", padding=True)
    with torch.no_grad():
        sdpa = model(**inputs).logits
        model.set_attn_implementation("eager")
        eager = model(**inputs).logits
    attended = inputs["attention_mask"].bool()  # padded rows attend to nothing: their logits are arbitrary
    assert (sdpa - eager)[attended].abs().max().item() < 1e-5


def test_gradient_checkpointing_gives_the_same_gradients(family, two_images):
    inputs = family.processor(images=two_images, text=["<image>\n" + PROMPT] * 2, return_tensors="pt", padding=True)
    labels = inputs["input_ids"].clone()
    grads = []
    for checkpointing in (False, True):
        model = family.make_model(gate=0.5).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert family.vision_layers(model)[0].gradient_checkpointing
            assert model.model.language_model.layers[0].gradient_checkpointing
        model(**inputs, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("saliency_cross_attention" in n for n in grads[0])
    projector = {name for name, p in model.named_parameters()
                 if name.startswith("model.multi_modal_projector.") and p.requires_grad}
    assert projector and projector <= grads[0].keys()  # InternVL's MLP, Qwen-VL's Resampler: every weight
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_bfloat16_forward_is_finite_and_close(make_model, processor, two_images):
    model = make_model(gate=0.5)
    inputs = processor(images=two_images, text=["<image>\n" + PROMPT] * 2, return_tensors="pt", padding=True)
    with torch.no_grad():
        fp32 = model(**inputs).logits
        model.to(torch.bfloat16)
        bf16 = model(**{**inputs, "pixel_values": inputs["pixel_values"].bfloat16()}).logits
    assert bf16.dtype == torch.bfloat16 and torch.isfinite(bf16).all()
    assert (bf16.float() - fp32).abs().max().item() < 0.1


class AtenOpCounter(TorchDispatchMode):
    """Counts every ATen operator call, by name."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def decoding_step_work(model, inputs, steps: int = 3) -> tuple[Counter, Counter]:
    """ATen ops and Python function calls (by file, line, name) of `steps` decoding steps: a `generate()` of
    1 + `steps` tokens minus one of 1 token (prefill and set-up are the same in both)."""

    def run(new_tokens: int) -> tuple[Counter, Counter]:
        counter, profiler = AtenOpCounter(), cProfile.Profile()
        with counter:
            profiler.enable()
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            profiler.disable()
        calls = Counter({key: row[1] for key, row in pstats.Stats(profiler).stats.items() if key[0] != "~"})
        return counter.ops, calls

    run(2)  # warm-up: one-time paths (caches, warnings) out of the way
    ops_prefill, calls_prefill = run(1)
    ops_all, calls_all = run(1 + steps)
    ops_all.subtract(ops_prefill)
    calls_all.subtract(calls_prefill)
    return +ops_all, +calls_all


def test_decoding_steps_run_nothing_saliency_related_and_internvl_s_ops(make_model, processor):
    """After the prefill nothing of the vision or saliency path runs, and each decoding step runs exactly the ATen
    ops of transformers' InternVL with the same weights; in Python it adds only our two `forward` frames and the
    lookup of our kept signature (generate()'s remote-code check neither computes nor validates one per step)."""
    model = make_model(gate=0.5)
    batch = processor(images=[random_image(300, 1000)], text=["<image>\n" + PROMPT], return_tensors="pt")
    calls = Counter()
    parts = {"vision tower": model.model.vision_tower, "EAT": model.model.saliency_model,
             "saliency embeddings": model.model.vision_tower.saliency_embeddings,
             "projector": model.model.multi_modal_projector, "language model": model.model.language_model}
    handles = [module.register_forward_hook(lambda *args, name=name: calls.update([name])) for name, module in parts.items()]
    model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    for handle in handles:
        handle.remove()
    assert calls == {"vision tower": 1, "EAT": 1, "saliency embeddings": 1, "projector": 1, "language model": 5}

    twin = build_internvl_twin(model)
    ours_ops, ours_calls = decoding_step_work(model, dict(batch))
    theirs_ops, theirs_calls = decoding_step_work(twin, {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")})
    assert ours_ops == theirs_ops and sum(ours_ops.values()) > 3 * 50  # the whole decoder layer stack, per step
    ours_only = +(ours_calls - theirs_calls)
    assert not +(theirs_calls - ours_calls)
    frames = Counter()
    ours = {modeling_ase_mllm.__file__, packaging_ase_mllm.__file__}  # the model, and its kept signature's class
    for (file, _, function), count in ours_only.items():
        if file in ours:
            frames[function] += count
    assert frames == {"forward": 6, "replace": 3}  # per step: our two forwards and the kept bound signature
    # The rest is the lookup of that signature: none is computed from a function's code, nor validated anew.
    assert {key[0] for key in ours_only} - ours <= {inspect.__file__}
    assert not any(key[2] in ("_signature_from_function", "__init__") for key in ours_only), ours_only
