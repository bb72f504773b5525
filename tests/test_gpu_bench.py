"""`bench/gpu.py` runs end to end on the CPU at the tiny preset (so the GPU benchmark cannot rot): its table has
every measure for every attention implementation and batch, with finite, positive ratios. No timing is asserted."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import gpu  # noqa: E402


def table(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_at_tiny_size(tmp_path):
    out = tmp_path / "results-gpu.md"
    gpu.main(["--device", "cpu", "--preset", "tiny", "--dtype", "float32", "--max-tiles", "1", "--prompt-tokens", "16",
              "--batches", "1", "2", "--new-tokens", "3", "--repeats", "1", "--out", str(out)])
    text = out.read_text()
    assert "--preset tiny --device cpu" in text and "recipe `pccd` with gradient checkpointing" in text
    header, separator, *rows = table(text)
    assert header == gpu.HEADER and set(separator) == {"---"}
    assert [(a, b, m) for a, b, m, *_ in rows] == [
        ("sdpa", batch, measure) for batch in ("1", "2") for measure in gpu.MEASURES]
    for attention, batch, measure, ours, internvl, ratio, of_peak in rows:
        assert float(ours) > 0 and float(internvl) > 0, measure
        assert math.isfinite(float(ratio)) and float(ratio) > 0, measure
        if measure in gpu.FLOPS_OF:
            fractions = [float(cell.rstrip("%")) for cell in of_peak.split(" / ")]
            assert len(fractions) == 2 and all(math.isfinite(f) and f > 0 for f in fractions), measure
        else:
            assert of_peak == "—"


def test_peak_lookup_prefers_the_most_specific_device_name():
    assert gpu.datasheet_peak("NVIDIA H100 PCIe") == 756.5e12
    assert gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == 989.4e12
    assert gpu.datasheet_peak("NVIDIA L40S") == 362.05e12 and gpu.datasheet_peak("NVIDIA L40") == 181.05e12
    assert gpu.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.datasheet_peak("NVIDIA GeForce GTX 1080") is None
    assert gpu.attention_implementations("cpu") == ["sdpa"]
