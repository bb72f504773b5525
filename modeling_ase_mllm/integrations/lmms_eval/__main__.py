"""`python -m modeling_ase_mllm.integrations.lmms_eval` prints the folder to pass to lmms-eval's --include_path."""

from . import TASKS_DIR

print(TASKS_DIR)
