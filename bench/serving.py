"""`ase-mllm serve` throughput and latency on the tiny model, with and without continuous batching, in one run.

    python bench/serving.py [--requests 16] [--concurrency 1 4] [--max-tokens 16]

Each variant starts the server in its own process on 127.0.0.1 (the tiny random ASE-MLLM, one 448 px photo per
request, greedy), warms it up, then sends `--requests` chat completions with the `openai` client from
`--concurrency` threads, and reports requests/s and the p50/p95 latency. "continuous batching" hands
`continuous_batching=True` to transformers' server; transformers then reports whether it used it (it does not for
an image model: its `ContinuousBatchingManager.add_request` takes token ids only, and its server enables it for
`Modality.LLM` alone), and the table says what ran.
"""

import argparse
import base64
import io
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

from common import build_processor, build_tiny_model, image_for_tiles


SERVER = """
import sys
from modeling_ase_mllm.inference.serving import serve
serve(sys.argv[1], port=int(sys.argv[2]), device="cpu", continuous_batching=sys.argv[3] == "1")
"""
FALLBACK = "does not support continuous batching"


def start_server(model: Path, port: int, continuous_batching: bool, log: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port), "1" if continuous_batching else "0"],
                               stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server stopped: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    process.kill()
    raise TimeoutError("the server did not start")


def measure(client, model: str, url: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]

    def one(_):
        started = time.perf_counter()
        client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {"rps": requests / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    build_tiny_model(gate=0.5).save_pretrained(folder / "model")
    build_processor().save_pretrained(folder / "model")
    buffer = io.BytesIO()
    image_for_tiles(1).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    rows = []
    for continuous_batching in (False, True):
        with socket.socket() as probe:  # a free port on 127.0.0.1
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = folder / f"server-cb{int(continuous_batching)}.log"
        process = start_server(folder / "model", port, continuous_batching, log)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            measure(client, str(folder / "model"), url, 2, 1, args.max_tokens)  # warm-up
            for concurrency in args.concurrency:
                result = measure(client, str(folder / "model"), url, args.requests, concurrency, args.max_tokens)
                rows.append((continuous_batching, concurrency, result))
        finally:
            process.terminate()
            process.wait(timeout=60)
        if continuous_batching:
            fell_back = FALLBACK in log.read_text()
    print(f"\ntiny ASE-MLLM, one 448 px photo per request, {args.max_tokens} new tokens, {args.requests} requests per "
          f"row; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (a shared machine: numbers are noisy)")
    print("| continuous batching | what ran | concurrency | requests/s | p50 latency, s | p95 latency, s |")
    print("|---|---|---|---|---|---|")
    for continuous_batching, concurrency, result in rows:
        ran = ("generate() one request at a time (transformers fell back: image model)" if continuous_batching and
               fell_back else "continuous batching" if continuous_batching else "generate() one request at a time")
        print(f"| {'requested' if continuous_batching else 'off'} | {ran} | {concurrency} | {result['rps']:.2f} | "
              f"{result['p50']:.3f} | {result['p95']:.3f} |")


if __name__ == "__main__":
    main()
