"""Saliency sources, their mapping onto tiles, the gate that lets them reach the image features, and the IAS blocks
that carry the gate (in both families)."""

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import chat_inputs, random_image
from modeling_ase_mllm.image_processing_ase_mllm import has_thumbnail
from modeling_ase_mllm.modeling_ase_mllm import parameter_group, set_saliency_gates
from modeling_ase_mllm.saliency_ase_mllm import map_saliency_to_tiles, normalize_saliency, spectral_residual_saliency


def test_spectral_residual_finds_an_odd_patch():
    # A textured background with one flat bright square: the square is the "unexpected" part of the spectrum.
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:256, 0:256]
    gray = 0.5 + 0.2 * np.sin(xs / 3.0) * np.sin(ys / 3.0) + rng.normal(0, 0.01, (256, 256))
    gray[160:200, 40:80] = 1.0
    small = gray.reshape(64, 4, 64, 4).mean(axis=(1, 3))  # area-average to the 64×64 working size
    saliency = spectral_residual_saliency(small)
    assert saliency.shape == (64, 64) and saliency.dtype == np.float32
    assert saliency.min() == 0.0 and saliency.max() == pytest.approx(1.0)
    inside = saliency[40:50, 10:20].mean()  # the square, at 64/256 scale
    outside = np.concatenate([saliency[:30].ravel(), saliency[:, 30:].ravel()]).mean()
    assert inside > 2 * outside


def test_flat_image_gives_uniform_map_not_nan():
    saliency = spectral_residual_saliency(np.full((50, 70), 0.3))
    assert np.array_equal(saliency, np.ones((50, 70), dtype=np.float32))
    assert torch.equal(normalize_saliency(torch.zeros(2, 5, 5)), torch.ones(2, 5, 5))


@pytest.mark.parametrize("cols,rows", [(3, 2), (1, 1), (4, 1)])
def test_hot_spot_lands_in_the_right_tile_and_patch(cols, rows):
    grid = 32
    image_map = torch.zeros(rows * 64, cols * 64)
    # Hot spot at tile (row r, col c), patch (py, px) of that tile, in a map twice as fine as the tile grid.
    r, c, py, px = rows - 1, cols - 1, 5, 20
    image_map[r * 64 + 2 * py : r * 64 + 2 * py + 2, c * 64 + 2 * px : c * 64 + 2 * px + 2] = 1.0
    tiles = map_saliency_to_tiles(image_map, (cols, rows), use_thumbnail=has_thumbnail(cols, rows), grid_size=grid)
    n = cols * rows
    assert tiles.shape == (n + (1 if n > 1 else 0), grid, grid)
    hottest_tile = int(tiles[:n].flatten(1).amax(1).argmax())
    assert hottest_tile == r * cols + c  # row-major, as the processor orders tiles
    assert divmod(int(tiles[hottest_tile].argmax()), grid) == (py, px)
    if n > 1:  # the thumbnail sees the whole image at the tile grid
        ty, tx = divmod(int(tiles[-1].argmax()), grid)
        assert abs(ty - (r * grid + py) // rows) <= 1 and abs(tx - (c * grid + px) // cols) <= 1


def test_processor_maps_are_computed_once_per_image_and_aligned(processor):
    image = random_image(300, 1000, seed=4)
    out = processor.image_processor([image], saliency_source="spectral_residual", return_tensors="pt")
    maps = out["saliency_maps"]
    assert maps.shape == (4, 32, 32) and 0.0 <= maps.min() and maps.max() <= 1.0
    # The three tiles side by side, shrunk to the thumbnail's grid, are the thumbnail's map.
    canvas = torch.cat(list(maps[:3]), dim=1)[None, None]
    shrunk = torch.nn.functional.interpolate(canvas, size=(32, 32), mode="area")[0, 0]
    assert (shrunk - maps[3]).abs().mean() < 0.05
    uniform = processor.image_processor([image], saliency_source="uniform", return_tensors="pt")["saliency_maps"]
    assert torch.equal(uniform, torch.ones(4, 32, 32))


def test_gate_decides_whether_saliency_reaches_the_features(make_model, processor):
    image = random_image(448, 448, seed=5)
    pixel_values = processor.image_processor([image], return_tensors="pt")["pixel_values"]
    flat = torch.ones(1, 32, 32)
    peaked = torch.zeros(1, 32, 32)
    peaked[0, 10:14, 20:24] = 1.0
    for gate, should_differ in [(0.0, False), (0.5, True)]:
        model = make_model(gate=gate)
        with torch.no_grad():
            a = model.get_image_features(pixel_values=pixel_values, saliency_maps=flat).pooler_output
            b = model.get_image_features(pixel_values=pixel_values, saliency_maps=peaked).pooler_output
        assert a.shape == (1, 256, 64)
        if should_differ:
            assert ((a - b).norm() / a.norm()).item() > 5e-4  # measured ~1.2e-3 at gate 0.5
        else:
            assert torch.equal(a, b)


def test_uniform_source_needs_no_maps_and_others_do(make_model, processor):
    pixel_values = processor.image_processor([random_image(448, 448)], return_tensors="pt")["pixel_values"]
    model = make_model(gate=0.5, saliency_config={"source": "uniform"})
    with torch.no_grad():
        implicit = model.get_image_features(pixel_values=pixel_values).pooler_output
        explicit = model.get_image_features(pixel_values=pixel_values, saliency_maps=torch.ones(1, 32, 32)).pooler_output
    assert torch.equal(implicit, explicit)
    with pytest.raises(ValueError, match="needs `saliency_pixel_values` and `tile_grids`"):
        make_model(gate=0.5).get_image_features(pixel_values=pixel_values)
    with pytest.raises(ValueError, match="'spectral_residual' saliency source needs `saliency_maps`"):
        make_model(gate=0.5, saliency_config={"source": "spectral_residual"}).get_image_features(pixel_values=pixel_values)


def test_gate_zero_equals_the_model_without_ias_blocks(family):
    """At gate 0 every IAS block computes exactly its ViT block: the same weights without any IAS block (the family's
    base model's ViT) give bit-equal logits and the same greedy tokens. (InternVL: also transformers' own InternVL,
    test_parity_internvl.py.) A square photo: one picture in both families."""
    inputs = chat_inputs(family.processor, random_image(448, 448, seed=3))
    ours = family.make_model(gate=0.0, seed=1)
    vision = {**ours.config.vision_config.to_dict(), "ias_layers": []}
    plain = family.make_model(vision_config=vision)
    assert not any(layer.has_saliency_cross_attention for layer in family.vision_layers(plain))
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


def test_ias_blocks_are_configurable_and_documented_in_size(family):
    """`ias_layers` picks the blocks (default: all); per IAS block 4C² + 9C parameters, once 2D + DC + C."""
    every = family.make_model()
    assert [layer.has_saliency_cross_attention for layer in family.vision_layers(every)] == [True, True]
    one = family.make_model(vision_config={**every.config.vision_config.to_dict(), "ias_layers": [1]})
    assert [layer.has_saliency_cross_attention for layer in family.vision_layers(one)] == [False, True]
    c, d = every.config.vision_config.hidden_size, every.config.vision_config.saliency_embed_dim
    ias = lambda model: sum(p.numel() for n, p in model.named_parameters() if parameter_group(n) == "ias")
    assert ias(every) - ias(one) == 4 * c * c + 9 * c
    assert ias(one) == 4 * c * c + 9 * c + 2 * d + d * c + c
    with pytest.raises(ValueError, match="ias_layers"):
        type(every.config)(vision_config={"num_hidden_layers": 2, "ias_layers": [2]})
