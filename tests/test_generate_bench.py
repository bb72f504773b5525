"""`bench/generate_latency.py`: its lockstep runs each model's whole `generate()` and takes turns exactly as it
says, and it runs end to end at the tiny preset (so the bench behind the decode ratio cannot rot). No timing is
asserted."""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import generate_latency  # noqa: E402
from generate_latency import Lockstep  # noqa: E402


def test_lockstep_takes_turns_every_k_steps_and_times_every_step():
    """Three callables of 1 prefill + 7, 3 and 0 steps, 2 steps a turn: the order of their handovers is exactly the
    rotation (prefills first, then two steps each), and a finished one drops out."""
    log = []
    lockstep = Lockstep(["a", "b", "c"], "cpu", steps_per_turn=2)

    def model(name, steps):
        def run():
            for step in range(steps + 1):
                log.append(f"{name}{step}")
                lockstep.handover(name)
        return run

    intervals = lockstep.run({"a": model("a", 7), "b": model("b", 3), "c": model("c", 0)})
    assert log == ["a0", "b0", "c0",          # prefills, each handing on at once
                   "a1", "a2", "b1", "b2",    # c is done: two steps each for a and b
                   "a3", "a4", "b3",          # b's last step, then it finishes
                   "a5", "a6", "a7"]          # a runs on alone
    assert [len(intervals[name]) for name in "abc"] == [8, 4, 1]
    assert all(seconds >= 0 for times in intervals.values() for seconds in times)


def test_grad_mode_is_off_for_every_model_until_the_last_returns():
    """torch's grad mode is per OS thread: the first model to return must not switch it on under the others."""
    seen = []
    lockstep = Lockstep(["a", "b"], "cpu", steps_per_turn=1)

    def model(name, steps):
        @torch.no_grad()
        def run():
            for _ in range(steps + 1):
                seen.append((name, torch.is_grad_enabled()))
                lockstep.handover(name)
        return run

    lockstep.run({"a": model("a", 1), "b": model("b", 4)})
    assert seen and not any(enabled for _, enabled in seen)
    assert torch.is_grad_enabled()  # restored for the caller


def test_each_generate_runs_whole_in_lockstep():
    from common import build_inputs, build_pair, twin_inputs

    model, twin = build_pair("tiny", share_weights=True)
    inputs = build_inputs(2)
    timed = generate_latency.lockstep_generate({"ase_mllm": model, "internvl": twin},
                                               {"ase_mllm": dict(inputs), "internvl": twin_inputs(inputs)},
                                               new_tokens=6, device="cpu", order=["internvl", "ase_mllm"],
                                               steps_per_turn=2)
    assert {name: len(steps) for name, (prefill, steps) in timed.items()} == {"ase_mllm": 5, "internvl": 5}
    assert all(prefill > 0 and min(steps) > 0 for prefill, steps in timed.values())


def test_generate_bench_runs_at_tiny_size():
    result = generate_latency.measure(preset="tiny", tiles=2, new_tokens=5, repeats=3, steps_per_turn=2)
    assert result["tiles"] == 3 and result["steps_per_turn"] == 2
    assert set(result["decode_tokens_per_s"]) == {"ase_mllm", "internvl", "control"}
    for which in ("decode", "control"):
        spread = result[which]["per_repeat"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"] and math.isfinite(result[which]["ratio"])
    assert "control (a second InternVL twin)" in generate_latency.report(result)
