"""The Hub folder across transformers releases, and the package's dependency ranges at both ends.

The matrix saves a tiny checkpoint of each model family (InternVL2, Qwen-VL-Chat) with the development stack, then loads it in other transformers releases with
our package not importable and the Hub offline (`compat_fixtures`), and compares with the development stack's own
run of the same script: greedy tokens, logits, `pipeline("image-text-to-text")` text. `python bench/compat_matrix.py`
measures every row of the table with the same code.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from compat_fixtures import (
    FAMILY_CLASSES,
    SENTENCEPIECE_EXTRAS,
    FLOOR_PACKAGES,
    MIDDLE,
    NEWEST,
    OLDEST,
    REPO,
    UNSUPPORTED,
    compare,
    declared_lower_bounds,
    declared_requirements,
    floor_env,
    linked_venv,
    resolved_extra,
    run_child,
    save_checkpoint,
    sentencepiece_env,
    setup_arguments,
    transformers_env,
)
from modeling_ase_mllm.configuration_ase_mllm import (
    PYTHON_REQUIREMENT,
    TORCH_REQUIREMENT,
    TRANSFORMERS_REQUIREMENT,
    check_transformers_version,
)


LOGIT_TOLERANCE = 1e-5


def unsupported_message(release: str) -> str:
    return (f"ImportError: ASE-MLLM needs transformers {TRANSFORMERS_REQUIREMENT} but transformers {release} is "
            f'installed; upgrade it with: pip install "transformers{TRANSFORMERS_REQUIREMENT}"')


@pytest.fixture(scope="module", params=sorted(FAMILY_CLASSES))
def reference(request, tmp_path_factory):
    """A model family's checkpoint, its photo, the development stack's run of the check on it (remote code only),
    and the family."""
    folder = tmp_path_factory.mktemp(f"compat-{request.param}")
    model_folder, image = save_checkpoint(folder, request.param)
    result = run_child(Path(sys.executable), model_folder, image, folder / "reference")
    assert "error" not in result, result.get("traceback")
    return model_folder, image, result, request.param


@pytest.mark.slow
@pytest.mark.parametrize("release", [OLDEST, MIDDLE, NEWEST])
def test_hub_folder_loads_and_generates_identically(release, reference, tmp_path):
    model_folder, image, expected, family = reference
    train = release == OLDEST  # three Trainer steps through the remote code, at the oldest supported release
    result = run_child(transformers_env(release, build=False).python, model_folder, image, tmp_path, train=train)
    assert "error" not in result, result.get("traceback")
    assert result["transformers"] == release
    assert result["classes"] == FAMILY_CLASSES[family]
    assert result["module"].startswith("transformers_modules.")  # the folder's code, not an installed package
    outcome = compare(result, expected)
    assert outcome["tokens_equal"], (result["tokens"], expected["tokens"])
    assert outcome["max_logit_diff"] <= LOGIT_TOLERANCE
    assert outcome["pipeline_equal"], (result["pipeline_text"], expected["pipeline_text"])
    if train:
        losses = result["train"]["losses"]
        assert len(losses) == 3 and result["train"]["losses_finite"]
        assert losses[-1] < losses[0], losses
        assert result["train"]["changed_tensors"] == result["train"]["trainable_tensors"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("release", UNSUPPORTED)
def test_releases_below_the_minimum_get_one_clear_error(release, reference, tmp_path):
    model_folder, image, _, _ = reference
    result = run_child(transformers_env(release, build=False).python, model_folder, image, tmp_path)
    assert result["error"] == unsupported_message(release)
    # Raised by the first module AutoConfig imports, before any import of a newer transformers symbol fails.
    assert result["traceback"].strip().splitlines()[-1] == unsupported_message(release)
    assert "configuration_ase_mllm.py" in result["traceback"] and "During handling" not in result["traceback"]


# transformers 4's slow `LlamaTokenizer` (sentencepiece), the class OpenGVLab's code loads (`use_fast=False`); 5.0 removed it.
SLOW_LLAMA_RELEASE = next(release for release in UNSUPPORTED if release.startswith("4."))
SLOW_LLAMA_CHILD = """
import json, sys
from transformers import AutoTokenizer
result = {}
for folder in sys.argv[1:]:
    texts = json.load(open(folder + "/texts.json"))
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
    result[folder] = {"class": type(tokenizer).__name__, "ids": [tokenizer(text)["input_ids"] for text in texts]}
print(json.dumps(result))
"""


@pytest.mark.slow
def test_converted_llama_tokenizers_encode_as_transformers_4_slow_llama_tokenizer(tmp_path):
    """"What it must show" 4 against the real thing: three Llama `tokenizer.model` folders (Phi-3's `legacy: false`,
    its appended tokens with `rstrip`, and no `legacy` field, transformers 4's `True`) encoded by transformers 4.57's
    slow `LlamaTokenizer` in its own environment, by the converted tokenizer and by `SlowLlamaEncoding`: the same ids
    on every text of the corpus."""
    from transformers import AutoTokenizer

    from modeling_ase_mllm.convert.tokenizer import load_source_tokenizer, native_tokenizer
    from opengvlab_fixtures import parity_corpus, write_llama_tokenizer

    folders, ours = [], {}
    for name, legacy, rstrip in (("phi3", False, False), ("phi3-rstrip", False, True), ("legacy-default", None, False)):
        folder = tmp_path / name
        added = write_llama_tokenizer(folder, legacy=legacy, rstrip=rstrip)
        texts = parity_corpus(list(added))
        (folder / "texts.json").write_text(json.dumps(texts))
        tokenizer, reference = native_tokenizer(load_source_tokenizer(folder), folder)
        tokenizer.save_pretrained(tmp_path / f"{name}-converted")
        converted = AutoTokenizer.from_pretrained(tmp_path / f"{name}-converted")
        ours[str(folder)] = (texts, [converted(text)["input_ids"] for text in texts],
                             [reference(text)["input_ids"] for text in texts])
        folders.append(str(folder))
    python = transformers_env(SLOW_LLAMA_RELEASE, build=False).python
    run = subprocess.run([str(python), "-c", SLOW_LLAMA_CHILD, *folders], capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    slow = json.loads(run.stdout.strip().splitlines()[-1])
    for folder in folders:
        texts, converted, reference = ours[folder]
        assert slow[folder]["class"] == "LlamaTokenizer"
        differing = [text for text, a, b in zip(texts, slow[folder]["ids"], converted) if a != b]
        print(f"\n{Path(folder).name}: {len(texts)} texts; converted ≠ transformers {SLOW_LLAMA_RELEASE} slow "
              f"LlamaTokenizer on {len(differing)}")
        assert not differing, differing[:5]
        assert slow[folder]["ids"] == reference


SENTENCEPIECE_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import google.protobuf, sentencepiece
from modeling_ase_mllm.convert.tokenizer import load_source_tokenizer, native_tokenizer
texts = json.loads(sys.argv[1])
result = {"versions": [sentencepiece.__version__, google.protobuf.__version__]}
for folder in sys.argv[2:]:
    tokenizer, _ = native_tokenizer(load_source_tokenizer(Path(folder)), Path(folder))
    result[folder] = [tokenizer(text)["input_ids"] for text in texts]
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("extra", SENTENCEPIECE_EXTRAS)
def test_the_declared_ranges_install_a_sentencepiece_that_reads_tokenizers(extra, tmp_path):
    """setup.py's ranges alone (`pip install ".[extra]"` without constraints.txt, resolved by `compat_fixtures`)
    pick a sentencepiece and protobuf under which a Llama `tokenizer.model` and InternLM2's remote tokenizer are
    read and rebuilt, encoding as with the pinned stack."""
    from modeling_ase_mllm.convert.tokenizer import load_source_tokenizer, native_tokenizer
    from opengvlab_fixtures import tokenizer_corpus, write_internlm2_tokenizer, write_llama_tokenizer

    picked = resolved_extra(extra, build=False)
    env = sentencepiece_env(extra, build=False)
    write_llama_tokenizer(tmp_path / "llama")
    write_internlm2_tokenizer(tmp_path / "internlm2")
    folders = [str(tmp_path / "llama"), str(tmp_path / "internlm2")]
    texts = ["  Warm light <|user|> x", *tokenizer_corpus()[:20]]
    run = subprocess.run([str(env.python), "-c", SENTENCEPIECE_CHILD, json.dumps(texts), *folders],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["versions"] == [picked["sentencepiece"], picked["protobuf"]]
    print(f"\nase-mllm[{extra}] without constraints: sentencepiece {picked['sentencepiece']}, protobuf "
          f"{picked['protobuf']}: both tokenizers read")
    for folder in folders:
        tokenizer, _ = native_tokenizer(load_source_tokenizer(Path(folder)), Path(folder))
        assert result[folder] == [tokenizer(text)["input_ids"] for text in texts], folder


def test_the_declared_ranges_exclude_the_sentencepiece_protobuf_pair_that_reads_nothing():
    """sentencepiece 0.2.3 with a protobuf below 7.36.1 (what lmms-eval's wandb holds) fails on every
    `tokenizer.model` (`Detected incompatible Protobuf Gencode/Runtime versions`): no extra may admit it."""
    arguments = setup_arguments()
    for extra, requirements in arguments["extras_require"].items():
        ranges = {Requirement(text).name: Requirement(text).specifier
                  for text in arguments["install_requires"] + requirements}
        if "sentencepiece" in ranges:  # an undeclared protobuf is any protobuf
            assert not (ranges["sentencepiece"].contains("0.2.3")
                        and ranges.get("protobuf", SpecifierSet()).contains("6.33.6")), extra


@pytest.mark.parametrize(("installed", "supported"), [
    ("5.4.0", True), ("5.25.0", True), ("5.30.0.dev0", True), ("5.3.0", False), ("5.0.0", False), ("4.57.6", False),
])
def test_version_check(installed, supported):
    if supported:
        check_transformers_version(installed)
    else:
        with pytest.raises(ImportError) as error:
            check_transformers_version(installed)
        assert f"ImportError: {error.value}" == unsupported_message(installed)


@pytest.mark.slow
def test_package_works_at_the_declared_lower_bounds(tmp_path):
    """The fast training tests (Trainer, TRL's SFTTrainer, PEFT LoRA, datasets, accelerate configs) pass in an
    environment holding exactly the lowest versions setup.py allows."""
    bounds = declared_lower_bounds(FLOOR_PACKAGES)
    assert set(bounds) == set(FLOOR_PACKAGES)
    env = floor_env(build=False)
    probe = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    seen = subprocess.run([str(env.python), "-c", probe, *FLOOR_PACKAGES], capture_output=True, text=True, check=True)
    assert {name: Version(v) for name, v in json.loads(seen.stdout).items()} == {n: Version(v) for n, v in bounds.items()}
    run = subprocess.run(
        [str(env.python), "-m", "pytest", "tests/test_training.py", "-m", "not slow", "-q", "-p", "no:cacheprovider",
         "-k", "not hub_folder"],  # that one repeats, in a subprocess, the SFT training `train()` does here
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", run.stdout) and " failed" not in run.stdout


def fake_torch_env(root: Path, torch_version: str) -> Path:
    """A virtualenv that sees the development environment but whose own metadata says torch `torch_version`
    (metadata only: pip's resolver reads nothing else, and nothing here imports it)."""
    python, site = linked_venv(root)
    metadata = site / f"torch-{torch_version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {torch_version}\n", encoding="utf-8")
    (metadata / "INSTALLER").write_text("pip\n", encoding="utf-8")
    (metadata / "RECORD").write_text("", encoding="utf-8")
    return python


# Every extra but `lmms` and `report`: lmms-eval and pytorch-grad-cam need torchvision, whose 0.28 is built for
# exactly torch 2.13, so those optional extras alone ask for one torch (the pinned one; constraints.txt has both).
EXTRAS_BESIDE_TORCH = ",".join(sorted(set(setup_arguments()["extras_require"]) - {"lmms", "report", "dev"}))


def dry_run_install(python: Path, report: Path, *extra: str, extras: str = "dev") -> subprocess.CompletedProcess:
    """`pip install --dry-run --report` of this checkout with `extras`, without any index: what pip would change."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "install", "--dry-run",
         "--no-index", "--no-build-isolation", "--report", str(report), *extra, "-e", f"{REPO}[{extras}]"],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_installing_keeps_an_in_range_torch_and_refuses_an_old_one(tmp_path):
    python = fake_torch_env(tmp_path / "torch27", "2.7.1")
    run = dry_run_install(python, tmp_path / "report.json", extras=EXTRAS_BESIDE_TORCH)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [item["metadata"]["name"] for item in report["install"]] == ["ase-mllm"]  # no torch, nothing else
    # The same check fails when the installed torch is below the range: it is the range that keeps torch.
    old = dry_run_install(fake_torch_env(tmp_path / "torch25", "2.5.1"), tmp_path / "old.json", extras=EXTRAS_BESIDE_TORCH)
    assert old.returncode != 0 and re.search(r"torch>=2\.6|torch.*2\.5\.1", old.stderr + old.stdout)


@pytest.mark.slow
def test_constraints_pin_exactly_the_development_environment(tmp_path):
    """With `-c constraints.txt`, as the README's commands install, pip changes nothing here (so CI gets this stack)."""
    run = dry_run_install(Path(sys.executable), tmp_path / "report.json", "-c", str(REPO / "constraints.txt"))
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [item["metadata"]["name"] for item in report["install"]] == ["ase-mllm"]


def test_exact_versions_live_only_in_constraints_txt():
    requirements = declared_requirements()
    assert {r.name for r in requirements} >= {"torch", "transformers", "trl", "peft", "datasets", "accelerate"}
    for requirement in requirements:
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and not operators & {"==", "===", "~="}, str(requirement)
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = pinned.strip()
    assert pins["torch"] == "2.13.0"
    for requirement in requirements:  # every declared dependency is pinned for CI, inside its declared range
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), (str(requirement), pinned)
    for path in [REPO / "README.md", REPO / "DEVELOPERS.md", *REPO.glob("docs/*.md"), *REPO.glob(".ci/*")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "pip install" in line:
                assert not re.search(r"[A-Za-z0-9_.\]-]==\d", line), f"{path.name}: {line}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        command = readme.split(marker, 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
        assert command.startswith("bash .ci/system-packages ") and "-c constraints.txt" in command, command


def test_readme_and_model_card_state_the_supported_ranges(tmp_path):
    from modeling_ase_mllm.hub.model_card import write_model_card
    from modeling_ase_mllm.testing.tiny import tiny_config

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    folder_ranges = (f"transformers `{TRANSFORMERS_REQUIREMENT}`", f"torch `{TORCH_REQUIREMENT}`", f"Python `{PYTHON_REQUIREMENT}`")
    arguments = setup_arguments()
    declared = {Requirement(text).name: text for text in arguments["install_requires"] + arguments["extras_require"]["train"]}
    package_ranges = (f"Python `{arguments['python_requires']}`", f"torch `{TORCH_REQUIREMENT}`",
                      *(f"`{declared[name]}`" for name in FLOOR_PACKAGES))
    for fact in folder_ranges + package_ranges:
        assert fact in readme, fact
    assert f"pip install \"transformers{TRANSFORMERS_REQUIREMENT}\"" in readme
    card = write_model_card(tmp_path, config=tiny_config()).read_text(encoding="utf-8")
    for fact in (f"transformers{TRANSFORMERS_REQUIREMENT}", f"torch{TORCH_REQUIREMENT}", f"Python {PYTHON_REQUIREMENT}"):
        assert fact in card, fact
