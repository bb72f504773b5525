#!/usr/bin/env bash
# The GPU benchmark on one lent GPU, in under 8 minutes: InternVL2-8B shape, random bf16 weights initialised on the
# GPU, sdpa (+ flash_attention_2 when flash-attn is installed), batch 1 and 8; writes bench/results-gpu.md.
# Extra arguments go to bench/gpu.py (e.g. --batches 1 --budget-s 200). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu.py --preset internvl2-8b --device cuda --out bench/results-gpu.md "$@"
