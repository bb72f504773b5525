"""Prepare an AIC dataset release as a saved ``datasets.DatasetDict``.

    python processing/prepare_dataset.py --dataset pccd --root /data/PCCD --out /data/pccd_hf

The logic lives in :func:`modeling_ase_mllm.aic_datasets.main` (also ``ase-mllm prepare-data``).
"""

import sys
from pathlib import Path

try:
    from modeling_ase_mllm.aic_datasets import main
except ImportError:  # run from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from modeling_ase_mllm.aic_datasets import main

if __name__ == "__main__":
    sys.exit(main())
