"""Peak memory of `ase-mllm convert` on an InternVL2-1B-shaped OpenGVLab checkpoint, in source shards.

    python bench/convert_memory.py [--shards 4] [--work DIR] [--out bench/results-convert-memory.md]

Writes a synthetic OpenGVLab folder with InternVL2-1B's shapes (InternViT-300M + Qwen2-0.5B, random bfloat16
weights, `--shards` safetensors files; a tiny tokenizer, which the conversion carries over unchanged), converts it
in a fresh process with output shards of the source's shard size, and reports how far the converter's peak RSS
(Linux VmHWM, reset just before converting) rises above its RSS before converting (the baseline), in MiB and in
source shards; once without EAT and once with an EAT DAT-Base file (random float32 weights), as `convert --eat`.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import safetensors  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import InternVLForConditionalGeneration  # noqa: E402

from modeling_ase_mllm.configuration_ase_mllm import AseMllmEatConfig  # noqa: E402
from modeling_ase_mllm.eat_ase_mllm import EatModel  # noqa: E402
from modeling_ase_mllm.convert.twin import internvl_config_from_ase  # noqa: E402
from modeling_ase_mllm.presets import load_model_preset, load_model_preset_dict  # noqa: E402
from modeling_ase_mllm.testing.tiny import build_tokenizer  # noqa: E402
from opengvlab_fixtures import opengvlab_state_dict, write_opengvlab_checkpoint  # noqa: E402


OUT = HERE / "results-convert-memory.md"
PRESET = "internvl2-1b"
TEMPLATE = "Hermes-2"  # InternVL2-1B's conversation template
CHILD = """
import json, sys, warnings
import modeling_ase_mllm.convert as convert
warnings.simplefilter("ignore")

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
convert.convert_internvl_checkpoint(sys.argv[1], sys.argv[2], eat=sys.argv[4] or None, max_shard_size=int(sys.argv[3]))
print(json.dumps({"before": before, "peak": status("VmHWM:")}))
"""


def write_source(folder: Path, shards: int) -> None:
    """InternVL2-1B's weights under OpenGVLab's names, random bfloat16, written one shard at a time."""
    config = load_model_preset(PRESET)
    with torch.device("meta"):
        internvl = InternVLForConditionalGeneration._from_config(internvl_config_from_ase(config), dtype=torch.bfloat16)
    text = config.text_config
    state = opengvlab_state_dict(internvl.state_dict(), text.num_attention_heads, text.num_key_value_heads, llm="qwen2")
    generator = torch.Generator().manual_seed(0)
    llm_config = {"architectures": ["Qwen2ForCausalLM"], **load_model_preset_dict(PRESET)["text_config"]}
    write_opengvlab_checkpoint(
        folder, config, state, build_tokenizer(), shards=shards, template=TEMPLATE, llm_config=llm_config,
        materialize=lambda meta: torch.randn(meta.shape, generator=generator, dtype=meta.dtype),
        torch_dtype="bfloat16",
    )


def write_eat(path: Path) -> None:
    eat = EatModel(AseMllmEatConfig())
    save_file({k: v.contiguous() for k, v in eat.state_dict().items()}, str(path))


def measure(shards: int = 4, eat: bool = False, work: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        scratch = Path(scratch)
        source, output = scratch / "src", scratch / "out"
        write_source(source, shards)
        eat_file = ""
        if eat:
            eat_file = str(scratch / "eat.safetensors")
            write_eat(Path(eat_file))
        sizes = sorted(p.stat().st_size for p in source.glob("*.safetensors"))
        shard = sum(sizes) / len(sizes)
        started = time.time()
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), str(output), str(int(shard)), eat_file],
            capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
        )
        seconds = time.time() - started
        rss = json.loads(run.stdout.strip().splitlines()[-1])
    growth = rss["peak"] - rss["before"]
    return {"preset": PRESET, "shards": shards, "eat": eat, "shard_bytes": shard, "total_bytes": sum(sizes),
            "baseline_bytes": rss["before"], "peak_bytes": rss["peak"], "growth_bytes": growth,
            "growth_shards": growth / shard, "seconds": seconds}


def report(r: dict) -> str:
    mib = 2**20
    return (
        f"{r['preset']}-shaped OpenGVLab checkpoint, {r['shards']} bfloat16 shards of {r['shard_bytes'] / mib:.0f} MiB "
        f"({r['total_bytes'] / mib:.0f} MiB in all){', plus an EAT DAT-Base file' if r['eat'] else ''}, converted "
        f"in {r['seconds']:.0f} s: peak RSS {r['growth_bytes'] / mib:.0f} MiB above the {r['baseline_bytes'] / mib:.0f} "
        f"MiB baseline = {r['growth_shards']:.2f} source shards (goal: at most 2)."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--work", help="folder for the temporary checkpoints (default: the system's temp folder)")
    parser.add_argument("--out", default=str(OUT), help="markdown file to write ('' = none)")
    args = parser.parse_args(argv)
    results = [measure(args.shards, eat, args.work) for eat in (False, True)]
    text = "\n".join([
        "# Conversion memory", "",
        f"`python bench/convert_memory.py --shards {args.shards}` ({platform.machine()}, torch {torch.__version__}, "
        f"safetensors {safetensors.__version__}):", "",
        *(f"- {report(r)}" for r in results), "",
    ])
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
