"""`python -m modeling_ase_mllm.lmms_eval_plugin` prints the folder to pass to lmms-eval's --include_path."""

from . import TASKS_DIR

print(TASKS_DIR)
