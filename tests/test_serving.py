"""`ase-mllm serve`: transformers' OpenAI-compatible server with ASE-MLLM, called with the `openai` client.

The server runs in its own process on 127.0.0.1; every answer is compared with greedy `model.generate` on the same
photo in this process, bad requests get a 400 naming what is wrong while the server goes on, and SIGINT stops it.
"""

import base64
import http.server
import io
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch

openai = pytest.importorskip("openai", reason="serving needs the [serve] extra")

from conftest import PROMPT, free_port, random_image, wait_until_serving  # noqa: E402
from modeling_ase_mllm.inference.captioning import PhotoError, PhotoLimits  # noqa: E402
from modeling_ase_mllm.data.prompts import aspect_prompt  # noqa: E402


MAX_TOKENS = 10
MAX_MEGAPIXELS = 0.5


def data_url(image: PIL.Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str, text: str | None = None) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content + ([{"type": "text", "text": text}] if text else [])}]


@pytest.fixture(scope="module")
def photos():
    """Four photos, one of them wide enough for several tiles; all under the server's megapixel bound."""
    return [random_image(300, 400, seed=11), random_image(200, 900, seed=12), random_image(448, 448, seed=13),
            random_image(150, 220, seed=14)]


@pytest.fixture(scope="module")
def reference(saved_model):
    """Greedy `model.generate` in this process, as the README's snippet calls it."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(saved_model, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(saved_model)

    def inputs(photo, prompt=PROMPT):
        messages = [{"role": "user", "content": [{"type": "image", "image": photo}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt")

    def critique(photo, prompt=PROMPT) -> str:
        prompt_inputs = inputs(photo, prompt)
        output = model.generate(**prompt_inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        return processor.decode(output[0, prompt_inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    critique.model, critique.processor, critique.inputs = model, processor, inputs
    return critique


@pytest.fixture(scope="module")
def server(saved_model):
    """`ase-mllm serve` on a free port of 127.0.0.1; yields `(process, openai client)`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modeling_ase_mllm.cli", "serve", "--model", str(saved_model), "--port", str(port),
         "--device", "cpu", "--max-megapixels", str(MAX_MEGAPIXELS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until_serving(process, port, 300, lambda: process.communicate()[1])
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
    yield process, client
    if process.poll() is None:
        process.kill()
        process.communicate()


def create(client, saved_model, messages, **extra):
    return client.chat.completions.create(model=str(saved_model), messages=messages, max_tokens=MAX_TOKENS,
                                          temperature=0, extra_body=extra or None)


def critique(client, saved_model, messages, **extra):
    return create(client, saved_model, messages, **extra).choices[0].message


@pytest.mark.slow
def test_critique_equals_greedy_generate(server, saved_model, photos, reference):
    _, client = server
    assert [model.id for model in client.models.list().data] == [str(saved_model)]
    # No text: the server asks the paper's question; an aspect asks its own; a text question is kept as it is. The
    # prompt's length in tokens shows which question the model got (a random model may answer all alike).
    for photo, prompt, text, extra in [(photos[0], PROMPT, None, {}),
                                       (photos[1], aspect_prompt("composition"), None, {"aspect": "composition"}),
                                       (photos[2], "What works here?", "What works here?", {})]:
        response = create(client, saved_model, image_message(data_url(photo), text), **extra)
        assert response.choices[0].message.content == reference(photo, prompt)
        assert response.usage.prompt_tokens == reference.inputs(photo, prompt)["input_ids"].shape[1]
    assert reference.inputs(photos[1], aspect_prompt("composition"))["input_ids"].shape[1] != \
        reference.inputs(photos[1], PROMPT)["input_ids"].shape[1]


@pytest.mark.slow
def test_four_concurrent_requests_all_answer_correctly(server, saved_model, photos, reference, tmp_path):
    _, client = server
    # Two as data URLs (PNG and JPEG), two as local paths (a plain path and a file:// URL).
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    photos[2].save(paths[0]), photos[3].save(paths[1])
    jpeg = io.BytesIO()
    photos[1].save(jpeg, format="JPEG")
    jpeg_photo = PIL.Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB")
    urls = [data_url(photos[0]), data_url(photos[1], "JPEG"), str(paths[0]), paths[1].as_uri()]
    expected = [reference(photo) for photo in (photos[0], jpeg_photo, photos[2], photos[3])]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda url: critique(client, saved_model, image_message(url)).content, urls))
    assert answers == expected
    assert len(set(expected)) > 1  # four photos, not one answer four times


BAD_REQUESTS = [
    ("no image", lambda photo: ([{"role": "user", "content": "Comment on this photo."}], {}),
     "the request has no image: ASE-MLLM critiques photos"),
    ("corrupt base64", lambda photo: (image_message("data:image/png;base64,iVBORw0KGgo@@@"), {}),
     "messages[0].content[0].image_url: the data URL's base64 is corrupt"),
    ("not an image", lambda photo: (image_message("data:image/png;base64," + base64.b64encode(b"hello").decode()), {}),
     "messages[0].content[0].image_url: image 5 bytes could not be read"),
    ("over the megapixel limit", lambda photo: (image_message(data_url(PIL.Image.new("RGB", (1000, 800)))), {}),
     f"has 0.8 megapixels (1000x800), over the limit of {MAX_MEGAPIXELS:g} (--max-megapixels raises it)"),
    ("unknown aspect", lambda photo: (image_message(data_url(photo)), {"aspect": "compositon"}),
     "`aspect`: 'compositon' is not a known aspect (did you mean 'composition'?)"),
    ("aspect and a question", lambda photo: (image_message(data_url(photo), "Why?"), {"aspect": "focus"}),
     "give either a text question or `aspect`, not both"),
    ("remote URL", lambda photo: (image_message("http://127.0.0.1:9/photo.jpg"), {}),
     "this server does not fetch remote images (start it with --allow-remote-images)"),
    ("unknown saliency kind", lambda photo: (image_message(data_url(photo)), {"saliency": "heatmap"}),
     "`saliency`: 'heatmap' is not one of true, 'map', 'picture'"),
]


@pytest.mark.slow
def test_bad_requests_get_a_400_with_a_message_and_the_server_keeps_serving(server, saved_model, photos, reference):
    _, client = server
    for name, build, message in BAD_REQUESTS:
        messages, extra = build(photos[0])
        with pytest.raises(openai.BadRequestError) as caught:
            critique(client, saved_model, messages, **extra)
        assert caught.value.status_code == 400, name
        assert message in caught.value.message, (name, caught.value.message)
    assert critique(client, saved_model, image_message(data_url(photos[3]))).content == reference(photos[3])


@pytest.mark.slow
def test_saliency_on_request_is_the_map_the_model_received(server, saved_model, photos, reference):
    from modeling_ase_mllm.inference.visualize import stitch_tiles, tile_saliency_maps

    _, client = server
    photo = photos[1]  # several tiles
    answer = critique(client, saved_model, image_message(data_url(photo)), saliency=True)
    assert answer.content == reference(photo)
    [url] = answer.saliency
    assert url.startswith("data:image/png;base64,")
    served = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    maps = tile_saliency_maps(photo, reference.processor, reference.model)
    grid = reference.processor.image_processor.get_tile_grid(photo.height, photo.width)
    expected = (np.clip(stitch_tiles(maps, grid), 0, 1) * 255).round().astype(np.uint8)
    assert grid[0] * grid[1] > 1 and served.shape == expected.shape
    assert np.abs(served.astype(int) - expected).max() <= 1  # one grey level: the server's EAT ran on its own thread
    picture = critique(client, saved_model, image_message(data_url(photo)), saliency="picture").saliency[0]
    assert PIL.Image.open(io.BytesIO(base64.b64decode(picture.split(",", 1)[1]))).mode == "RGB"


@pytest.mark.slow
def test_the_server_stops_cleanly_on_sigterm(server):
    """SIGTERM (a service manager's stop; Ctrl-C's SIGINT takes the same path): status 0, port closed."""
    process, client = server
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "[serve] stopped"
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


# --- image URLs, without a server ------------------------------------------------------------------------------------


def test_image_urls_are_bounded_and_remote_ones_need_the_flag(tmp_path):
    from modeling_ase_mllm.inference.serving import read_image_url

    photo = random_image(60, 80, seed=3)
    photo.save(tmp_path / "p.png")
    payload = (tmp_path / "p.png").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/p.png"
    try:
        with pytest.raises(PhotoError, match="does not fetch remote images"):
            read_image_url(url)
        assert np.array_equal(np.asarray(read_image_url(url, allow_remote=True)), np.asarray(photo))
        with pytest.raises(PhotoError, match=r"is over the limit of 0.0001 MB"):
            read_image_url(url, PhotoLimits(max_file_mb=1e-4), allow_remote=True)
    finally:
        server.shutdown()
    assert np.array_equal(np.asarray(read_image_url((tmp_path / "p.png").as_uri())), np.asarray(photo))
    with pytest.raises(PhotoError, match="over the limit of 0.0001 MB"):
        read_image_url(data_url(photo), PhotoLimits(max_file_mb=1e-4))
    with pytest.raises(PhotoError, match="unsupported URL scheme 'ftp'"):
        read_image_url("ftp://127.0.0.1/p.png")
    with pytest.raises(PhotoError, match="a data URL must hold base64"):
        read_image_url("data:image/png,abc")
    with pytest.raises(PhotoError, match="could not be read: no such file"):
        read_image_url(str(tmp_path / "missing.png"))
