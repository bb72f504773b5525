"""A training run never loses a checkpoint and never starts on data that cannot train: interrupted saves are told
apart, `--resume` continues bit-identically from the newest complete checkpoint, an earlier run is not silently
overwritten, a full disk is one line, corrupt images and over-long critiques are found before step 0.

Each test is one row of issue 24's table. The tiny model, one 448 px tile per photo, one example per step.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, Features, Image, List, Value
from safetensors.torch import load_file

from conftest import random_image
from interruption import ForkServer, child_environment, on_small_disk, small_disk_available
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.data.conversations import conversation, to_conversations
from modeling_ase_mllm.data.mini_aic import load_mini_aic, load_mini_aic_records
from modeling_ase_mllm.training.checkpoints import checkpoints


def write_recipe(path: Path, extra: str = "") -> Path:
    """The mini recipe, one example per optimizer step, a checkpoint every step, a loss every step."""
    path.write_text("base_recipe: mini\neffective_batch_size: 1\nper_device_train_batch_size: 1\nlogging_steps: 1\n"
                    "save_steps: 1\nsave_total_limit: null\ndisable_tqdm: true\n" + extra, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four mini-set photos with one critique each, as a `save_to_disk` folder; and the recipe."""
    root = tmp_path_factory.mktemp("training-runs")
    to_conversations(load_mini_aic(["train"])["train"], mode="sample").select(range(4)).save_to_disk(str(root / "mini4"))
    return root / "mini4", write_recipe(root / "recipe.yaml")


def cli(capsys, *arguments) -> tuple[int, str, str]:
    """`ase-mllm ...` in this process: (exit status, stdout, stderr's lines from `ase-mllm` itself, not the
    progress bars of datasets)."""
    status = main([str(argument) for argument in arguments])
    out, err = capsys.readouterr()
    return status, out, "\n".join(line for line in err.replace("\r", "\n").splitlines() if line.startswith("ase-mllm"))


def folder_state(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------------------------ an earlier run


def test_an_earlier_run_needs_resume_or_overwrite(data, tmp_path, capsys):
    """Row 9: the same command again into an output folder that holds checkpoints stops before anything is written
    and says what to pass; `--overwrite` deletes the earlier run's checkpoints and starts again."""
    dataset, recipe = data
    output = tmp_path / "run"
    command = ("train", "--recipe", recipe, "--data", dataset, "--model", "tiny", "--output-dir", output)
    assert cli(capsys, *command, "--max-steps", 2)[0] == 0
    before = folder_state(output)

    status, _, err = cli(capsys, *command, "--max-steps", 2)
    assert status == 1 and err.strip() == (
        f"ase-mllm train: error: {output} already holds a training run (checkpoint-1, checkpoint-2, "
        "trainer_state.json): pass --resume to continue it, or --overwrite to start again (its checkpoints are "
        "deleted first)")
    assert folder_state(output) == before

    status, out, _ = cli(capsys, *command, "--max-steps", 1, "--overwrite")
    assert status == 0
    assert f"[train] --overwrite: deleted checkpoint-1, checkpoint-2, trainer_state.json of the earlier run in {output}" in out
    assert sorted(path.name for path in output.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 1


# ------------------------------------------------------------------------------------------------ killed saves


KILLED_TRAINING = """
import json, time
from transformers import TrainerCallback
import modeling_ase_mllm.training.train as training
from modeling_ase_mllm.cli import main

class KillDuringSave(TrainerCallback):
    '''Times each checkpoint save (from the step that decides it to `on_save`); SIGKILL `delay` seconds into the
    save of step `step`.'''

    def __init__(self, step, delay, report):
        self.step, self.delay, self.report, self.durations = step, delay, report, []

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.started = time.perf_counter()
            if state.global_step == self.step:
                kill_after(self.delay)

    def on_save(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self.started)
        with open(self.report, "w") as report:
            json.dump(self.durations, report)

def run(job):
    build = training.build_trainer
    def with_killer(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(KillDuringSave(job.get("kill_step"), job.get("delay"), job["report"]))
        return trainer
    training.build_trainer = with_killer
    if main(job["argv"]) != 0:
        raise SystemExit(1)
"""


@pytest.mark.slow
def test_a_killed_save_is_skipped_and_resume_ends_bit_identical(data, tmp_path):
    """Row 7 and "what it must show" 2: SIGKILL at 5 seeded random moments, each inside a checkpoint save (of steps
    1 to 5 in turn), the run resumed with `--resume` after each (`--overwrite` while no checkpoint is complete).
    After every kill each checkpoint is complete (its weights load) or recognised as incomplete; `--resume` takes
    the newest complete one and names the incomplete one it skipped; the last resume runs to step 5 and its weights
    equal, bit for bit, those of a run never killed."""
    dataset, recipe = data
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    def argv(output, again=None):
        return ["train", "--recipe", str(recipe), "--data", str(dataset), "--model", "tiny", "--output-dir",
                str(output), "--max-steps", "5", *([again] if again else [])]

    def again():  # what a user runs next: --resume, or --overwrite when no checkpoint is complete yet
        return None if not killed.exists() else "--resume" if checkpoints(killed)[0] else "--overwrite"

    with ForkServer(KILLED_TRAINING, tmp_path) as server:
        report = str(tmp_path / "saves.json")
        result = server.run({"argv": argv(straight), "report": report})
        assert result["exit"] == 0, server.log.read_text()[-3000:]
        durations = json.loads(Path(report).read_text())
        save = sorted(durations)[len(durations) // 2]

        rng, outcomes, incomplete = random.Random(24), [], {}
        for step in [*range(1, 6), None]:  # five kills (the last in the last save), then the run to its end
            mode, delay = again(), rng.uniform(0, save) if step else None
            result = server.run({"argv": argv(killed, mode), "report": report, "kill_step": step, "delay": delay})
            assert result["killed"] if step else result["exit"] == 0, server.log.read_text()[-3000:]
            said = [line for line in result["printed"] if line.startswith(("[train] resuming", "[train] --overwrite"))]
            if mode == "--resume":  # the incomplete checkpoints the kill before left are named as skipped
                assert all(f"{folder}: {problem}" in said[0] for folder, problem in incomplete.items()), said
            complete, incomplete = checkpoints(killed)
            incomplete = {path.name: problem for path, problem in incomplete.items()}
            assert [checkpoint_step(path) for path in complete] == list(range(1, len(complete) + 1))
            for path in complete:
                load_file(path / "model.safetensors")  # complete means loadable
            outcomes.append((step, delay, mode, said, [path.name for path in complete][-1:], incomplete))

    print(f"\ncheckpoint save {save:.3f} s (median of {len(durations)}); runs (killed in the save of step, at):")
    for step, delay, mode, said, newest, incomplete in outcomes:
        where = f"killed in the save of step {step} at {delay:.3f} s" if step else "ran to step 5"
        print(f"  {mode or '(first run)'}: {where}; then newest complete {newest or 'none'}, incomplete "
              f"{incomplete or 'none'}\n      {said[0] if said else ''}")
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    difference = max(float((a[name] - b[name]).abs().max()) for name in a)
    print(f"  max |weights straight - weights killed 5 times and resumed| = {difference}")
    assert a.keys() == b.keys() and difference == 0.0
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 5


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


# ------------------------------------------------------------------------------------------------ a full disk


@pytest.mark.slow
def test_a_full_disk_names_the_checkpoint_and_the_last_complete_one(data, tmp_path):
    """Row 8 and "what it must show" 3: training into an 8 MiB tmpfs, where the first checkpoint (5.7 MB) fits and
    the second does not: exit 1, one line naming the checkpoint being written and the last complete one, which is
    intact."""
    if reason := small_disk_available():
        pytest.skip(reason)
    dataset, recipe = data
    disk = tmp_path / "disk"
    command = (f"{sys.executable} -m modeling_ase_mllm.cli train --recipe {recipe} --data {dataset} --model tiny "
               f"--output-dir {disk} --max-steps 3")
    after = tmp_path / "after"  # the tmpfs goes with its namespace: what the run left is copied out first
    run = on_small_disk(disk, "8m", f"{command} > /dev/null; echo rc=$?; cp -r {disk} {after}")
    status = run.stdout.strip().splitlines()[-1]
    errors = [line for line in run.stderr.splitlines() if line.startswith("ase-mllm train")]
    assert status == "rc=1" and errors == [
        f"ase-mllm train: error: No space left on device while writing {disk / 'checkpoint-2'}; the last complete "
        f"checkpoint is {disk / 'checkpoint-1'}: free some space, then the same command with --resume continues "
        "from it"], run.stderr[-3000:]
    complete, incomplete = checkpoints(after)
    assert [path.name for path in complete] == ["checkpoint-1"] and [path.name for path in incomplete] == ["checkpoint-2"]
    load_file(after / "checkpoint-1" / "model.safetensors")
    print(f"\n{errors[0]}\ncheckpoint-2: {incomplete[after / 'checkpoint-2']}")


# ------------------------------------------------------------------------------------------------ data that cannot train


def photo_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"photo{index}.jpg"
        random_image(300, 400, seed=index).save(path, quality=90)
        paths.append(path)
    return paths


def conversations_dataset(paths: list[Path], critiques: list[str], folder: Path) -> Path:
    """A `save_to_disk` folder of conversations whose images are the files at `paths`."""
    features = Features({"images": List(Image()), "messages": List({
        "role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})})
    rows = [{"images": [str(path)], "messages": conversation(critique)} for path, critique in zip(paths, critiques)]
    Dataset.from_list(rows, features=features).save_to_disk(str(folder))
    return folder


def test_a_corrupt_image_is_found_before_step_0(data, tmp_path, capsys):
    """Row 10: a truncated JPEG among four photos stops the run before step 0 (nothing written), naming the
    example and the file; with `--bad_images skip` its example is left out, counted, and the rest trains."""
    _, recipe = data
    paths = photo_files(tmp_path / "photos", 4)
    paths[2].write_bytes(paths[2].read_bytes()[:2000])
    critiques = [f"The light is warm and the frame is balanced, photo {index}." for index in range(4)]
    dataset = conversations_dataset(paths, critiques, tmp_path / "data")
    command = ("train", "--recipe", recipe, "--data", dataset, "--model", "tiny", "--max-steps", 1)

    status, _, err = cli(capsys, *command, "--output-dir", tmp_path / "stop")
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"ase-mllm train: error: training example 2: image '{paths[2].name}' could not be read: "
                          "image file is truncated") and err.endswith("(bad_images: skip leaves such examples out)"), err
    assert not any((tmp_path / "stop").iterdir())

    status, out, _ = cli(capsys, *command, "--output-dir", tmp_path / "skip", "--bad_images", "skip")
    assert status == 0
    data_line = next(line for line in out.splitlines() if line.startswith("[train] data:"))
    assert data_line.startswith(f"[train] data: 3 examples; 1 with an image that does not decode skipped (first: "
                                f"example 2, image '{paths[2].name}' could not be read"), data_line


@pytest.fixture(scope="module")
def long_critique_data(tmp_path_factory):
    """Four photos, the first with a 100,000-character critique of mini-set words: `(dataset, long, critiques)`."""
    root = tmp_path_factory.mktemp("long-critique")
    paths = photo_files(root / "photos", 4)
    rng = random.Random(0)
    words = " ".join(critique["text"] for photo in load_mini_aic_records() for critique in photo["critiques"]).split()
    long = " ".join(rng.choice(words) for _ in range(20_000))[:100_000]
    critiques = [long] + [f"The light is warm and the frame is balanced, photo {index}." for index in range(1, 4)]
    return conversations_dataset(paths, critiques, root / "data"), long, critiques


def test_an_over_long_critique_is_cut_or_skipped_before_step_0(data, long_critique_data, tmp_path, capsys):
    """Row 11: a 100,000-character critique among four (21,000 tokens of the tiny tokenizer). Over the limit (the
    model's 16,384 positions by default, or the recipe's `max_length`) it is cut to fit, or skipped with
    `long_critiques: skip`, and counted; the run trains. A cut example is as long as the limit allows and no
    longer."""
    from transformers import AutoProcessor

    _, recipe = data
    dataset, long, critiques = long_critique_data
    command = ("train", "--recipe", recipe, "--data", dataset, "--model", "tiny", "--max-steps", 1)

    status, out, err = cli(capsys, *command, "--output-dir", tmp_path / "run")
    assert status == 0, err
    line = next(line for line in out.splitlines() if line.startswith("[train] data:"))
    longest = int(line.rsplit("longest ", 1)[1].split()[0].replace(",", ""))
    assert longest > 16_384  # the tiny tokenizer makes more tokens of it than the model has positions
    assert line == f"[train] data: 4 examples; 1 critique(s) over 16,384 tokens truncated; longest {longest:,} tokens"

    # A recipe's max_length, cut or skipped (the same screening, on the processor the run trained with); a cut
    # example, rendered and its image expanded as the collator does, is as long as the limit allows.
    from datasets import load_from_disk

    from modeling_ase_mllm.training.collator import AseMllmDataCollator
    from modeling_ase_mllm.training.screening import screen_dataset

    processor = AutoProcessor.from_pretrained(tmp_path / "run")
    cut, screening = screen_dataset(load_from_disk(str(dataset)), processor, 2048, "stop", "truncate")
    skipped, skipping = screen_dataset(load_from_disk(str(dataset)), processor, 2048, "stop", "skip")
    print(f"\n{line}\nmax_length 2048: {screening.summary()}\nmax_length 2048, skip: {skipping.summary()}")
    assert screening.summary() == f"4 examples; 1 critique(s) over 2,048 tokens truncated; longest {longest:,} tokens"
    assert skipping.summary() == f"3 examples; 1 example(s) over 2,048 tokens skipped; longest {longest:,} tokens"
    assert len(skipped) == 3 and skipped[0]["messages"][1]["content"][0]["text"] == critiques[1]
    batch = AseMllmDataCollator(processor)([dict(cut[0])])
    assert 2000 < batch["input_ids"].shape[1] <= 2048 and (batch["labels"] != -100).sum() > 1000
    assert long.startswith(cut[0]["messages"][1]["content"][0]["text"])


OUT_OF_MEMORY_CHILD = """
import resource, sys
from modeling_ase_mllm.cli import main
import modeling_ase_mllm.training.train, trl  # imported before the limit: it is the run's memory that is bounded

def virtual_memory():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

limit = virtual_memory() + 3 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_running_out_of_memory_is_one_line(data, long_critique_data, tmp_path):
    """Row 11, "no OOM without a message": two examples per step, one of them the critique cut to the model's
    16,384 positions, padded beside a short one (so attention is computed with a mask, in full), in a process whose
    address space has 3 GiB left: the run stops at that step with one line naming the longest example and what to
    lower, exit 1, not a kill without a word."""
    _, recipe = data
    dataset = long_critique_data[0]
    command = [sys.executable, "-c", OUT_OF_MEMORY_CHILD, "train", "--recipe", str(recipe), "--data", str(dataset),
               "--model", "tiny", "--max-steps", "2", "--per_device_train_batch_size", "2", "--effective_batch_size",
               "2", "--output-dir", str(tmp_path / "run")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, env=child_environment())
    errors = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.startswith("ase-mllm")]
    assert run.returncode == 1 and len(errors) == 1, run.stderr[-3000:]
    said = re.fullmatch(r"ase-mllm train: error: out of memory at step [12] \(the longest example has ([\d,]+) tokens, "
                        r"2 per device\): lower per_device_train_batch_size, max_patches or max_length", errors[0])
    assert said and 16_000 < int(said[1].replace(",", "")) <= 16_384, errors  # the cut critique, not its 21,248
    print(f"\n{errors[0]}")
