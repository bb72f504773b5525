"""Prepare an AIC dataset release as a saved ``datasets.DatasetDict``.

    python processing/prepare_dataset.py --dataset pccd --data-root /data/PCCD --output-dir /data/pccd_hf

The same as ``ase-mllm prepare-data`` (:func:`modeling_ase_mllm.cli.prepare_data`).
"""

import sys
from pathlib import Path

try:
    from modeling_ase_mllm.cli import main
except ImportError:  # run from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from modeling_ase_mllm.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare-data", *sys.argv[1:]]))
