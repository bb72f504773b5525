"""A saved Qwen-VL-family folder loads in a fresh process that cannot import our package, offline, with
`trust_remote_code=True`, and generates the tokens it generates here (also through both pipelines)."""

import json

import pytest

from conftest import PROMPT, random_image
from modeling_ase_mllm import QWEN_VL_AUTO_MAP
from qwen_vl_fixtures import make_qwen_vl_model, qwen_vl_processor, qwen_vl_tokenizer  # noqa: F401 (fixtures)
from test_hub_roundtrip import load_in_fresh_process


@pytest.mark.slow
def test_saved_qwen_vl_folder_loads_and_generates_in_a_fresh_process(tmp_path, make_qwen_vl_model, qwen_vl_processor):
    model = make_qwen_vl_model(gate=0.5, seed=11)
    folder = tmp_path / "ase-mllm-qwen-vl-tiny"
    model.save_pretrained(folder)
    qwen_vl_processor.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == QWEN_VL_AUTO_MAP
    card = (folder / "README.md").read_text()
    assert "Qwen-VL-Chat whose vision encoder" in card and "- qwen-vl" in card and "InternVL" not in card
    processor_map = json.loads((folder / "processor_config.json").read_text())["auto_map"]
    assert processor_map == {key: QWEN_VL_AUTO_MAP[key] for key in ("AutoProcessor", "AutoImageProcessor")}

    image_path = tmp_path / "photo.png"
    random_image(300, 700, seed=3).save(image_path)
    messages = [{"role": "user", "content": [{"type": "image", "image": str(image_path)}, {"type": "text", "text": PROMPT}]}]
    inputs = qwen_vl_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert inputs["pixel_values"].shape[0] == 1  # one picture, no tiles

    result = load_in_fresh_process(folder, image_path, tmp_path)
    assert result["classes"] == [
        "AseMllmQwenVLForConditionalGeneration", "AseMllmQwenVLProcessor", "AseMllmQwenVLImageProcessor",
        "AseMllmQwenVLConfig", "AseMllmQwenVLModel", "AseMllmQwenVLImageProcessor",
    ]
    assert result["module"].startswith("transformers_modules.")
    assert result["tokens"] == expected.tolist()
    decoded = qwen_vl_processor.decode(expected, skip_special_tokens=True)
    assert result["decoded"] == decoded
    assert result["pipelines"] == {"image-text-to-text": decoded, "image-to-text": decoded}
    # Saved again from remote code: the family's modules and the InternVL family's it is built on; no model card.
    resaved = {name for name in result["resaved"] if name.endswith(".py")}
    assert {"configuration_ase_mllm_qwen_vl.py", "modeling_ase_mllm_qwen_vl.py", "configuration_ase_mllm.py",
            "modeling_ase_mllm.py", "eat_ase_mllm.py"} <= resaved <= {path.name for path in folder.glob("*.py")}
    assert "README.md" not in result["resaved"]
