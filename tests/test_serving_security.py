"""`ase-mllm serve` tried as a hostile but fair client would try it (issue 23): one test per row of the issue's table.

Each test starts the server's app on 127.0.0.1 (in a thread of this process, or the command in its own process when
its memory or signals are measured) and talks to it over HTTP, raw or with the `openai` client; every refusal is
checked for its status and message, and a second request is sent while the first hangs or runs, its latency
printed, to show that the others are still served.
"""

import base64
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import PIL.Image
import pytest
import torch

openai = pytest.importorskip("openai", reason="serving needs the [serve] extra")

from conftest import PROMPT, random_image  # noqa: E402
from serving_helpers import (ImageServer, abandoned_post, chat_body, data_url, get, image_message, post,  # noqa: E402
                             served)
from modeling_ase_mllm.inference.serving_limits import ServingLimits  # noqa: E402


ACCESS = re.compile(r'"POST /v1/chat/completions" (\d+) [\d.]+s images=(\S+) prompt_tokens=(\S+) '
                    r'completion_tokens=(\S+)')


def access_lines(caplog) -> list[tuple]:
    """`(status, images, prompt_tokens, completion_tokens)` of each chat request in the access log, as strings."""
    return [ACCESS.search(record.getMessage()).groups() for record in caplog.records
            if record.name == "ase_mllm.access" and ACCESS.search(record.getMessage())]


@pytest.fixture(scope="module")
def photo():
    return random_image(200, 300, seed=21)


@pytest.fixture
def media(tmp_path, photo):
    """The operator's folder D (a photo, a FIFO, links out of it) and, beside it, a private photo and folder."""
    folder, private = tmp_path / "media", tmp_path / "private"
    folder.mkdir(), private.mkdir()
    photo.save(folder / "photo.png")
    photo.save(private / "secret.png")
    os.mkfifo(folder / "pipe.png")
    (folder / "escape.png").symlink_to(private / "secret.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "sub").mkdir()
    return folder, private


# --- rows 1 and 2: local files --------------------------------------------------------------------------------------
def test_local_files_are_refused_by_default_and_read_only_as_regular_files_under_the_allowed_folder(
        saved_model, media, photo):
    folder, private = media
    limits = ServingLimits(max_new_tokens=4)
    with served(saved_model, limits=limits) as base:
        answer = post(base, chat_body(str(folder / "photo.png"), saliency="picture"))
        assert answer.status == 400
        assert "this server reads no local files (its operator can allow a folder with " \
               "--allowed-local-media-path)" in answer.message
    with served(saved_model, limits=limits, allowed_local_media_paths=[folder]) as base:
        expected = post(base, chat_body(data_url(photo))).content
        for url in (str(folder / "photo.png"), (folder / "photo.png").as_uri(), f"{folder}/sub/../photo.png"):
            answer = post(base, chat_body(url))
            assert answer.status == 200 and answer.content == expected, (url, answer)

        refused = {
            "a link out of the folder": folder / "escape.png",
            "a .. path out of it": f"{folder}/../private/secret.png",
            "a FIFO nobody writes to": folder / "pipe.png",
            "a link to /dev/zero": folder / "zero.png",
            "a folder": folder / "sub",
            "a missing file in it": folder / "missing.png",
            "a present file outside": private / "secret.png",
            "a missing file outside": private / "missing.png",
            "/etc/passwd": "/etc/passwd",
            "/etc/shadow": "/etc/shadow",
            "a file:// URL outside": (private / "secret.png").as_uri(),
        }
        messages = {}
        with ThreadPoolExecutor(2) as pool:
            # The FIFO request is sent first, and a good request right after it: the FIFO is refused at once and
            # never holds up the other (before: both hung, behind a process-wide lock).
            fifo = pool.submit(post, base, chat_body(str(folder / "pipe.png")))
            time.sleep(0.2)
            second = pool.submit(post, base, chat_body(data_url(photo)))
            assert fifo.result().status == 400 and second.result().status == 200
        print(f"\nthe request sent right after the FIFO one took {second.result().seconds:.2f} s "
              f"(the FIFO one {fifo.result().seconds:.2f} s)")
        for name, path in refused.items():
            answer = post(base, chat_body(str(path)))
            assert answer.status == 400, (name, answer)
            messages[name] = answer.message.replace(repr(str(path).removeprefix("file://")), "PATH")
    assert len(set(messages.values())) == 1, messages
    assert messages["/etc/passwd"] == ("messages[0].content[0].image_url: local file PATH refused: only regular files "
                                       "under the server's --allowed-local-media-path folders are read")


# --- row 4 (the FIFO, as the CLI reads it) lives in test_photos.py; row 5: chat templates ---------------------------
def test_the_body_cannot_carry_a_template_or_processor_options_and_health_answers_while_a_request_runs(
        saved_model, photo):
    limits = ServingLimits(max_new_tokens=3000)
    with served(saved_model, limits=limits, max_patches=2) as base:
        long_request = threading.Thread(target=abandoned_post, args=(base, chat_body(data_url(photo), 3000), 4.0))
        long_request.start()
        time.sleep(1.5)
        health = get(base, "/health")
        loop = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
        template = post(base, chat_body(data_url(photo), chat_template_kwargs={"chat_template": loop}))
        tiles = post(base, chat_body(data_url(photo), chat_template_kwargs={"max_patches": 40}))
        long_request.join()
    print(f"\n/health answered in {health.seconds * 1000:.0f} ms while a 3000-token request ran; the template "
          f"request was refused in {template.seconds * 1000:.0f} ms")
    assert health.status == 200
    assert template.status == 400 and template.json["error"]["param"] == "chat_template_kwargs.chat_template"
    assert template.message == ("`chat_template_kwargs.chat_template` is not accepted: the server's operator sets "
                                "the chat template, tiling and limits; the served template reads default_system_prompt")
    assert tiles.status == 400 and tiles.json["error"]["param"] == "chat_template_kwargs.max_patches"


# --- row 6 (the operator's tiles) and 7: max_tokens and positions ---------------------------------------------------
@pytest.fixture(scope="module")
def short_model(tmp_path_factory, processor):
    """The tiny model with 400 positions: a one-tile prompt leaves it about 120."""
    from modeling_ase_mllm.testing.tiny import build_tiny_model, tiny_config

    config = tiny_config()
    config.text_config.max_position_embeddings = 400
    folder = tmp_path_factory.mktemp("short-model")
    build_tiny_model(config, gate=0.5, seed=2).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_max_tokens_is_bounded_by_the_operator_and_by_the_positions_left(short_model, photo):
    with served(short_model, limits=ServingLimits(max_new_tokens=1000), max_patches=1) as base:
        over = post(base, chat_body(data_url(photo), max_tokens=100000))
        answer = post(base, chat_body(data_url(photo), max_tokens=1000))
        default = post(base, {"messages": image_message(data_url(photo)), "temperature": 0})
    assert over.status == 400 and over.json["error"]["param"] == "max_tokens"
    assert over.message == ("`max_tokens`: 100000 is over this server's limit of 1000 new tokens (its operator sets "
                            "--max-new-tokens)")
    usage = answer.json["usage"]
    assert answer.json["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 400, usage  # every position, none past them
    assert default.json["usage"] == usage  # no max_tokens: the operator's bound, then the positions


# --- row 7: a non-streaming client that hangs up --------------------------------------------------------------------
def test_a_client_that_hangs_up_stops_its_generation(saved_model, photo, caplog):
    caplog.set_level(logging.INFO, logger="ase_mllm.access")
    with served(saved_model, limits=ServingLimits(max_new_tokens=3000), max_patches=1) as base:
        warm = post(base, chat_body(data_url(photo), max_tokens=20))
        started = time.perf_counter()
        abandoned_post(base, chat_body(data_url(photo), max_tokens=3000), after_s=2.0)
        for stream in (False, True):
            body = chat_body(data_url(photo), max_tokens=20, stream=stream)
            answer = post(base, body)
            assert answer.status == 200
            print(f"\na request sent after a 3000-token request was abandoned took {answer.seconds:.2f} s "
                  f"({'streamed' if stream else 'whole'}; {time.perf_counter() - started:.2f} s after the abandoned "
                  f"one was sent; one alone: {warm.seconds:.2f} s)")
        deadline = time.time() + 30
        while len(access_lines(caplog)) < 4 and time.time() < deadline:
            time.sleep(0.1)
    statuses = [line[0] for line in access_lines(caplog)]
    abandoned = next(line for line in access_lines(caplog) if line[3] not in ("-", "20"))
    print(f"the abandoned request generated {abandoned[3]} of its 3000 tokens")
    assert int(abandoned[3]) < 3000 and statuses.count("200") == 4


# --- row 8 (load) is test_load_...; rows 10 and 11: malformed fields -----------------------------------------------
def bad_bodies(url: str, photo_url: str) -> list[tuple[str, dict | bytes, str, str]]:
    """(what, body, the `param` named, a piece of the message) of requests a client got wrong. `url` is an image that
    cannot be decoded: a request whose error names a field, not the image, was refused before decoding it."""
    text_only = [{"role": "user", "content": [{"type": "text"}, {"type": "image_url", "image_url": {"url": url}}]}]
    return [
        ('max_tokens: "ten"', chat_body(url, max_tokens="ten"), "max_tokens", "must be a whole number >= 1, got 'ten'"),
        ("a text part without text", {"messages": text_only}, "messages[0].content[0].text", "must be a string"),
        ("max_patches over 40", chat_body(url, chat_template_kwargs={"max_patches": 41}),
         "chat_template_kwargs.max_patches", "is not accepted"),
        ("n: 5", chat_body(url, n=5), "n", "one choice per request; n must be 1, got 5"),
        ("two images", {"messages": [{"role": "user", "content": image_message(url)[0]["content"] * 2}]},
         "messages[0].content[1]", "more than 1 image(s) in one request (its operator sets --max-images-per-request)"),
        ("50 images", {"messages": [{"role": "user", "content": image_message(url)[0]["content"] * 50}]},
         "messages[0].content[1]", "more than 1 image(s)"),
        ("100 KB of text", {"messages": image_message(url, "a b " * 25_000)}, "messages",
         "tokens, over this server's limit of 16383 prompt tokens"),
        ("an unknown field", chat_body(url, temprature=0.5), "temprature",
         "unknown field 'temprature' (did you mean 'temperature'?)"),
        ("tools", chat_body(url, tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "not supported"),
        ("a generation config", chat_body(url, generation_config='{"max_new_tokens": 100000}'), "generation_config",
         "not supported"),
        ("logprobs", chat_body(url, logprobs=True), "logprobs", "not supported"),
        ("temperature 3", chat_body(url, temperature=3), "temperature", "must be a number from 0 to 2, got 3"),
        ("logit_bias out of range", chat_body(url, logit_bias={"5": 300}), "logit_bias", "from -100 to 100"),
        ("logit_bias on no token", chat_body(url, logit_bias={"99999": 1}), "logit_bias",
         "not a token id of this model"),
        ("five stops", chat_body(url, stop=["a"] * 5), "stop", "a list of 1 to 4 strings"),
        ("another model", chat_body(url, model="gpt-4o"), "model", "is not served here"),
        ("an image from the assistant", {"messages": image_message(url) + [
            {"role": "assistant", "content": image_message(url)[0]["content"]}]}, "messages[1].content[0]",
         "images belong in user messages"),
        ("a tool message", {"messages": image_message(url) + [{"role": "tool", "content": "x"}]}, "messages[1].role",
         "must be one of system, user, assistant"),
        ("not JSON", b"{'messages': 1", None, "the body is not valid JSON"),
        ("not an object", b"[1, 2]", None, "the body must be a JSON object"),
        ("the model's own image tokens in the text", {"messages": image_message(photo_url, "<IMG_CONTEXT>")},
         "messages", "already contains '<IMG_CONTEXT>'"),
        ("an image that is not one", chat_body(url), "messages[0].content[0].image_url", "could not be read"),
    ]


def test_malformed_fields_are_400s_naming_them_and_a_retrying_client_sends_each_once(saved_model, photo, caplog):
    """The `openai` client retries 5xx: before, a malformed field was a bare 500 and the server did the work three
    times. Now each is a 400 naming the field, checked before the photo is decoded (the photo here cannot be: an
    error that names the field was found first), and the access log holds one line per request, although the client
    may retry each twice."""
    caplog.set_level(logging.INFO, logger="ase_mllm.access")
    undecodable = "data:image/png;base64," + base64.b64encode(b"not a photo at all").decode()
    bodies = bad_bodies(undecodable, data_url(photo))
    with served(saved_model, limits=ServingLimits(max_new_tokens=4), max_patches=1) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=2, timeout=120)
        integer_bias = client.chat.completions.create(model=str(saved_model), messages=image_message(data_url(photo)),
                                                      max_tokens=4, temperature=0, logit_bias={"5": 3})
        assert integer_bias.choices[0].message.content is not None  # OpenAI's documented form: integers
        for what, body, param, message in bodies:
            if isinstance(body, bytes):
                error = post(base, None, raw=body).json["error"]
            else:
                with pytest.raises(openai.BadRequestError) as caught:
                    client.chat.completions.create(model=str(saved_model), messages=body["messages"],
                                                   extra_body={k: v for k, v in body.items() if k != "messages"})
                error = caught.value.body
            assert error["type"] == "invalid_request_error", (what, error)
            assert message in error["message"], (what, error["message"])
            assert error["param"] == param, (what, error)
    lines = access_lines(caplog)  # after the server stopped: a request's line is logged once its answer is sent
    assert [line[0] for line in lines] == ["200"] + ["400"] * len(bodies)  # each once: nothing was retried
    assert all(line[2] == "-" for line in lines[1:])  # no prompt was built for any


# --- row 8: admission ----------------------------------------------------------------------------------------------
def test_a_full_queue_answers_429_and_a_long_wait_503_both_with_retry_after(saved_model, photo):
    limits = ServingLimits(max_new_tokens=3000, max_active_requests=1, max_waiting_requests=1, queue_timeout_s=2.0)
    with served(saved_model, limits=limits, max_patches=1) as base:
        running = threading.Thread(target=abandoned_post, args=(base, chat_body(data_url(photo), 3000), 8.0))
        running.start()
        time.sleep(2.0)  # it runs now
        with ThreadPoolExecutor(2) as pool:
            waiting = pool.submit(post, base, chat_body(data_url(photo)))
            time.sleep(0.5)
            refused = pool.submit(post, base, chat_body(data_url(photo)))
        running.join()
        after = post(base, chat_body(data_url(photo)))
    waited, refused = waiting.result(), refused.result()
    print(f"\n429 after {refused.seconds:.2f} s, 503 after {waited.seconds:.2f} s (queue timeout 2 s); then a request "
          f"took {after.seconds:.2f} s")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.message.startswith("the server is busy: 1 requests run and 1 wait")
    assert waited.status == 503 and int(waited.headers["Retry-After"]) >= 1
    assert "no request finished within the queue timeout of 2 s" in waited.message
    assert after.status == 200


# --- row 9: remote images ------------------------------------------------------------------------------------------
@pytest.fixture
def image_servers(photo):
    """An image server on 127.0.0.1 (a photo, a redirect to it, a redirect to 127.0.0.2, a slow drip) and one on
    127.0.0.2 (another loopback address, to be refused as a redirect's target)."""
    import io

    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    other = ImageServer({"/p.png": buffer.getvalue()}, host="127.0.0.2")
    main = ImageServer({"/p.png": buffer.getvalue(), "/here": ("redirect", "/p.png"),
                        "/there": ("redirect", other.base + "/p.png"), "/drip": ("drip", 1, 1.0)})
    yield main, other
    main.close(), other.close()


def test_remote_images_from_private_addresses_are_refused_unless_allowed_redirects_included(
        saved_model, image_servers, photo):
    main, other = image_servers
    limits = ServingLimits(max_new_tokens=4, image_fetch_timeout_s=3.0)
    with served(saved_model, limits=limits, max_patches=1, allow_remote_images=True) as base:
        direct, redirected = post(base, chat_body(main.base + "/p.png")), post(base, chat_body(main.base + "/here"))
    assert main.requests == []  # refused before connecting
    for answer, url in ((direct, main.base + "/p.png"), (redirected, main.base + "/here")):
        assert answer.status == 400
        assert answer.message == (f"messages[0].content[0].image_url: image {url!r} refused: this server fetches "
                                  "images from public addresses only")
    with served(saved_model, limits=limits, max_patches=1, allow_remote_images=True,
                private_image_networks=["127.0.0.1/32"]) as base:
        expected = post(base, chat_body(data_url(photo))).content
        fetched, followed = post(base, chat_body(main.base + "/p.png")), post(base, chat_body(main.base + "/here"))
        out_of_bounds = post(base, chat_body(main.base + "/there"))
        missing = post(base, chat_body(main.base + "/missing.png"))
        closed = post(base, chat_body("http://127.0.0.1:9/p.png"))
    assert fetched.content == followed.content == expected
    assert out_of_bounds.status == 400 and out_of_bounds.message.endswith(
        "refused: this server fetches images from public addresses only")
    assert other.requests == []  # the hop to 127.0.0.2 never connected
    # A missing image and a closed port read alike: nothing tells ports apart, no object address, no internals.
    assert missing.message.replace(main.base + "/missing.png", "URL") == \
        closed.message.replace("http://127.0.0.1:9/p.png", "URL") == \
        "messages[0].content[0].image_url: image 'URL' could not be fetched"


def test_slow_drip_image_servers_do_not_stall_other_requests(saved_model, image_servers, photo):
    main, _ = image_servers
    limits = ServingLimits(max_new_tokens=4, image_fetch_timeout_s=2.0, image_fetch_connections=4)
    with served(saved_model, limits=limits, max_patches=1, allow_remote_images=True,
                private_image_networks="all") as base:
        with ThreadPoolExecutor(7) as pool:
            drips = [pool.submit(post, base, chat_body(main.base + "/drip")) for _ in range(6)]
            time.sleep(0.3)
            other = pool.submit(post, base, chat_body(data_url(photo)))
            drips = [drip.result() for drip in drips]
    print(f"\nwith six slow-drip fetches in flight, a data-URL request took {other.result().seconds:.2f} s; the "
          f"drips were refused after {max(d.seconds for d in drips):.2f} s at most")
    assert other.result().status == 200
    for drip in drips:
        assert drip.status == 400
        assert drip.message == (f"messages[0].content[0].image_url: image {main.base + '/drip'!r} could not be "
                                "fetched within 2 s")


# --- row 8: memory under load (the command, in its own process, so that its RSS is its own) -------------------------
def gradient_png(side: int = 8000) -> bytes:
    """A smooth `side`² RGB PNG (64 megapixels by default) that compresses to about 2.5 MB, as a photo's sky would."""
    import io

    import numpy as np

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.empty((side, side, 3), np.uint8)
    pixels[..., 0] = ramp.astype(np.uint8)
    pixels[..., 1] = ramp[:, None].astype(np.uint8)
    pixels[..., 2] = (np.sin(ramp / 40)[None, :] * np.cos(ramp / 55)[:, None] * 60 + 128).astype(np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def memory_kb(pid: int) -> dict:
    """`VmRSS` (now) and `VmHWM` (the peak so far) of a process, in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


# What the server may hold beyond its idle RSS while 64-megapixel PNGs arrive: one request's photo decoded (Pillow
# keeps RGB in 4 bytes a pixel: 256 MB), up to two working copies while it is converted and resized, and the
# waiting requests' bodies (3.3 MB each). Photos are decoded one request at a time, so this holds however many
# clients send them; before, the 16 requests decoded at once (16 x 256 MB).
PEAK_BEYOND_IDLE_MB = 800


@pytest.mark.slow
def test_memory_stays_bounded_under_load_and_every_request_gets_its_answer_or_a_busy_status(
        saved_model, processor, tmp_path):
    """40 concurrent 1 MB photos, then 16 concurrent 64-megapixel PNGs (2.5 MB each, inside the default bounds)
    against `ase-mllm serve` with a queue of 2 running and 4 waiting: each gets the critique greedy generate
    gives for its photo, or a 429/503 with Retry-After; the peak RSS stays within the bound; the server answers
    afterwards. Before: RSS reached 2.3 GB on the small photos and the large ones were OOM-killed at 4.45 GB."""
    import base64
    import io

    from transformers import AutoModelForImageTextToText

    from modeling_ase_mllm.inference.photos import read_photo
    from serving_helpers import start_cli_server, stop

    photos = []
    for seed in range(4):
        buffer = io.BytesIO()
        random_image(1100, 1100, seed=40 + seed).save(buffer, format="JPEG", quality=92)
        photos.append(buffer.getvalue())
    big = gradient_png()
    model = AutoModelForImageTextToText.from_pretrained(saved_model, dtype=torch.float32).eval()
    processor.image_processor.max_patches = 1  # the server's --max-tiles 1
    try:
        def expected(data: bytes) -> str:
            inputs = processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image", "image": read_photo(data)},
                                              {"type": "text", "text": PROMPT}]}],
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
            return processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

        answers = {data: expected(data) for data in photos + [big]}
    finally:
        processor.image_processor.max_patches = 12
    assert len(set(answers.values())) > 1
    urls = {data: "data:image/png;base64," + base64.b64encode(data).decode() for data in answers}

    process, base = start_cli_server(saved_model, "--max-tiles", 1, "--max-new-tokens", 8, "--max-waiting-requests", 4)
    try:
        assert post(base, chat_body(urls[photos[0]], 8)).content == answers[photos[0]]
        idle = memory_kb(process.pid)
        outcomes = {}
        for name, batch in (("1 MB photos", [photos[i % 4] for i in range(40)]), ("64 MP PNGs", [big] * 16)):
            started = time.perf_counter()
            with ThreadPoolExecutor(len(batch)) as pool:
                results = list(pool.map(lambda data: post(base, chat_body(urls[data], 8)), batch))
            for data, answer in zip(batch, results):
                assert answer.status in (200, 429, 503), answer
                if answer.status == 200:
                    assert answer.content == answers[data]
                else:
                    assert int(answer.headers["Retry-After"]) >= 1
            outcomes[name] = ({status: sum(r.status == status for r in results) for status in (200, 429, 503)},
                              time.perf_counter() - started)
        health, after = get(base, "/health"), post(base, chat_body(urls[photos[1]], 8))
        memory = memory_kb(process.pid)
    finally:
        stop(process)
    peak_beyond_idle = (memory["VmHWM"] - idle["VmRSS"]) / 1024
    print(f"\nidle RSS {idle['VmRSS'] / 1024:.0f} MB; peak RSS {memory['VmHWM'] / 1024:.0f} MB, "
          f"{peak_beyond_idle:.0f} MB beyond idle (bound {PEAK_BEYOND_IDLE_MB} MB)")
    for name, (counts, seconds) in outcomes.items():
        print(f"{name}: {counts[200]} answered, {counts[429]} x 429, {counts[503]} x 503 in {seconds:.1f} s")
    assert all(counts[200] >= 2 for counts, _ in outcomes.values())
    assert health.status == 200 and after.content == answers[photos[1]]
    assert peak_beyond_idle < PEAK_BEYOND_IDLE_MB
