"""The lmms-eval plugin: `lmms-eval --model ase_mllm --tasks ase_mllm_mini_aic` runs offline, prints the eleven AIC
metrics, and they (and the captions) equal `ase-mllm evaluate` on the same model and split."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="the lmms-eval plugin needs the [lmms] extra")

from modeling_ase_mllm.integrations.lmms_eval import TASKS_DIR  # noqa: E402
from modeling_ase_mllm.evaluation.vocabulary import METRICS  # noqa: E402
from modeling_ase_mllm.utils.cache import cache_dir  # noqa: E402


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_lmms_eval_on_the_mini_set_prints_the_eleven_metrics_of_ase_mllm_evaluate(saved_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "CUDA_VISIBLE_DEVICES": ""}
    env.setdefault("SPICE_CORENLP_DIR", str(cache_dir("spice")))
    lmms = subprocess.run(
        ["lmms-eval", "--model", "ase_mllm", "--model_args", f"pretrained={saved_model}", "--batch_size", "2",
         "--tasks", "ase_mllm_mini_aic", "--include_path", str(TASKS_DIR), "--output_path", str(tmp_path / "lmms"),
         "--log_samples"], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert lmms.returncode == 0 and "Traceback" not in lmms.stderr, lmms.stderr[-4000:]
    printed = {row.split("|")[4].strip() for row in lmms.stdout.splitlines() if row.startswith("|ase_mllm_mini_aic")}
    assert printed == set(METRICS)
    [results_file] = (tmp_path / "lmms").rglob("*_results.json")
    reported = json.loads(results_file.read_text())["results"]["ase_mllm_mini_aic"]
    [samples_file] = (tmp_path / "lmms").rglob("*_samples_ase_mllm_mini_aic.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]

    evaluate = subprocess.run(
        [sys.executable, "-m", "modeling_ase_mllm.cli", "evaluate", "--model", str(saved_model), "--dataset",
         "mini_aic", "--output-dir", str(tmp_path / "evaluate"), "--batch-size", "2", "--max-new-tokens", "128"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-4000:]
    predictions = [json.loads(line) for line in (tmp_path / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert [(s["Bleu_1"]["image_id"], s["Bleu_1"]["caption"]) for s in samples] == \
        [(p["image_id"], p["caption"]) for p in predictions]
    expected = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert {metric: reported[f"{metric},none"] for metric in METRICS} == {metric: expected[metric] for metric in METRICS}
    if (Path(env["SPICE_CORENLP_DIR"]) / "stanford-corenlp-3.6.0.jar").is_file():
        assert expected["spice_backend"] == "official"  # all eleven computed, SPICE's four included
