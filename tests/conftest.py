"""Shared fixtures: a tiny tokenizer/processor trained on the spot and random models of both families (the `family`
fixture runs a test on each), generated images, METEOR."""

import os
import socket
import time

import numpy as np
import PIL.Image
import pytest
import torch

from families import FAMILIES
from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT as PROMPT
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, build_tokenizer, tiny_config
from modeling_ase_mllm.testing.tiny_qwen_vl import build_qwen_vl_processor, build_qwen_vl_tokenizer


torch.set_num_threads(2)
# Nothing downloads in the tests: SPICE runs on the CoreNLP jars that .ci/system-packages fetched, and the
# download tests fetch from a server on 127.0.0.1, asking for it explicitly.
os.environ["SPICE_NO_DOWNLOAD"] = "1"


def random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> PIL.Image.Image:
    """A smooth random photo-like image (noise + gradients), so that saliency has structure to find."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs / max(width, 1), ys / max(height, 1), (xs + ys) / max(width + height, 1)], axis=-1) * 180
    pixels = np.clip(base + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(pixels).convert(mode)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (for a test's own server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process, port: int, timeout: float, output) -> None:
    """Poll `GET /health` of a server this test started on 127.0.0.1 until it answers; fail the test with the tail of
    `output()` (what the server printed) when the process ends first or `timeout` seconds pass."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"the server did not start:\n{output()[-4000:]}")
            time.sleep(0.5)


def user_turn(n_images: int = 1, prompt: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]


def image_turn(image, prompt: str = PROMPT) -> list[dict]:
    """One user turn showing `image` (a PIL image or a path) with `prompt`."""
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]


def chat_inputs(processor, image, prompt: str = PROMPT):
    """The tensors `processor` makes of `image_turn(image, prompt)` with the generation prompt."""
    return processor.apply_chat_template(image_turn(image, prompt), add_generation_prompt=True, tokenize=True,
                                         return_dict=True, return_tensors="pt")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def processor(tokenizer):
    return build_processor(tokenizer)


@pytest.fixture(scope="session")
def two_images():
    """One wide image that gives several tiles (3x1 + thumbnail) and one square image that gives a single tile."""
    return [random_image(300, 1000, seed=1), random_image(448, 448, seed=2)]


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, processor):
    """A random tiny model saved with its processor, as `ase-mllm demo` would leave one."""
    folder = tmp_path_factory.mktemp("model")
    build_tiny_model(gate=0.5, seed=2).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def make_model():
    def make(text_model_type: str = "llama", gate: float | None = 0.0, seed: int = 0, **overrides):
        return build_tiny_model(tiny_config(text_model_type, **overrides), seed=seed, gate=gate)

    return make


@pytest.fixture(scope="session")
def qwen_vl_tokenizer():
    return build_qwen_vl_tokenizer()


@pytest.fixture(scope="session")
def qwen_vl_processor(qwen_vl_tokenizer):
    return build_qwen_vl_processor(qwen_vl_tokenizer)


@pytest.fixture
def make_qwen_vl_model():
    return FAMILIES["qwen_vl"].make_model


@pytest.fixture(params=list(FAMILIES))
def family(request):
    """Each model family in turn (test ids `internvl`, `qwen_vl`), with its tiny processor and tokenizer."""
    family = FAMILIES[request.param]
    processor, tokenizer = (request.getfixturevalue(name) for name in (family.processor_fixture, family.tokenizer_fixture))
    return family.bind(processor, tokenizer)


@pytest.fixture(scope="module")
def meteor():
    """One pycocoevalcap METEOR (a JVM that takes seconds to start) per test module."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()
