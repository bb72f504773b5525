"""GPU benchmark at full size: ASE-MLLM against transformers' InternVL, random weights, one GPU, under 8 minutes.

    bash bench/gpu.sh                                    # InternVL2-8B shape, bf16, writes bench/results-gpu.md
    python bench/gpu.py --device cpu --preset tiny       # the CPU smoke run the tests make

Shape (`full_size.py`): one 12-megapixel photo per sample at 12 tiles + thumbnail, a 64-token prompt. Weights are
random, initialised on the device itself (the InternVL twin shares ASE-MLLM's tensors, so they are held once), gates
open. For every attention implementation (`sdpa`, and `flash_attention_2` when flash-attn is installed) and batch
size (1 and 8), each model is measured in turn:

- forward: `model(**inputs)` under `no_grad`, logits at every position; median of `--repeats` after a warm-up;
- generate: one greedy `generate()` of `--new-tokens` tokens (`generate_latency.timed_generate`): prefill latency
  (start to the first token) and decode tokens/s (all sequences of the batch together);
- training step: the recipe's (`--recipe`, default the paper's `pccd`: LLM LoRA r=16, projector and IAS in full,
  ViT frozen) with gradient checkpointing, forward + backward + AdamW step;
- peak memory: the model's own weights plus the allocator's peak above what was allocated before the call (on a
  CPU: the RSS high-water mark instead of the allocator's).

"Of bf16 peak" divides the model's FLOPs (counted on `meta` by `full_size_cost.py`, read from its JSON when it holds
this preset at this shape, without the recomputation that checkpointing adds) by the time and by the GPU's dense
bf16 peak: the datasheet figure for known devices (`DATASHEET_BF16_TFLOPS`), else a measured matmul's. A row whose
run does not fit in memory says `OOM`; rows left when `--budget-s` runs out say `skipped`.
"""

import argparse
import datetime
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from common import markdown_table, matmul_peak_flops, median_seconds, peak_bytes_of
from full_size import MAX_TILES, PROMPT_TOKENS, build_pair, load_config, photo_tiling, synthetic_inputs, twin_inputs
from full_size_cost import OUT as COUNTS_MARKDOWN, measure_preset, prepare_training
from generate_latency import timed_generate
from modeling_ase_mllm.training.recipes import parse_recipe


OUT = Path(__file__).resolve().parent / "results-gpu.md"
MODELS = ("ase_mllm", "internvl")
# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, from the vendors' datasheets; the first name contained in
# `torch.cuda.get_device_name()` wins, so more specific names come first.
DATASHEET_BF16_TFLOPS = (
    ("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.5), ("H100 NVL", 835.5), ("H100", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.05), ("L40", 181.05), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0), ("MI300X", 1307.4),
)
MEASURES = ("forward, s", "forward, peak GiB", "prefill, s", "decode, tokens/s", "generate, peak GiB",
            "training step, s", "training step, peak GiB")


def datasheet_peak(device_name: str) -> float | None:
    """FLOP/s of `device_name`'s dense bf16 peak, or None for a device not in the table."""
    for name, tflops in DATASHEET_BF16_TFLOPS:
        if name in device_name:
            return tflops * 1e12
    return None


def attention_implementations(device: str) -> list[str]:
    """`sdpa`, and `flash_attention_2` on a GPU where flash-attn is installed."""
    flash = device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return ["sdpa", "flash_attention_2"] if flash else ["sdpa"]


def per_sample_flops(preset: str, recipe: str, max_patches: int, prompt_tokens: int) -> dict[str, dict[str, int]]:
    """`{"forward" | "prefill" | "training": {model: FLOPs}}` of one sample at this file's shape: from
    `full_size_cost.py`'s JSON when it holds `preset` at this shape and `recipe`, else counted now on `meta`."""
    saved = COUNTS_MARKDOWN.with_suffix(".json")
    sequence = prompt_tokens + photo_tiling(max_patches)[1] * load_config(preset).image_seq_length
    for result in json.loads(saved.read_text()) if saved.is_file() else []:
        if (result["preset"], result["sequence"]) == (preset, sequence) and recipe in result["models"]["ase_mllm"]["training"]:
            break
    else:
        result = measure_preset(preset, max_patches, prompt_tokens, recipes=(recipe,))
    return {
        "forward": {name: result["models"][name]["forward"]["total"] for name in MODELS},
        "prefill": {name: result["models"][name]["prefill"]["total"] for name in MODELS},
        "training": {name: result["models"][name]["training"][recipe]["flops"] for name in MODELS},
    }


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def enable_checkpointing(model) -> None:
    """Gradient (activation) checkpointing, non-reentrant, under whichever name this transformers has."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def release(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def measure_inference(model, inputs, weights: int, new_tokens: int, repeats: int, device: str) -> dict:
    """Forward and generate timings and peaks of one model on one batch."""
    batch = inputs["input_ids"].shape[0]

    def forward():
        with torch.no_grad():
            model(**inputs)

    seconds = median_seconds(forward, repeats, device)
    forward_peak = weights + peak_bytes_of(forward, device)
    release(device)
    runs = [timed_generate(model, inputs, new_tokens, device) for _ in range(repeats + 1)][1:]  # first: warm-up
    generate_peak = weights + peak_bytes_of(lambda: timed_generate(model, inputs, new_tokens, device), device)
    release(device)
    return {"forward, s": seconds, "forward, peak GiB": forward_peak / 2**30,
            "prefill, s": statistics.median(r[0] for r in runs),
            "decode, tokens/s": batch / statistics.median(step for r in runs for step in r[1]),
            "generate, peak GiB": generate_peak / 2**30}


def measure_training(model, inputs, weights: int, repeats: int, device: str) -> dict:
    """Median seconds of a training step and the peak of a first one (which allocates AdamW's state)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    labels = inputs["input_ids"]

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()

    peak = weights + peak_bytes_of(step, device)
    seconds = median_seconds(step, repeats, device, warmup=0)
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    release(device)
    return {"training step, s": seconds, "training step, peak GiB": peak / 2**30}


def guarded(fn, device: str):
    """`fn()`, or `"OOM"` when the device runs out of memory."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        release(device)
        return "OOM"


class Quiet:
    """transformers' warnings (sub-configs without attention modules, generation flags) at error level only."""

    def __enter__(self):
        self.level = transformers.utils.logging.get_verbosity()
        transformers.utils.logging.set_verbosity_error()

    def __exit__(self, *exc):
        transformers.utils.logging.set_verbosity(self.level)


def measure(preset="internvl2-8b", device="cuda", dtype="bfloat16", batches=(1, 8), max_patches=MAX_TILES,
            prompt_tokens=PROMPT_TOKENS, new_tokens=32, repeats=3, recipe="pccd", budget_s=420.0) -> dict:
    started = time.time()
    dtype = getattr(torch, dtype)
    config = load_config(preset)
    flops = per_sample_flops(preset, recipe, max_patches, prompt_tokens)
    models = dict(zip(MODELS, build_pair(config, device, dtype)))
    weights = {name: weight_bytes(m) for name, m in models.items()}
    attentions = attention_implementations(device)
    cells = {}  # (attention, batch) -> {model: {measure: value} or "OOM" / "skipped"}

    def run_phase(measure_one):
        for attention in attentions:
            try:
                for m in models.values():
                    m.set_attn_implementation(attention)
            except (ValueError, ImportError) as error:  # transformers refuses an implementation it cannot use
                print(f"{attention}: not available ({error})", flush=True)
                unavailable = {name: dict.fromkeys(MEASURES, "n/a") for name in MODELS}
                cells.update({(attention, batch): unavailable for batch in batches})
                continue
            for batch in batches:
                cell = cells.setdefault((attention, batch), {name: {} for name in MODELS})
                inputs = synthetic_inputs(config, batch, max_patches, prompt_tokens, device=device, dtype=dtype)
                for name, m in models.items():
                    kwargs = inputs if name == "ase_mllm" else twin_inputs(inputs)
                    if time.time() - started > budget_s:
                        result = "skipped"
                    else:
                        result = guarded(lambda: measure_one(m, kwargs, weights[name]), device)
                    if isinstance(result, str):
                        result = dict.fromkeys(MEASURES, result)
                    cell[name].update(result)
                del inputs
                release(device)

    with Quiet():
        run_phase(lambda m, kwargs, w: measure_inference(m, kwargs, w, new_tokens, repeats, device))
        recipe_settings = parse_recipe(recipe=recipe)[0]
        for name, m in models.items():
            enable_checkpointing(m)
            models[name] = prepare_training(m, recipe_settings, name == "ase_mllm")
        run_phase(lambda m, kwargs, w: measure_training(m, kwargs, w, repeats, device))

    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} {platform.processor() or 'cpu'}"
    datasheet = datasheet_peak(name) if device == "cuda" else None
    measured = matmul_peak_flops(device, size=8192 if device == "cuda" else 1024, dtype=dtype)
    return {
        "preset": preset, "device": device, "device_name": name, "dtype": str(dtype).removeprefix("torch."),
        "batches": list(batches), "tiles": photo_tiling(max_patches)[1], "prompt_tokens": prompt_tokens,
        "attentions": attentions, "recipe": recipe, "new_tokens": new_tokens,
        "repeats": repeats, "flops_per_sample": flops, "weights_bytes": weights,
        "peak_flops": datasheet or measured, "peak_source": "datasheet" if datasheet else "measured matmul",
        "measured_matmul_flops": measured, "seconds": time.time() - started,
        "cells": {f"{attention} {batch}": cell for (attention, batch), cell in cells.items()},
    }


FLOPS_OF = {"forward, s": "forward", "prefill, s": "prefill", "training step, s": "training"}


def format_value(value, measure: str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:.1f}" if "tokens/s" in measure else f"{value:.3g}" if "GiB" in measure else f"{value:.3f}"


def ratio(ours, theirs) -> str:
    if isinstance(ours, str) or isinstance(theirs, str):
        return "—"
    return f"{ours / theirs:.3f}"


def table_rows(r: dict) -> list[list[str]]:
    rows = []
    for key, cell in r["cells"].items():
        attention, batch = key.rsplit(" ", 1)
        for measure_name in MEASURES:
            ours, theirs = cell["ase_mllm"][measure_name], cell["internvl"][measure_name]
            fraction = "—"
            if measure_name in FLOPS_OF and not isinstance(ours, str) and not isinstance(theirs, str):
                per_sample = r["flops_per_sample"][FLOPS_OF[measure_name]]
                fraction = " / ".join(f"{int(batch) * per_sample[n] / seconds / r['peak_flops']:.1%}"
                                      for n, seconds in (("ase_mllm", ours), ("internvl", theirs)))
            rows.append([attention, batch, measure_name, format_value(ours, measure_name),
                         format_value(theirs, measure_name), ratio(ours, theirs), fraction])
    return rows


HEADER = ["attention", "batch", "measure", "ASE-MLLM", "InternVL", "ratio", "of bf16 peak (ours / InternVL)"]


def report(r: dict) -> str:
    peak = f"{r['peak_flops'] / 1e12:.1f} TFLOP/s ({r['peak_source']}; measured {r['dtype']} matmul: " \
           f"{r['measured_matmul_flops'] / 1e12:.1f} TFLOP/s)"
    return "\n".join([
        "# GPU benchmark",
        "",
        f"`python bench/gpu.py --preset {r['preset']} --device {r['device']}` on {datetime.date.today().isoformat()}, "
        f"{r['device_name']}, torch {torch.__version__}, transformers {transformers.__version__}, {r['seconds']:.0f} s. "
        f"{r['preset']} shape, random {r['dtype']} weights ({r['weights_bytes']['ase_mllm'] / 2**30:.3g} GiB ASE-MLLM, "
        f"{r['weights_bytes']['internvl'] / 2**30:.3g} GiB InternVL, shared), one photo per sample at {r['tiles']} tiles, "
        f"{r['prompt_tokens']}-token prompt; {r['new_tokens']} new tokens; training step: recipe `{r['recipe']}` with gradient "
        f"checkpointing; medians of {r['repeats']}. Peak: {peak}.",
        "",
        markdown_table(HEADER, table_rows(r)),
        "",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="internvl2-8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tiles", type=int, default=MAX_TILES, dest="max_patches",
                        help="tiles per photo, thumbnail excluded")
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", default="pccd", help="training recipe whose freezing the step uses")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    parser.add_argument("--out", help=f"markdown file to write (default on a GPU: {OUT})")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON instead of the table")
    args = vars(parser.parse_args(argv))
    out, as_json = args.pop("out"), args.pop("json")
    args["batches"] = tuple(args["batches"])
    result = measure(**args)
    text = report(result)
    out = out or (str(OUT) if result["device"] == "cuda" else None)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    print(json.dumps(result, indent=1) if as_json else text)
    return result


if __name__ == "__main__":
    main()
