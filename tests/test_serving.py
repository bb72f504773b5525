"""`ase-mllm serve`: transformers' OpenAI-compatible server with ASE-MLLM, called with the `openai` client.

The command runs in its own process on 127.0.0.1, with an API key from the environment and a folder of local photos
allowed; every answer is compared with greedy `model.generate` on the same photo in this process, bad requests get a
400 naming what is wrong while the server goes on, a request without the key gets a 401, and SIGTERM stops it
within its shutdown timeout even while a long request runs. (`test_serving_security.py` tries the server as a
hostile client would.)
"""

import base64
import http.server
import io
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import torch

openai = pytest.importorskip("openai", reason="serving needs the [serve] extra")

from conftest import PROMPT, random_image  # noqa: E402
from serving_helpers import chat_body, data_url, get, image_message, post, start_cli_server, stop  # noqa: E402
from modeling_ase_mllm.cli import main as cli_main  # noqa: E402
from modeling_ase_mllm.data.prompts import aspect_prompt  # noqa: E402
from modeling_ase_mllm.inference.photos import PhotoError, PhotoLimits  # noqa: E402


MAX_TOKENS = 10
MAX_MEGAPIXELS = 0.5
API_KEY = "sk-test-0123456789"
SHUTDOWN_TIMEOUT_S = 3


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
def media(tmp_path_factory):
    """The folder whose photos clients may name (`--allowed-local-media-path`)."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(saved_model, media):
    """`ase-mllm serve` on a free port of 127.0.0.1, its key in `ASE_MLLM_API_KEY`; yields `(process, openai client,
    base URL)`."""
    process, base = start_cli_server(saved_model, "--max-megapixels", MAX_MEGAPIXELS, "--allowed-local-media-path",
                                     media, "--max-new-tokens", 20000, "--shutdown-timeout", SHUTDOWN_TIMEOUT_S,
                                     env={"ASE_MLLM_API_KEY": API_KEY})
    client = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
    yield process, client, base
    stop(process)


def create(client, saved_model, messages, **extra):
    return client.chat.completions.create(model=str(saved_model), messages=messages, max_tokens=MAX_TOKENS,
                                          temperature=0, extra_body=extra or None)


def critique(client, saved_model, messages, **extra):
    return create(client, saved_model, messages, **extra).choices[0].message


@pytest.mark.slow
def test_critique_equals_greedy_generate(server, saved_model, photos, reference):
    _, client, _ = server
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
def test_four_concurrent_requests_all_answer_correctly(server, saved_model, photos, reference, media):
    _, client, _ = server
    # Two as data URLs (PNG and JPEG), two as local paths in the allowed folder (a plain path and a file:// URL).
    paths = [media / "a.png", media / "b.png"]
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
     "this server does not fetch remote images (its operator can allow them with --allow-remote-images)"),
    ("unknown saliency kind", lambda photo: (image_message(data_url(photo)), {"saliency": "heatmap"}),
     "`saliency`: 'heatmap' is not one of true, 'map', 'picture'"),
]


@pytest.mark.slow
def test_bad_requests_get_a_400_with_a_message_and_the_server_keeps_serving(server, saved_model, photos, reference):
    _, client, _ = server
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

    _, client, _ = server
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
def test_a_key_is_required_on_every_route_but_health_and_the_host_header_is_checked(server, photos):
    _, _, base = server
    body = chat_body(data_url(photos[3]), MAX_TOKENS)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        for answer in (post(base, body, headers=headers), get(base, "/v1/models", headers=headers),
                       get(base, "/docs", headers=headers)):
            assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer", answer
            assert answer.json["error"]["code"] == "invalid_api_key"
            assert answer.message.startswith("a valid API key is required: send Authorization: Bearer <key>")
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert post(base, body, headers=right).status == 200 and get(base, "/v1/models", headers=right).status == 200
    assert get(base, "/health").status == 200
    # A page on another origin that rebinds its name to 127.0.0.1 sends its own Host: refused.
    rebound = post(base, body, headers={**right, "Host": "attacker.example"})
    assert rebound.status == 400 and rebound.body == b"Invalid host header"
    assert post(base, body, headers={**right, "Host": f"localhost:{base.rsplit(':', 1)[1]}"}).status == 200


def test_listening_beyond_loopback_needs_a_key_or_the_operators_word(saved_model, capsys, monkeypatch):
    monkeypatch.delenv("ASE_MLLM_API_KEY", raising=False)
    with pytest.raises(SystemExit) as stopped:
        cli_main(["serve", "--model", str(saved_model), "--host", "0.0.0.0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ase-mllm serve: error: argument --host: '0.0.0.0' listens beyond this machine, and no API key is set; give "
        "--api-key (or $ASE_MLLM_API_KEY), or --allow-unauthenticated behind a proxy that authenticates")


@pytest.mark.slow
def test_the_server_drains_and_stops_on_sigterm_within_its_timeout(server, photos):
    """SIGTERM (a service manager's stop; Ctrl-C's SIGINT takes the same path) while a 20000-token request runs:
    the server stops taking requests, gives the running one its shutdown timeout, cancels it, and exits 0."""
    process, client, base = server
    long_request = ThreadPoolExecutor(1).submit(post, base, chat_body(data_url(photos[3]), 20000),
                                                headers={"Authorization": f"Bearer {API_KEY}"})
    time.sleep(2.0)  # it generates now
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    stopped_after = time.perf_counter() - started
    print(f"\nSIGTERM with a 20000-token request running: stopped after {stopped_after:.1f} s (shutdown timeout "
          f"{SHUTDOWN_TIMEOUT_S} s)")
    assert process.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "[serve] stopped"
    try:
        cut_off = long_request.result(timeout=30).status != 200
    except OSError:  # the connection closed without an answer
        cut_off = True
    assert cut_off
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


# --- image URLs, without a server ------------------------------------------------------------------------------------


def test_image_urls_are_bounded_and_each_kind_needs_the_operators_leave(tmp_path):
    import asyncio

    from modeling_ase_mllm.inference.image_urls import ImageSources, RemoteImages
    from modeling_ase_mllm.inference.photos import LocalFiles, read_photo

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
    limits = PhotoLimits()

    def fetch(sources, url):
        sources.check(url)
        return read_photo(sources.read(url, asyncio.run(sources.fetch(url))), limits)

    try:
        with pytest.raises(PhotoError, match="does not fetch remote images"):
            ImageSources(limits).check(url)
        public_only = ImageSources(limits, remote=RemoteImages(limits.max_bytes))
        with pytest.raises(PhotoError, match="refused: this server fetches images from public addresses only"):
            fetch(public_only, url)
        loopback = ImageSources(limits, remote=RemoteImages(limits.max_bytes, private_networks=["127.0.0.0/8"]))
        assert np.array_equal(np.asarray(fetch(loopback, url)), np.asarray(photo))
        tiny = ImageSources(limits, remote=RemoteImages(100, private_networks="all"))
        with pytest.raises(PhotoError, match=r"is over the limit of 0.0001 MB"):
            fetch(tiny, url)
    finally:
        server.shutdown()
    local = ImageSources(limits, LocalFiles([tmp_path]))
    assert np.array_equal(np.asarray(fetch(local, (tmp_path / "p.png").as_uri())), np.asarray(photo))
    with pytest.raises(PhotoError, match="over the limit of 0.0001 MB"):
        ImageSources(PhotoLimits(max_file_mb=1e-4)).check(data_url(photo))
    with pytest.raises(PhotoError, match="unsupported URL scheme 'ftp'"):
        local.check("ftp://127.0.0.1/p.png")
    with pytest.raises(PhotoError, match="a data URL must hold base64"):
        local.check("data:image/png,abc")
    with pytest.raises(PhotoError, match="this server reads no local files"):
        ImageSources(limits).check(str(tmp_path / "p.png"))
    with pytest.raises(PhotoError, match="refused: only regular files under the server's --allowed-local-media-path"):
        local.read(str(tmp_path / "missing.png"))
