"""Config round trips, presets, packaging rules and the README's main command."""

import json
import os
import subprocess
import sys

import pytest

from modeling_ase_mllm import AUTO_MAP, QWEN_VL_AUTO_MAP, AseMllmConfig
from modeling_ase_mllm.configuration_ase_mllm import CUSTOM_PIPELINES
from modeling_ase_mllm.presets import list_model_presets, load_model_preset
from modeling_ase_mllm.testing.tiny import SPECIAL_TOKENS


def test_config_round_trip_keeps_sub_configs(tmp_path):
    config = load_model_preset("tiny", vision_config={**load_model_preset("tiny").vision_config.to_dict(), "ias_layers": [1]})
    config.save_pretrained(tmp_path)
    loaded = AseMllmConfig.from_pretrained(tmp_path)
    assert loaded.vision_config.ias_layer_indices == [1]
    assert loaded.saliency_config.source == "eat_layercam" and loaded.saliency_config.grid_size == 32
    assert loaded.saliency_config.eat_config.dims == [16, 32, 64, 128]
    assert loaded.saliency_config.layercam_layer_name == "stages.2.layer_norms.3"
    assert loaded.text_config.model_type == "llama" and loaded.auto_map == AUTO_MAP
    assert loaded.to_dict() == config.to_dict()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="ias_layers"):
        AseMllmConfig(vision_config={"num_hidden_layers": 2, "ias_layers": [5]})
    with pytest.raises(ValueError, match="saliency `source`"):
        AseMllmConfig(saliency_config={"source": "eye_tracker"})
    with pytest.raises(ValueError, match="image_seq_length"):
        AseMllmConfig(image_seq_length=100)


@pytest.mark.parametrize("preset", list_model_presets())
def test_every_preset_embeds_its_image_tokens(preset):
    """An image token past the vocabulary fails the first embedding lookup of a prompt (the InternVL2-1B preset once
    had InternVL2.5-1B's ids, 151665-151667, in InternVL2-1B's vocabulary of 151655)."""
    config = load_model_preset(preset)
    assert max(config.image_special_token_ids) < config.text_config.vocab_size


def test_presets_and_tiny_token_ids(tokenizer):
    assert {"tiny", "internvl2-1b", "internvl2-2b", "internvl2-4b", "internvl2-8b"} <= set(list_model_presets())
    tiny = load_model_preset("tiny")
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
    assert (tiny.image_token_id, tiny.start_image_token_id, tiny.end_image_token_id) == (
        ids["<IMG_CONTEXT>"], ids["<img>"], ids["</img>"])
    assert tiny.text_config.eos_token_id == tokenizer.eos_token_id and tiny.text_config.pad_token_id == tokenizer.pad_token_id
    assert len(tokenizer) <= tiny.text_config.vocab_size


def test_no_top_level_configuration_or_processing_package(tmp_path):
    probe = "import importlib.util, json; print(json.dumps([importlib.util.find_spec(n) is None for n in ('configuration', 'processing')]))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # what an installed environment resolves
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [True, True]


# The package root is exactly the Hub's remote code: these modules and `__init__.py`.
# The Qwen-VL-Chat family's modules (`*_qwen_vl.py`) are built on the InternVL family's, so a folder of either family
# carries all of them.
REMOTE_CODE = ["configuration_ase_mllm.py", "configuration_ase_mllm_qwen_vl.py", "eat_ase_mllm.py",
               "image_processing_ase_mllm.py", "image_processing_ase_mllm_qwen_vl.py", "inputs_ase_mllm.py",
               "modeling_ase_mllm.py", "modeling_ase_mllm_qwen_vl.py", "packaging_ase_mllm.py",
               "processing_ase_mllm.py", "processing_ase_mllm_qwen_vl.py", "saliency_ase_mllm.py", "scoring_ase_mllm.py"]
# What remote code may import besides its sibling modules: transformers, torch, numpy and PIL; huggingface_hub, which
# configuration_ase_mllm.py still imports (`huggingface_hub.dataclasses.strict`, a dependency of transformers
# itself); and these modules of the standard library (`re`: the parameter-group matcher beside the model).
STACK = {"transformers", "torch", "numpy", "PIL", "huggingface_hub"}
STANDARD_LIBRARY = {"math", "json", "sys", "shutil", "functools", "io", "pathlib", "collections", "re", "inspect", "concurrent",
                    "dataclasses"}


def test_a_saved_folder_carries_exactly_the_root_modules_which_import_only_each_other_and_the_stack(
        tmp_path, make_model, processor, make_qwen_vl_model, qwen_vl_processor):
    import ast
    from pathlib import Path

    from modeling_ase_mllm.modeling_ase_mllm import remote_code_files

    package = Path(__file__).resolve().parent.parent / "modeling_ase_mllm"
    root = sorted(path.name for path in package.glob("*.py") if path.name != "__init__.py")
    assert root == REMOTE_CODE and [path.name for path in remote_code_files()] == root
    make_model().save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "both")
    make_model().save_pretrained(tmp_path / "both")
    make_qwen_vl_model().save_pretrained(tmp_path / "qwen-vl model")
    qwen_vl_processor.save_pretrained(tmp_path / "qwen-vl both")
    make_qwen_vl_model().save_pretrained(tmp_path / "qwen-vl both")
    for folder in ("model", "both", "qwen-vl model", "qwen-vl both"):
        saved = sorted(path.name for path in (tmp_path / folder).glob("*.py"))
        assert saved == root, folder
        assert all((tmp_path / folder / name).read_bytes() == (package / name).read_bytes() for name in saved)

    allowed = STACK | STANDARD_LIBRARY
    for name in root:
        for node in ast.walk(ast.parse((package / name).read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and f"{node.module}.py" in root, f"{name}: from {'.' * node.level}{node.module}"
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{name} imports {roots - allowed}"


def test_remote_code_entry_modules_import_every_sibling_they_need_directly():
    """transformers 5.8-5.9 copy into their module cache only the relative imports an `auto_map` module makes
    itself: a sibling reached only through another sibling is missing there, and loading fails."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "modeling_ase_mllm"

    def direct(module: str) -> set[str]:  # the pattern transformers' `get_relative_imports` matches
        text = (package / f"{module}.py").read_text(encoding="utf-8")
        return set(re.findall(r"^\s*from\s+\.(\S+)\s+import", text, flags=re.MULTILINE))

    pipelines = [task["impl"] for task in CUSTOM_PIPELINES.values()]
    for entry in {target.split(".")[0] for target in (*AUTO_MAP.values(), *QWEN_VL_AUTO_MAP.values(), *pipelines)}:
        reached, frontier = set(), {entry}
        while frontier:
            reached |= frontier
            frontier = set().union(*(direct(module) for module in frontier)) - reached
        assert reached - {entry} <= direct(entry), f"{entry}.py must import {sorted(reached - {entry} - direct(entry))} itself"


@pytest.mark.slow
def test_demo_runs_at_reduced_size_and_writes_a_report(tmp_path):
    """The README's main job, at 10 training steps: report with captions, the metric table and pictures."""
    from PIL import Image

    from modeling_ase_mllm.cli import main

    assert main(["demo", "--output-dir", str(tmp_path), "--steps", "10", "--max-new-tokens", "6"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |" in report
    assert report.count("- **ASE-MLLM (demo):**") == 3 and report.count("- **aesthetic score (EAT):** ") == 3
    assert report.count("EAT carries no trained weights") == 1  # the demo's EAT is random: said once
    pictures = sorted((tmp_path / "saliency").glob("*.png"))
    assert [p.stem for p in pictures] == ["camera", "coffee", "moon"]
    for picture in pictures:
        assert f"saliency/{picture.name}" in report
        Image.open(picture).verify()
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and 0.0 <= metrics["Bleu_1"] <= 1.0
    from modeling_ase_mllm.evaluation.metrics import format_table_row
    from modeling_ase_mllm.evaluation.spice import CORENLP_JARS, SpiceOptions

    row = format_table_row(metrics)
    assert row in report
    # The grounding control: the same critiques against another test photo's references (a derangement), and the gap.
    control = metrics["control"]
    assert control["kind"] == "shuffled" and set(control["gap"]) == set(control["metrics"])
    pairs = json.loads((tmp_path / "evaluation" / "control_pairs.json").read_text())
    assert sorted(pairs) == sorted(pairs.values()) == ["camera", "coffee", "moon"]
    assert all(image != reference for image, reference in pairs.items())
    assert f"| gap (own − shuffled) {format_table_row(control['gap'], signed=True)}" in report
    assert f"Gap: BLEU-1 {control['gap']['Bleu_1']:+.3f}, " in report
    if all((SpiceOptions().corenlp_dir / jar.name).is_file() for jar in CORENLP_JARS):  # CI: .ci/system-packages fetched them
        assert metrics["spice_backend"] == "official" and "n/a" not in row  # eleven numbers
    else:
        assert row.count("n/a") == 4 and "stanford-corenlp-3.6.0-models.jar" in metrics["unavailable"]["SPICE"]
    assert (tmp_path / "model" / "config.json").is_file()
    # The saved model carries its evaluation: the table and the Hub's model-index, one entry per metric it has.
    from huggingface_hub import ModelCard

    from modeling_ase_mllm.evaluation.vocabulary import METRIC_TABLE

    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert "| B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |" in card.text and row in card.text
    assert "| gap (own − shuffled) |" in card.text and "Grounding control: " in card.text
    assert "Protocol: trained on `train`, scored on `test`" in card.text
    assert "](saliency.png)" in card.text and (tmp_path / "model" / "saliency.png").is_file()
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in card.data.eval_results} == {
        ("image-to-text", "mini_aic", "test")}
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        metric.name: metrics[metric.key] for metric in METRIC_TABLE if metrics[metric.key] is not None}
