"""Forward time and peak memory of ASE-MLLM against transformers' InternVL at the same config, in one run.

    python bench/forward_vs_internvl.py [--preset small] [--tiles 12] [--repeats 5] [--device cpu|cuda]

Both models hold the same InternVL weights (ASE-MLLM adds its IAS parameters, gate open) and see the same
inputs: one image tiled into `--tiles` tiles + thumbnail, and its prompt. Time is the median of `--repeats`
forwards after a warm-up, interleaving the two models. Peak memory is measured for each model in its own
subprocess: the increase of the process's peak RSS over one forward (Linux `VmHWM`, reset through
`/proc/self/clear_refs`; large blocks are mmap'ed so that freed memory leaves RSS), or
`torch.cuda.max_memory_allocated` on a GPU. Prints ASE-MLLM / InternVL ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.internvl_compat import build_internvl_twin  # noqa: E402
from modeling_ase_mllm.tiny import build_processor, build_tiny_model, set_saliency_gates, tiny_config  # noqa: E402


# A "small" config: real 448 px / 14 px geometry and 256 tokens per tile, widths large enough that the
# encoders, not Python overhead, dominate.
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


def vision_encoder_macs(vision, tiles: int, with_ias: bool) -> int:
    """Analytic multiply-accumulates of the ViT blocks for `tiles` tiles (projections, attention, MLP)."""
    c, n = vision.hidden_size, (vision.image_size[0] // vision.patch_size[0]) ** 2 + 1
    block = 4 * c * c * n + 2 * n * n * c + 2 * c * vision.intermediate_size * n
    cross = 4 * c * c * n + 2 * n * n * c
    ias_blocks = len(vision.ias_layer_indices) if with_ias else 0
    return tiles * (vision.num_hidden_layers * block + ias_blocks * cross)


def image_for_tiles(tiles: int):
    """A random image whose InternVL tiling gives `tiles` tiles in one row."""
    from PIL import Image
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 255, (448, 448 * tiles, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def build_config(preset: str):
    return tiny_config(**SMALL) if preset == "small" else tiny_config()


def build(preset: str, tiles: int, device: str):
    model = build_tiny_model(build_config(preset), gate=0.0).to(device)
    set_saliency_gates(model, 0.5)  # the cross-attention runs either way; open it so its output matters
    twin = build_internvl_twin(model).to(device)
    processor = build_processor()
    inputs = processor(
        images=[image_for_tiles(tiles)], text=["<image>\nComment on this image from an aesthetic perspective."],
        images_kwargs={"max_patches": tiles}, return_tensors="pt",
    ).to(device)
    return model, twin, inputs


def forward(model, inputs, is_ours: bool):
    kwargs = dict(inputs) if is_ours else {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        return model(**kwargs).logits


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def time_both(model, twin, inputs, repeats: int, device: str) -> dict:
    for m, ours in ((model, True), (twin, False)):
        forward(m, inputs, ours)  # warm-up
    times = {"ase_mllm": [], "internvl": []}
    for _ in range(repeats):
        for name, m, ours in (("ase_mllm", model, True), ("internvl", twin, False)):
            sync(device)
            start = time.perf_counter()
            forward(m, inputs, ours)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(which: str, preset: str, tiles: int, device: str) -> int:
    """Bytes by which one forward raises the peak (runs inside a fresh subprocess)."""
    model, twin, inputs = build(preset, tiles, device)
    chosen, ours = (model, True) if which == "ase_mllm" else (twin, False)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        forward(chosen, inputs, ours)
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    forward(chosen, inputs, ours)
    return (rss_kib("VmHWM") - before) * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=["small", "tiny"], default="small")
    parser.add_argument("--tiles", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--_memory_child", choices=["ase_mllm", "internvl"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._memory_child:
        print(peak_memory_child(args._memory_child, args.preset, args.tiles, args.device))
        return

    model, twin, inputs = build(args.preset, args.tiles, args.device)
    n_tiles = inputs["pixel_values"].shape[0]
    seconds = time_both(model, twin, inputs, args.repeats, args.device)
    del model, twin
    memory = {}
    for which in ("ase_mllm", "internvl"):
        command = [sys.executable, __file__, "--preset", args.preset, "--tiles", str(args.tiles),
                   "--device", args.device, "--_memory_child", which]
        # glibc returns mmap'ed blocks to the OS on free, so with this threshold RSS follows live tensor memory.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        memory[which] = int(run.stdout.split()[-1])

    from modeling_ase_mllm.presets import load_model_preset

    flop_ratios = {}
    for label, vision in (("bench config", build_config(args.preset).vision_config),
                          ("InternViT-300M", load_model_preset("internvl2-8b").vision_config)):
        flop_ratios[label] = vision_encoder_macs(vision, n_tiles, True) / vision_encoder_macs(vision, n_tiles, False)
    result = {
        "preset": args.preset, "device": args.device, "tiles": n_tiles, "threads": torch.get_num_threads(),
        "forward_s": seconds, "peak_bytes": memory,
        "time_ratio": seconds["ase_mllm"] / seconds["internvl"],
        "memory_ratio": memory["ase_mllm"] / max(memory["internvl"], 1),
        "vision_flop_ratio": flop_ratios,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"forward, {args.preset} config, {n_tiles} tiles (incl. thumbnail), {args.device}, {result['threads']} threads")
    print(f"{'':12}{'ASE-MLLM':>12}{'InternVL':>12}{'ratio':>8}")
    print(f"{'time (s)':12}{seconds['ase_mllm']:12.3f}{seconds['internvl']:12.3f}{result['time_ratio']:8.2f}")
    mib = {k: v / 2**20 for k, v in memory.items()}
    print(f"{'peak (MiB)':12}{mib['ase_mllm']:12.1f}{mib['internvl']:12.1f}{result['memory_ratio']:8.2f}")
    for label, ratio in flop_ratios.items():
        print(f"analytic vision-encoder FLOP ratio IAS-ViT / InternViT, {label}: {ratio:.2f}")


if __name__ == "__main__":
    main()
