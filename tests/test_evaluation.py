"""Captioning a split for evaluation: resumable, and a killed-then-restarted run gives the same file."""

import json
import signal
import subprocess
import sys
import time

import pytest
from datasets import Dataset, Features, Image, Sequence, Value

from conftest import random_image


CAPTION_SCRIPT = """
import sys
from datasets import load_from_disk
from modeling_ase_mllm.inference.captioning import load_model_and_processor
from modeling_ase_mllm.evaluation.run import caption_split
model, processor = load_model_and_processor(sys.argv[1], device="cpu")
caption_split(model, processor, load_from_disk(sys.argv[2]), sys.argv[3], batch_size=2,
              generation_config={"max_new_tokens": 8}, progress=False)
"""


@pytest.fixture(scope="module")
def split_on_disk(tmp_path_factory, processor):
    from modeling_ase_mllm.testing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("eval")
    build_tiny_model(gate=0.5, seed=6).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    paths = []
    for index in range(12):
        path = root / f"photo{index}.png"
        random_image(200 + 10 * index, 300, seed=index).save(path)
        paths.append(str(path))
    features = Features({"image_id": Value("string"), "image": Image(), "references": Sequence(Value("string"))})
    data = Dataset.from_dict(
        {"image_id": [f"p{i}" for i in range(12)], "image": paths, "references": [["nice light"]] * 12}, features=features
    )
    data.save_to_disk(root / "split")
    return root


def run_caption(root, out, kill_after_lines=None):
    process = subprocess.Popen([sys.executable, "-c", CAPTION_SCRIPT, str(root / "model"), str(root / "split"), str(out)])
    if kill_after_lines is None:
        assert process.wait(timeout=600) == 0
        return None
    predictions = out / "predictions.jsonl"
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        if predictions.is_file() and predictions.read_text().count("\n") >= kill_after_lines:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    return process.wait(timeout=60)


@pytest.mark.slow
def test_killed_then_restarted_run_gives_the_same_predictions(split_on_disk, tmp_path):
    straight = tmp_path / "straight"
    run_caption(split_on_disk, straight)
    interrupted = tmp_path / "interrupted"
    assert run_caption(split_on_disk, interrupted, kill_after_lines=4) == -signal.SIGKILL
    partial = (interrupted / "predictions.jsonl").read_text().splitlines()
    assert 4 <= len(partial) < 12
    run_caption(split_on_disk, interrupted)
    expected = (straight / "predictions.jsonl").read_text()
    assert (interrupted / "predictions.jsonl").read_text() == expected
    assert [json.loads(line)["image_id"] for line in expected.splitlines()] == [f"p{i}" for i in range(12)]


def test_torn_last_line_is_dropped_and_redone(split_on_disk, tmp_path, processor):
    from modeling_ase_mllm.inference.captioning import load_model_and_processor
    from modeling_ase_mllm.evaluation.run import caption_split, read_finished

    from datasets import load_from_disk

    out = tmp_path / "out"
    model, processor = load_model_and_processor(str(split_on_disk / "model"), device="cpu")
    data = load_from_disk(str(split_on_disk / "split")).select(range(4))
    # A run of the same model and settings (it wrote run.json), killed while writing p1's line.
    caption_split(model, processor, data.select(range(2)), out, batch_size=2, generation_config={"max_new_tokens": 3},
                  progress=False)
    (out / "predictions.jsonl").write_text('{"image_id": "p0", "caption": "kept"}\n{"image_id": "p1", "capt')
    assert read_finished(out / "predictions.jsonl") == {"p0": "kept"}
    caption_split(model, processor, data, out, batch_size=2, generation_config={"max_new_tokens": 3}, progress=False)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [line["image_id"] for line in lines] == ["p0", "p1", "p2", "p3"] and lines[0]["caption"] == "kept"


# --- runs never mix: run.json records what produced the captions ---------------------------------------------------


@pytest.fixture(scope="module")
def second_model(split_on_disk, processor):
    from modeling_ase_mllm.testing.tiny import build_tiny_model

    folder = split_on_disk / "model2"
    build_tiny_model(gate=0.5, seed=7).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def evaluate_cli(model, root, out, *extra):
    """`ase-mllm evaluate` without the SPICE family: these tests check the run record and the other seven numbers,
    and a JVM per call was a third of their time (tests/test_spice.py runs the eleven through the CLI)."""
    from modeling_ase_mllm.cli import main

    return main(["evaluate", "--model", str(model), "--dataset", str(root / "split"), "--output-dir", str(out),
                 "--batch-size", "4", "--max-new-tokens", "6", "--no-spice", *extra])


def metric_values(out) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {key: metrics[key] for key in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "num_images")}


@pytest.mark.slow
def test_evaluating_another_model_into_a_used_folder_stops_and_overwrite_equals_a_fresh_run(
    split_on_disk, second_model, tmp_path, capsys
):
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    assert evaluate_cli(split_on_disk / "model", split_on_disk, shared) == 0
    first = metric_values(shared)
    capsys.readouterr()
    assert evaluate_cli(second_model, split_on_disk, shared) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert message.startswith("ase-mllm evaluate: error: ") and message.endswith("choose another output folder")
    assert "holds captions of another run" in message and "model_fingerprint" in message
    assert "--overwrite" in message and str(split_on_disk / "model") in message
    assert metric_values(shared) == first  # nothing of the first run was touched

    assert evaluate_cli(second_model, split_on_disk, shared, "--overwrite") == 0
    assert evaluate_cli(second_model, split_on_disk, fresh) == 0
    assert metric_values(shared) == metric_values(fresh) != first
    assert (shared / "predictions.jsonl").read_text() == (fresh / "predictions.jsonl").read_text()

    # Other settings with the same model are another run too, and are refused before the model loads.
    assert evaluate_cli(second_model, split_on_disk, fresh, "--aspect", "composition") == 1
    assert ("prompt: 'Comment on this image from an aesthetic perspective.' there, "
            "'Comment on the composition of this image.' now") in capsys.readouterr().err


@pytest.mark.slow
def test_limit_into_a_folder_with_more_rows_scores_exactly_those_rows(split_on_disk, tmp_path):
    from modeling_ase_mllm.evaluation.metrics import read_predictions, score_predictions

    out = tmp_path / "out"
    assert evaluate_cli(split_on_disk / "model", split_on_disk, out) == 0
    captions = read_predictions(out / "predictions.jsonl")
    assert len(captions) == 12
    assert evaluate_cli(split_on_disk / "model", split_on_disk, out, "--limit", "2") == 0
    expected = score_predictions({k: captions[k] for k in ("p0", "p1")}, {"p0": ["nice light"], "p1": ["nice light"]})
    assert metric_values(out) == {key: expected[key] for key in metric_values(out)}
    assert metric_values(out)["num_images"] == 2
    assert len(read_predictions(out / "predictions.jsonl")) == 12  # the finished captions are kept


def test_predictions_without_a_run_record_are_not_resumed(split_on_disk, tmp_path):
    from modeling_ase_mllm.evaluation.run import StaleRunError, check_run

    (tmp_path / "predictions.jsonl").write_text('{"image_id": "p0", "caption": "from somewhere"}\n')
    with pytest.raises(StaleRunError, match=r"predictions.jsonl has no run.json"):
        check_run(tmp_path, {"prompt": "x"})
