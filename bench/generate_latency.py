"""(c) generate(): prefill latency and decode tokens/s, ASE-MLLM against InternVL (same weights, same inputs).

    python bench/generate_latency.py [--preset small] [--tiles 12] [--new-tokens 32] [--repeats 3]

Inside one greedy `generate()` (KV cache on) a logits processor stamps the time of every step: prefill = start
to the first token's logits (image encoding + the prompt pass), decode rate = tokens per second after that.
"""

import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from common import build_inputs, build_pair, counted_flops, matmul_peak_flops, run_model_bench, sync, twin_inputs


class StepClock(LogitsProcessor):
    """Records the time at which each new token's logits are ready (inside one `generate()` call)."""

    def __init__(self):
        self.stamps = []

    def __call__(self, input_ids, scores):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def timed_generate(model, kwargs, new_tokens: int, device: str) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s) of one greedy `generate()` producing exactly `new_tokens` tokens."""
    clock = StepClock()
    clock.device = device
    sync(device)
    start = time.perf_counter()
    model.generate(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                   logits_processor=LogitsProcessorList([clock]))
    prefill = clock.stamps[0] - start
    return prefill, (len(clock.stamps) - 1) / (clock.stamps[-1] - clock.stamps[0])


def measure(preset="small", tiles=12, new_tokens=32, repeats=3, device="cpu") -> dict:
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    kwargs = {"ase_mllm": dict(inputs), "internvl": twin_inputs(inputs)}
    models = {"ase_mllm": model, "internvl": twin}
    runs = {name: [] for name in models}
    timed_generate(model, kwargs["ase_mllm"], 2, device)  # warm-up
    for _ in range(repeats):
        for name in models:  # interleaved, so that machine noise hits both alike
            runs[name].append(timed_generate(models[name], kwargs[name], new_tokens, device))
    prefill = {name: statistics.median(r[0] for r in runs[name]) for name in models}
    decode_rate = {name: statistics.median(r[1] for r in runs[name]) for name in models}
    flops = {name: counted_flops(lambda name=name: models[name](**kwargs[name]), models[name]) for name in models}
    peak = matmul_peak_flops(device)
    return {
        "preset": preset, "device": device, "tiles": int(inputs["pixel_values"].shape[0]),
        "prompt_tokens": int(inputs["input_ids"].shape[1]), "prefill_s": prefill, "decode_tokens_per_s": decode_rate,
        "prefill_ratio": prefill["ase_mllm"] / prefill["internvl"],
        "decode_ratio": decode_rate["ase_mllm"] / decode_rate["internvl"],
        "prefill_achieved_fraction": {name: flops[name] / prefill[name] / peak for name in models},
    }


def report(r: dict) -> str:
    p, d, a = r["prefill_s"], r["decode_tokens_per_s"], r["prefill_achieved_fraction"]
    return "\n".join([
        f"generate, {r['preset']} config, {r['tiles']} tiles, {r['prompt_tokens']} prompt tokens, {r['device']}",
        f"prefill: ASE-MLLM {p['ase_mllm']:.3f} s, InternVL {p['internvl']:.3f} s, ratio {r['prefill_ratio']:.2f}",
        f"decode: ASE-MLLM {d['ase_mllm']:.1f} tok/s, InternVL {d['internvl']:.1f} tok/s, ratio {r['decode_ratio']:.2f}",
        f"prefill of matmul peak: ASE-MLLM {a['ase_mllm']:.1%}, InternVL {a['internvl']:.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report, extra_arguments=[("--new-tokens", int, 32)])

if __name__ == "__main__":
    main()
