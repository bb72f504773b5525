"""`accelerate launch -m modeling_ase_mllm.cli evaluate` on two CPU processes (gloo): the merged predictions are the
bytes one process writes, the metrics the same; a run killed midway and started again ends the same."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_evaluation import split_on_disk  # noqa: F401  (fixture: a tiny model and a 12-photo split on disk)


REPO = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "configuration/accelerate/ddp.yaml"), "--num_processes", "2",
              "--num_cpu_threads_per_process", "1"]
# Both runs compute with one thread per process, so that only the sharding differs between them.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def evaluate_command(launcher, root, out) -> list[str]:
    # Batches of 3 over 12 photos: 4 batches, dealt out 2 and 2.
    return [*launcher, "-m", "modeling_ase_mllm.cli", "evaluate", "--model", str(root / "model"), "--dataset",
            str(root / "split"), "--output-dir", str(out), "--batch-size", "3", "--max-new-tokens", "8", "--no-spice"]


def run(command) -> str:
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_process(split_on_disk, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("one")
    run(evaluate_command([sys.executable], split_on_disk, out))
    return out


@pytest.mark.slow
def test_two_processes_write_the_bytes_of_one_process_and_score_the_same(split_on_disk, one_process, tmp_path):  # noqa: F811
    out = tmp_path / "two"
    stdout = run(evaluate_command(ACCELERATE, split_on_disk, out))
    assert stdout.count("[evaluate] wrote") == 1  # the main process scores and reports, once
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert [json.loads(line)["image_id"] for line in (out / "predictions.jsonl").read_text().splitlines()] == \
        [f"p{i}" for i in range(12)]
    assert metrics(out) == metrics(one_process) and metrics(out)["num_images"] == 12
    assert sorted(path.name for path in out.iterdir()) == ["metrics.json", "metrics.md", "predictions.jsonl",
                                                            "references.json", "run.json"]  # no part file left


@pytest.mark.slow
def test_killed_two_process_run_restarted_gives_the_same_result(split_on_disk, one_process, tmp_path):  # noqa: F811
    out = tmp_path / "killed"
    process = subprocess.Popen(evaluate_command(ACCELERATE, split_on_disk, out), env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while process.poll() is None and time.time() < deadline:
        parts = list(out.glob("predictions.jsonl.part-*")) if out.is_dir() else []
        if sum(part.read_bytes().count(b"\n") for part in parts) >= 3:  # a batch is done, the others are not
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers at once
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed midway"
    assert not (out / "predictions.jsonl").is_file() or \
        (out / "predictions.jsonl").read_bytes().count(b"\n") < 12
    run(evaluate_command(ACCELERATE, split_on_disk, out))
    assert (out / "predictions.jsonl").read_bytes() == (one_process / "predictions.jsonl").read_bytes()
    assert metrics(out) == metrics(one_process)
    assert not list(out.glob("predictions.jsonl.part-*"))


# --- saliency precompute with datasets.map(num_proc=2) -----------------------------------------------------------

PRECOMPUTE_SCRIPT = """
import sys
from datasets import load_from_disk
from modeling_ase_mllm.data.saliency import precompute_saliency
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, build_tokenizer
precompute_saliency(load_from_disk(sys.argv[1]), build_tiny_model(seed=3), build_processor(build_tokenizer()),
                    batch_size=2, num_proc=2, cache_file_name=sys.argv[2])
print("done")
"""


@pytest.fixture(scope="module")
def photos_on_disk(tmp_path_factory):
    """Eight photos: the first shard's four are small, the second shard's four large (slow to decode), so the first
    shard finishes well before the second."""
    from datasets import Dataset, Image

    from conftest import random_image

    root = tmp_path_factory.mktemp("photos")
    paths = []
    for index, side in enumerate([64] * 4 + [2800] * 4):
        paths.append(str(root / f"{index}.png"))
        random_image(side, side, seed=index).save(paths[-1])
    Dataset.from_dict({"image": paths}).cast_column("image", Image()).save_to_disk(root / "data")
    return root / "data"


def one_process_maps(data):
    """The maps one process computes, with one thread as each of the two worker processes has."""
    import numpy as np
    import torch
    from datasets import load_from_disk

    from modeling_ase_mllm.data.saliency import precompute_saliency
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, build_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = precompute_saliency(load_from_disk(str(data)), build_tiny_model(seed=3),
                                     build_processor(build_tokenizer()), batch_size=2, load_from_cache_file=False)
    finally:
        torch.set_num_threads(threads)
    return np.asarray(result["saliency"])


@pytest.mark.slow
def test_precompute_in_two_processes_killed_and_restarted_equals_one_process(photos_on_disk, tmp_path):
    import numpy as np
    from datasets import Dataset, concatenate_datasets

    cache = tmp_path / "maps" / "saliency.arrow"
    shards = [cache.with_name(f"saliency_0000{rank}_of_00002.arrow") for rank in range(2)]
    command = [sys.executable, "-c", PRECOMPUTE_SCRIPT, str(photos_on_disk), str(cache)]
    process = subprocess.Popen(command, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline and not shards[0].is_file():
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL and shards[0].is_file() and not shards[1].is_file(), \
        "the run was not killed between its two shards"
    first_shard = shards[0].stat().st_mtime_ns

    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]
    assert shards[0].stat().st_mtime_ns == first_shard  # the finished shard was reused, not recomputed
    maps = np.asarray(concatenate_datasets([Dataset.from_file(str(shard)) for shard in shards])["saliency"])
    assert maps.shape == (8, 1, 14, 14)
    assert np.array_equal(maps, one_process_maps(photos_on_disk))
