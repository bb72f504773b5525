"""(d) One training step (forward, backward, AdamW): time and peak memory, ASE-MLLM against InternVL.

    python bench/train_step.py [--preset small] [--tiles 6] [--repeats 3]
"""


import torch

from common import measure_timed_pair, pair_memory_child, run_model_bench, twin_inputs


def step_fn(model, inputs, is_ours: bool):
    model.train()
    kwargs = dict(inputs) if is_ours else twin_inputs(inputs)
    labels = inputs["input_ids"].clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**kwargs, labels=labels).loss.backward()
        optimizer.step()

    return step


def measure(preset="small", tiles=6, repeats=3, device="cpu") -> dict:
    return measure_timed_pair(__file__, step_fn, preset, tiles, repeats, device)


def memory_child(which, preset, tiles, device) -> int:
    # The first step allocates the optimizer state; measure a steady-state step.
    return pair_memory_child(step_fn, which, preset, tiles, device, warm_up=True)


def report(r: dict) -> str:
    s, m = r["seconds"], r["peak_bytes"]
    return "\n".join([
        f"training step, {r['preset']} config, {r['tiles']} tiles, {r['device']}",
        f"time: ASE-MLLM {s['ase_mllm']:.3f} s, InternVL {s['internvl']:.3f} s, ratio {r['time_ratio']:.2f}",
        f"peak: ASE-MLLM {m['ase_mllm'] / 2**20:.1f} MiB, InternVL {m['internvl'] / 2**20:.1f} MiB, "
        f"ratio {r['memory_ratio']:.2f}",
        f"of matmul peak: ASE-MLLM {r['achieved_fraction']['ase_mllm']:.1%}, InternVL {r['achieved_fraction']['internvl']:.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report, memory_child, tiles=6)

if __name__ == "__main__":
    main()
