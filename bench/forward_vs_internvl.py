"""Forward time and peak memory of ASE-MLLM against transformers' InternVL at the same config, in one run.

    python bench/forward_vs_internvl.py [--preset small|tiny] [--tiles 12] [--repeats 5] [--device cpu|cuda]

Both models hold the same InternVL weights (ASE-MLLM adds its IAS parameters, gates open) and see the same
inputs: one image tiled into `--tiles` tiles + thumbnail, and its prompt. Time: median of `--repeats` forwards
after a warm-up, the two models interleaved. Peak memory: each model in its own subprocess, the increase of the
peak over one forward (Linux RSS high-water mark, or the CUDA allocator). Also: FLOPs counted by PyTorch and the
achieved fraction of this machine's measured fp32 matmul FLOP/s.
"""


import torch

from common import measure_timed_pair, pair_memory_child, run_model_bench, twin_inputs


def forward_fn(model, inputs, is_ours: bool):
    kwargs = dict(inputs) if is_ours else twin_inputs(inputs)

    def run():
        with torch.no_grad():
            return model(**kwargs).logits

    return run


def measure(preset="small", tiles=12, repeats=5, device="cpu") -> dict:
    return measure_timed_pair(__file__, forward_fn, preset, tiles, repeats, device)


def memory_child(which, preset, tiles, device) -> int:
    return pair_memory_child(forward_fn, which, preset, tiles, device)


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
