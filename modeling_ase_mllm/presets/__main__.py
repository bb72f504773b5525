"""`python -m modeling_ase_mllm.presets`: every preset, with its file."""

from . import main

main()
