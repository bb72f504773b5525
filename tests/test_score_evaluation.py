"""`ase-mllm evaluate-score` on a generated AVA in its own layout (AVA.txt, EAT's split lists, images/<id>.jpg): the
metrics equal scipy's and a hand-worked EMD; a run killed midway and resumed, and a run on 2 processes, write the
bytes of one uninterrupted run; a folder rated by a CSV scores too; the card gets the model-index entries."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from conftest import random_image
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.evaluation.scores import emd, load_ava, read_ava_txt, score_metrics


REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
NUM_PHOTOS = 30


@pytest.fixture(scope="module")
def ava(tmp_path_factory, saved_model):
    """A generated AVA: AVA.txt (index, id, ten vote counts, two tags, challenge), EAT's train.csv / test.csv
    (`image_id,score2..score11,tag1,tag2,tag3`, as its clean_split.py writes them) and images/<id>.jpg."""
    root = tmp_path_factory.mktemp("ava")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    lines, rows = [], []
    for index in range(NUM_PHOTOS + 4):
        image_id = str(953000 + 17 * index)
        votes = rng.multinomial(200, rng.dirichlet(np.ones(10) * (0.3 + index % 5)))
        tags = [int(rng.integers(0, 60)), int(rng.integers(0, 60)), int(rng.integers(1, 1400))]
        lines.append(" ".join(map(str, [index + 1, image_id, *votes, *tags])))
        rows.append(",".join(map(str, [image_id, *votes, *tags])))
        random_image(480 + 7 * index, 640, seed=100 + index).save(root / "images" / f"{image_id}.jpg", quality=90)
    (root / "AVA.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    header = "image_id," + ",".join(f"score{i}" for i in range(2, 12)) + ",tag1,tag2,tag3\n"
    (root / "train.csv").write_text(header + "\n".join(rows[NUM_PHOTOS:]) + "\n", encoding="utf-8")
    (root / "test.csv").write_text(header + "\n".join(rows[:NUM_PHOTOS]) + "\n", encoding="utf-8")
    return root


def command(model, root, out, *extra) -> list[str]:
    return ["evaluate-score", "--model", str(model), "--ava", str(root), "--output-dir", str(out), "--batch-size", "1",
            *extra]


def test_metrics_equal_scipy_and_a_hand_worked_emd():
    # Predicted mass 1/2 on ratings 1 and 2, votes split between ratings 2 and 3: the CDFs differ by 1/2 at ratings
    # 1 and 2 and agree from 3 on, so EMD = sqrt((0.25 + 0.25) / 10).
    assert emd([0.5, 0.5] + [0.0] * 8, [0, 3, 3] + [0] * 7) == pytest.approx(math.sqrt(0.05), abs=1e-12)
    predicted, true = [4.9, 5.0, 5.1, 6.2, 3.0], [5.2, 4.4, 5.0, 6.0, 4.0]
    metrics = score_metrics(predicted, true)
    assert metrics["srcc"] == pytest.approx(spearmanr(predicted, true).statistic, abs=1e-12)
    assert metrics["plcc"] == pytest.approx(pearsonr(predicted, true).statistic, abs=1e-12)
    # Low (<= 5.00) vs high: predicted L L H H L, true H L L H L -> agree on images 2, 4, 5.
    assert metrics["accuracy"] == pytest.approx(3 / 5)


def test_the_evaluate_module_computes_the_same_metrics():
    import evaluate

    from modeling_ase_mllm.evaluation.scores import SCORE_EVALUATE_MODULE_PATH

    predicted, true = [4.9, 5.0, 5.1, 6.2, 3.0], [5.2, 4.4, 5.0, 6.0, 4.0]
    outputs, votes = [[0.1] * 10] * 5, [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] * 5
    module = evaluate.load(SCORE_EVALUATE_MODULE_PATH)
    result = module.compute(predictions=predicted, references=true, rating_outputs=outputs, votes=votes)
    assert result == score_metrics(predicted, true, outputs, votes) and "emd" in result


def test_ava_is_read_from_its_own_files(ava, tmp_path):
    rated = load_ava(ava)
    assert [image.image_id for image in rated] == [str(953000 + 17 * i) for i in range(NUM_PHOTOS)]
    votes = read_ava_txt(ava / "AVA.txt")[rated[0].image_id]
    assert rated[0].votes == votes and rated[0].score == pytest.approx(np.dot(np.arange(1, 11), votes) / sum(votes))
    bad = tmp_path / "AVA.txt"
    bad.write_text("1 953000 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"AVA.txt:1: expected 15 whole numbers"):
        read_ava_txt(bad)


def run_cli(argv, kill_after_lines=None, out=None):
    process = subprocess.Popen([sys.executable, "-m", "modeling_ase_mllm.cli", *argv], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_lines is not None:
        predictions, deadline = Path(out) / "predictions.jsonl", time.time() + 300
        while process.poll() is None and time.time() < deadline:
            if predictions.is_file() and predictions.read_bytes().count(b"\n") >= kill_after_lines:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def straight(ava, saved_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    status, stdout, stderr = run_cli(command(saved_model, ava, out))
    assert status == 0, stderr[-3000:]
    return out


def test_a_run_scores_every_photo_and_its_metrics_are_scipys_on_its_predictions(ava, straight):
    lines = [json.loads(line) for line in (straight / "predictions.jsonl").read_text().splitlines()]
    rated = load_ava(ava)
    assert [line["image_id"] for line in lines] == [image.image_id for image in rated]
    predicted = [line["rating"]["score"] for line in lines]
    assert predicted == pytest.approx([sum((i + 1) * y for i, y in enumerate(line["rating"]["rating_outputs"]))
                                       for line in lines], abs=1e-5)
    metrics = json.loads((straight / "metrics.json").read_text())
    true = [image.score for image in rated]
    assert metrics["srcc"] == pytest.approx(spearmanr(predicted, true).statistic, abs=1e-12)
    assert metrics["plcc"] == pytest.approx(pearsonr(predicted, true).statistic, abs=1e-12)
    assert metrics["emd"] == pytest.approx(np.mean([emd(line["rating"]["rating_outputs"], image.votes)
                                                    for line, image in zip(lines, rated)]), abs=1e-12)
    assert metrics["num_images"] == NUM_PHOTOS and metrics["trained"] is False and metrics["dataset"] == "ava"


@pytest.mark.slow
def test_killed_and_resumed_run_writes_the_bytes_of_an_uninterrupted_one(ava, saved_model, straight, tmp_path):
    out = tmp_path / "killed"
    status, _, _ = run_cli(command(saved_model, ava, out), kill_after_lines=2, out=out)
    assert status == -signal.SIGKILL, "the run ended before it could be killed midway"
    assert 2 <= (out / "predictions.jsonl").read_bytes().count(b"\n") < NUM_PHOTOS
    status, _, stderr = run_cli(command(saved_model, ava, out))
    assert status == 0, stderr[-3000:]
    assert (out / "predictions.jsonl").read_bytes() == (straight / "predictions.jsonl").read_bytes()
    assert (out / "metrics.json").read_bytes() == (straight / "metrics.json").read_bytes()


@pytest.mark.slow
def test_two_processes_write_the_bytes_of_one(ava, saved_model, straight, tmp_path):
    out = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "configuration/accelerate/ddp.yaml"), "--num_processes", "2",
                "--num_cpu_threads_per_process", "1", "-m", "modeling_ase_mllm.cli"]
    result = subprocess.run([*launcher, *command(saved_model, ava, out)], env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("[evaluate-score] wrote") == 1
    assert (out / "predictions.jsonl").read_bytes() == (straight / "predictions.jsonl").read_bytes()
    assert json.loads((out / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    assert not list(out.glob("predictions.jsonl.part-*"))


def test_a_folder_rated_by_a_csv_and_the_model_card(ava, saved_model, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    rated = load_ava(ava)[:6]
    (tmp_path / "scores.csv").write_text("image,score\n" + "".join(f"{r.image_id}.jpg,{r.score}\n" for r in rated),
                                         encoding="utf-8")
    status = main(["evaluate-score", "--model", str(model), "--images", str(ava / "images"), "--scores",
                   str(tmp_path / "scores.csv"), "--output-dir", str(tmp_path / "out"), "--update-model-card"])
    assert status == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 6 and "emd" not in metrics  # no vote distributions in a CSV of scores
    card = (model / "README.md").read_text()
    assert "| SRCC | PLCC | Accuracy (5.0) | EMD (r=2) |" in card and "Image aesthetics assessment" in card
    assert f"value: {metrics['srcc']}" in card
