"""`python -m modeling_ase_mllm.cli ...` (and `accelerate launch -m modeling_ase_mllm.cli train ...`)."""

import sys

from . import main

sys.exit(main())
