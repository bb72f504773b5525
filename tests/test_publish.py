"""`ase-mllm push --dry-run` lists exactly what huggingface_hub would upload, with the auto_map."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_ase_mllm.configuration_ase_mllm import AUTO_MAP
from modeling_ase_mllm.modeling_ase_mllm import remote_code_files

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_lists_the_folder_and_auto_map(tmp_path, make_model, processor):
    folder = tmp_path / "ase"
    make_model().save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    run = subprocess.run([sys.executable, "-m", "modeling_ase_mllm.cli", "push", str(folder), "--repo-id",
                          "someone/ase-mllm-test", "--dry-run"], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"})
    plan = json.loads(run.stdout)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    expected = [f for f in on_disk if not f.startswith(("checkpoint-10/", ".git/"))]
    assert plan["files"] == expected
    assert {path.name for path in remote_code_files()} <= set(plan["files"]) and "README.md" in plan["files"]
    assert any(f.endswith(".safetensors") for f in plan["files"]) and "processor_config.json" in plan["files"]
    assert plan["auto_map"]["config.json"] == AUTO_MAP
    assert set(plan["auto_map"]["processor_config.json"]) == {"AutoProcessor", "AutoImageProcessor"}


def test_push_refuses_a_folder_without_remote_code(tmp_path, make_model, processor):
    from modeling_ase_mllm.hub.publish import push_folder

    folder = tmp_path / "ase"
    make_model().save_pretrained(folder)
    (folder / "modeling_ase_mllm.py").unlink()
    with pytest.raises(ValueError, match=r"missing remote-code file modeling_ase_mllm\.py.*processor_config\.json"):
        push_folder(folder, "someone/x", dry_run=True)


def test_push_is_huggingface_hubs_upload_folder():
    """Nothing hand-rolled: the only network calls are HfApi.create_repo and HfApi.upload_folder."""
    import ast
    import inspect

    from modeling_ase_mllm.hub import publish

    tree = ast.parse(inspect.getsource(publish.push_folder))
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert {"create_repo", "upload_folder"} <= calls
    assert not {"post", "put", "request", "urlopen", "preupload_lfs_files", "create_commit"} & calls
