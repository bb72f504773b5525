"""ase-mllm's cache folder has one owner (`modeling_ase_mllm.utils.cache`): every tool that keeps files there, and
.ci/system-packages, which fills it before any virtualenv exists, get the same folder from it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from compat_fixtures import cache_root as compat_envs
from modeling_ase_mllm.cli.train import help_cache_file
from modeling_ase_mllm.evaluation.spice import cache_root as spice_cache
from modeling_ase_mllm.utils.cache import cache_dir


REPO = Path(__file__).resolve().parent.parent
OWNER = REPO / "modeling_ase_mllm" / "utils" / "cache.py"


def consumers() -> dict[str, Path]:
    return {"spice": spice_cache(), "help": help_cache_file().parent, "compat-envs": compat_envs()}


def test_every_consumer_follows_xdg_cache_home_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert consumers() == {name: tmp_path / "xdg" / "ase_mllm" / name for name in ("spice", "help", "compat-envs")}
    # The XDG rule: unset and empty both mean ~/.cache (the lmms-eval task once read "" as the working folder).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", None):
        if value is None:
            monkeypatch.delenv("XDG_CACHE_HOME")
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert cache_dir() == tmp_path / "home" / ".cache" / "ase_mllm"
        assert consumers() == {name: cache_dir(name) for name in ("spice", "help", "compat-envs")}


def test_the_system_packages_script_asks_the_owner_with_the_system_python(tmp_path):
    """The line of .ci/system-packages that names the SPICE folder, run by itself in bash with no virtualenv on PATH."""
    line = next(line for line in (REPO / ".ci" / "system-packages").read_text().splitlines()
                if line.startswith("spice_cache="))
    # The probe's folder stands in for .ci/: the line finds the owner relative to "$0".
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "probe.sh").write_text(f'set -euo pipefail\n{line}\necho "$spice_cache"\n')
    (tmp_path / "modeling_ase_mllm" / "utils").mkdir(parents=True)
    (tmp_path / "modeling_ase_mllm" / "utils" / "cache.py").write_text(OWNER.read_text())
    path = ":".join(p for p in os.environ["PATH"].split(":") if not p.startswith(sys.prefix))
    for xdg in (str(tmp_path / "xdg"), ""):
        env = {"PATH": path, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": xdg}
        out = subprocess.run(["bash", str(tmp_path / "ci" / "probe.sh")], env=env, capture_output=True, text=True,
                             check=True)
        expected = (Path(xdg) if xdg else tmp_path / "home" / ".cache") / "ase_mllm" / "spice"
        assert out.stdout.strip() == str(expected)


def reads_the_cache_root(node: ast.AST) -> bool:
    """`os.environ.get("XDG_CACHE_HOME")`, `os.getenv("XDG_CACHE_HOME")`, or the default's `".cache"` component.
    Setting the variable (tests, benches) and messages that name the folder (`~/.cache/ase_mllm/...`) are not reads."""
    if isinstance(node, ast.Constant):
        return node.value == ".cache"
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv")
            and bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "XDG_CACHE_HOME")


def test_no_other_module_works_out_the_cache_root():
    """Only the owner reads `XDG_CACHE_HOME` or spells the default: anyone else who needs the folder asks it."""
    readers = []
    for path in sorted([*REPO.glob("modeling_ase_mllm/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("bench/*.py"),
                        *REPO.glob("examples/*.py")]):
        if path == Path(__file__).resolve():  # the checks above spell the default to compare with it
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        readers += [f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree) if reads_the_cache_root(node)]
    assert readers == [f"{OWNER.relative_to(REPO)}:15"] * 2
