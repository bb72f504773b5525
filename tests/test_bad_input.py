"""Bad input gets a clear error naming the input, or a documented, tested handling."""

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch

from conftest import PROMPT, random_image


def pixels(processor, images, **kwargs):
    return processor.image_processor(images, return_tensors="pt", **kwargs)["pixel_values"]


# --- files ---------------------------------------------------------------------------------------------------
def test_corrupt_empty_and_missing_files_are_named(processor, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not an image" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = tmp_path / "good.png"
    random_image(60, 80).save(good)
    for path, reason in [(corrupt, "cannot identify"), (empty, "empty"), (tmp_path / "missing.jpg", "no such file")]:
        with pytest.raises(ValueError, match=reason) as error:
            processor(images=[str(good), str(path)], text=["<image> <image>\n" + PROMPT])
        assert str(path) in str(error.value)


def test_truncated_file_is_named(processor, tmp_path):
    whole = tmp_path / "whole.jpg"
    random_image(200, 300).save(whole, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated.jpg"):
        processor(images=[str(truncated)], text=["<image>"])


# --- sizes -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height,width,tiles", [(1, 1, 1), (1, 10000, 13), (10000, 1, 13)])
def test_degenerate_sizes_are_tiled_like_internvl(make_model, processor, height, width, tiles):
    """Documented: a 1×1 image becomes one upsampled tile; 1×10000 becomes a 12×1 strip plus a thumbnail."""
    image = PIL.Image.new("RGB", (width, height), (200, 30, 30))
    batch = processor(images=[image], text=["<image>\n" + PROMPT], return_tensors="pt")
    assert batch["pixel_values"].shape == (tiles, 3, 448, 448)
    model = make_model(gate=0.5)
    maps = model.get_saliency_maps(batch["pixel_values"], saliency_pixel_values=batch["saliency_pixel_values"],
                                   tile_grids=batch["tile_grids"])
    assert maps.shape == (tiles, 32, 32) and torch.isfinite(maps).all()
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.isfinite(logits).all()


def test_zero_size_image_is_rejected(processor):
    with pytest.raises(ValueError, match="image 0"):
        processor(images=[PIL.Image.new("RGB", (0, 5))], text=["<image>"])


# --- modes: each equals processing the image a photo viewer would show ------------------------------------------
def test_rgba_and_palette_transparency_composite_onto_white(processor):
    white = pixels(processor, [PIL.Image.new("RGB", (90, 60), (255, 255, 255))])
    transparent = PIL.Image.new("RGBA", (90, 60), (0, 0, 0, 0))
    assert torch.equal(pixels(processor, [transparent]), white)
    palette = PIL.Image.new("P", (90, 60), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert torch.equal(pixels(processor, [palette]), white)


def test_16_bit_images_are_rescaled_not_clipped(processor):
    values = np.linspace(0, 65535, 90 * 60).reshape(60, 90).astype(np.uint16)
    sixteen = PIL.Image.fromarray(values)
    assert sixteen.mode == "I;16"
    eight = PIL.Image.fromarray(np.round(values / 65535 * 255).astype(np.uint8), mode="L").convert("RGB")
    assert torch.equal(pixels(processor, [sixteen]), pixels(processor, [eight]))
    assert pixels(processor, [sixteen]).std() > 0.5  # a clipped conversion would be almost uniformly white


def test_cmyk_is_converted(processor):
    cmyk = random_image(60, 90).convert("CMYK")
    assert torch.equal(pixels(processor, [cmyk]), pixels(processor, [cmyk.convert("RGB")]))


def test_exif_rotation_is_applied(processor, tmp_path):
    stored = random_image(100, 300, seed=9)  # stored landscape, to be shown as portrait
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    shown = PIL.ImageOps.exif_transpose(PIL.Image.open(path))
    assert shown.size == (100, 300)
    from_file = processor(images=[str(path)], text=["<image>"], return_tensors="pt")
    from_pil = processor(images=[PIL.Image.open(path)], text=["<image>"], return_tensors="pt")
    expected = pixels(processor, [shown.convert("RGB")])
    assert torch.equal(from_file["pixel_values"], expected) and torch.equal(from_pil["pixel_values"], expected)


# --- text ------------------------------------------------------------------------------------------------------
def test_more_placeholders_than_images(processor):
    with pytest.raises(ValueError, match=r"2 '<image>' placeholder\(s\) \(text\[0\]: 1, text\[1\]: 1\) but 1 image"):
        processor(images=[random_image(50, 50)], text=["<image> a", "<image> b"])
    with pytest.raises(ValueError, match=r"text\[1\] has 2 '<image>' placeholder\(s\) but 1 image"):
        processor(images=[[random_image(50, 50)], [random_image(50, 50)]], text=["<image> a", "<image><image> b"])


@pytest.mark.parametrize("token", ["<IMG_CONTEXT>", "<img>", "</img>"])
def test_prompt_with_raw_image_tokens_is_rejected(processor, token):
    with pytest.raises(ValueError, match=rf"text\[1\] already contains '{token}'"):
        processor(images=[random_image(50, 50)], text=["<image> fine", f"sneaky {token} text"])


def test_truncation_that_cuts_image_tokens_is_caught(processor):
    with pytest.raises(ValueError, match="truncated"):
        processor(images=[random_image(50, 50)], text=["<image>\n" + PROMPT], truncation=True, max_length=100)


# --- forward ---------------------------------------------------------------------------------------------------
@pytest.fixture
def batch(processor):
    """Inputs carrying per-tile `saliency_maps`: precomputed EAT maps (a classical source's arrive the same way)."""
    image_saliency = [torch.rand(14, 14, generator=torch.Generator().manual_seed(0))]
    return processor(images=[random_image(300, 700)], text=["<image>\n" + PROMPT], return_tensors="pt",
                     images_kwargs={"image_saliency": image_saliency})


def test_forward_rejects_mismatched_saliency_maps(make_model, batch):
    model = make_model(gate=0.5)
    tiles = batch["pixel_values"].shape[0]
    for bad in (batch["saliency_maps"][:-1], batch["saliency_maps"][:, :, :16], batch["saliency_maps"][0]):
        with pytest.raises(ValueError, match=r"`saliency_maps` has shape .* but `pixel_values` has %d tiles" % tiles):
            model(**{**batch, "saliency_maps": bad})
    with pytest.raises(ValueError, match="NaN"):
        model(**{**batch, "saliency_maps": torch.full_like(batch["saliency_maps"], float("nan"))})


def test_forward_rejects_mismatched_pixels(make_model, batch):
    model = make_model(gate=0.5)
    with pytest.raises(ValueError, match=r"`pixel_values` must have shape \(num_tiles, 3, 448, 448\), got \(11, 3, 224, 224\)"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:, :, :224, :224]})
    with pytest.raises(ValueError, match=r"2816 image tokens \(per sample: \[2816\]\) but the images give 10 tiles"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:-1], "saliency_maps": batch["saliency_maps"][:-1]})
