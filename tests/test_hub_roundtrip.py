"""A saved folder of either family loads in a fresh process that cannot import our package, offline, with
trust_remote_code, and generates the tokens it generates here (also through both pipelines)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import PROMPT, chat_inputs, random_image
from families import PHOTO_SIZE
from modeling_ase_mllm.hub.model_card import BASE_MODELS
from modeling_ase_mllm.modeling_ase_mllm import remote_code_files


# How a fresh process's script starts: our package cannot be imported there, only a saved folder's remote code runs.
BLOCK_OUR_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    class BlockOurPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_ase_mllm" or name.startswith("modeling_ase_mllm."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockOurPackage())
    """
)

FRESH_PROCESS = BLOCK_OUR_PACKAGE + textwrap.dedent(
    """
    try:
        import modeling_ase_mllm  # noqa: F401
        raise SystemExit("our package was importable")
    except ImportError:
        pass

    import PIL.Image
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

    folder, image_path, prompt, resaved = sys.argv[1:5]
    image = PIL.Image.open(image_path)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    generation = {"max_new_tokens": 8, "do_sample": False}
    texts = {}
    for task in ("image-text-to-text", "image-to-text"):
        pipe = pipeline(task, model=folder, trust_remote_code=True)
        texts[task] = pipe(text=messages, generate_kwargs=generation, return_full_text=False)[0]["generated_text"]
    model.save_pretrained(resaved)  # as remote code: every module again, and no model card (that is the package's)
    print("RESULT" + json.dumps({
        "classes": [type(model).__name__, type(processor).__name__, type(processor.image_processor).__name__,
                    type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__,
                    type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__,
                    type(AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)).__name__],
        "module": type(model).__module__,
        "tokens": tokens.tolist(),
        "decoded": processor.decode(tokens, skip_special_tokens=True),
        "pipelines": texts,
        "resaved": sorted(os.listdir(resaved)),
    }))
    """
)


def load_in_fresh_process(folder, image_path, tmp_path) -> dict:
    """`FRESH_PROCESS` on a saved folder, offline, without our package: what it loaded and generated, and what its
    model, saved again from remote code, wrote in `tmp_path / "resaved"`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(folder), str(image_path), PROMPT, str(tmp_path / "resaved")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("RESULT", 1)[1])


@pytest.mark.slow
def test_saved_folder_loads_and_generates_in_a_fresh_process(tmp_path, family):
    model = family.make_model(gate=0.5, seed=11)
    folder = tmp_path / "ase-mllm-tiny"
    model.save_pretrained(folder)
    family.processor.save_pretrained(folder)

    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == family.auto_map
    processor_map = json.loads((folder / "processor_config.json").read_text())["auto_map"]
    assert processor_map == {key: family.auto_map[key] for key in ("AutoProcessor", "AutoImageProcessor")}
    for module in {entry.split(".")[0] for entry in family.auto_map.values()}:
        assert (folder / f"{module}.py").is_file(), module
    # The model card names the family's base and Hub tag, and no other family's.
    card = (folder / "README.md").read_text()
    base, _, tag = BASE_MODELS[model.config.model_type]
    assert f"{base} whose vision encoder" in card and f"\n- {tag}\n" in card
    assert not [other for other in BASE_MODELS.values() if other[2] != tag and other[2] in card.lower()]

    image_path = tmp_path / "photo.png"
    random_image(*PHOTO_SIZE, seed=3).save(image_path)
    inputs = chat_inputs(family.processor, str(image_path))
    expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert inputs["pixel_values"].shape[0] == family.photo_map_shape[0]  # InternVL: 5x2 tiles + thumbnail; Qwen-VL: 1

    result = load_in_fresh_process(folder, image_path, tmp_path)
    # The classes `auto_map` names, and they are the ones that saved the folder here.
    classes = family.classes
    assert result["classes"] == [classes[auto] for auto in (
        "AutoModelForImageTextToText", "AutoProcessor", "AutoImageProcessor", "AutoConfig", "AutoModel",
        "AutoImageProcessor")]
    assert result["classes"][:5] == [type(model).__name__, type(family.processor).__name__,
                                     type(family.processor.image_processor).__name__, type(model.config).__name__,
                                     type(model.model).__name__]
    assert result["module"].startswith("transformers_modules.")
    assert result["tokens"] == expected.tolist()
    decoded = family.processor.decode(expected, skip_special_tokens=True)
    assert result["decoded"] == decoded
    assert result["pipelines"] == {"image-text-to-text": decoded, "image-to-text": decoded}
    # Saved from remote code: the modules transformers loaded with the model (the family's, and the InternVL family's
    # the Qwen-VL family is built on), and no model card (that is the installed package's, through SAVE_HOOKS, which is
    # empty in remote code).
    modules = {path.name for path in folder.glob("*.py")}
    resaved = {name for name in result["resaved"] if name.endswith(".py")}
    loaded_with_the_model = {f"{family.auto_map[auto].split('.')[0]}.py" for auto in ("AutoConfig", "AutoModel")}
    assert loaded_with_the_model | {"configuration_ase_mllm.py", "eat_ase_mllm.py", "saliency_ase_mllm.py",
                                    "modeling_ase_mllm.py"} <= resaved
    assert resaved <= modules and modules == {path.name for path in remote_code_files()}
    assert "README.md" not in result["resaved"]


def test_save_load_roundtrip_in_process(tmp_path, make_model, processor, two_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = make_model(gate=0.5, seed=5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__module__ == "modeling_ase_mllm.modeling_ase_mllm"  # the installed classes, no remote code
    text = ["<image>\n" + PROMPT] * 2
    a = processor(images=two_images, text=text, return_tensors="pt", padding=True)
    b = loaded_processor(images=two_images, text=text, return_tensors="pt", padding=True)
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    with torch.no_grad():
        assert torch.equal(model(**a).logits, loaded(**b).logits)
