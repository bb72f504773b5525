"""ASE-MLLM in lmms-eval: the `ase_mllm` model (entry point `lmms_eval.models`) and AIC caption tasks.

    pip install "ase-mllm[lmms]"
    lmms-eval --model ase_mllm --model_args pretrained=PATH --batch_size 8 --tasks ase_mllm_pccd \
        --include_path "$(python -m modeling_ase_mllm.integrations.lmms_eval)"

The tasks (`tasks/`: ase_mllm_mini_aic, ase_mllm_pccd, ase_mllm_rpcd, ase_mllm_dpc2022, ase_mllm_ava_captions)
caption a split's test photos with the paper's prompt and report the eleven AIC metrics of `ase-mllm evaluate`.
"""

from pathlib import Path


TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MODEL_ID = "ase_mllm"


def manifest():
    """The `lmms_eval.models` entry point: lmms-eval's manifest naming our model class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.model.AseMllmLmms")
