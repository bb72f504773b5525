"""Forward time and peak memory of ASE-MLLM against transformers' InternVL at the same config, in one run.

    python bench/forward_vs_internvl.py [--preset small|tiny] [--tiles 12] [--repeats 5] [--device cpu|cuda]

Both models hold the same InternVL weights (ASE-MLLM adds its IAS parameters, gates open) and see the same
inputs: one image tiled into `--tiles` tiles + thumbnail, and its prompt. Time: median of `--repeats` forwards
after a warm-up, the two models interleaved. Peak memory: each model in its own subprocess, the increase of the
peak over one forward (Linux RSS high-water mark, or the CUDA allocator). Also: FLOPs counted by PyTorch and the
achieved fraction of this machine's measured fp32 matmul FLOP/s.
"""


import torch

from common import (
    build_inputs, build_pair, counted_flops, interleaved_medians, matmul_peak_flops, measure_memory_pair,
    peak_bytes_of, run_model_bench, twin_inputs,
)


def forward_fn(model, inputs, is_ours: bool):
    kwargs = dict(inputs) if is_ours else twin_inputs(inputs)

    def run():
        with torch.no_grad():
            return model(**kwargs).logits

    return run


def measure(preset="small", tiles=12, repeats=5, device="cpu") -> dict:
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    fns = {"ase_mllm": forward_fn(model, inputs, True), "internvl": forward_fn(twin, inputs, False)}
    seconds = interleaved_medians(fns, repeats, device)
    flops = {name: counted_flops(fns[name], m) for name, m in (("ase_mllm", model), ("internvl", twin))}
    peak = matmul_peak_flops(device)
    memory = measure_memory_pair(__file__, preset, tiles, device)
    return {
        "preset": preset, "device": device, "tiles": int(inputs["pixel_values"].shape[0]),
        "seconds": seconds, "peak_bytes": memory, "flops": flops, "matmul_flops_per_s": peak,
        "achieved_fraction": {name: flops[name] / seconds[name] / peak for name in fns},
        "time_ratio": seconds["ase_mllm"] / seconds["internvl"],
        "memory_ratio": memory["ase_mllm"] / max(memory["internvl"], 1),
    }


def memory_child(which, preset, tiles, device) -> int:
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    fn = forward_fn(model, inputs, True) if which == "ase_mllm" else forward_fn(twin, inputs, False)
    return peak_bytes_of(fn, device)


def report(result: dict) -> str:
    s, m, a = result["seconds"], result["peak_bytes"], result["achieved_fraction"]
    return "\n".join([
        f"forward, {result['preset']} config, {result['tiles']} tiles (incl. thumbnail), {result['device']}",
        f"{'':14}{'ASE-MLLM':>12}{'InternVL':>12}{'ratio':>8}",
        f"{'time (s)':14}{s['ase_mllm']:12.3f}{s['internvl']:12.3f}{result['time_ratio']:8.2f}",
        f"{'peak (MiB)':14}{m['ase_mllm'] / 2**20:12.1f}{m['internvl'] / 2**20:12.1f}{result['memory_ratio']:8.2f}",
        f"{'GFLOP':14}{result['flops']['ase_mllm'] / 1e9:12.1f}{result['flops']['internvl'] / 1e9:12.1f}"
        f"{result['flops']['ase_mllm'] / result['flops']['internvl']:8.2f}",
        f"{'of matmul peak':14}{a['ase_mllm']:12.1%}{a['internvl']:12.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report, memory_child)

if __name__ == "__main__":
    main()
