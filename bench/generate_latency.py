"""(c) generate(): prefill latency and decode tokens/s, ASE-MLLM against InternVL (same weights, same inputs).

    python bench/generate_latency.py [--preset small] [--tiles 12] [--new-tokens 128] [--repeats 8]
                                     [--steps-per-turn 8] [--threads N]

Each repeat runs one greedy `generate()` (KV cache on) of each model, whole and unchanged, in lockstep: the
`generate()` calls take turns, a few decoding steps at a time (a logits processor hands the turn on as the
logits of a model's k-th new token are ready, and `generate()` goes on when the turn comes back). So step i of
one model runs within milliseconds of step i of the others, at the same sequence length, and whatever the machine
does meanwhile (another process, a frequency change) reaches all alike: `generate()` calls timed one after the
other differed by up to ±25 % per repeat here. A step is timed from the moment its model gets the turn back, or
from the end of its previous step, to its next logits: the rest of the loop (argmax, stopping criteria,
`prepare_inputs_for_generation`) and the forward. Prefill is the start of `generate()` to the first logits (image
encoding + prompt pass).

The InternVL twin holds ASE-MLLM's own weight tensors (`share_weights=True`), so where those tensors happen to lie
in memory, which moved the ratio of two otherwise identical runs by ±3 %, cannot differ between the models. A
second InternVL twin (the same tensors again) runs as a control: its ratio to the first shows what the method
itself reads as a difference. The model that starts each turn rotates between repeats.

Reported: decode tokens/s, 1 / the median step time over every step of every repeat; ASE-MLLM's and the
control's ratio to InternVL, the median of the step-by-step ratios, and the spread of the per-repeat ratios; the
load average before and after (how quiet the machine was).
"""

import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from common import (
    build_inputs, build_pair, counted_flops, load_average, matmul_peak_flops, run_model_bench, sync, twin_inputs,
)
from modeling_ase_mllm.convert.twin import build_internvl_twin


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
    """(prefill seconds, the seconds of each decoding step) of one greedy `generate()` of exactly `new_tokens`, run
    alone (the GPU benchmark's timing, where one model at a time fills the device)."""
    clock = StepClock(device)
    sync(device)
    start = time.perf_counter()
    model.generate(**kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                   logits_processor=LogitsProcessorList([clock]))
    steps = [later - earlier for earlier, later in zip(clock.stamps, clock.stamps[1:])]
    return clock.stamps[0] - start, steps


class Lockstep:
    """Runs callables that take turns, in order, at every `steps_per_turn`-th `handover(name)` (and at the first:
    after prefill), and times what each does.

    Each runs in a greenlet of its own: its own stack in this same OS thread. (OS threads would each bring their own
    OpenMP team, and an idle team's spinning workers halved the busy one's speed on a 2-core machine.)
    `intervals[name]`: per `handover`, the seconds since the model got the turn or since its previous `handover`
    (the first: since its start). A finished callable drops out of the rotation.
    """

    def __init__(self, names: list[str], device: str, steps_per_turn: int = 1):
        self.names, self.device, self.steps_per_turn = names, device, steps_per_turn
        self.greenlets: dict = {}
        self.finished: set[str] = set()
        self.resumed: dict[str, float] = {}
        self.intervals: dict[str, list[float]] = {name: [] for name in names}

    def next_after(self, name: str) -> str | None:
        index = self.names.index(name)
        later = [*self.names[index + 1 :], *self.names[:index]]
        return next((other for other in later if other not in self.finished), None)

    def handover(self, name: str) -> None:
        sync(self.device)
        self.intervals[name].append(time.perf_counter() - self.resumed[name])
        following = self.next_after(name)
        if following is not None and (len(self.intervals[name]) - 1) % self.steps_per_turn == 0:
            self.greenlets[following].switch()
        self.resumed[name] = time.perf_counter()

    def run(self, fns: dict) -> dict[str, list[float]]:
        """Runs `fns` (in the order of `names`, the first starting) to the end; returns `intervals`."""
        from greenlet import greenlet  # the dev extra's; gpu.py, which imports this module, runs without it

        def body(name):
            self.resumed[name] = time.perf_counter()
            fns[name]()
            self.finished.add(name)  # then back to `run`, which hands the turn on

        self.greenlets = {name: greenlet(lambda name=name: body(name)) for name in self.names}
        # torch's grad mode is per OS thread, so the greenlets share it: the first `generate()` to return would
        # restore it, switched on, under the others. All of them run inside this one instead.
        with torch.no_grad():
            while len(self.finished) < len(self.names):
                self.greenlets[next(name for name in self.names if name not in self.finished)].switch()
        return self.intervals


class HandOver(LogitsProcessor):
    """Hands the turn on (`Lockstep.handover`) each time its model's next-token logits are ready."""

    def __init__(self, lockstep: Lockstep, name: str):
        self.lockstep, self.name = lockstep, name

    def __call__(self, input_ids, scores):
        self.lockstep.handover(self.name)
        return scores


def lockstep_generate(models: dict, kwargs: dict, new_tokens: int, device: str, order: list[str],
                      steps_per_turn: int = 1) -> dict:
    """`{name: (prefill seconds, [seconds of each decoding step])}` of one greedy `generate()` of exactly
    `new_tokens` per model, run in lockstep in `order`."""
    lockstep = Lockstep(order, device, steps_per_turn)

    def generate(name):
        models[name].generate(**kwargs[name], max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=0, logits_processor=LogitsProcessorList([HandOver(lockstep, name)]))

    intervals = lockstep.run({name: lambda name=name: generate(name) for name in order})
    return {name: (times[0], times[1:]) for name, times in intervals.items()}


def ratios(runs: list[dict], ours: str, theirs: str) -> dict:
    """Decode rate of `ours` over `theirs`: from the median step times, step by step, and per repeat."""
    steps = {name: [s for run in runs for s in run[name][1]] for name in (ours, theirs)}
    per_repeat = sorted(statistics.median(run[theirs][1]) / statistics.median(run[ours][1]) for run in runs)
    return {
        "ratio": statistics.median(steps[theirs]) / statistics.median(steps[ours]),
        "paired_median": statistics.median(b / a for a, b in zip(steps[ours], steps[theirs], strict=True)),
        "per_repeat": {"min": per_repeat[0], "median": statistics.median(per_repeat), "max": per_repeat[-1]},
    }


def measure(preset="small", tiles=12, new_tokens=128, repeats=8, device="cpu", threads=0, steps_per_turn=8) -> dict:
    if threads:
        torch.set_num_threads(threads)
    load_before = load_average()
    model, twin = build_pair(preset, device, share_weights=True)
    inputs = build_inputs(tiles, device)
    models = {"ase_mllm": model, "internvl": twin, "control": build_internvl_twin(model, share_weights=True)}
    kwargs = {"ase_mllm": dict(inputs), "internvl": twin_inputs(inputs), "control": twin_inputs(inputs)}
    names = list(models)
    lockstep_generate(models, kwargs, 4, device, names, steps_per_turn)  # warm-up
    runs = [lockstep_generate(models, kwargs, new_tokens, device, names[r % 3 :] + names[: r % 3], steps_per_turn)
            for r in range(repeats)]
    prefill = {name: statistics.median(run[name][0] for run in runs) for name in models}
    decode_rate = {name: 1 / statistics.median(s for run in runs for s in run[name][1]) for name in models}
    flops = {name: counted_flops(lambda name=name: models[name](**kwargs[name]), models[name])
             for name in ("ase_mllm", "internvl")}
    peak = matmul_peak_flops(device)
    return {
        "preset": preset, "device": device, "tiles": int(inputs["pixel_values"].shape[0]),
        "prompt_tokens": int(inputs["input_ids"].shape[1]), "new_tokens": new_tokens, "repeats": repeats,
        "steps_per_turn": steps_per_turn, "threads": torch.get_num_threads(),
        "prefill_s": prefill, "decode_tokens_per_s": decode_rate,
        "prefill_ratio": prefill["ase_mllm"] / prefill["internvl"],
        "decode": ratios(runs, "ase_mllm", "internvl"),
        "control": ratios(runs, "control", "internvl"),
        "prefill_achieved_fraction": {name: flops[name] / prefill[name] / peak for name in flops},
        "load_average": {"before": load_before, "after": load_average()},
    }


def report(r: dict) -> str:
    p, d, a = r["prefill_s"], r["decode_tokens_per_s"], r["prefill_achieved_fraction"]

    def spread(which):
        x = r[which]
        return (f"ratio {x['ratio']:.3f} (step by step: median {x['paired_median']:.3f}; per repeat "
                f"{x['per_repeat']['min']:.3f}..{x['per_repeat']['max']:.3f})")

    return "\n".join([
        f"generate, {r['preset']} config, {r['tiles']} tiles, {r['prompt_tokens']} prompt tokens, {r['device']} "
        f"({r['threads']} threads); {r['repeats']} repeats of {r['new_tokens']} new tokens in lockstep, "
        f"{r['steps_per_turn']} steps a turn; load average before {r['load_average']['before']}, after "
        f"{r['load_average']['after']}",
        f"prefill: ASE-MLLM {p['ase_mllm']:.3f} s, InternVL {p['internvl']:.3f} s, ratio {r['prefill_ratio']:.2f}",
        f"decode: ASE-MLLM {d['ase_mllm']:.1f} tok/s, InternVL {d['internvl']:.1f} tok/s, {spread('decode')}",
        f"control (a second InternVL twin): {d['control']:.1f} tok/s, {spread('control')}",
        f"prefill of matmul peak: ASE-MLLM {a['ase_mllm']:.1%}, InternVL {a['internvl']:.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report, repeats=8,
                           extra_arguments=[("--new-tokens", int, 128), ("--threads", int, 0),
                                            ("--steps-per-turn", int, 8)])


if __name__ == "__main__":
    main()
