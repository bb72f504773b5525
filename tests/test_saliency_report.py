"""The saliency report: its metrics tell a faithful map from an unfaithful one on a planted-region EAT, and the
report runs end to end (CLI), resumes after a kill with identical numbers, and refuses results of other settings.

The planted world (`modeling_ase_mllm.testing.planted`): the score of each generated photo is set by the contrast
of one checkerboard square; a decoy square of another checkerboard does not move it. A tiny EAT is trained on it
once per module (one thread, seeded: the same weights every run); every test reads it and none changes it
(the randomisation test checks).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_ase_mllm.faithfulness.metrics import CascadingRandomisation
from modeling_ase_mllm.faithfulness.report import photo_context, score_map
from modeling_ase_mllm.faithfulness.sources import Photo, centre_gaussian, region_map, source_map
from modeling_ase_mllm.testing.planted import eat_pixels, planted_photos, train_planted_eat


ROOT = Path(__file__).resolve().parent.parent
# The planted EAT's maps are read at its stage-1 first norm (a 16 × 16 grid at 64 px; the stage-3 grid is 4 × 4
# there, coarser than the square), differentiating the expected rating it was trained on.
PLANTED_LAYER = "stages.0.layer_norms.0"
TARGET = "mean_score"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread here: the training's weights are the same on every machine, and the tiny EAT's many small ops
    do not wait on a second thread (on a busy 2-core machine that wait cost 10×)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted_eat(one_thread):
    return train_planted_eat(steps=400, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return planted_photos(40, seed=1, min_contrast=0.4)


def as_photo(index, planted):
    return Photo(f"held-out {index}", planted.image, eat_pixels([planted.image])[0], seed=index, region=planted.region)


def farthest_region(region, side):
    """The square of the region's size, on the image, whose centre is farthest from the region's."""
    top, left, height, width = region
    corners = [(t, l) for t in (0, side - height) for l in (0, side - width)]
    far = max(corners, key=lambda c: (c[0] - top) ** 2 + (c[1] - left) ** 2)
    return (*far, height, width)


def test_the_planted_eat_learned_the_score(planted_eat, held_out):
    from modeling_ase_mllm.faithfulness.metrics import eat_score

    predicted = [eat_score(planted_eat, eat_pixels([p.image])[0]) for p in held_out]
    assert np.corrcoef(predicted, [p.score for p in held_out])[0, 1] > 0.9


def test_layercam_points_at_the_planted_region(planted_eat, held_out):
    from modeling_ase_mllm.faithfulness.metrics import pointing_hit, upsample_map

    hits = decoys = 0
    for index, planted in enumerate(held_out):
        saliency = source_map("layercam:" + PLANTED_LAYER, planted_eat, as_photo(index, planted), TARGET, None)
        pixel_map = upsample_map(saliency, 64).numpy()
        hits += pointing_hit(pixel_map, planted.region)
        decoys += pointing_hit(pixel_map, planted.decoy)
    print(f"\npointing game: {hits}/{len(held_out)} on the planted square, {decoys} on the decoy")
    assert hits >= 0.9 * len(held_out)


def test_deletion_and_insertion_rank_faithful_above_controls_above_the_wrong_region(planted_eat, held_out):
    rows = {"layercam": [], "random": [], "centre_gaussian": [], "wrong region": []}
    for index, planted in enumerate(held_out[:12]):
        photo = as_photo(index, planted)
        context = photo_context(planted_eat, photo, steps=8, road_percentiles=[])
        maps = {
            "layercam": source_map("layercam:" + PLANTED_LAYER, planted_eat, photo, TARGET, None),
            "random": source_map("random", planted_eat, photo, TARGET, None),
            "centre_gaussian": centre_gaussian(planted_eat.config.feature_map_sizes[2]),
            "wrong region": region_map(farthest_region(planted.region, 64), 64),
        }
        for name, saliency in maps.items():
            rows[name].append(score_map(planted_eat, photo, saliency, context))
    deletion = {name: np.mean([r["deletion_auc"] for r in numbers]) for name, numbers in rows.items()}
    insertion = {name: np.mean([r["insertion_auc"] for r in numbers]) for name, numbers in rows.items()}
    print(f"\ndeletion AUC {deletion}\ninsertion AUC {insertion}")
    for control in ("random", "centre_gaussian"):
        assert deletion["layercam"] < deletion[control] < deletion["wrong region"]
        assert insertion["layercam"] > insertion[control] > insertion["wrong region"]


def test_randomising_the_trained_eat_destroys_its_map_but_not_the_controls(planted_eat, held_out):
    from modeling_ase_mllm.faithfulness.metrics import rank_correlation

    before = {name: p.clone() for name, p in planted_eat.state_dict().items()}
    randomiser = CascadingRandomisation(planted_eat, seed=0)
    correlations, controls = [], []
    for index, planted in enumerate(held_out[:12]):
        photo = as_photo(index, planted)
        original = source_map("layercam:" + PLANTED_LAYER, planted_eat, photo, TARGET, None).numpy()
        random_map = source_map("random", planted_eat, photo, TARGET, None).numpy()
        steps = list(randomiser.steps())
        assert [name for name, _ in steps][-1] == "stage 1 + stem"
        randomised = steps[-1][1]
        correlations.append(rank_correlation(original, source_map("layercam:" + PLANTED_LAYER, randomised, photo,
                                                                  TARGET, None).numpy()))
        controls.append(rank_correlation(random_map, source_map("random", randomised, photo, TARGET, None).numpy()))
    print(f"\nSpearman after randomisation: {np.mean(correlations):.3f}")
    assert np.mean(correlations) < 0.2
    assert controls == [1.0] * len(controls)
    # The randomiser worked on its own copy: the trained EAT is as it was.
    assert all(torch.equal(before[name], tensor) for name, tensor in planted_eat.state_dict().items())


# --- the report, end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_files(planted_eat, held_out, tmp_path_factory):
    """The planted EAT as a checkpoint and config, and four held-out photos as PNG files."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("planted")
    save_file({k: v.contiguous() for k, v in planted_eat.state_dict().items()}, str(folder / "eat.safetensors"))
    planted_eat.config.to_json_file(str(folder / "eat_config.json"))
    photos = folder / "photos"
    photos.mkdir()
    for index, planted in enumerate(held_out[:4]):
        planted.image.save(photos / f"photo{index}.png")
    return folder


def report_command(files, out, *extra):
    return [sys.executable, "-m", "modeling_ase_mllm.cli", "saliency-report", str(files / "photos"),
            "--eat", str(files / "eat.safetensors"), "--eat-config", str(files / "eat_config.json"),
            "--layers", f"{PLANTED_LAYER},stages.2.layer_norms.3", "--target", TARGET, "--steps", "4",
            "--road-percentiles", "50", "--output-dir", str(out), *extra]


def child_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_report_on_the_planted_eat_resumes_after_a_kill_with_identical_numbers(planted_files, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(report_command(planted_files, whole), env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| LayerCAM `stages.0.layer_norms.0` |" in done.stdout

    process = subprocess.Popen(report_command(planted_files, killed), env=child_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (results.is_file() and results.read_bytes().count(b"\n") >= 1):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = results.read_bytes().count(b"\n")
    assert 1 <= finished < 4, finished  # the kill landed mid-run
    assert not (killed / "report.json").exists()
    with open(results, "ab") as handle:  # as if the kill had torn a line
        handle.write(b'{"photo": "torn')
    resumed = subprocess.run(report_command(planted_files, killed), env=child_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    assert (killed / "results.jsonl").read_bytes() == (whole / "results.jsonl").read_bytes()
    assert (killed / "report.json").read_bytes() == (whole / "report.json").read_bytes()
    report = json.loads((whole / "report.json").read_text())
    assert report["photos"] == 4 and set(report["sources"]) == {
        "random", "centre_gaussian", "spectral_residual", f"layercam:{PLANTED_LAYER}", "layercam:stages.2.layer_norms.3"}
    layercam = report["sources"][f"layercam:{PLANTED_LAYER}"]["metrics"]
    assert layercam["pointing"] is None  # no regions: the CLI's photos are anyone's
    for key in ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "randomised_spearman", "randomised_ssim"):
        interval = layercam[key]
        assert interval["n"] == 4 and interval["low"] <= interval["mean"] <= interval["high"], key
    for plot in ("deletion.png", "insertion.png", "randomisation.png"):
        assert (whole / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (whole / "report.md").read_text()
    assert "| random map |" in markdown and "[" in markdown and "![deletion curves](deletion.png)" in markdown

    # Other settings in the same folder: refused, naming what differs; nothing is lost.
    other = subprocess.run(report_command(planted_files, whole)[:-2] + ["--steps", "5", "--output-dir", str(whole)],
                           env=child_env(), capture_output=True, text=True, timeout=600)
    assert other.returncode == 1 and "steps: 4 there, 5 now" in other.stderr and "--overwrite" in other.stderr
    assert (whole / "results.jsonl").read_bytes() == (killed / "results.jsonl").read_bytes()


def test_report_on_a_saved_model_reads_only_its_eat(saved_model, tmp_path, capsys):
    """A demo-like folder: its EAT, layer and target; the tensors loaded are exactly the model's EAT's."""
    from conftest import random_image
    from transformers import AutoModelForImageTextToText

    from modeling_ase_mllm.cli import main
    from modeling_ase_mllm.faithfulness.loading import load_model_eat

    for seed in range(2):
        random_image(240, 320, seed=seed).save(tmp_path / f"photo{seed}.jpg")
    (tmp_path / "notes.txt").write_text("not a photo")
    loaded = load_model_eat(str(saved_model))
    model = AutoModelForImageTextToText.from_pretrained(saved_model)
    for name, tensor in model.model.saliency_model.state_dict().items():
        assert torch.equal(loaded.eat.state_dict()[name], tensor.float()), name
    assert loaded.layer == model.config.saliency_config.layercam_layer_name and loaded.target == "top_bin"

    out = tmp_path / "report"
    status = main(["saliency-report", str(tmp_path), "--model", str(saved_model), "--layers", "model", "--steps", "3",
                   "--road-percentiles", "50", "--bootstrap", "200", "--output-dir", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    report = json.loads((out / "report.json").read_text())
    assert report["photos"] == 2 and report["settings"]["model_layer"] == loaded.layer
    assert [record["photo"] for record in report["per_photo"]] == [str(tmp_path / "photo0.jpg"), str(tmp_path / "photo1.jpg")]
    assert f"| LayerCAM `{loaded.layer}` (the model's) |" in printed.out


def test_bad_arguments_name_the_flag(saved_model, tmp_path, capsys):
    from modeling_ase_mllm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["saliency-report", "--model", str(saved_model)])
    assert exit_.value.code == 2 and "IMAGE arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["saliency-report", str(tmp_path), "--model", str(saved_model), "--road-percentiles", "0,120"])
    assert "--road-percentiles: must be comma-separated whole numbers in 1..99" in capsys.readouterr().err
    photo = tmp_path / "photo.png"
    from conftest import random_image

    random_image(64, 64).save(photo)
    status = main(["saliency-report", str(photo), "--model", str(saved_model), "--layers", "stages.9",
                   "--output-dir", str(tmp_path / "out")])
    assert status == 1 and "LayerCAM layer 'stages.9' is not a module of EAT" in capsys.readouterr().err
