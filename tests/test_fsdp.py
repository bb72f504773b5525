"""FSDP and DeepSpeed ZeRO-3 on the CPU: the paper's full fine-tuning recipe (`pccd-full`, tiny scale, EAT frozen,
precomputed maps) under torch's FSDP2 on two gloo processes equals one process, and a sharded checkpoint resumes
identically; the same through accelerate + Trainer under DeepSpeed ZeRO-3 (which does run on the CPU).

accelerate itself refuses FSDP on the CPU (it switches to FSDP only from a multi-accelerator state and would train
with DDP), so the sharding here is torch's `fully_shard`, applied as accelerate's `fsdp.yaml` applies it; and
`ase-mllm train` launched with `fsdp.yaml` on a CPU stops with the reason instead of silently running DDP.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "fsdp_train_script.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
STEPS = 5


@pytest.fixture(scope="module")
def data_with_maps(tmp_path_factory):
    """Four mini-set conversations with their EAT + LayerCAM maps precomputed (by the tiny model's EAT)."""
    from modeling_ase_mllm.data.conversations import to_conversations
    from modeling_ase_mllm.data.mini_aic import load_mini_aic
    from modeling_ase_mllm.data.saliency import precompute_saliency
    from modeling_ase_mllm.training.recipes import parse_recipe
    from modeling_ase_mllm.training.train import load_model_for_training

    conversations = to_conversations(load_mini_aic(["train"])["train"], mode="sample").select(range(4))
    script_args, _ = parse_recipe(recipe="pccd-full", overrides={"model": "tiny", "max_patches": 1})
    model, processor = load_model_for_training(script_args, conversations)
    folder = tmp_path_factory.mktemp("fsdp") / "data"
    precompute_saliency(conversations, model, processor, image_column="images").save_to_disk(folder)
    return folder


def train(launcher, data, out, *options) -> dict[int, float]:
    result = subprocess.run([*launcher, str(SCRIPT), str(data), str(out), str(STEPS), *options], env=ENV,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return {int(step): loss for step, loss in json.loads((out / "losses.json").read_text()).items()}


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_equals_one_process_and_resumes_identically(data_with_maps, tmp_path):
    one = train([sys.executable], data_with_maps, tmp_path / "one")
    two = train(TORCHRUN, data_with_maps, tmp_path / "two", "--save-at", "3")
    assert list(one) == list(two) == list(range(1, STEPS + 1))
    max_diff = max(abs(one[step] - two[step]) for step in one)
    print(f"\nFSDP2: 2 processes {two}\n       1 process   {one}\n       max diff {max_diff:.3g}")
    assert max_diff <= 1e-5
    assert two[STEPS] < two[1]

    checkpoint = tmp_path / "two" / "checkpoint-3"
    assert sorted(path.name for path in checkpoint.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "trainer.json"]
    resumed = train(TORCHRUN, data_with_maps, tmp_path / "resumed", "--resume", str(checkpoint))
    assert resumed == {step: two[step] for step in (4, 5)}  # identical, not close
    assert abs(two[4] - two[1]) > 1e-2  # a start from the initial weights could not have matched


@pytest.mark.slow
def test_fsdp_launch_on_the_cpu_stops_instead_of_training_ddp(data_with_maps, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "configuration/accelerate/fsdp.yaml"), "--num_processes", "2",
               "--num_cpu_threads_per_process", "1", "-m", "modeling_ase_mllm.cli", "train", "--recipe", "pccd-full",
               "--data", str(data_with_maps), "--model", "tiny", "--output-dir", str(tmp_path / "out"),
               "--max-steps", "1"]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    assert ("ase-mllm train: error: the launch asks for FSDP, but accelerate runs it only on accelerators (GPUs, "
            "XPUs, NPUs, HPUs ...); here it would train as MULTI_CPU") in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


# --- DeepSpeed ZeRO-3 through accelerate and Trainer (it runs on the CPU: DeepSpeed's CPU accelerator, gloo) ------

def tiny_recipe(path: Path, per_device: int) -> Path:
    """`pccd-full` at tiny scale for `ase-mllm train`: Trainer + our collator (it passes the precomputed maps)."""
    path.write_text("base_recipe: pccd-full\nmodel: tiny\ndtype: float32\ntrainer: hf\nmax_patches: 1\n"
                    f"effective_batch_size: 2\nper_device_train_batch_size: {per_device}\nbf16: false\n"
                    "activation_checkpointing: false\ndataloader_num_workers: 0\nlogging_steps: 1\nsave_steps: 3\n"
                    "disable_tqdm: true\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_deepspeed_zero3_on_two_cpu_processes_equals_one_process_and_resumes(data_with_maps, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed by the [dev] extra")
    from test_training import compare_two_with_one, loss_curve, run_train_command

    deepspeed = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                 str(REPO / "configuration/accelerate/deepspeed-zero3.yaml"), "--num_processes", "2",
                 "--mixed_precision", "no", "--num_cpu_threads_per_process", "1"]
    one = run_train_command([sys.executable], tiny_recipe(tmp_path / "one.yaml", 2), data_with_maps,
                            tmp_path / "one", STEPS)
    two = run_train_command(deepspeed, tiny_recipe(tmp_path / "two.yaml", 1), data_with_maps, tmp_path / "two", STEPS)
    curves, max_diff = compare_two_with_one("ZeRO-3", two, one, tmp_path / "two", tmp_path / "one", STEPS)
    assert max_diff <= 1e-5

    import torch

    states = tmp_path / "two" / "checkpoint-3" / "global_step3"
    for rank in range(2):  # each process saved its own partition, under ZeRO stage 3
        saved = torch.load(states / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt", weights_only=False)
        assert saved["ds_config"]["zero_optimization"]["stage"] == 3 and saved["dp_world_size"] == 2
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "two" / "checkpoint-3", resumed / "checkpoint-3")
    run_train_command([*deepspeed], tiny_recipe(tmp_path / "two.yaml", 1), data_with_maps, resumed, STEPS,
                      "--resume")
    assert loss_curve(resumed)[3:] == curves[0][3:]
