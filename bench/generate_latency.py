"""(c) generate(): prefill latency and decode tokens/s, ASE-MLLM against InternVL (same weights, same inputs).

    python bench/generate_latency.py [--preset small] [--tiles 12] [--new-tokens 128] [--repeats 8] [--threads N]

Inside one greedy `generate()` (KV cache on) a logits processor stamps the time of every step: prefill = start
to the first token's logits (image encoding + the prompt pass); each later stamp closes one decoding step. The
two models run interleaved, alternating which goes first, so that machine noise hits both alike; the decode rate
is 1 / the median step time over every step of every repeat (a step that the machine interrupted is an outlier
the median ignores), and the spread of the per-repeat ratios shows how stable the ratio is. The load average
before and after says how quiet the machine was. On a shared machine `--threads 1` steadies the decode ratio:
torch's threads wait for each other at every small op of a step, and a busy core stalls them all.
"""

import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from common import (
    build_inputs, build_pair, counted_flops, load_average, matmul_peak_flops, run_model_bench, sync, twin_inputs,
)


class StepClock(LogitsProcessor):
    """Records the time at which each new token's logits are ready (inside one `generate()` call)."""

    def __init__(self, device: str):
        self.device = device
        self.stamps = []

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def timed_generate(model, kwargs, new_tokens: int, device: str) -> tuple[float, list[float]]:
    """(prefill seconds, the seconds of each decoding step) of one greedy `generate()` of exactly `new_tokens`."""
    clock = StepClock(device)
    sync(device)
    start = time.perf_counter()
    model.generate(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                   logits_processor=LogitsProcessorList([clock]))
    steps = [later - earlier for earlier, later in zip(clock.stamps, clock.stamps[1:])]
    return clock.stamps[0] - start, steps


def measure(preset="small", tiles=12, new_tokens=128, repeats=8, device="cpu", threads=0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    load_before = load_average()
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    kwargs = {"ase_mllm": dict(inputs), "internvl": twin_inputs(inputs)}
    models = {"ase_mllm": model, "internvl": twin}
    prefills = {name: [] for name in models}
    steps = {name: [] for name in models}
    for name in models:  # warm-up
        timed_generate(models[name], kwargs[name], 4, device)
    for repeat in range(repeats):
        order = list(models) if repeat % 2 == 0 else list(models)[::-1]
        for name in order:
            prefill, step_seconds = timed_generate(models[name], kwargs[name], new_tokens, device)
            prefills[name].append(prefill)
            steps[name].append(step_seconds)
    prefill = {name: statistics.median(values) for name, values in prefills.items()}
    decode_rate = {name: 1 / statistics.median(s for run in runs for s in run) for name, runs in steps.items()}
    per_repeat = sorted(
        statistics.median(theirs) / statistics.median(ours) for ours, theirs in zip(steps["ase_mllm"], steps["internvl"])
    )
    flops = {name: counted_flops(lambda name=name: models[name](**kwargs[name]), models[name]) for name in models}
    peak = matmul_peak_flops(device)
    return {
        "preset": preset, "device": device, "tiles": int(inputs["pixel_values"].shape[0]),
        "prompt_tokens": int(inputs["input_ids"].shape[1]), "new_tokens": new_tokens, "repeats": repeats,
        "threads": torch.get_num_threads(),
        "prefill_s": prefill, "decode_tokens_per_s": decode_rate,
        "prefill_ratio": prefill["ase_mllm"] / prefill["internvl"],
        "decode_ratio": decode_rate["ase_mllm"] / decode_rate["internvl"],
        "decode_ratio_per_repeat": {"min": per_repeat[0], "median": statistics.median(per_repeat), "max": per_repeat[-1]},
        "prefill_achieved_fraction": {name: flops[name] / prefill[name] / peak for name in models},
        "load_average": {"before": load_before, "after": load_average()},
    }


def report(r: dict) -> str:
    p, d, a, spread = r["prefill_s"], r["decode_tokens_per_s"], r["prefill_achieved_fraction"], r["decode_ratio_per_repeat"]
    return "\n".join([
        f"generate, {r['preset']} config, {r['tiles']} tiles, {r['prompt_tokens']} prompt tokens, {r['device']} "
        f"({r['threads']} threads); "
        f"{r['repeats']} interleaved repeats of {r['new_tokens']} new tokens; load average before "
        f"{r['load_average']['before']}, after {r['load_average']['after']}",
        f"prefill: ASE-MLLM {p['ase_mllm']:.3f} s, InternVL {p['internvl']:.3f} s, ratio {r['prefill_ratio']:.2f}",
        f"decode: ASE-MLLM {d['ase_mllm']:.1f} tok/s, InternVL {d['internvl']:.1f} tok/s, ratio {r['decode_ratio']:.3f} "
        f"(per repeat {spread['min']:.3f}..{spread['max']:.3f}, median {spread['median']:.3f})",
        f"prefill of matmul peak: ASE-MLLM {a['ase_mllm']:.1%}, InternVL {a['internvl']:.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report, repeats=8,
                           extra_arguments=[("--new-tokens", int, 128), ("--threads", int, 0)])


if __name__ == "__main__":
    main()
