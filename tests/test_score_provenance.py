"""Where the aesthetic score's EAT comes from: a tiny EAT in the released checkpoint's layout goes through
`ase-mllm convert-eat` and `convert --eat`, the folder records the file's name and SHA-256 and the card shows them,
and the converted model's score is `get_score`'s formula on that EAT's raw outputs; a random model's score is
labelled untrained on the card; training leaves the score bit-identical (EAT is frozen)."""

import hashlib
import json

import pytest
import torch
from eat_fixture import released_eat_state_dict
from test_scoring import get_score

from conftest import random_image
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.convert.internvl import convert_internvl_checkpoint
from modeling_ase_mllm.convert.twin import build_internvl_twin
from modeling_ase_mllm.eat_ase_mllm import EatModel
from modeling_ase_mllm.scoring_ase_mllm import UNTRAINED_NOTE
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config


def run(argv, capsys):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_convert_eat_then_convert_records_the_file_and_the_score_is_get_score_of_the_released_eat(tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    eat_config = tiny_config().saliency_config.eat_config
    released = released_eat_state_dict(eat_config, seed=5)
    pth = tmp_path / "AVA_AOT_tiny.pth"
    torch.save(released, pth)
    (tmp_path / "eat.json").write_text(eat_config.to_json_string(), encoding="utf-8")
    status, out, _ = run(["convert-eat", pth, "--eat-config", tmp_path / "eat.json"], capsys)
    converted_eat = tmp_path / "AVA_AOT_tiny.safetensors"
    assert status == 0 and out.strip() == str(converted_eat)

    source = tmp_path / "internvl"
    build_internvl_twin(build_tiny_model(seed=11)).save_pretrained(source)
    build_processor().tokenizer.save_pretrained(source)
    folder = tmp_path / "ase"
    convert_internvl_checkpoint(source, folder, eat=converted_eat, eat_config=eat_config.to_dict())

    recorded = json.loads((folder / "config.json").read_text())["saliency_config"]["eat_config"]
    assert recorded["weights_file"] == "AVA_AOT_tiny.safetensors"
    assert recorded["weights_sha256"] == hashlib.sha256(converted_eat.read_bytes()).hexdigest()

    # The released-layout EAT, loaded by itself, gives the raw outputs that get_score's formula turns into the score.
    reference_eat = EatModel(eat_config).eval()
    reference_eat.load_state_dict(released, strict=True)
    photos = [random_image(300, 500, seed=31), random_image(200, 200, seed=32)]
    processor = build_processor()
    with torch.no_grad():
        raw = reference_eat(processor.image_processor(photos, return_tensors="pt")["saliency_pixel_values"])
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    output = model.score(images=photos, processor=processor)
    assert output.trained is True and torch.equal(output.rating_outputs, raw)
    assert output.scores.tolist() == pytest.approx(get_score(raw), abs=1e-5)

    # No untrained note anywhere, and the card names the file and its SHA-256.
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "`AVA_AOT_tiny.safetensors`" in card and recorded["weights_sha256"] in card and UNTRAINED_NOTE not in card
    image = tmp_path / "photo.png"
    photos[0].save(image)
    status, out, err = run(["score", image, "--model", tmp_path / "saved"], capsys)
    assert status == 0 and UNTRAINED_NOTE not in err
    assert out.strip().splitlines()[-1] == f"{image}: {get_score(raw[:1])[0]:.2f}"  # (deepspeed may print before)


def test_a_random_model_s_card_labels_the_score_untrained(saved_model):
    card = (saved_model / "README.md").read_text()
    assert "## Aesthetic score" in card and "**Untrained score.** " + UNTRAINED_NOTE in card


def test_training_leaves_the_score_bit_identical(saved_model, tmp_path, capsys):
    from modeling_ase_mllm.data.conversations import to_conversations
    from modeling_ase_mllm.data.mini_aic import load_mini_aic

    dataset = tmp_path / "mini2"
    to_conversations(load_mini_aic(["train"])["train"], mode="sample").select(range(2)).save_to_disk(str(dataset))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base_recipe: mini\neffective_batch_size: 1\nper_device_train_batch_size: 1\n"
                      "disable_tqdm: true\n", encoding="utf-8")
    trained = tmp_path / "trained"
    status, _, _ = run(["train", "--recipe", recipe, "--data", dataset, "--model", saved_model, "--output-dir", trained,
                        "--max-steps", "2"], capsys)
    assert status == 0
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    random_image(300, 700, seed=41).save(photos[0])
    random_image(240, 240, seed=42).save(photos[1])
    _, before, _ = run(["score", *photos, "--model", saved_model, "--json"], capsys)
    _, after, _ = run(["score", *photos, "--model", trained, "--json"], capsys)
    assert before == after and len(before.splitlines()) == 2  # the JSON carries every float in full
    # ... while training did change the weights it trains.
    from safetensors.torch import load_file

    start, end = load_file(saved_model / "model.safetensors"), load_file(trained / "model.safetensors")
    changed = {name.split(".")[1] for name in start if name in end and not torch.equal(start[name], end[name])}
    assert changed and "saliency_model" not in changed
