"""Folders saved by the release before issue 26 (`tests/fixtures/before_issue26`, see its `make.py`) load with the
code of today and compute exactly what that release computed: the same greedy tokens and the same logits (diff 0.0)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch


BEFORE = Path(__file__).parent / "fixtures" / "before_issue26"


def load_make():
    spec = importlib.util.spec_from_file_location("before_issue26_make", BEFORE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The expected numbers were computed on one thread; a reduction split otherwise may round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_folder_saved_before_issue26_gives_identical_tokens_and_logits(family, one_thread):
    import PIL.Image

    expected = json.loads((BEFORE / "expected.json").read_text(encoding="utf-8"))
    with PIL.Image.open(BEFORE / "photos" / expected["photo"]) as image:
        got = load_make().outputs(BEFORE / family.name, family.name, image.convert("RGB"))
    assert got["tokens"] == expected[family.name]["tokens"]
    diff = (torch.tensor(got["last_logits"]) - torch.tensor(expected[family.name]["last_logits"])).abs().max().item()
    assert diff == 0.0
    assert got["logits_sha256"] == expected[family.name]["logits_sha256"]


# --- the model's saliency_config owns the saliency settings --------------------------------------------------------
def saved_with_other_source(tmp_path, family: str, source: str = "spectral_residual") -> Path:
    """The fixture folder of `family` whose processor was saved with `source` instead of the model's."""
    import shutil

    folder = tmp_path / family
    shutil.copytree(BEFORE / family, folder)
    path = folder / "processor_config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["image_processor"]["saliency_source"] = source
    path.write_text(json.dumps(saved), encoding="utf-8")
    return folder


def test_maps_of_another_source_are_an_error_naming_both_never_a_silent_run(family, tmp_path):
    import PIL.Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from modeling_ase_mllm.inference.captioning import load_model_and_processor

    folder = saved_with_other_source(tmp_path, family.name)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert (model.config.saliency_config.source, processor.image_processor.saliency_source) == (
        "eat_layercam", "spectral_residual")
    with PIL.Image.open(BEFORE / "photos" / "wide.png") as image:
        messages = [{"role": "user", "content": [{"type": "image", "image": image.convert("RGB")},
                                                 {"type": "text", "text": "Hi"}]}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt")
    assert "saliency_maps" in inputs and inputs["saliency_source"] == "spectral_residual"
    both = r"saliency_source is 'spectral_residual' but the model's saliency_config.source is 'eat_layercam'"
    with torch.no_grad():
        for run in (lambda: model(**inputs), lambda: model.generate(**inputs, max_new_tokens=2),
                    lambda: model.get_saliency_maps(**inputs)):
            with pytest.raises(ValueError, match=both):
                run()
    with pytest.raises(ValueError, match=r"saliency_source 'spectral_residual' \(model: 'eat_layercam'\)"):
        load_model_and_processor(str(folder), device="cpu")


def test_a_model_without_eat_refuses_the_inputs_of_an_eat_processor(tmp_path):
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config

    model = build_tiny_model(tiny_config(saliency_config={"source": "uniform"}))
    inputs = build_processor()(images=[PIL_image()], text=["<image>\nHi"], return_tensors="pt")
    assert "saliency_pixel_values" in inputs
    with pytest.raises(ValueError, match="saliency_source is 'eat_layercam' but the model's saliency_config.source is 'uniform'"):
        model(**inputs)


def PIL_image():
    import PIL.Image

    with PIL.Image.open(BEFORE / "photos" / "square.png") as image:
        return image.convert("RGB")


def test_processors_take_every_saliency_setting_from_the_model_config():
    from modeling_ase_mllm.configuration_ase_mllm import AseMllmSaliencyConfig
    from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor
    from modeling_ase_mllm.image_processing_ase_mllm_qwen_vl import AseMllmQwenVLImageProcessor
    from modeling_ase_mllm.saliency_ase_mllm import spectral_residual_saliency

    config = AseMllmSaliencyConfig(source="spectral_residual", grid_size=16, working_size=24, blur_sigma=1.0)
    for cls in (AseMllmImageProcessor, AseMllmQwenVLImageProcessor):
        processor = cls.from_saliency_config(config)
        assert (processor.saliency_source, processor.saliency_grid_size, processor.saliency_working_size,
                processor.saliency_blur_sigma) == ("spectral_residual", 16, 24, 1.0)
    # The working size and blur of the config are the ones the maps are made with: one map, one tile.
    image = PIL_image()
    maps = AseMllmImageProcessor.from_saliency_config(config)([image], max_patches=1, return_tensors="pt")["saliency_maps"]
    import numpy as np

    small = np.asarray(image.convert("L").resize((24, 24), 4), dtype=np.float64) / 255.0  # 4: PIL's BOX
    from modeling_ase_mllm.saliency_ase_mllm import map_saliency_to_tiles

    expected = map_saliency_to_tiles(torch.from_numpy(spectral_residual_saliency(small, blur_sigma=1.0)), (1, 1), False, 16)
    assert torch.equal(maps, expected)
    default = AseMllmImageProcessor.from_saliency_config(AseMllmSaliencyConfig(source="spectral_residual"))
    assert not torch.equal(default([image], max_patches=1, return_tensors="pt")["saliency_maps"][:, ::2, ::2], maps)


def test_uniform_maps_are_the_same_from_the_processor_and_the_model():
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config

    model = build_tiny_model(tiny_config(saliency_config={"source": "uniform"}))
    inputs = build_processor(saliency_config=model.config.saliency_config)(
        images=[PIL_image()], text=["<image>\nHi"], return_tensors="pt")
    from_processor = model.get_saliency_maps(**inputs)
    inputs.pop("saliency_maps")
    assert torch.equal(from_processor, model.get_saliency_maps(**inputs))
    assert torch.equal(from_processor, torch.ones_like(from_processor))


def test_run_json_records_the_source_of_the_processor():
    from modeling_ase_mllm.evaluation.run import model_run_settings
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config

    model = build_tiny_model(tiny_config(saliency_config={"source": "eat_layercam"}))
    for source in ("spectral_residual", "uniform", "eat_layercam"):
        settings = model_run_settings(model, build_processor(saliency_source=source), "Hi", None, None)
        assert settings["saliency_source"] == source


def test_model_card_names_the_source_the_evaluation_used(tmp_path):
    from modeling_ase_mllm.hub.model_card import SALIENCY, write_model_card
    from modeling_ase_mllm.testing.tiny import tiny_config

    config = tiny_config(saliency_config={"source": "eat_layercam"})
    card = write_model_card(tmp_path, config=config, saliency_source="spectral_residual").read_text(encoding="utf-8")
    assert SALIENCY["spectral_residual"] in card and SALIENCY["eat_layercam"] not in card
    card = write_model_card(tmp_path, config=config).read_text(encoding="utf-8")
    assert SALIENCY["eat_layercam"] in card


# --- caption --saliency-out: each photo tiled once, EAT once per photo, the picture of the maps the caption used ---
def test_caption_with_saliency_pictures_tiles_each_photo_once_and_runs_eat_once_per_photo(tmp_path, monkeypatch,
                                                                                         capsys, one_thread):
    import hashlib

    import PIL.Image

    from modeling_ase_mllm.cli import main
    from modeling_ase_mllm.eat_ase_mllm import EatModel
    from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor

    eat_images, tiled = [], []
    eat_forward, preprocess = EatModel.forward, AseMllmImageProcessor._preprocess

    def counted_eat(self, pixel_values, *args, **kwargs):
        eat_images.append(pixel_values.shape[0])
        return eat_forward(self, pixel_values, *args, **kwargs)

    def counted_tiling(self, images, *args, **kwargs):
        tiled.extend((image.width, image.height) for image in images)
        return preprocess(self, images, *args, **kwargs)

    monkeypatch.setattr(EatModel, "forward", counted_eat)
    monkeypatch.setattr(AseMllmImageProcessor, "_preprocess", counted_tiling)
    expected = json.loads((BEFORE / "caption.json").read_text(encoding="utf-8"))
    photos = [BEFORE / "photos" / line["image"] for line in expected["lines"]]
    assert main(["caption", *map(str, photos), "--model", str(BEFORE / "internvl"), "--saliency-out",
                 str(tmp_path / "pictures"), *expected["arguments"]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    sizes = []
    for path in photos:
        with PIL.Image.open(path) as image:
            sizes.append(image.size)
    # Before issue 26: 5 EAT forwards over 6 images (2 batches for the captions, then 1 per picture), each photo
    # tiled twice.
    assert eat_images == [1, 1, 1]
    assert sorted(tiled) == sorted(sizes)
    for line, want in zip(lines, expected["lines"], strict=True):
        assert (Path(line["image"]).name, line["caption"]) == (want["image"], want["caption"])
        with PIL.Image.open(line["saliency_picture"]) as picture:
            rgb = picture.convert("RGB")
            got = {"size": list(rgb.size), "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}
        assert got == want["saliency_picture"]  # pixel-identical to the picture the release before drew
