"""What `ase-mllm convert` writes, and what it never writes: a folder whole or not at all, never mixed with another,
in the weights' own dtype, the same bytes for the same inputs; and a bad source file named, not reported as our bug.

Each test is one row of issue 24's table; the kill and full-disk tests interrupt real conversions (`interruption`).
"""

import hashlib
import json
import random
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText

from interruption import ForkServer, on_small_disk, small_disk_available
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.convert.internvl import convert_internvl_checkpoint
from modeling_ase_mllm.convert.twin import is_added_weight
from modeling_ase_mllm.testing.tiny import build_tiny_model
from opengvlab_fixtures import write_internlm2_checkpoint


def digest(folder: Path) -> dict[str, str]:
    """`{file: sha256}` of every file in `folder` (nothing else may be there)."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def weights_checksum(folder: Path) -> str:
    """sha256 over the weights `from_pretrained` loads from `folder` (names, dtypes, values)."""
    model = AutoModelForImageTextToText.from_pretrained(folder)
    checksum = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        checksum.update(name.encode() + str(tensor.dtype).encode() + tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return checksum.hexdigest()


def cli(capsys, *arguments) -> tuple[int, str, str]:
    """`ase-mllm ...` in this process: (exit status, stdout, stderr); a usage error exits with 2."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            status = main([str(argument) for argument in arguments])
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def internvl_source(tmp_path_factory):
    """A tiny OpenGVLab InternVL2 folder (InternLM2, 3 shards) and, converted once into an empty folder, its digest."""
    root = tmp_path_factory.mktemp("convert-outputs")
    write_internlm2_checkpoint(root / "src", shards=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_internvl_checkpoint(root / "src", root / "expected")
    return root / "src", root / "expected"


def qwen_vl_source(root: Path) -> Path:
    from qwen_vl_fixtures import write_qwen_vl_checkpoint
    from modeling_ase_mllm.testing.tiny_qwen_vl import build_tiny_qwen_vl_model

    return write_qwen_vl_checkpoint(build_tiny_qwen_vl_model(seed=3, gate=0.0), root / "qwen-src")


# ------------------------------------------------------------------------------------------------ an existing folder


def test_a_folder_that_is_not_empty_is_refused_and_replaced_whole_with_overwrite(family, internvl_source, tmp_path,
                                                                                  capsys):
    """Row 1: OUT holds a model saved by `save_pretrained` (one `model.safetensors`, other shapes). Without
    `--overwrite` nothing happens (exit 2, the folder named, its bytes unchanged); with it, OUT holds exactly a fresh
    conversion's files and loads its weights, nothing of the old model left beside them."""
    source = internvl_source[0] if family.name == "internvl" else qwen_vl_source(tmp_path)
    output, fresh = tmp_path / "out", tmp_path / "fresh"
    build_tiny_model(seed=9).save_pretrained(output)
    before = digest(output)
    assert "model.safetensors" in before

    status, _, err = cli(capsys, "convert", source, output)
    assert status == 2 and f"folder '{output}' is not empty; pass --overwrite" in err, err
    assert digest(output) == before

    assert cli(capsys, "convert", source, fresh)[0] == 0
    status, out, err = cli(capsys, "convert", source, output, "--overwrite")
    assert status == 0, err
    assert digest(output) == digest(fresh) and "model.safetensors" not in digest(output)
    assert weights_checksum(output) == weights_checksum(fresh)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary folder left


def test_the_output_cannot_be_the_source(internvl_source, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(internvl_source[0], source)
    before = digest(source)
    with pytest.raises(ValueError, match="would replace the source folder"):
        convert_internvl_checkpoint(source, source, overwrite=True)
    assert digest(source) == before


# ------------------------------------------------------------------------------------------------ killed conversions


KILLED_CONVERSION = """
import json, time
from modeling_ase_mllm.convert.internvl import convert_internvl_checkpoint

def run(job):
    if job.get("kill_after") is not None:
        kill_after(job["kill_after"])
    start = time.perf_counter()
    convert_internvl_checkpoint(job["source"], job["output"], seed=job["seed"], overwrite=job["overwrite"],
                                max_shard_size=200_000)
    with open(job["report"], "w") as report:
        json.dump({"seconds": time.perf_counter() - start}, report)
"""


@pytest.mark.slow
def test_a_killed_conversion_leaves_no_folder_or_the_complete_previous_one(internvl_source, tmp_path):
    """Row 2 and "what it must show" 2: SIGKILL at 5 seeded random moments of a conversion into an empty place and
    5 into an existing conversion (`--overwrite`, another seed). After each kill OUT is absent or byte-equal to the
    complete new conversion (empty place), or byte-equal to the previous or to the new one (existing); converting
    again then gives the uninterrupted bytes, and removes what the killed run left beside OUT."""
    source = internvl_source[0]
    with ForkServer(KILLED_CONVERSION, tmp_path) as server:
        def convert(output, seed=0, overwrite=False, kill_after=None):
            job = {"source": str(source), "output": str(output), "seed": seed, "overwrite": overwrite,
                   "kill_after": kill_after, "report": str(tmp_path / "report.json")}
            result = server.run(job)
            return {"killed": result["killed"], "exit": result["exit"]}

        assert convert(tmp_path / "new") == {"killed": False, "exit": 0}
        seconds = json.loads((tmp_path / "report.json").read_text())["seconds"]
        assert convert(tmp_path / "old", seed=1) == {"killed": False, "exit": 0}
        new, old = digest(tmp_path / "new"), digest(tmp_path / "old")
        assert new != old and len([name for name in new if name.endswith(".safetensors")]) > 3

        rng = random.Random(24)
        moments = [seconds * rng.uniform(i / 5, (i + 1) / 5) for i in range(5)]  # one in each fifth of the run
        outcomes = {"into an empty place": [], "into an existing conversion": []}
        for index, moment in enumerate(moments):
            output = tmp_path / "empty" / f"out{index}"
            output.parent.mkdir()
            result = convert(output, kill_after=moment)
            state = "absent" if not output.exists() else "new" if digest(output) == new else "MIXED"
            left = [path.name for path in output.parent.iterdir() if path.name.startswith(f".{output.name}.")]
            outcomes["into an empty place"].append((round(moment, 3), result["killed"], state, len(left)))
            assert state in ("absent", "new") and (result["killed"] or state == "new")
            # converting again; a run the kill came too late for left a complete folder, which only --overwrite replaces
            assert convert(output, overwrite=state == "new") == {"killed": False, "exit": 0}
            assert digest(output) == new and [path.name for path in output.parent.iterdir()] == [output.name]
            shutil.rmtree(output.parent)

            output = tmp_path / "existing" / "out"
            shutil.copytree(tmp_path / "old", output)
            result = convert(output, overwrite=True, kill_after=moment)
            state = "new" if digest(output) == new else "previous" if digest(output) == old else "MIXED"
            outcomes["into an existing conversion"].append((round(moment, 3), result["killed"], state))
            assert state in ("previous", "new")
            shutil.rmtree(output.parent)
    print(f"\nconversion {seconds:.2f} s; kills (moment s, killed, OUT after, leftovers beside it):")
    for case, found in outcomes.items():
        print(f"  {case}: {found}")


# ------------------------------------------------------------------------------------------------ precision


def test_float32_weights_under_a_bfloat16_config_stay_float32(tmp_path):
    """Row 3 and "what it must show" 5: an OpenGVLab folder whose tensors are float32 while its config says
    bfloat16 (what a fine-tune in fp32 saves) converts to float32, says so once, records both, and its logits equal
    the unconverted model's (transformers' InternVL holding the same weights, as the parity tests run it) within
    1e-5; rounding to the config's bfloat16 (`--dtype bfloat16`) would move them by far more."""
    from conftest import random_image
    from transformers import AutoProcessor

    source = tmp_path / "src"
    _, reference = write_internlm2_checkpoint(source, dtype=torch.float32)
    config = json.loads((source / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"
    (source / "config.json").write_text(json.dumps(config))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = convert_internvl_checkpoint(source, tmp_path / "fp32")
    said = [str(w.message) for w in caught if "torch_dtype" in str(w.message)]
    assert said == [f"{source / 'config.json'}: torch_dtype says bfloat16, but the weights are stored in float32; "
                    "writing float32 (the weights' own; --dtype bfloat16 for the config's)."]
    assert summary["dtype"] == "float32" and summary["source_dtype"] == {"stored": "float32", "config": "bfloat16"}
    assert json.loads((tmp_path / "fp32" / "conversion.json").read_text())["source_dtype"] == summary["source_dtype"]
    with safe_open(str(next((tmp_path / "fp32").glob("*.safetensors"))), framework="pt") as tensors:
        assert {tensors.get_slice(name).get_dtype() for name in tensors.keys()} == {"F32"}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_internvl_checkpoint(source, tmp_path / "bf16", dtype=torch.bfloat16)
    processor = AutoProcessor.from_pretrained(tmp_path / "fp32")
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on it."}]}]
    inputs = processor(images=[random_image(300, 500, seed=2)], return_tensors="pt",
                       text=[processor.apply_chat_template(turns, add_generation_prompt=True)])
    differences = {}
    with torch.no_grad():
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
        for name in ("fp32", "bf16"):
            converted = AutoModelForImageTextToText.from_pretrained(tmp_path / name).eval()
            ours = converted(**{k: v.to(converted.dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()})
            differences[name] = float((ours.logits.float() - theirs).abs().max())
    print(f"\nmax |logits - unconverted|: float32 output {differences['fp32']:.2g}, bfloat16 output "
          f"{differences['bf16']:.2g}")
    assert differences["fp32"] < 1e-5 and differences["bf16"] > 1e-3


# ------------------------------------------------------------------------------------------------ bad source files


def truncate_shard(source: Path) -> Path:
    shard = sorted(source.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    return shard


def break_config(source: Path) -> Path:
    (source / "config.json").write_text('{architectures: ["InternVLChatModel"]')
    return source / "config.json"


def remove_shard(source: Path) -> Path:
    shard = sorted(source.glob("model-*.safetensors"))[-1]
    shard.unlink()
    return shard


@pytest.mark.parametrize("damage,what", [(truncate_shard, "not a complete safetensors file"),
                                         (break_config, "not valid JSON (Expecting property name"),
                                         (remove_shard, "missing weight file (named by model.safetensors.index.json)")],
                         ids=["truncated-shard", "config-not-json", "missing-shard"])
def test_a_bad_source_file_is_named_with_what_is_wrong(damage, what, internvl_source, tmp_path, capsys):
    """Row 5: one line on stderr, exit 1, naming the file and what is wrong with it; never "internal error"; no
    output folder."""
    source = tmp_path / "src"
    shutil.copytree(internvl_source[0], source)
    broken = damage(source)
    status, _, err = cli(capsys, "convert", source, tmp_path / "out")
    assert status == 1 and len(err.strip().splitlines()) == 1, err
    assert str(broken) in err and what in err and "internal error" not in err, err
    assert not (tmp_path / "out").exists() and [path.name for path in tmp_path.iterdir()] == ["src"]


# ------------------------------------------------------------------------------------------------ seeds


def test_the_same_inputs_give_the_same_bytes_and_the_seed_is_recorded(internvl_source, tmp_path, capsys):
    """Row 6: two conversions of one source are byte-identical in every file (the new IAS weights come from
    `--seed`, 0 by default, recorded in conversion.json); another seed changes the random IAS weights only."""
    source, expected = internvl_source
    assert cli(capsys, "convert", source, tmp_path / "again")[0] == 0
    assert digest(tmp_path / "again") == digest(expected)
    assert json.loads((expected / "conversion.json").read_text())["seed"] == 0
    assert cli(capsys, "convert", source, tmp_path / "seed7", "--seed", "7")[0] == 0
    assert json.loads((tmp_path / "seed7" / "conversion.json").read_text())["seed"] == 7

    def tensors(folder):
        found = {}
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as opened:
                found.update({name: opened.get_tensor(name) for name in opened.keys()})
        return found

    a, b = tensors(expected), tensors(tmp_path / "seed7")
    differing = sorted(name for name in a if not torch.equal(a[name], b[name]))
    assert differing and all(is_added_weight(name) for name in differing)
    assert all(torch.equal(a[name], b[name]) for name in a if not is_added_weight(name))


# ------------------------------------------------------------------------------------------------ a full disk


def test_a_full_disk_is_one_line_and_keeps_the_previous_conversion(internvl_source, tmp_path):
    """"What it must show" 3: on a 2 MiB tmpfs holding a conversion (1.3 MB), converting again over it with
    `--overwrite` runs out of space: exit 1, one line naming OUT, no temporary folder left, and OUT still the
    complete first conversion."""
    if reason := small_disk_available():
        pytest.skip(reason)
    source, expected = internvl_source
    disk = tmp_path / "disk"
    convert = f"{sys.executable} -m modeling_ase_mllm.cli convert {source} {disk / 'out'} --overwrite --seed 3"
    after = tmp_path / "after"  # the tmpfs goes with its namespace: what the run left is copied out first
    run = on_small_disk(disk, "2m", f"cp -r {expected} {disk / 'out'} && {convert}; echo rc=$?; cp -r {disk} {after}")
    status = run.stdout.strip().splitlines()[-1]
    error = [line for line in run.stderr.splitlines() if "ase-mllm convert" in line]
    assert status == "rc=1" and len(error) == 1, run.stderr[-3000:]
    assert error[0].startswith("ase-mllm convert: error: No space left on device") and str(disk / "out") in error[0]
    assert "internal error" not in run.stderr
    assert [path.name for path in after.iterdir()] == ["out"] and digest(after / "out") == digest(expected)
    print(f"\n{error[0]}")
