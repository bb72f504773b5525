"""`ase-mllm caption`, InternVL-style chat()/batch_chat(), and the saliency picture."""

import json

import PIL.Image
import pytest
import torch

from conftest import PROMPT, random_image
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.inference.visualize import render_saliency, saliency_picture_size, stitch_tiles


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    PIL.Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    PIL.Image.fromarray(data.chelsea()).save(folder / "chelsea.jpg")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg" * 20)
    return folder


def test_caption_cli_reports_bad_file_and_captions_the_rest(saved_model, photos, tmp_path, capsys):
    files = [str(photos / "astronaut.png"), str(photos / "broken.jpg"), str(photos / "chelsea.jpg")]
    status = main(["caption", *files, "--model", str(saved_model), "--max-new-tokens", "4", "--json",
                   "--saliency-out", str(tmp_path / "pictures")])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert status == 1
    assert [line["image"] for line in lines] == files
    assert sum("caption" in line for line in lines) == 2
    assert "error" in lines[1] and "broken.jpg" in lines[1]["error"] and "caption" not in lines[1]
    assert "broken.jpg" in captured.err
    for line in (lines[0], lines[2]):
        picture = PIL.Image.open(line["saliency_picture"])
        picture.verify()
    astronaut = PIL.Image.open(line["saliency_picture"].replace("0002_chelsea", "0000_astronaut"))
    assert astronaut.size == saliency_picture_size((512, 512), (1, 1))


def test_caption_cli_plain_text_and_aspect_prompt(saved_model, photos, capsys):
    status = main(["caption", str(photos / "chelsea.jpg"), "--model", str(saved_model), "--max-new-tokens", "3",
                   "--aspect", "composition", "--max-tiles", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 0 and len(out) == 1 and out[0].startswith(str(photos / "chelsea.jpg") + ": ")


def test_chat_and_batch_chat_equal_generate(make_model, processor):
    model = make_model(gate=0.5, seed=4)
    image = random_image(300, 500, seed=8)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )
    tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    expected = processor.decode(tokens, skip_special_tokens=True).strip()  # chat() strips, as InternVL's does
    generation = {"max_new_tokens": 6}
    from modeling_ase_mllm.inference.chat import batch_chat, chat

    assert chat(model, processor, image, PROMPT, generation) == expected
    answers = batch_chat(model, processor, [image, None, image], [PROMPT, "Hello?", PROMPT], generation)
    assert answers[0] == answers[2] == expected and len(answers) == 3
    answer, history = chat(model, processor, image, "And the light?", generation, history=[(PROMPT, expected)],
                           return_history=True)
    assert history == [(PROMPT, expected), ("And the light?", answer)]


def test_saliency_picture_stitches_the_tiles_back(processor):
    image = random_image(300, 1000, seed=3)
    maps = processor.image_processor([image], saliency_source="spectral_residual", return_tensors="pt")["saliency_maps"]
    canvas = stitch_tiles(maps, (3, 1))
    assert canvas.shape == (32, 96)
    assert torch.equal(torch.from_numpy(canvas[:, 32:64]), maps[1])
    picture = render_saliency(image, maps, (3, 1))
    assert picture.size == saliency_picture_size(image.size, (3, 1)) and picture.mode == "RGB"


def test_a_batch_that_fails_in_the_model_is_redone_photo_by_photo(processor):
    """A 0-pixel image stops the processor for its whole batch; redone one by one, only it fails, and the others'
    captions are what they are alone."""
    from modeling_ase_mllm.inference.captioning import critique_images
    from modeling_ase_mllm.testing.tiny import build_tiny_model

    model = build_tiny_model(gate=0.5, seed=2)
    good = [random_image(100, 120, seed=1), random_image(90, 150, seed=3)]
    options = {"generation_config": {"max_new_tokens": 4}, "max_patches": 1}
    results = critique_images(model, processor, [good[0], PIL.Image.new("RGB", (0, 5)), good[1]], batch_size=3, **options)
    alone = [critique_images(model, processor, [image], **options)[0].caption for image in good]
    assert [r.image for r in results] == ["image[0]", "image[1]", "image[2]"]
    assert [results[0].caption, results[2].caption] == alone
    assert results[1].caption is None
    assert results[1].error == "captioning failed: ValueError: image 0 has no pixels (size 0x5)."


def test_photos_read_at_once_from_several_threads_all_decode_with_the_default_bound():
    """`read_photo` lifts Pillow's pixel bound while it opens a photo; a thread that read the default bound meanwhile
    got None (a TypeError, found by `ase-mllm serve` answering concurrent requests)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from modeling_ase_mllm.inference.photos import PhotoLimits, read_photo

    buffer = io.BytesIO()
    random_image(300, 400, seed=5).save(buffer, format="PNG")
    data = buffer.getvalue()
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: read_photo(data, PhotoLimits()).size, range(200)))
    assert sizes == [(400, 300)] * 200
