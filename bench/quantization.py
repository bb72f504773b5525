"""Quantised loading: peak memory and time of load, prefill and decode with each `--quantization` scheme, against the
float model, at the tiny and InternVL2-1B presets (random weights), measured in one run on this machine.

    python bench/quantization.py [--presets tiny internvl2-1b] [--new-tokens 16] [--repeats 2] [--load-only]
                                 [--out FILE.md]

writes bench/results-quantization.md (default `--out`).

Each preset's random model is saved once (bfloat16 on disk), then every scheme runs in a fresh process, one at a time:
`from_pretrained` of the folder in float32 (the CPU's dtype, as `ase-mllm caption` loads it), with the scheme's
`quantization_config` (`modeling_ase_mllm.utils.quantization`) and no skip list. Inputs are one 448 px tile (plus the
photo's 224 px EAT input) and a 64-token prompt, random (`full_size.synthetic_inputs`): prefill is one forward pass,
EAT + LayerCAM included; decode is `--new-tokens` greedy steps through the KV cache after it, timed alone.
Memory is the process's resident-set high-water mark above what it held before loading (Linux), so it counts weights,
activations and the libraries' workspaces; "weights" is transformers' `get_memory_footprint()`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load_average, markdown_table, median_seconds, peak_bytes_of, rss_kib  # noqa: E402
from full_size import load_config, synthetic_inputs  # noqa: E402

from modeling_ase_mllm import AseMllmForConditionalGeneration  # noqa: E402
from modeling_ase_mllm.modeling_ase_mllm import set_saliency_gates  # noqa: E402
from modeling_ase_mllm.utils.quantization import QUANTIZATION_SCHEMES, describe_precision, quantization_config  # noqa: E402


FLOAT = "float32"
SCHEMES = (FLOAT, *QUANTIZATION_SCHEMES)
MIB = 2**20


def save_random_model(preset: str, folder: Path) -> None:
    """The preset's model with random weights (gates open, as after training), saved in bfloat16."""
    torch.manual_seed(0)
    model = AseMllmForConditionalGeneration._from_config(load_config(preset), dtype=torch.bfloat16)
    set_saliency_gates(model, 0.5)
    model.save_pretrained(folder)


def measure_scheme(folder: str, preset: str, scheme: str, new_tokens: int, repeats: int,
                   load_only: bool = False) -> dict:
    """In this (fresh) process: load `folder` with `scheme`, then (unless `load_only`) time and measure prefill and
    decode."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    inputs = synthetic_inputs(load_config(preset), max_patches=1)
    quantized = {} if scheme == FLOAT else {"quantization_config": quantization_config(scheme, torch.float32),
                                             "device_map": "cpu"}
    baseline = rss_kib("VmRSS") * 1024
    loaded = {}
    start = time.perf_counter()
    load_peak = peak_bytes_of(lambda: loaded.setdefault("model", AutoModelForImageTextToText.from_pretrained(
        folder, dtype=torch.float32, **quantized).eval()))
    load_seconds = time.perf_counter() - start
    model = loaded["model"]
    resident = rss_kib("VmRSS") * 1024 - baseline
    row = {"scheme": scheme, "preset": preset, "load_s": load_seconds, "load_peak_mib": load_peak / MIB,
           "weights_mib": model.get_memory_footprint() / MIB, "resident_mib": resident / MIB,
           "precision": describe_precision(model, None if scheme == FLOAT else scheme)}
    if load_only:
        return row

    def prefill():
        with torch.no_grad():
            return model(**inputs, use_cache=True, logits_to_keep=1)

    def decode():
        """`new_tokens` greedy steps after a prefill, each one token through the KV cache: `generate()`'s loop."""
        with torch.no_grad():
            output = prefill()
            cache, mask = output.past_key_values, inputs["attention_mask"]
            token = output.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(new_tokens):
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                output = model(input_ids=token, attention_mask=mask, past_key_values=cache, logits_to_keep=1)
                token = output.logits[:, -1:].argmax(-1)
            return time.perf_counter() - start

    prefill_peak = peak_bytes_of(prefill)  # also the warm-up
    prefill_seconds = median_seconds(prefill, repeats, warmup=0)
    decode_times = []
    decode_peak = peak_bytes_of(lambda: decode_times.append(decode()))
    decode_seconds = statistics.median(decode_times + [decode() for _ in range(repeats - 1)])
    return {**row, "prefill_s": prefill_seconds, "prefill_peak_mib": (resident + prefill_peak) / MIB,
            "decode_tokens_per_s": new_tokens / decode_seconds, "decode_peak_mib": (resident + decode_peak) / MIB}


def run_child(folder: Path, preset: str, scheme: str, new_tokens: int, repeats: int, load_only: bool) -> dict:
    """`measure_scheme` in a fresh process (glibc's mmap threshold as in `common.run_memory_child`: RSS then follows
    live tensor memory)."""
    command = [sys.executable, __file__, "--_child", str(folder), preset, scheme, str(new_tokens), str(repeats),
               str(int(load_only))]
    run = subprocess.run(command, capture_output=True, text=True, check=False,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if run.returncode != 0:
        raise RuntimeError(f"{preset} {scheme} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(presets: list[str], new_tokens: int, repeats: int, load_only: bool = False) -> list[dict]:
    rows = []
    for preset in presets:
        with tempfile.TemporaryDirectory() as folder:
            save_random_model(preset, Path(folder))
            for scheme in SCHEMES:
                rows.append(run_child(Path(folder), preset, scheme, new_tokens, repeats, load_only))
                print(f"[bench] {preset} {scheme}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], header: str) -> str:
    reference = {row["preset"]: row for row in rows if row["scheme"] == FLOAT}

    def cell(row, key, digits):
        if key not in row:
            return "—"
        value, base = row[key], reference[row["preset"]][key]
        return f"{value:.{digits}f} (×{value / base:.2f})" if row["scheme"] != FLOAT else f"{value:.{digits}f}"

    table = markdown_table(
        ["preset", "scheme", "weights MiB", "load s", "load peak MiB", "prefill s", "prefill peak MiB",
         "decode tokens/s", "decode peak MiB"],
        [[row["preset"], row["scheme"], cell(row, "weights_mib", 1), cell(row, "load_s", 2),
          cell(row, "load_peak_mib", 1), cell(row, "prefill_s", 3), cell(row, "prefill_peak_mib", 1),
          cell(row, "decode_tokens_per_s", 1), cell(row, "decode_peak_mib", 1)] for row in rows],
    )
    kept = "\n".join(f"- {row['preset']}: {row['precision']}" for row in rows if row["precision"])
    return f"{header}\n\n{table}\n\nWhat each quantised load kept in floating point:\n\n{kept}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "internvl2-1b"])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results-quantization.md"),
                        help="also write the report here (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a report")
    parser.add_argument("--load-only", action="store_true",
                        help="measure loading alone (weights, load time and peak), not prefill and decode")
    parser.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        folder, preset, scheme, new_tokens, repeats, load_only = args._child
        print(json.dumps(measure_scheme(folder, preset, scheme, int(new_tokens), int(repeats), load_only == "1")))
        return 0
    before = load_average()
    start = time.perf_counter()
    rows = measure(args.presets, args.new_tokens, args.repeats, args.load_only)
    command = f"--presets {' '.join(args.presets)} " + (
        "--load-only" if args.load_only else f"--new-tokens {args.new_tokens} --repeats {args.repeats}")
    header = (f"`python bench/quantization.py {command}` on {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
              f"{time.perf_counter() - start:.0f} s in all; load average {before} before, {load_average()} after. "
              "Ratios: each scheme / float32, same preset, same run.")
    text = json.dumps(rows) if args.json else report(rows, header)
    print(text)
    if args.out:  # whole or not at all: written beside it, then renamed
        out = Path(args.out)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
