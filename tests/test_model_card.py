"""Model cards: valid Hub metadata, a snippet that runs offline in a fresh process, the metrics table, the picture,
and composition with a card that Trainer wrote."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard, ModelCardData

from modeling_ase_mllm.evaluation.vocabulary import COCO_METRICS, METRIC_TABLE
from modeling_ase_mllm.hub.model_card import BEGIN, write_model_card
from modeling_ase_mllm.inference.visualize import save_saliency_picture

# The keys `metrics.json` has (below, and in test_spice.py, the card is fed a metrics.json that the evaluation wrote).
METRICS = {"Bleu_1": 0.3124, "Bleu_2": 0.1501, "Bleu_3": 0.0712, "Bleu_4": 0.0333, "METEOR": 0.1187,
           "ROUGE_L": 0.2719, "CIDEr": 0.0871, "SPICE": None, "SPICE-L": None, "Precision": 0.41, "Recall": 0.37,
           "unavailable": {"SPICE": "needs the CoreNLP jars", "SPICE-L": "needs the CoreNLP jars"}, "num_images": 6,
           "pr_variant": "independent"}


def test_card_metadata_table_picture_and_trainer_card(tmp_path, make_model, processor):
    from conftest import random_image

    folder = tmp_path / "ase"
    folder.mkdir()
    trainer_card = ModelCard(f"---\n{ModelCardData(tags=['generated_from_trainer'], model_name='ase').to_yaml()}\n---\n\n"
                             "# ase\n\nThis model was trained with Trainer.\n\n## Training hyperparameters\n\n- lr: 4e-05\n")
    trainer_card.save(folder / "README.md")
    model = make_model(gate=0.5)
    model.save_pretrained(folder)  # writes our sections into Trainer's card
    processor.save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    save_saliency_picture(random_image(300, 700), folder / "saliency.png", processor, model)
    write_model_card(folder, base_model="OpenGVLab/InternVL2-8B", datasets=["pccd"], license="mit")
    write_model_card(folder)  # writing again replaces our sections instead of stacking them

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model == "OpenGVLab/InternVL2-8B" and card.data.datasets == ["pccd"] and card.data.license == "mit"
    assert {"generated_from_trainer", "ase-mllm"} <= set(card.data.tags)
    assert card.text.count(BEGIN) == 1
    assert "This model was trained with Trainer." in card.text and "- lr: 4e-05" in card.text
    assert "| B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |" in card.text
    assert "| 0.312 | 0.150 | 0.071 | 0.033 | 0.119 | 0.272 | 0.087 | n/a | n/a | 0.410 | 0.370 |" in card.text
    assert card.text.count("n/a: needs the CoreNLP jars") == 1
    assert "](saliency.png)" in card.text and "EAT" in card.text

    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert f'model_id = "{folder}"' in snippet
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    inputs_text = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Comment on this image from an aesthetic perspective."}]}],
        add_generation_prompt=True)
    from PIL import Image

    inputs = processor(images=[Image.new("RGB", (640, 480), (180, 120, 60))], text=[inputs_text], return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=40, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert run.stdout.strip() == processor.decode(expected, skip_special_tokens=True).strip()


def test_push_to_hub_uploads_our_card_merged_into_the_hub_card(tmp_path, make_model, monkeypatch):
    """`push_to_hub` saves, overwrites README.md with the Hub's (here: transformers' generic) card, then uploads.
    Only the upload itself, the network step, is replaced here: it records the README it would send."""
    from transformers.utils import hub

    sent = {}
    monkeypatch.setattr(hub.PushToHubMixin, "_upload_modified_files",
                        lambda self, working_dir, repo_id, *a, **k: sent.update(readme=(working_dir / "README.md").read_text()))
    model = make_model()
    model.save_pretrained(tmp_path)
    generic = ModelCard.from_template(ModelCardData(tags=["hub-tag"], library_name="transformers"),
                                      model_description="A generic card.")
    generic.save(tmp_path / "README.md")
    model._upload_modified_files(tmp_path, "someone/ase-mllm-test", files_timestamps={})
    card = ModelCard(sent["readme"])
    assert card.text.count(BEGIN) == 1 and 'model_id = "someone/ase-mllm-test"' in card.text
    assert "A generic card." in card.text and {"hub-tag", "ase-mllm"} <= set(card.data.tags)


@pytest.mark.slow
def test_card_holds_all_eleven_columns_and_the_model_index_of_the_metrics_json_evaluate_writes(saved_model, tmp_path):
    """`ase-mllm evaluate --update-model-card`: the metrics.json it writes reaches the model's card as the Table I row
    (all eleven columns; the four SPICE ones n/a, with the reason once) and as one `model-index` entry per metric."""
    from modeling_ase_mllm.cli import main

    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    argv = ["evaluate", "--model", str(model), "--dataset", "mini_aic", "--limit", "2", "--max-new-tokens", "4",
            "--max-tiles", "1", "--output-dir", str(tmp_path / "eval"), "--no-spice", "--update-model-card"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"], metrics["num_images"]) == ("mini_aic", "test", 2)

    card = ModelCard.load(model / "README.md")
    lines = card.text.splitlines()
    header = lines.index("| B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |")
    cells = [cell.strip() for cell in lines[header + 2].strip("|").split("|")]
    assert cells == [f"{metrics[key]:.3f}" for key in COCO_METRICS] + ["n/a"] * 4
    assert sum(line.startswith("n/a") for line in lines) == 1 and "n/a: not computed (--no-spice)" in lines
    results = card.data.eval_results
    assert [(r.metric_name, r.metric_type, r.metric_value) for r in results] == [
        ("BLEU-1", "bleu", metrics["Bleu_1"]), ("BLEU-2", "bleu", metrics["Bleu_2"]), ("BLEU-3", "bleu", metrics["Bleu_3"]),
        ("BLEU-4", "bleu", metrics["Bleu_4"]), ("METEOR", "meteor", metrics["METEOR"]),
        ("ROUGE-L", "rouge", metrics["ROUGE_L"]), ("CIDEr", "cider", metrics["CIDEr"])]
    assert {(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split) for r in results} == {
        ("image-to-text", "mini_aic", "mini_aic", "test")}
    assert card.data.model_name == "model" and card.text.count(BEGIN) == 1

    # Scoring the same split again replaces its entries; the table follows the newest metrics.
    rescored = {**metrics, "Bleu_1": 0.5, "unavailable": {}, **{metric.key: 0.25 for metric in METRIC_TABLE[7:]}}
    write_model_card(model, metrics=rescored)
    card = ModelCard.load(model / "README.md")
    assert len(card.data.eval_results) == 11 and card.data.eval_results[0].metric_value == 0.5
    assert "| 0.500 |" in card.text and "n/a" not in card.text
