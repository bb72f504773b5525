"""The aesthetic score: EAT's `get_score` on the raw outputs, its cost, batch invariance, `critique()` and the
`aesthetic-critique` pipeline of a saved folder in a fresh process without our package."""

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from test_hub_roundtrip import BLOCK_OUR_PACKAGE

from conftest import PROMPT, random_image
from families import PHOTO_SIZE
from modeling_ase_mllm.inference.chat import batch_chat
from modeling_ase_mllm.scoring_ase_mllm import CRITIQUE_PROMPT, rating_distribution, rating_spread


def get_score(rating_outputs: torch.Tensor) -> list[float]:
    """EAT's `get_score`, written out per image: Σ_{i=1..10} i·y_i over the raw outputs, in double precision."""
    return [sum((i + 1) * float(y) for i, y in enumerate(row)) for row in rating_outputs]


def test_the_critique_prompt_is_the_papers():
    from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT

    assert CRITIQUE_PROMPT == AESTHETIC_PROMPT == PROMPT


def test_score_is_get_score_of_the_raw_outputs_and_costs_one_eat_forward(make_model, processor):
    model = make_model(gate=0.5, seed=3)
    images = [random_image(300, 700, seed=1), random_image(500, 260, seed=2)]
    calls = {"eat": [], "vision": 0, "llm": 0}
    eat = model.model.saliency_model
    hooks = [
        eat.register_forward_hook(lambda m, i, o: calls["eat"].append(torch.is_grad_enabled())),
        model.model.vision_tower.register_forward_hook(lambda m, i, o: calls.update(vision=calls["vision"] + 1)),
        model.model.language_model.register_forward_hook(lambda m, i, o: calls.update(llm=calls["llm"] + 1)),
    ]
    output = model.score(images=images, processor=processor)
    for hook in hooks:
        hook.remove()
    # One EAT forward for both images, without autograd (LayerCAM would be a second, grad-enabled forward).
    assert calls == {"eat": [False], "vision": 0, "llm": 0}

    eat_inputs = processor.image_processor(images, return_tensors="pt")["saliency_pixel_values"]
    with torch.no_grad():
        raw = eat(eat_inputs)
    assert torch.equal(output.rating_outputs, raw)
    assert output.scores.tolist() == pytest.approx(get_score(raw), abs=1e-5)
    assert output.trained is False  # a random tiny model: no EAT checkpoint recorded
    # The distribution and spread are derived for display; they never enter the score.
    assert torch.allclose(output.distribution.sum(1), torch.ones(2))
    assert torch.equal(model.score(eat_inputs).scores, output.scores)


def test_distribution_and_spread_by_hand():
    raw = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
                        [-0.2, 0, 0, 0, 0, 0, 0, 0, 0, 0.6],
                        [-1.0] * 10])
    distribution = rating_distribution(raw)
    assert distribution[0].tolist() == raw[0].tolist()
    assert distribution[1].tolist() == [0.0] * 9 + [1.0]  # negative outputs clamp at 0
    assert distribution[2].tolist() == pytest.approx([0.1] * 10)  # none positive: uniform
    # Ratings 5 and 6 with mass 1/2 each: std 0.5; one rating: 0; uniform over 1..10: sqrt(99/12).
    assert rating_spread(distribution).tolist() == pytest.approx([0.5, 0.0, (99 / 12) ** 0.5])


def test_a_model_without_eat_says_it_gives_no_score(make_model, processor):
    model = make_model(saliency_config={"source": "uniform"})
    with pytest.raises(ValueError, match="'uniform', which has no EAT"):
        model.score(images=[random_image(64, 64)], processor=processor)


def test_scores_are_batch_invariant_alone_or_shuffled_in_batches_of_3_and_8(make_model, processor):
    model = make_model(gate=0.5, seed=4)
    sizes = [(300, 700), (448, 448), (120, 900), (640, 480), (90, 90), (1000, 300), (256, 512), (333, 222)]
    photos = [random_image(h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)]
    alone = torch.cat([model.score(images=[photo], processor=processor).rating_outputs for photo in photos])
    worst = 0.0
    for batch_size in (3, 8):
        order = list(range(len(photos)))
        random.Random(batch_size).shuffle(order)
        batched = torch.empty_like(alone)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batched[chunk] = model.score(images=[photos[i] for i in chunk], processor=processor).rating_outputs
        scores_alone, scores_batched = get_score(alone), get_score(batched)
        worst = max(worst, *(abs(a - b) for a, b in zip(scores_alone, scores_batched)))
        worst = max(worst, float((alone - batched).abs().max()))
    print(f"largest score / raw-output difference, alone vs shuffled batches of 3 and 8: {worst:.3g}")
    assert worst <= 1e-6


def test_critique_returns_generate_s_text_the_score_and_the_maps_the_vit_received(make_model, processor):
    model = make_model(gate=0.5, seed=6)
    images = [random_image(300, 700, seed=7), random_image(448, 448, seed=8)]
    received = []
    hook = model.model.vision_tower.register_forward_pre_hook(
        lambda m, args, kwargs: received.append(kwargs["saliency_maps"]), with_kwargs=True
    )
    output = model.critique(processor, images, generation_config={"max_new_tokens": 6})
    hook.remove()
    assert output.critiques == batch_chat(model, processor, images, [PROMPT] * 2, {"max_new_tokens": 6})
    assert len(received) == 1 and torch.equal(torch.cat(output.saliency_maps), received[0])
    assert [m.shape[0] for m in output.saliency_maps] == [11, 1]  # 5×2 tiles + thumbnail; one tile
    assert torch.equal(output.scores, model.score(images=images, processor=processor).scores)


PIPELINE_IN_FRESH_PROCESS = BLOCK_OUR_PACKAGE + textwrap.dedent(
    """
    import PIL.Image, torch
    from transformers import pipeline

    folder, image_path, prompt = sys.argv[1:4]
    critic = pipeline("aesthetic-critique", model=folder, trust_remote_code=True)
    model, processor = critic.model, critic.processor
    received = []
    model.model.vision_tower.register_forward_pre_hook(
        lambda m, args, kwargs: received.append(kwargs["saliency_maps"]), with_kwargs=True)
    result = critic(image_path, max_new_tokens=8)

    image = PIL.Image.open(image_path)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    with torch.no_grad():
        raw = model.model.saliency_model(inputs["saliency_pixel_values"])[0]
    print("RESULT" + json.dumps({
        "module": type(critic).__module__,
        "critique": result["critique"],
        "generated": processor.decode(tokens, skip_special_tokens=True).strip(),
        "score": result["score"],
        "get_score": sum((i + 1) * float(y) for i, y in enumerate(raw)),
        "rating_outputs_equal": result["rating_outputs"] == raw.tolist(),
        "maps_equal": len(received) >= 1 and torch.equal(result["saliency_maps"], received[0]),
        "map_shape": list(result["saliency_maps"].shape),
        "score_trained": result["score_trained"],
    }))
    """
)


@pytest.mark.slow
def test_pipeline_of_a_saved_folder_gives_critique_score_and_map_without_our_package(tmp_path, family):
    folder = tmp_path / "ase-mllm-tiny"
    family.make_model(gate=0.5, seed=9).save_pretrained(folder)
    family.processor.save_pretrained(folder)
    assert "aesthetic-critique" in json.loads((folder / "config.json").read_text())["custom_pipelines"]
    image_path = tmp_path / "photo.png"
    random_image(*PHOTO_SIZE, seed=3).save(image_path)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run([sys.executable, "-c", PIPELINE_IN_FRESH_PROCESS, str(folder), str(image_path), PROMPT],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    assert result["module"].startswith("transformers_modules.")
    assert result["critique"] == result["generated"] and result["critique"]
    assert result["score"] == pytest.approx(result["get_score"], abs=1e-5)
    assert result["rating_outputs_equal"] and result["maps_equal"]
    assert result["map_shape"] == list(family.photo_map_shape)
    assert result["score_trained"] is False
