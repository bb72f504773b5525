"""The processor's fast paths keep its results: tables equal the arithmetic, threads change nothing, the EAT input is
PIL's resize of the whole image; the opt-in `fast_decode` / `fast_resize` stay within their stated error."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import random_image
from test_tiling import MEAN, STD, reference_dynamic_preprocess, reference_pixels


def jpeg_bytes(image: PIL.Image.Image, orientation: int = 1) -> bytes:
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("height,width", [(1, 1), (300, 1000), (1080, 1920)])
def test_eat_input_is_pil_bicubic_224_of_the_whole_image(processor, height, width):
    image = random_image(height, width, seed=width)
    out = processor.image_processor([image], return_tensors="pt")["saliency_pixel_values"]
    expected = reference_pixels([image.resize((224, 224), PIL.Image.BICUBIC)])
    assert (out - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "options",
    [{"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4]}, {"do_normalize": False},
     {"do_rescale": False}, {"rescale_factor": 1 / 127.5}],
)
def test_lookup_tables_equal_rescale_and_normalize(processor, options):
    """8-bit pixels are normalised by table lookup: it must equal `(x * factor - mean) / std` for any settings."""
    image = random_image(300, 700, seed=1)
    _, tiles = reference_dynamic_preprocess(image)
    raw = torch.stack([torch.from_numpy(np.array(tile)).permute(2, 0, 1).float() for tile in tiles])
    factor = options.get("rescale_factor", 1 / 255) if options.get("do_rescale", True) else 1.0
    mean = torch.tensor(options.get("image_mean", MEAN.flatten().tolist()))[:, None, None]
    std = torch.tensor(options.get("image_std", STD.flatten().tolist()))[:, None, None]
    expected = (raw * factor - mean) / std if options.get("do_normalize", True) else raw * factor
    out = processor.image_processor([image], return_tensors="pt", **options)["pixel_values"]
    assert out.dtype == torch.float32
    assert ((out - expected).abs() / expected.abs().clamp_min(1)).max().item() <= 1e-6


@pytest.mark.parametrize("source", ["eat_layercam", "spectral_residual"])
def test_threads_change_nothing(processor, tmp_path, source):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(random_image(900, 1200, seed=2), orientation=6))
    images = [str(path), random_image(1, 10000), random_image(448, 448, seed=3), np.asarray(random_image(200, 90)),
              random_image(700, 700, seed=4, mode="RGBA")]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = processor.image_processor(images, saliency_source=source, return_tensors="pt")
        torch.set_num_threads(3)
        three = processor.image_processor(images, saliency_source=source, return_tensors="pt")
    finally:
        torch.set_num_threads(threads)
    assert one.keys() == three.keys()
    for key in one:  # tensors, and the string `saliency_source` the maps were made with
        assert (torch.equal(one[key], three[key]) if isinstance(one[key], torch.Tensor) else one[key] == three[key]), key


def test_fast_decode_keeps_the_grid_and_stays_close(processor, tmp_path):
    # 2000x1000 stored as a 1000x2000 portrait with EXIF orientation 6: the grid comes from the photo as shown
    # (2x1 at 2 tiles), and the JPEG may decode at half scale since 1000x500 still covers the 896x448 canvas.
    shown = random_image(1000, 2000, seed=6)
    stored = shown.transpose(PIL.Image.Transpose.ROTATE_90)
    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg_bytes(stored, orientation=6))
    exact = processor.image_processor([str(path)], max_patches=2, return_tensors="pt")
    for source in (str(path), path.read_bytes()):
        fast = processor.image_processor([source], max_patches=2, fast_decode=True, return_tensors="pt")
        assert fast["tile_grids"].tolist() == exact["tile_grids"].tolist() == [[2, 1]]
        assert fast["pixel_values"].shape == exact["pixel_values"].shape == (3, 3, 448, 448)
        error = (fast["pixel_values"] - exact["pixel_values"]).abs()
        assert 0 < error.mean().item() < 0.1  # measured 0.06 on this noisy picture; ~0.005 on photos (the bench)
    # A PIL image the caller holds is never decoded at reduced scale: the result is exact, the image unchanged.
    held = PIL.Image.open(path)
    fast = processor.image_processor([held], max_patches=2, fast_decode=True, return_tensors="pt")
    assert torch.equal(fast["pixel_values"], exact["pixel_values"]) and held.size == stored.size


def test_fast_resize_is_within_two_levels_and_only_for_its_filters(processor):
    image = random_image(300, 1000, seed=3)
    exact = processor.image_processor([image], return_tensors="pt")
    fast = processor.image_processor([image], fast_resize=True, return_tensors="pt")
    two_levels = 2 / 255 / STD.min().item() + 1e-6
    for key in ("pixel_values", "saliency_pixel_values"):
        error = (fast[key] - exact[key]).abs()
        assert error.max().item() <= two_levels, key
        assert (error > 1e-6).float().mean().item() < 0.02, key  # measured 0.5 % of the values
    assert not torch.equal(fast["pixel_values"], exact["pixel_values"])
    lanczos = {"resample": PIL.Image.LANCZOS}
    assert torch.equal(processor.image_processor([image], fast_resize=True, return_tensors="pt", **lanczos)["pixel_values"],
                       processor.image_processor([image], return_tensors="pt", **lanczos)["pixel_values"])
