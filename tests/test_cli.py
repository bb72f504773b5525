"""`ase-mllm` as a user meets it, through the real entry point (`cli.main` in-process, or the CLI in a subprocess).

Arguments are checked before a model loads (status 2, usage, one sentence naming the flag); every other error is
one line (status 1), `--debug` shows the traceback; Ctrl-C is status 130 and says what was kept; `caption`
streams its lines, decodes batch by batch and loses only the files that fail; help answers without torch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
import torch

from conftest import random_image
from modeling_ase_mllm.cli import build_parser, main
from modeling_ase_mllm.inference.visualize import saliency_picture_size


ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "modeling_ase_mllm.cli"]


def interruptible():
    """`preexec_fn` for a child the test will Ctrl-C: SIGINT back to its default, so that Python in the child turns
    it into KeyboardInterrupt. A child inherits an ignored SIGINT (a suite started with `&` from a script, or with
    `nohup`, ignores it), and Python then leaves it ignored: the child would run to its end and exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
# Imported only by the commands that use them, never for --help.
HEAVY = {"torch", "transformers", "datasets", "PIL", "numpy"}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """`main(argv)` → (status, stdout, stderr); argparse's own exits count as a status too."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def unloadable_model(tmp_path_factory, saved_model):
    """A folder with config.json but no weights: loading it fails, so an error *about loading* proves the
    arguments were accepted, and an argument error proves it came first."""
    folder = tmp_path_factory.mktemp("no-weights")
    shutil.copy(saved_model / "config.json", folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good photos, degenerate sizes, a decompression bomb, a corrupt file, a directory and an existing file."""
    folder = tmp_path_factory.mktemp("files")
    random_image(300, 400, seed=1).save(folder / "photo.png")
    random_image(200, 260, seed=2).save(folder / "photo2.jpg")
    PIL.Image.new("RGB", (10000, 1), (200, 30, 30)).save(folder / "wide.png")
    PIL.Image.new("RGB", (1, 10000), (20, 130, 30)).save(folder / "tall.png")
    # 180 megapixels that compress to a few kB (1 bit per pixel): over Pillow's threshold of about 89.5.
    PIL.Image.new("1", (15000, 12000)).save(folder / "bomb.png")
    # A JPEG whose header says 15000x12000 (its data is a 16x16 image's: it is never decoded).
    jpeg = folder / "bomb.jpg"
    PIL.Image.new("RGB", (16, 16)).save(jpeg)
    data = bytearray(jpeg.read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    data[sof + 5 : sof + 9] = (12000).to_bytes(2, "big") + (15000).to_bytes(2, "big")
    jpeg.write_bytes(bytes(data))
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg" * 20)
    (folder / "a-folder").mkdir()
    (folder / "a-file").write_text("taken")
    return folder


# --- arguments: status 2, usage, one sentence naming the flag, before any model is loaded --------------------------
BAD_ARGUMENTS = [
    (["caption", "{photo}", "--batch-size", "-2"], "argument --batch-size: must be a whole number >= 1, got '-2'"),
    (["caption", "{photo}", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got '0'"),
    (["caption", "{photo}", "--num-beams", "0"], "argument --num-beams: must be a whole number >= 1, got '0'"),
    (["caption", "{photo}", "--max-new-tokens", "0"], "argument --max-new-tokens: must be a whole number >= 1, got '0'"),
    (["caption", "{photo}", "--max-new-tokens", "-5"], "argument --max-new-tokens: must be a whole number >= 1, got '-5'"),
    (["caption", "{photo}", "--max-tiles", "-3"], "argument --max-tiles: must be between 1 and 40, got -3"),
    (["caption", "{photo}", "--max-tiles", "41"], "argument --max-tiles: must be between 1 and 40, got 41"),
    (["caption", "{photo}", "--device", "gpu"],
     "argument --device: 'gpu' is not a device torch knows; use cpu, cuda, cuda:N, mps, xpu ..."),
    (["caption", "{photo}", "--aspect", "compositon"], "argument --aspect: 'compositon' is not a known aspect (did you "
     "mean 'composition'?); choose one of general_impression, subject_of_photo, composition, use_of_camera, "
     "depth_of_field, color_lighting, focus, depth_and_focus, impression_and_subject"),
    (["caption", "{photo}", "--aspect", ""], "argument --aspect: '' is not a known aspect; choose one of "
     "general_impression, subject_of_photo, composition, use_of_camera, depth_of_field, color_lighting, focus, "
     "depth_and_focus, impression_and_subject"),
    (["caption", "{photo}", "--prompt", " "], "argument --prompt: must not be empty"),
    (["caption", "{photo}", "--top-p", "1.5"], "argument --top-p: must be a number in (0, 1], got '1.5'"),
    (["caption", "{photo}", "--max-megapixels", "0"], "argument --max-megapixels: must be a number > 0, got '0'"),
    (["caption", "{photo}", "--saliency-out", "{files}/a-file"],
     "argument --saliency-out: '{files}/a-file' is an existing file; give a folder (created if missing)"),
    (["saliency", "{photo}", "--max-tiles", "0"], "argument --max-tiles: must be between 1 and 40, got 0"),
    (["saliency", "{photo}", "--out", "{files}/a-file"],
     "argument --saliency-out: '{files}/a-file' is an existing file; give a folder (created if missing)"),
    (["evaluate", "--dataset", "mini_aic", "--batch-size", "0"],
     "argument --batch-size: must be a whole number >= 1, got '0'"),
    (["evaluate", "--dataset", "mini_aic", "--limit", "0"], "argument --limit: must be a whole number >= 1, got '0'"),
    (["evaluate", "--dataset", "mini_aic", "--max-tiles", "41"], "argument --max-tiles: must be between 1 and 40, got 41"),
    (["evaluate", "--dataset", "mini_aic", "--device", "gpu"],
     "argument --device: 'gpu' is not a device torch knows; use cpu, cuda, cuda:N, mps, xpu ..."),
    (["evaluate", "--dataset", "dpc2202"], "argument --dataset: 'dpc2202' is neither a folder nor a dataset name (did "
     "you mean 'dpc2022'?); the names are pccd, rpcd, dpc2022, ava_captions, mini_aic"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments_exit_2_naming_the_flag_before_the_model_loads(argv, message, unloadable_model, files, capsys):
    command = argv[0]
    argv = [a.format(photo=files / "photo.png", files=files) for a in argv] + ["--model", str(unloadable_model)]
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    assert err.startswith(f"usage: ase-mllm {command} ")
    assert err.strip().splitlines()[-1] == f"ase-mllm {command}: error: " + message.format(files=files)
    assert "Traceback" not in err


def test_a_device_this_machine_lacks_is_named_before_the_model_loads(unloadable_model, files, capsys):
    """A device type torch knows but this machine has not (cuda on a CPU machine; mps on a CUDA one)."""
    have = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else None
    missing = next(kind for kind in ("cuda", "mps", "xpu") if kind != have)
    status, out, err = run(["caption", str(files / "photo.png"), "--device", missing, "--model", str(unloadable_model)],
                           capsys)
    machine = f"cpu and {have}" if have else "only cpu"
    assert status == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"ase-mllm caption: error: argument --device: torch finds no {missing} device on this machine (it has {machine})")


@pytest.mark.parametrize("command", [["caption", "{photo}"], ["saliency", "{photo}"], ["evaluate", "--dataset", "mini_aic"]])
def test_good_arguments_reach_the_model_load_and_fail_there_in_one_line(command, unloadable_model, files, capsys,
                                                                        tmp_path):
    """The counterpart of the test above: the same folder with valid arguments fails while *loading* (status 1)."""
    argv = [a.format(photo=files / "photo.png") for a in command] + ["--model", str(unloadable_model)]
    if command[0] == "evaluate":
        argv += ["--output-dir", str(tmp_path)]
    status, out, err = run(argv, capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"ase-mllm {command[0]}: error: ") and "model.safetensors" in err


MODEL_ARGUMENTS = [
    ("outputs/demo/ase-mllm-tiny", "argument --model: no folder 'outputs/demo/ase-mllm-tiny' here (a Hub id looks like "
                                   "owner/name)"),
    ("./nowhere", "argument --model: no folder './nowhere' here (a Hub id looks like owner/name)"),
    ("not a hub id", "argument --model: 'not a hub id' is neither a folder here nor a Hub id (owner/name)"),
    ("{files}/a-folder", "argument --model: folder '{files}/a-folder' has no config.json, so it holds no saved model"),
    ("{files}/a-file", "argument --model: '{files}/a-file' is a file; give the model's folder (with config.json) or a "
                       "Hub id"),
]


@pytest.mark.parametrize("model,message", MODEL_ARGUMENTS)
def test_model_that_is_not_there_is_named(model, message, files, capsys):
    status, _, err = run(["caption", files / "photo.png", "--model", model.format(files=files)], capsys)
    assert status == 2 and err.strip().splitlines()[-1] == "ase-mllm caption: error: " + message.format(files=files)


def test_a_hub_id_is_tried_and_its_failure_is_one_line(files, capsys, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: set afterwards, the variable alone left this test
    # waiting out the Hub's network timeouts (46 s).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    status, _, err = run(["caption", files / "photo.png", "--model", "someone/no-such-model"], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("ase-mllm caption: error: --model 'someone/no-such-model' could not be loaded: ")


OTHER_COMMANDS = [
    (["train"], "the following arguments are required: --recipe (a YAML file, or one of dpc2022, "),
    (["train", "--recipe", "minii"], "argument --recipe: 'minii' is not a known recipe (nor a YAML file) (did you mean "
                                     "'mini'?); choose one of dpc2022, dpc2022-no-ias, mini, "),
    (["train", "--recipe", "mini", "--max-steps", "0"], "argument --max-steps: must be a whole number >= 1, got '0'"),
    (["train", "--recipe", "mini", "--learning_rat", "1"], "unrecognized arguments: --learning_rat 1"),
    (["train", "--recipe", "mini", "--model", "./nowhere"],
     "argument --model: no folder './nowhere' here (a Hub id looks like owner/name)"),
    (["demo", "--steps", "0"], "argument --steps: must be a whole number >= 1, got '0'"),
    (["prepare-data", "--dataset", "pcc", "--output-dir", "{tmp}/o"],
     "argument --dataset: 'pcc' is not a known dataset (did you mean 'pccd'?); choose one of pccd, rpcd, dpc2022, "
     "ava_captions, mini_aic"),
    (["prepare-data", "--dataset", "pccd", "--output-dir", "{tmp}/o"],
     "argument --data-root: pccd needs the folder of its release"),
    (["convert", "{tmp}", "{tmp}/out"], "argument source: folder '{tmp}' has no config.json, so it holds no checkpoint"),
    (["convert-eat", "{tmp}/missing.pth"], "argument checkpoint: no file '{tmp}/missing.pth'"),
    (["push", "{tmp}", "--repo-id", "not a repo"], "argument --repo-id: 'not a repo' is not a Hub repo id (owner/name): "),
    (["evaluate", "--predictions", "{tmp}/p.jsonl"],
     "argument --predictions: needs --references (the file to score against)"),
    (["evaluate", "--predictions", "{tmp}/p.jsonl", "--references", "{tmp}/r.json", "--update-model-card"],
     "argument --update-model-card: needs --model and --dataset (the model the results belong to)"),
    (["evaluate", "--model", "someone/a-model", "--dataset", "mini_aic", "--update-model-card"],
     "argument --update-model-card: --model 'someone/a-model' is not a local folder to write its card into"),
    (["serve", "--model", "./nowhere"], "argument --model: no folder './nowhere' here (a Hub id looks like owner/name)"),
    (["serve", "--model", "{tmp}", "--port", "70000"], "argument --port: must be at most 65535, got 70000"),
]


@pytest.mark.parametrize("argv,message", OTHER_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_command_checks_its_arguments(argv, message, tmp_path, capsys):
    status, out, err = run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert status == 2 and err.startswith(f"usage: ase-mllm {argv[0]} ")
    assert err.strip().splitlines()[-1].startswith(f"ase-mllm {argv[0]}: error: " + message.format(tmp=tmp_path))


def test_debug_flag_and_environment_show_the_traceback(unloadable_model, files, capsys, monkeypatch):
    argv = ["caption", str(files / "photo.png"), "--model", str(unloadable_model)]
    with pytest.raises(ValueError, match="could not be loaded"):
        main([*argv, "--debug"])
    with pytest.raises(ValueError, match="could not be loaded"):
        main(["--debug", *argv])
    monkeypatch.setenv("ASE_MLLM_DEBUG", "1")
    with pytest.raises(ValueError, match="could not be loaded"):
        main(argv)


def test_every_command_has_a_description_and_every_option_a_help_text():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"demo", "caption", "score", "saliency", "saliency-report", "convert-eat", "convert", "push", "train", "evaluate-score",
                             "evaluate", "prepare-data", "serve"}
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"


def test_old_flag_spellings_still_work():
    parser = build_parser()
    new = parser.parse_args(["prepare-data", "--dataset", "pccd", "--data-root", "r", "--output-dir", "o"])
    old = parser.parse_args(["prepare-data", "--dataset", "pccd", "--root", "r", "--out", "o"])
    assert (new.data_root, new.output_dir) == (old.data_root, old.output_dir) == ("r", "o")
    assert parser.parse_args(["saliency", "x", "--model", "m", "--out", "d"]).saliency_out == "d"
    from modeling_ase_mllm.training.recipes import parse_recipe

    assert parse_recipe(["--recipe", "mini", "--data", "d"])[0].dataset == "d"
    assert parse_recipe(["--recipe", "mini", "--dataset", "d"])[0].dataset == "d"
    assert parser.parse_args(["convert-eat", "x.pth", "--out", "y"]).output == "y"


def test_readme_snippet_loads_the_folder_the_demo_writes():
    from modeling_ase_mllm.cli.demo import DEFAULT_OUTPUT_DIR, MODEL_FOLDER

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f'path = "{DEFAULT_OUTPUT_DIR}/{MODEL_FOLDER}"' in readme
    assert "ase-mllm-tiny" not in readme


def test_dataset_names_in_the_help_are_the_readers():
    from modeling_ase_mllm.cli.arguments import DATASET_HELP
    from modeling_ase_mllm.data.registry import DATASET_NAMES, dataset_reader

    assert DATASET_HELP == "pccd, rpcd, dpc2022, ava_captions or mini_aic"
    readers = [dataset_reader(name) for name in DATASET_NAMES]
    assert [(reader.__module__, reader.__name__) for reader in readers] == [
        (f"modeling_ase_mllm.data.{name}", f"load_{name}") for name in DATASET_NAMES]


# --- metrics input, through `ase-mllm evaluate --predictions` ---------------------------------------------------------
@pytest.mark.parametrize("lines,message", [
    ('{"image_id": "a", "caption": "warm light"}\n{"image_id": "b", "caption": \n',
     "{predictions}:2: not valid JSON (Expecting value, column 30)"),
    ('{"image_id": "a", "caption": 5}\n', "image_id 'a': the caption is an int (5), not a string"),
    ('{"image_id": "a", "caption": null}\n', "image_id 'a': the caption is null, not a string"),
    ('{"image_id": "a", "caption": "  "}\n', "image_id 'a' has a blank caption"),
    ('["a", "warm light"]\n', "{predictions}:1: expected {{\"image_id\": ..., \"caption\": ...}}, got a list "
                              "(['a', 'warm light'])"),
])
def test_bad_predictions_file_is_one_line_naming_file_line_and_id(lines, message, tmp_path, capsys):
    predictions, references = tmp_path / "predictions.jsonl", tmp_path / "references.json"
    predictions.write_text(lines, encoding="utf-8")
    references.write_text(json.dumps({"a": ["soft warm light"]}), encoding="utf-8")
    status, _, err = run(["evaluate", "--predictions", predictions, "--references", references, "--output-dir",
                          tmp_path / "out"], capsys)
    assert status == 1
    assert err.strip() == "ase-mllm evaluate: error: " + message.format(predictions=predictions)


@pytest.mark.slow
def test_bom_prefixed_files_are_read(tmp_path, capsys):
    predictions, references = tmp_path / "predictions.jsonl", tmp_path / "references.json"
    predictions.write_text('{"image_id": "a", "caption": "soft warm light on the face"}\n', encoding="utf-8-sig")
    references.write_text(json.dumps({"a": ["soft warm light on her face"]}), encoding="utf-8-sig")
    assert predictions.read_bytes().startswith(b"\xef\xbb\xbf")
    status, out, err = run(["evaluate", "--predictions", predictions, "--references", references, "--output-dir",
                            tmp_path / "out"], capsys)
    assert status == 0, err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 1 and metrics["Bleu_1"] > 0.5


# --- caption: each file fails alone, bounded pictures, streamed lines -------------------------------------------------
def test_caption_reports_every_bad_file_by_name_and_captions_the_rest(saved_model, files, tmp_path, capsys):
    names = ["photo.png", "wide.png", "bomb.png", "broken.jpg", "a-folder", "tall.png", "missing.png", "bomb.jpg",
             "photo2.jpg"]
    pictures = tmp_path / "pictures"
    (pictures / "0005_tall_saliency.png").mkdir(parents=True)  # that picture cannot be written: only it fails
    status, out, err = run(["caption", *[files / n for n in names], "--model", saved_model, "--json",
                            "--max-new-tokens", "3", "--max-tiles", "4", "--batch-size", "3",
                            "--saliency-out", pictures], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 1
    assert [Path(line["image"]).name for line in lines] == names
    by_name = {Path(line["image"]).name: line for line in lines}
    for good in ("photo.png", "wide.png", "tall.png", "photo2.jpg"):
        assert "caption" in by_name[good] and "error" not in by_name[good], by_name[good]
    for good in ("photo.png", "wide.png", "photo2.jpg"):
        picture = PIL.Image.open(by_name[good]["saliency_picture"])
        assert picture.width * picture.height < 2_000_000, picture.size
    assert by_name["tall.png"]["saliency_error"].startswith("saliency picture failed: IsADirectoryError")
    assert "saliency_picture" not in by_name["tall.png"]
    for bomb in ("bomb.png", "bomb.jpg"):
        assert by_name[bomb]["error"] == (f"image '{files / bomb}' has 180 megapixels (15000x12000), over the limit "
                                          "of 89.5 (--max-megapixels raises it)")
    assert "could not be read" in by_name["broken.jpg"]["error"]
    assert "is a directory, not an image file" in by_name["a-folder"]["error"]
    assert "no such file" in by_name["missing.png"]["error"]
    assert err.strip().splitlines()[-1] == "6 of 9 image(s) failed: " + ", ".join(
        str(files / n) for n in names if n not in ("photo.png", "wide.png", "photo2.jpg"))
    assert sorted(p.name for p in pictures.iterdir() if p.is_file()) == [
        "0000_photo_saliency.png", "0001_wide_saliency.png", "0008_photo2_saliency.png"]


def test_caption_plain_lines_and_the_megapixel_flag(saved_model, files, capsys):
    status, out, err = run(["caption", files / "photo.png", files / "photo2.jpg", "--model", saved_model,
                            "--max-new-tokens", "3", "--max-tiles", "1", "--max-megapixels", "0.1"], capsys)
    lines = out.splitlines()
    assert status == 1 and len(lines) == 2
    assert lines[0] == f"{files / 'photo.png'}: ERROR image '{files / 'photo.png'}' has 0.12 megapixels (400x300), over " \
                       "the limit of 0.1 (--max-megapixels raises it)"
    assert lines[1].startswith(f"{files / 'photo2.jpg'}: ") and "ERROR" not in lines[1]


def test_saliency_command_writes_each_picture_and_names_failures(saved_model, files, tmp_path, capsys):
    status, out, err = run(["saliency", files / "photo.png", files / "broken.jpg", files / "a-folder", files / "wide.png",
                            "--model", saved_model, "--max-tiles", "3", "--saliency-out", tmp_path], capsys)
    written = [Path(line) for line in out.splitlines()]
    assert status == 1
    assert [p.name for p in written] == ["0000_photo_saliency.png", "0003_wide_saliency.png"]
    assert PIL.Image.open(written[0]).size == saliency_picture_size((400, 300), (1, 1))
    assert PIL.Image.open(written[1]).size == saliency_picture_size((10000, 1), (3, 1))
    assert "broken.jpg: ERROR image" in err and "a-folder: ERROR image" in err and "is a directory" in err
    assert err.strip().splitlines()[-1].startswith("2 of 4 image(s) failed: ")


def start_caption(model, images, *options):
    return subprocess.Popen([*CLI, "caption", *map(str, images), "--model", str(model), *options], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "0"},
                            preexec_fn=interruptible)


@pytest.mark.slow
def test_killed_caption_keeps_complete_json_lines(saved_model, files):
    """Killed (SIGKILL) right after its first batch: what it printed is whole lines of valid JSON."""
    images = [files / "photo.png", files / "photo2.jpg"] * 4
    process = start_caption(saved_model, images, "--json", "--batch-size", "2", "--max-tiles", "2",
                            "--max-new-tokens", "24")
    first = process.stdout.readline()  # blocks until the first batch's lines are flushed
    process.kill()
    rest = process.stdout.read()
    process.wait(timeout=60)
    printed = first + rest
    lines = printed.split("\n")
    assert lines[-1] == ""  # ends on a newline: no torn line
    records = [json.loads(line) for line in lines[:-1]]
    print(f"\nkilled after the first batch: {len(records)} of {len(images)} lines printed, all valid JSON")
    assert 1 <= len(records) < len(images)
    assert [r["image"] for r in records] == [str(p) for p in images[: len(records)]]
    assert all("caption" in r for r in records)


@pytest.mark.slow
def test_ctrl_c_in_caption_exits_130_saying_what_was_kept(saved_model, files):
    images = [files / "photo.png", files / "photo2.jpg"] * 4
    process = start_caption(saved_model, images, "--batch-size", "1", "--max-tiles", "2", "--max-new-tokens", "24")
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    done = len((first + out).splitlines())
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"ase-mllm caption: interrupted; the {done} result(s) printed above are "
                                            f"complete; {len(images) - done} of {len(images)} image(s) were not done")


# --- memory ----------------------------------------------------------------------------------------------------------
def peak_rss_mib(command: list[str]) -> float:
    """Peak resident memory (MiB) of one child process, from `wait4`'s rusage (Linux: ru_maxrss in KiB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read().decode()[-2000:]
    return usage.ru_maxrss / 1024


@pytest.mark.slow
def test_caption_memory_does_not_grow_with_the_number_of_files(saved_model, tmp_path):
    """40 twelve-megapixel JPEGs against 4: peak RSS within 1.2x (decoding everything first needs ~36 MB each)."""
    photo = PIL.Image.effect_mandelbrot((4000, 3000), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    photo.save(tmp_path / "photo.jpg", quality=85)
    paths = [tmp_path / "photo.jpg"] + [tmp_path / f"copy{i:02d}.jpg" for i in range(39)]
    for path in paths[1:]:
        shutil.copyfile(paths[0], path)
    options = ["--model", str(saved_model), "--max-tiles", "1", "--max-new-tokens", "1", "--batch-size", "2"]
    few = peak_rss_mib([*CLI, "caption", *map(str, paths[:4]), *options])
    many = peak_rss_mib([*CLI, "caption", *map(str, paths), *options])
    print(f"\ncaption peak RSS: 4 files {few:.0f} MiB, 40 files {many:.0f} MiB (ratio {many / few:.3f})")
    assert many <= 1.2 * few


PICTURE_MEMORY = """
import sys
import PIL.Image
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model
from modeling_ase_mllm.inference.visualize import saliency_picture

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

model, processor = build_tiny_model(gate=0.5), build_processor()
saliency_picture(PIL.Image.new("RGB", (300, 200)), processor, model)  # warm up: allocator pools, lazy imports
image = PIL.Image.new("RGB", (int(sys.argv[1]), int(sys.argv[2])), (200, 30, 30))
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
picture = saliency_picture(image, processor, model)
print(before, status("VmHWM:"), *picture.size)
"""


@pytest.mark.slow
@pytest.mark.parametrize("size", [(10000, 1), (1, 10000)])
def test_picture_of_an_extreme_panorama_is_small_and_cheap(size):
    """Its saliency picture (12 tiles + thumbnail) stays under 2 megapixels and costs well under 1 GB."""
    result = subprocess.run([sys.executable, "-c", PICTURE_MEMORY, *map(str, size)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, peak, width, height = map(float, result.stdout.split())
    print(f"\npicture of {size[0]}x{size[1]}: {width:.0f}x{height:.0f} px, peak RSS +{peak - before:.1f} MiB")
    assert width * height < 2_000_000
    assert peak - before < 256


@pytest.mark.parametrize("size,grid", [((10000, 1), (40, 1)), ((1, 10000), (1, 40)), ((1, 1), (1, 1)),
                                       ((6000, 1000), (6, 1)), ((1000, 1000), (6, 6)), ((4000, 1000), (8, 5))])
def test_picture_size_is_bounded_for_any_grid(size, grid):
    width, height = saliency_picture_size(size, grid)
    assert width * height < 2_000_000 and width < 2000 and height < 1000


# --- Ctrl-C in evaluate -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_in_evaluate_exits_130_and_the_same_command_resumes(saved_model, tmp_path):
    from datasets import Dataset, Features, Image, Sequence, Value

    paths = []
    for index in range(6):
        paths.append(str(tmp_path / f"photo{index}.png"))
        random_image(200, 260 + 10 * index, seed=index).save(paths[-1])
    features = Features({"image_id": Value("string"), "image": Image(), "references": Sequence(Value("string"))})
    Dataset.from_dict({"image_id": [f"p{i}" for i in range(6)], "image": paths,
                       "references": [["soft warm light on the subject"]] * 6}, features=features
                      ).save_to_disk(tmp_path / "split")
    out = tmp_path / "eval"
    command = [*CLI, "evaluate", "--model", str(saved_model), "--dataset", str(tmp_path / "split"), "--output-dir",
               str(out), "--batch-size", "1", "--max-new-tokens", "16", "--max-tiles", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    predictions = out / "predictions.jsonl"
    deadline = time.time() + 300
    while not (predictions.is_file() and predictions.read_text().count("\n") >= 1) and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    kept = predictions.read_text().count("\n")
    assert process.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"ase-mllm evaluate: interrupted; {predictions} keeps {kept} finished "
                                            "caption(s); the same command resumes from there")
    assert 1 <= kept < 6
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 6


# --- every command end to end through main() ---------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_command_captions_and_scores_the_mini_set(saved_model, tmp_path, capsys):
    status, out, err = run(["evaluate", "--model", saved_model, "--dataset", "mini_aic", "--limit", "2",
                            "--max-new-tokens", "4", "--max-tiles", "1", "--output-dir", tmp_path], capsys)
    assert status == 0, err
    assert "| B1 | B2 |" in out and len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["num_images"] == 2


@pytest.mark.slow
def test_train_command_runs_one_step_and_saves(tmp_path, capsys):
    status, out, err = run(["train", "--recipe", "mini", "--model", "tiny", "--dataset", "mini_aic", "--max-steps", "1",
                            "--output-dir", tmp_path], capsys)
    assert status == 0, err
    assert (tmp_path / "config.json").is_file() and f"[train] saved to {tmp_path}" in out


def test_convert_command_gives_internvl_logits(tmp_path, capsys):
    import torch
    from transformers import AutoModelForImageTextToText

    from modeling_ase_mllm.convert.twin import build_internvl_twin
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model

    reference = build_internvl_twin(build_tiny_model(seed=11, gate=0.0))
    reference.save_pretrained(tmp_path / "internvl")
    build_processor().tokenizer.save_pretrained(tmp_path / "internvl")
    status, out, err = run(["convert", tmp_path / "internvl", tmp_path / "ase"], capsys)
    assert status == 0, err
    assert out.startswith(f"transformers checkpoint -> {tmp_path / 'ase'}: ")
    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    inputs = build_processor(saliency_source="spectral_residual")(
        images=[random_image(300, 700, seed=1)], text=["<image>\nHow is the light?"], return_tensors="pt")
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert torch.equal(ours, theirs)


def test_convert_eat_command_names_the_file_and_the_mismatch(tmp_path, capsys):
    """The tiny fixture EAT is not DAT-Base: the strict check fails in one line naming the file."""
    import torch

    from eat_fixture import released_eat_state_dict
    from modeling_ase_mllm.testing.tiny import tiny_config

    pth = tmp_path / "AVA_tiny.pth"
    torch.save(released_eat_state_dict(tiny_config().saliency_config.eat_config, seed=3), pth)
    status, _, err = run(["convert-eat", pth, "--output", tmp_path / "eat.safetensors"], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("ase-mllm convert-eat: error: ") and str(pth) in err
    assert not (tmp_path / "eat.safetensors").exists()


def test_push_dry_run_lists_the_files(saved_model, capsys):
    status, out, err = run(["push", saved_model, "--repo-id", "you/ase-mllm-test", "--dry-run"], capsys)
    assert status == 0, err
    plan = json.loads(out)
    assert plan["dry_run"] is True and "config.json" in plan["files"] and "modeling_ase_mllm.py" in plan["files"]


# --- start-up ------------------------------------------------------------------------------------------------------------
HELP_CHILD = """
import json, sys
from modeling_ase_mllm.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print("RESULT", json.dumps([code, sorted({name.split(".")[0] for name in sys.modules} & set(%r))]))
"""


def test_help_of_every_command_imports_nothing_heavy_and_prints_its_time(tmp_path):
    """`ase-mllm --help` and each `ase-mllm COMMAND --help`: status 0, no torch/transformers/datasets/PIL/numpy
    imported. `train --help` lists every SFTConfig field: the first one builds TRL's parser (transformers and torch,
    no datasets) and keeps its text in the cache; the next prints the same text with none of them. The wall times
    (interpreter start included) are printed, not asserted (bench/cli_startup.py)."""
    commands = [[]] + [[name] for name in ("demo", "caption", "saliency", "saliency-report", "convert-eat", "convert",
                                           "push", "train", "evaluate", "prepare-data", "serve", "train")]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    times, train_help = [], []
    for command in commands:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", HELP_CHILD % sorted(HEAVY), *command, "--help"],
                                capture_output=True, text=True, timeout=120, env=env)
        times.append((" ".join(["ase-mllm", *command, "--help"]), time.perf_counter() - started))
        text, outcome = result.stdout.rsplit("RESULT", 1)
        code, heavy = json.loads(outcome)
        allowed = {"torch", "transformers", "PIL", "numpy"} if command == ["train"] and not train_help else set()
        assert code == 0 and set(heavy) <= allowed, (command, heavy, result.stderr[-1000:])
        assert "usage: ase-mllm" in text
        if command == ["train"]:
            train_help.append(text)
    rendered, cached = train_help
    assert cached == rendered and "--learning_rate" in rendered and "--recipe RECIPE" in rendered
    assert len(list((tmp_path / "ase_mllm" / "help").glob("train-*.txt"))) == 1
    print("\n" + "\n".join(f"{seconds:6.2f} s  {name}" for name, seconds in times))


def test_train_help_is_rendered_anew_when_what_shapes_it_changes(monkeypatch, tmp_path):
    """The cached `train --help` is named by the installed trl/transformers, our modules and the terminal width."""
    import importlib.metadata

    from modeling_ase_mllm.cli.train import help_cache_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    first = help_cache_file()
    assert first.parent == tmp_path / "ase_mllm" / "help" and help_cache_file() == first
    monkeypatch.setenv("COLUMNS", "160")
    wider = help_cache_file()
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.0.1" if name == "trl" else real_version(name))
    other_trl = help_cache_file()
    assert len({first, wider, other_trl}) == 3


REGISTRATION_CHILD = """
import sys
order = sys.argv[2]
if order == "package first":
    import modeling_ase_mllm
    assert not {"torch", "transformers"} & set(sys.modules), "import modeling_ase_mllm must stay light"
    from transformers import AutoModelForImageTextToText, AutoProcessor
elif order == "transformers first":
    from transformers import AutoModelForImageTextToText, AutoProcessor
    import modeling_ase_mllm
elif order == "a transformers model first":
    import modeling_ase_mllm
    from transformers import LlamaForCausalLM  # imports the Auto classes from inside modeling_layers
    from transformers import AutoModelForImageTextToText, AutoProcessor
elif order == "our submodule first":
    from modeling_ase_mllm.configuration_ase_mllm import AseMllmConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
processor = AutoProcessor.from_pretrained(sys.argv[1])
print("RESULT", type(model).__module__, type(processor).__name__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ["package first", "transformers first", "a transformers model first",
                                   "our submodule first"])
def test_import_registers_the_auto_classes_in_any_order(order, saved_model):
    """`import modeling_ase_mllm` is light, yet Auto classes resolve model_type ase_mllm without trust_remote_code."""
    result = subprocess.run([sys.executable, "-c", REGISTRATION_CHILD, str(saved_model), order], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rsplit("RESULT", 1)[1].split() == ["modeling_ase_mllm.modeling_ase_mllm", "AseMllmProcessor"]
