"""IASM: EAT in the released naming, batch invariance, LayerCAM, tile mapping, precomputed maps."""

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eat_fixture import parameter_count, released_eat_state_dict

from modeling_ase_mllm.configuration_ase_mllm import AseMllmEatConfig
from modeling_ase_mllm.eat_ase_mllm import EatModel, aesthetic_target, eat_parameter_count, layer_cam
from modeling_ase_mllm.convert.eat import convert_eat_checkpoint, load_eat_weights, read_eat_checkpoint
from modeling_ase_mllm.saliency_ase_mllm import map_saliency_to_tiles
from modeling_ase_mllm.testing.tiny import tiny_config


TINY_EAT = tiny_config().saliency_config.eat_config
DEFAULT_LAYER = "stages.2.layer_norms.3"  # last LayerNorm of the tiny EAT's stage 3 (2 blocks)


@pytest.fixture(scope="module")
def eat():
    torch.manual_seed(0)
    model = EatModel(TINY_EAT).eval()
    model.load_state_dict(released_eat_state_dict(TINY_EAT, seed=1), strict=True)
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    pictures = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    tensors = [torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1).float()[None] / 255 for p in pictures]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return torch.cat([(F.interpolate(t, size=(224, 224), mode="bilinear") - mean) / std for t in tensors])


# --- 1. released naming, strict loading, full-size count -------------------------------------------------------


def test_released_naming_loads_strictly_through_the_pth_loader(tmp_path):
    state = released_eat_state_dict(TINY_EAT, seed=3)
    fresh = EatModel(TINY_EAT)
    assert set(fresh.state_dict()) == set(state) and len(state) == len(fresh.state_dict())
    # Our index buffers equal the fixture's, computed there with plain loops.
    for name, tensor in state.items():
        if name.endswith(("relative_position_index", "attn_mask")):
            assert torch.equal(fresh.state_dict()[name], tensor), name
    pth = tmp_path / "AVA_AOT_fixture.pth"
    torch.save(state, pth)
    converted = convert_eat_checkpoint(pth, config=TINY_EAT)
    assert converted.suffix == ".safetensors" and converted.is_file()
    loaded = load_eat_weights(EatModel(TINY_EAT), converted)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # A wrapped ({"model": ...}) DataParallel checkpoint reads the same.
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    assert read_eat_checkpoint(tmp_path / "wrapped.pth").keys() == state.keys()


def test_a_mismatched_checkpoint_names_file_and_keys(tmp_path):
    state = released_eat_state_dict(TINY_EAT)
    state.pop("cls_head.bias")
    state["stages.0.attns.0.proj_qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*missing \(1\): cls_head\.bias.*wrong shape \(1\)"):
        load_eat_weights(EatModel(TINY_EAT), tmp_path / "broken.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth"):
        read_eat_checkpoint(tmp_path / "junk.pth")


def test_full_size_eat_on_meta_has_dat_base_parameter_count():
    config = AseMllmEatConfig()
    with torch.device("meta"):
        model = EatModel(config)
    count = sum(p.numel() for p in model.parameters())
    print(f"\nEAT (DAT-Base + 10-bin head) parameters: {count:,}")
    # Three independent derivations agree: the module, a closed form from the shapes, the released-naming fixture.
    assert count == eat_parameter_count(config) == parameter_count(released_eat_state_dict(config, device="meta"))
    assert count == 86_878_166


def test_stage_widths_that_do_not_double_are_refused_naming_the_field():
    """DAT builds stage k+1's input for 2·dims[k] channels; other widths used to be accepted and fail in `forward`."""
    with pytest.raises(ValueError, match=r"EAT `dims` \[128, 192, 384, 768\] must double .* dims\[1\] is 192, expected 2 × 128 = 256"):
        AseMllmEatConfig(dims=[128, 192, 384, 768])
    with pytest.raises(ValueError, match=r"EAT `dims` \[16, 32, 64, 96\] must double .* dims\[3\] is 96"):
        tiny_config(saliency_config={"eat_config": {**tiny_config().saliency_config.eat_config.to_dict(), "dims": [16, 32, 64, 96]}})
    assert AseMllmEatConfig(dims=[64, 128, 256, 512]).dims == [64, 128, 256, 512]


# --- 2. batch invariance --------------------------------------------------------------------------------------


def test_scores_and_maps_do_not_depend_on_batch_mates(eat, photos):
    alone_logits = eat(photos[:1])
    alone_map = layer_cam(eat, photos[:1], eat.get_submodule(DEFAULT_LAYER))
    batch_logits = eat(photos)
    batch_maps = layer_cam(eat, photos, eat.get_submodule(DEFAULT_LAYER))
    assert (alone_logits - batch_logits[:1]).abs().max() < 1e-5
    assert (alone_map - batch_maps[:1]).abs().max() < 1e-5
    assert batch_maps.shape == (5, 14, 14)


# --- 3. LayerCAM ------------------------------------------------------------------------------------------------


def direct_layer_cam(model, pixel_values, layer, target):
    """LayerCAM the textbook way: keep A with a hook, backpropagate y^c, read A.grad."""
    kept = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.update(a=o) or o.retain_grad())
    with torch.enable_grad():
        logits = model(pixel_values.clone().requires_grad_(True))
        aesthetic_target(logits, target).sum().backward()
    handle.remove()
    cam = F.relu((F.relu(kept["a"].grad) * kept["a"]).sum(1)).detach()
    low, high = cam.flatten(1).min(1)[0][:, None, None], cam.flatten(1).max(1)[0][:, None, None]
    return (cam - low) / (high - low)


@pytest.mark.parametrize("target", ["top_bin", "mean_score"])
def test_layer_cam_equals_direct_computation_under_any_grad_mode(photos, target):
    torch.manual_seed(0)
    model = EatModel(TINY_EAT).eval()
    model.load_state_dict(released_eat_state_dict(TINY_EAT, seed=1))
    expected = direct_layer_cam(model, photos[:2], DEFAULT_LAYER, target)
    model.zero_grad(set_to_none=True)
    layer = model.get_submodule(DEFAULT_LAYER)
    plain = layer_cam(model, photos[:2], layer, target)
    with torch.no_grad():
        no_grad = layer_cam(model, photos[:2], layer, target)
    with torch.inference_mode():
        inference = layer_cam(model, photos[:2], layer, target)
    assert (plain - expected).abs().max() < 1e-5
    assert torch.equal(plain, no_grad) and torch.equal(plain, inference)
    # Parameters here require grad (not frozen), and still none received one.
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_top_bin_and_mean_score_targets_give_different_maps(eat, photos):
    layer = eat.get_submodule(DEFAULT_LAYER)
    assert (layer_cam(eat, photos[:2], layer, "top_bin") - layer_cam(eat, photos[:2], layer, "mean_score")).abs().max() > 1e-3


def test_constant_image_gives_a_finite_map(eat):
    constant = torch.zeros(2, 3, 224, 224)
    saliency = layer_cam(eat, constant, eat.get_submodule(DEFAULT_LAYER))
    assert torch.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() <= 1
    zero_map = layer_cam(eat, constant, eat.get_submodule("patch_proj.0"))  # a conv of a zero image at zero bias
    assert torch.isfinite(zero_map).all()


def test_head_input_gradient_is_spatially_constant(eat, photos):
    """Why `cls_norm` is not the default layer: behind global pooling its gradient is the same at every position."""
    kept = {}
    handle = eat.cls_norm.register_forward_hook(lambda m, i, o: kept.update(a=o))
    with torch.enable_grad():
        pixels = photos[:1].clone().requires_grad_(True)
        logits = eat(pixels)
        (grad,) = torch.autograd.grad(aesthetic_target(logits, "top_bin").sum(), kept["a"])
    handle.remove()
    assert grad.flatten(2).std(dim=2).max() < 1e-7


# --- 4. sanity: the map comes from EAT's weights -------------------------------------------------------------------


def test_reinitialising_eat_changes_the_map(eat, photos):
    layer = DEFAULT_LAYER
    trained = layer_cam(eat, photos[:2], eat.get_submodule(layer))
    other = EatModel(TINY_EAT).eval()
    other.load_state_dict(released_eat_state_dict(TINY_EAT, seed=99))
    reinitialised = layer_cam(other, photos[:2], other.get_submodule(layer))
    # Model-randomisation sanity check (Adebayo et al., 2018): the maps decorrelate (measured r ≈ 0.73).
    for a, b in zip(trained.flatten(1), reinitialised.flatten(1)):
        assert np.corrcoef(a.numpy(), b.numpy())[0, 1] < 0.9


# --- 5. tile mapping ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cols,rows", [(3, 2), (2, 3)])
def test_a_hot_spot_lands_in_the_right_tile_and_patch(cols, rows):
    """A 14×14 EAT map with one hot cell, mapped onto a cols×rows tiling of 32×32 maps plus the thumbnail."""
    grid, cell = 32, (10, 12)
    image_map = torch.zeros(14, 14)
    image_map[cell] = 1.0
    tiles = map_saliency_to_tiles(image_map, (cols, rows), use_thumbnail=True, grid_size=grid)
    assert tiles.shape == (cols * rows + 1, grid, grid)
    # The cell's centre on the canvas of tiles, in map pixels.
    y, x = (cell[0] + 0.5) / 14 * rows * grid, (cell[1] + 0.5) / 14 * cols * grid
    tile = int(y // grid) * cols + int(x // grid)
    assert int(tiles[:-1].flatten(1).amax(1).argmax()) == tile
    py, px = divmod(int(tiles[tile].argmax()), grid)
    assert abs(py - (y % grid - 0.5)) <= 1.5 and abs(px - (x % grid - 0.5)) <= 1.5
    ty, tx = divmod(int(tiles[-1].argmax()), grid)
    assert abs(ty - ((cell[0] + 0.5) / 14 * grid - 0.5)) <= 1.5 and abs(tx - ((cell[1] + 0.5) / 14 * grid - 0.5)) <= 1.5


def test_model_maps_eat_saliency_onto_every_tile_and_the_thumbnail(make_model, processor):
    from conftest import random_image

    model = make_model()
    image = random_image(300, 1000, seed=2)
    batch = processor.image_processor([image], return_tensors="pt")
    assert batch["tile_grids"].tolist() == [[3, 1]] and batch["pixel_values"].shape[0] == 4
    maps = model.get_saliency_maps(batch["pixel_values"], saliency_pixel_values=batch["saliency_pixel_values"],
                                   tile_grids=batch["tile_grids"])
    image_map = model.get_image_saliency(batch["saliency_pixel_values"])[0]
    assert torch.equal(maps, map_saliency_to_tiles(image_map, (3, 1), True, 32))
    with pytest.raises(ValueError, match=r"give 3 tiles \(thumbnails included\) but `pixel_values` has 4"):
        model.get_saliency_maps(batch["pixel_values"], saliency_pixel_values=batch["saliency_pixel_values"],
                                tile_grids=torch.tensor([[2, 1]]))
    with pytest.raises(ValueError, match=r"saliency_pixel_values` must be \(num_images, 3, 224, 224\)"):
        model.get_image_saliency(torch.zeros(1, 3, 448, 448))


def test_eat_is_frozen_in_the_model_and_after_reload(make_model, tmp_path):
    from transformers import AutoModelForImageTextToText

    model = make_model()
    assert not any(p.requires_grad for p in model.model.saliency_model.parameters())
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in reloaded.model.saliency_model.parameters())
    assert any(k.startswith("model.saliency_model.stages.2.attns.1.ref_point14") for k in reloaded.state_dict())


# --- 6. precomputed maps ---------------------------------------------------------------------------------------------


class EatCalls:
    """Counts EAT forward passes."""

    def __init__(self, model):
        self.count = 0
        self.handle = model.model.saliency_model.register_forward_hook(self.seen)

    def seen(self, *args):
        self.count += 1


@pytest.fixture
def photo_dataset():
    import datasets
    from skimage import data

    from PIL import Image

    photos = [Image.fromarray(data.astronaut()).resize((640, 640)), Image.fromarray(data.coffee())]
    return datasets.Dataset.from_dict({"image": photos, "id": [0, 1]}).cast_column("image", datasets.Image())


def test_precomputed_maps_give_bit_identical_outputs(make_model, processor, photo_dataset, tmp_path):
    from modeling_ase_mllm.data.saliency import precompute_saliency

    model = make_model(gate=0.5)
    with_maps = precompute_saliency(photo_dataset, model, processor, batch_size=1,
                                    cache_file_name=str(tmp_path / "saliency.arrow"))
    assert np.asarray(with_maps[0]["saliency"]).shape == (1, 14, 14)
    again = precompute_saliency(photo_dataset, model, processor, batch_size=1,
                                cache_file_name=str(tmp_path / "saliency.arrow"))
    assert again._fingerprint == with_maps._fingerprint
    calls = EatCalls(model)
    for example in with_maps:
        text = ["<image>\nComment on this image from an aesthetic perspective."]
        on_the_fly = processor(images=[example["image"]], text=text, return_tensors="pt")
        precomputed = processor(images=[example["image"]], text=text, image_saliency=example["saliency"],
                                return_tensors="pt")
        assert "saliency_pixel_values" not in precomputed and "saliency_maps" in precomputed
        with torch.no_grad():
            before = calls.count
            reference = model(**on_the_fly).logits
            assert calls.count == before + 1
            reused = model(**precomputed).logits
            assert calls.count == before + 1  # EAT not run
        assert torch.equal(reference, reused)


def test_precompute_cache_never_returns_maps_of_other_weights_or_rows(make_model, processor, photo_dataset, tmp_path):
    """A named cache file of one model is recomputed for another; subsets of one dataset get their own maps."""
    from modeling_ase_mllm.data.saliency import compute_image_saliency, precompute_saliency

    cache = str(tmp_path / "saliency.arrow")
    model_a, model_b = make_model(gate=0.5, seed=0), make_model(gate=0.5, seed=1)
    maps_a = np.asarray(precompute_saliency(photo_dataset, model_a, processor, cache_file_name=cache)["saliency"])
    maps_b = np.asarray(precompute_saliency(photo_dataset, model_b, processor, cache_file_name=cache)["saliency"])
    expected_b = np.stack([m[None] for m in compute_image_saliency(model_b, processor, list(photo_dataset["image"]))])
    assert np.abs(maps_a - maps_b).max() > 1e-3  # the two models see differently
    assert np.array_equal(maps_b, expected_b)
    again_a = np.asarray(precompute_saliency(photo_dataset, model_a, processor, cache_file_name=cache)["saliency"])
    assert np.array_equal(again_a, maps_a)

    saved = tmp_path / "saved"
    photo_dataset.save_to_disk(saved)
    on_disk = datasets.load_from_disk(str(saved))
    first = np.asarray(precompute_saliency(on_disk.select([0]), model_a, processor)["saliency"])
    second = np.asarray(precompute_saliency(on_disk.select([1]), model_a, processor)["saliency"])
    # EAT is batch-invariant to 1e-5 (not bitwise): these ran one image per batch, `maps_a` two.
    assert np.abs(first[0] - maps_a[0]).max() < 1e-5 and np.abs(second[0] - maps_a[1]).max() < 1e-5


def test_precomputed_maps_plug_into_training_without_running_eat(make_model, processor, photo_dataset, tmp_path):
    from transformers import Trainer, TrainingArguments

    from modeling_ase_mllm.data.saliency import precompute_saliency
    from modeling_ase_mllm.training.collator import AseMllmDataCollator

    model = make_model(gate=0.5)
    with_maps = precompute_saliency(photo_dataset, model, processor, batch_size=2)
    answer = "Lovely light and a balanced composition."
    train = with_maps.map(lambda e: {"messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]})
    calls = EatCalls(model)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             remove_unused_columns=False, save_strategy="no", use_cpu=True, logging_steps=1)
    processor.image_processor.max_patches = 1
    try:
        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=AseMllmDataCollator(processor))
        trainer.train()
    finally:
        processor.image_processor.max_patches = 12
    assert calls.count == 0
    assert all(np.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)


# --- 8. the picture of a real photo ---------------------------------------------------------------------------------


def test_example_writes_the_overlay_png_for_a_real_photo(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image
    from skimage import data

    from modeling_ase_mllm.inference.visualize import saliency_picture_size

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "astronaut.png"
    subprocess.run([sys.executable, str(root / "examples" / "saliency_picture.py"), "--out", str(out), "--max-tiles", "6"],
                   check=True, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    with Image.open(out) as picture:
        picture.verify()
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        # The astronaut (512×512) is one tile: InternVL picks 2×2 only above half of that grid's canvas (401 k px).
        assert picture.size == saliency_picture_size((512, 512), (1, 1))
        pixels = np.asarray(picture)
    assert pixels.std() > 10  # a picture, not a blank canvas
    assert data.astronaut().shape == (512, 512, 3)
