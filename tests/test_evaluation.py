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
from modeling_ase_mllm.captioning import load_model_and_processor
from modeling_ase_mllm.evaluation import caption_split
model, processor = load_model_and_processor(sys.argv[1], device="cpu")
caption_split(model, processor, load_from_disk(sys.argv[2]), sys.argv[3], batch_size=2,
              generation_config={"max_new_tokens": 8}, progress=False)
"""


@pytest.fixture(scope="module")
def split_on_disk(tmp_path_factory, processor):
    from modeling_ase_mllm.tiny import build_tiny_model

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
    from modeling_ase_mllm.captioning import load_model_and_processor
    from modeling_ase_mllm.evaluation import caption_split, read_finished

    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"image_id": "p0", "caption": "kept"}\n{"image_id": "p1", "capt')
    assert read_finished(out / "predictions.jsonl") == {"p0": "kept"}
    model, processor = load_model_and_processor(str(split_on_disk / "model"), device="cpu")
    from datasets import load_from_disk

    data = load_from_disk(str(split_on_disk / "split")).select(range(4))
    caption_split(model, processor, data, out, batch_size=2, generation_config={"max_new_tokens": 3}, progress=False)
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [line["image_id"] for line in lines] == ["p0", "p1", "p2", "p3"] and lines[0]["caption"] == "kept"
