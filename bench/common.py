"""Shared pieces of the benchmarks: the small config, twin models, inputs, timers, FLOP counts, peak memory.

Every benchmark compares ASE-MLLM with transformers' `InternVLForConditionalGeneration` holding the same weights
(`modeling_ase_mllm.convert.twin.build_internvl_twin`), measured in the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.convert.twin import build_internvl_twin  # noqa: E402
from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT  # noqa: E402
from modeling_ase_mllm.modeling_ase_mllm import set_saliency_gates  # noqa: E402
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config  # noqa: E402


# Real 448 px / 14 px geometry and 256 tokens per tile; widths large enough that the encoders, not Python
# overhead, dominate on a 2-core CPU.
SMALL = {
    "vision_config": {
        "hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 4, "intermediate_size": 1024,
        "attention_bias": True, "image_size": 448, "patch_size": 14, "saliency_embed_dim": 64,
    },
    "text_config": {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 16384,
        "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 2,
    },
}
PROMPT = AESTHETIC_PROMPT
TWIN_INPUTS = ("input_ids", "attention_mask", "pixel_values")


def build_config(preset: str = "small"):
    return tiny_config(**SMALL) if preset == "small" else tiny_config()


def build_pair(preset: str = "small", device: str = "cpu", share_weights: bool = False):
    """ASE-MLLM (gates open, so the cross-attention's output matters) and its InternVL twin, which owns a copy of
    the weights, or with `share_weights` holds the very same tensors (so that where they lie cannot differ)."""
    model = build_tiny_model(build_config(preset), gate=0.0).to(device)
    twin = build_internvl_twin(model, share_weights=share_weights).to(device)
    set_saliency_gates(model, 0.5)
    return model, twin


def image_for_tiles(tiles: int, seed: int = 0) -> Image.Image:
    """A random photo whose InternVL tiling is `tiles` tiles in one row (plus a thumbnail)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (448, 448 * tiles, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def build_inputs(tiles: int, device: str = "cpu", processor=None, saliency_source: str = "spectral_residual"):
    """One image of `tiles` tiles (+ thumbnail). The encoder benches hand the model ready per-tile maps (a cheap
    classical source) so they time the encoders alone; EAT + LayerCAM's own cost is `saliency_cost.py`."""
    processor = processor or build_processor()
    inputs = processor(
        images=[image_for_tiles(tiles)], text=["<image>\n" + PROMPT],
        images_kwargs={"max_patches": tiles, "saliency_source": saliency_source}, return_tensors="pt",
    ).to(device)
    # Ready maps handed in as precomputed ones, whatever the model's own source: not a processor's to check.
    inputs.pop("saliency_source")
    return inputs


def twin_inputs(inputs) -> dict:
    return {key: inputs[key] for key in TWIN_INPUTS if key in inputs}


def load_average() -> str:
    """This machine's 1, 5 and 15-minute load averages, e.g. "0.41/0.55/0.60": how quiet it was."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, device: str = "cpu", warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int, device: str = "cpu") -> dict:
    """Median seconds of each callable, timed in alternation so that machine noise hits all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def counted_flops(fn, *models) -> int:
    """FLOPs of one call as PyTorch's FlopCounterMode counts them (matmuls, convolutions, attention).

    FlopCounterMode has no formula for the CPU SDPA kernel (it counts 0), so the `models` are switched to the
    mathematically identical eager attention while counting.
    """
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    previous = [model.config._attn_implementation for model in models]
    for model in models:
        model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        for model, implementation in zip(models, previous):
            model.set_attn_implementation(implementation)
        logging.set_verbosity(verbosity)
    return counter.get_total_flops()


def matmul_peak_flops(device: str = "cpu", size: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """Measured FLOP/s of a large (fp32 by default) matmul on this machine: the denominator of "achieved fraction"."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, repeats, device)
    return 2 * size**3 / seconds


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_bytes_of(fn, device: str = "cpu") -> int:
    """Bytes by which `fn()` raises the process's peak memory (CUDA allocator, or Linux RSS high-water mark)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    fn()
    return (rss_kib("VmHWM") - before) * 1024


def run_memory_child(script: str, args: list[str]) -> int:
    """Run `script args` in a fresh process that prints peak bytes last; return them.

    glibc returns mmap'ed blocks to the OS on free, so with this threshold RSS follows live tensor memory.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True, env=env)
    return int(run.stdout.split()[-1])


def vision_encoder_macs(vision, tiles: int, with_ias: bool) -> int:
    """Analytic multiply-accumulates of the ViT blocks for `tiles` tiles (projections, attention, MLP)."""
    c, n = vision.hidden_size, (vision.image_size[0] // vision.patch_size[0]) ** 2 + 1
    block = 4 * c * c * n + 2 * n * n * c + 2 * c * vision.intermediate_size * n
    cross = 4 * c * c * n + 2 * n * n * c
    ias_blocks = len(vision.ias_layer_indices) if with_ias else 0
    return tiles * (vision.num_hidden_layers * block + ias_blocks * cross)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def measure_memory_pair(script: str, preset: str, tiles: int, device: str) -> dict:
    """Peak bytes of ASE-MLLM and InternVL, each measured by `script --_memory_child` in a fresh process."""
    return {
        which: run_memory_child(script, ["--preset", preset, "--tiles", str(tiles), "--device", device,
                                         "--_memory_child", which])
        for which in ("ase_mllm", "internvl")
    }


def measure_timed_pair(script: str, make_fn, preset: str, tiles: int, repeats: int, device: str) -> dict:
    """Time, count the FLOPs of, and (in fresh subprocesses of `script`) measure the peak memory of
    `make_fn(model, inputs, is_ours)` for ASE-MLLM and its InternVL twin, in one run."""
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    fns = {"ase_mllm": make_fn(model, inputs, True), "internvl": make_fn(twin, inputs, False)}
    seconds = interleaved_medians(fns, repeats, device)
    flops = {name: counted_flops(fns[name], m) for name, m in (("ase_mllm", model), ("internvl", twin))}
    peak = matmul_peak_flops(device)
    memory = measure_memory_pair(script, preset, tiles, device)
    return {
        "preset": preset, "device": device, "tiles": int(inputs["pixel_values"].shape[0]),
        "seconds": seconds, "peak_bytes": memory, "flops": flops, "matmul_flops_per_s": peak,
        "achieved_fraction": {name: flops[name] / seconds[name] / peak for name in fns},
        "time_ratio": seconds["ase_mllm"] / seconds["internvl"],
        "memory_ratio": memory["ase_mllm"] / max(memory["internvl"], 1),
    }


def pair_memory_child(make_fn, which: str, preset: str, tiles: int, device: str, warm_up: bool = False) -> int:
    """Peak bytes of one call of `make_fn(...)` for `which` model (run in its own process by `measure_timed_pair`);
    `warm_up` makes one call first (e.g. to allocate an optimizer's state)."""
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    fn = make_fn(model, inputs, True) if which == "ase_mllm" else make_fn(twin, inputs, False)
    if warm_up:
        fn()
    return peak_bytes_of(fn, device)


def run_model_bench(argv, doc: str, measure, report, memory_child=None, tiles: int = 12, repeats: int = 3,
                    extra_arguments=()):
    """The command line every model benchmark shares: --preset --tiles --repeats --device --json (+ extras).

    `extra_arguments`: `(flag, type, default)` triples passed on to `measure` by name.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--preset", choices=["small", "tiny"], default="small")
    parser.add_argument("--tiles", type=int, default=tiles)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    for flag, kind, default in extra_arguments:
        parser.add_argument(flag, type=kind, default=default)
    if memory_child is not None:
        parser.add_argument("--_memory_child", choices=["ase_mllm", "internvl"], help=argparse.SUPPRESS)
    args = vars(parser.parse_args(argv))
    which = args.pop("_memory_child", None)
    as_json = args.pop("json")
    if which:
        print(memory_child(which, args["preset"], args["tiles"], args["device"]))
        return None
    result = measure(**args)
    print(json.dumps(result) if as_json else report(result))
    return result
