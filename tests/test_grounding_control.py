"""The grounding control of the caption metrics (`ase-mllm evaluate --control shuffled`): the same critiques scored
against other photos' references. The tiny-model run through the CLI is in `test_aic_layouts.py`
(`test_flow_rpcd_year_naming_with_the_grounding_control`)."""

import json

import pytest

from modeling_ase_mllm.evaluation.control import derangement, shuffled_pairs
from modeling_ase_mllm.evaluation.metrics import format_table, score_predictions, score_with_control
from modeling_ase_mllm.evaluation.vocabulary import METRICS


def test_derangement_moves_every_index_and_is_reproducible():
    for n in (2, 3, 5, 17, 200):
        for seed in range(5):
            order = derangement(n, seed)
            assert sorted(order) == list(range(n)) and all(i != value for i, value in enumerate(order))
            assert order == derangement(n, seed)
    assert derangement(50, 0) != derangement(50, 1)
    pairs = shuffled_pairs(["a", "b", "c", "d"], 3)
    assert sorted(pairs) == sorted(pairs.values()) == ["a", "b", "c", "d"]
    assert all(image != reference for image, reference in pairs.items())
    with pytest.raises(ValueError, match="the shuffled control needs at least 2 images, got 1"):
        derangement(1, 0)


REFERENCES = {
    "p1": ["warm light on the water and a calm sky", "the horizon is level"],
    "p2": ["the portrait is sharp but the background is busy"],
    "p3": ["strong leading lines draw the eye to the door", "nice black and white tones", "crop the left edge"],
    "p4": ["the colours are muted and the subject is small in the frame"],
    "p5": ["lovely bokeh behind the flower"],
}


def test_a_constant_critique_has_a_gap_of_exactly_zero(tmp_path):
    """A predictor that ignores the image writes the same critique for every photo: moving it to another photo changes
    nothing, so its gap is exactly 0 for BLEU, METEOR, ROUGE-L and CIDEr."""
    constant = {image_id: "nice light and a good composition, the colours work well" for image_id in REFERENCES}
    metrics = score_with_control(constant, REFERENCES, "shuffled", 7, tmp_path, spice=False)
    gap = metrics["control"]["gap"]
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert gap[key] == 0.0 and metrics[key] == metrics["control"]["metrics"][key], key
    assert metrics["CIDEr"] > 0 and metrics["ROUGE_L"] > 0  # not zero for want of overlap
    assert set(gap) == set(METRICS) and gap["SPICE"] is None
    pairs = json.loads((tmp_path / "control_pairs.json").read_text())
    assert all(image != reference for image, reference in pairs.items()) and sorted(pairs) == sorted(REFERENCES)


def test_a_grounded_predictor_loses_on_other_photos_and_the_table_shows_both_ways(tmp_path, capsys):
    """`ase-mllm evaluate --predictions ... --control shuffled`: critiques that echo their own photo's references score
    higher than against another photo's, a positive gap; the true numbers are those of `score_predictions` alone."""
    from modeling_ase_mllm.cli import main

    grounded = {image_id: refs[0] for image_id, refs in REFERENCES.items()}
    (tmp_path / "predictions.jsonl").write_text(
        "".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in grounded.items()))
    (tmp_path / "references.json").write_text(json.dumps(REFERENCES))
    assert main(["evaluate", "--predictions", str(tmp_path / "predictions.jsonl"), "--references",
                 str(tmp_path / "references.json"), "--output-dir", str(tmp_path / "out"), "--no-spice",
                 "--control", "shuffled", "--control-seed", "3"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    alone = score_predictions(grounded, REFERENCES, spice=False)
    assert {key: metrics[key] for key in METRICS} == {key: alone[key] for key in METRICS}
    assert metrics["control"]["seed"] == 3
    for key in ("Bleu_1", "METEOR", "ROUGE_L", "CIDEr"):
        assert metrics["control"]["gap"][key] > 0.3, key
    pairs = json.loads((tmp_path / "out" / "control_pairs.json").read_text())
    assert pairs == shuffled_pairs(list(REFERENCES), 3)
    table = (tmp_path / "out" / "metrics.md").read_text().splitlines()
    assert table == format_table(metrics).splitlines() and table[0] == (
        "| references | B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |")
    assert table[2].startswith(f"| own photo's (Table I) | {metrics['Bleu_1']:.3f} |")
    assert table[3].startswith("| another photo's (shuffled, seed 3) | ")
    assert table[4].startswith(f"| gap (own − shuffled) | +{metrics['control']['gap']['Bleu_1']:.3f} |")
    assert table[4].endswith("| n/a | n/a | n/a | n/a |")
    assert "| gap (own − shuffled) |" in capsys.readouterr().out
