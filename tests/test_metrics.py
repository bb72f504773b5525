"""The eleven AIC metrics: pycocoevalcap's numbers exactly, SPICE-family arithmetic, files, bad input.

Official SPICE itself (against pycocoevalcap's `Spice`, the jar download, failures) is tested in test_spice.py."""

import json
import math

import pytest

from modeling_ase_mllm.evaluation.metrics import (
    EVALUATE_MODULE_PATH, MetricInputError, format_table, score_predictions, score_predictions_file,
)
from modeling_ase_mllm.evaluation.vocabulary import METRIC_TABLE
from modeling_ase_mllm.evaluation.spice import CORENLP_JARS, PairScore, SpiceOptions, aggregate_spice, compile_runner, spice_entries

# Our own sentences: critique style, punctuation, brackets, camera settings, clitics.
REFERENCES = {
    "a": ["The warm light falls softly on the face; lovely portrait.", "Nice (soft) window light, but crop tighter!"],
    "b": ["The horizon is tilted -- straighten it.", "Strong leading lines, shot at f/2.8 and 1/250s."],
    "c": ["I don't like the harsh shadows under the eyes.", "Colors are muted; try more contrast."],
}
PREDICTIONS = {
    "a": "Soft warm light on the face, a lovely portrait.",
    "b": "The horizon is tilted; straighten it at f/2.8.",
    "c": "Harsh shadows (under the eyes) don't help.",
}


def pycocoevalcap_directly(predictions, references, meteor):
    """The reference computation: pycocoevalcap's own tokenizer and scorers, called here without our code."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in predictions.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        **{f"Bleu_{n}": bleu[n - 1] for n in range(1, 5)},
        "METEOR": meteor.compute_score(gts, res)[0],
        "ROUGE_L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


CASES = {
    "three images": (PREDICTIONS, REFERENCES),
    "one image (CIDEr is 0)": ({"a": PREDICTIONS["a"]}, {"a": REFERENCES["a"]}),
    "no 4-gram match": ({"x": "bright colors here", "y": "sharp focus there"},
                        {"x": ["the colors are bright and bold"], "y": ["focus is sharp on the subject"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_coco_metrics_equal_pycocoevalcap(case, meteor):
    predictions, references = CASES[case]
    ours = score_predictions(predictions, references, spice=False, meteor=meteor)
    expected = pycocoevalcap_directly(predictions, references, meteor)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    if case.startswith("one image"):
        assert ours["CIDEr"] == 0.0
    if case == "no 4-gram match":
        assert ours["Bleu_4"] < 1e-6
    assert ours["num_images"] == len(predictions)


def test_ptb_tokenizer_handles_punctuation_brackets_and_camera_settings():
    from modeling_ase_mllm.evaluation.metrics import ptb_tokenize

    tokens = ptb_tokenize({"b": ["Nice (soft) light at f/2.8; I don't mind!"]})["b"][0].split()
    assert tokens == ["nice", "-lrb-", "soft", "-rrb-", "light", "at", "f/2", ".8", "i", "do", "n't", "mind"]


def test_spice_family_arithmetic_on_recorded_pair_scores():
    scores = {
        "all|1": PairScore(0.30, 0.40, 0.35), "ref0|1": PairScore(0.50, 0.10, 0.2), "ref1|1": PairScore(0.20, 0.60, 0.5),
        "all|2": PairScore(0.10, 0.20, 0.15), "ref0|2": PairScore(0.40, 0.40, 0.4),
        "all|3": PairScore(math.nan, math.nan, math.nan), "ref0|3": PairScore(math.nan, math.nan, math.nan),
    }
    independent = aggregate_spice(scores, ["1", "2", "3"], "independent")
    # image 3 has no tuples at all (NaN), so it is skipped, as SPICE's own macro average does
    assert independent["SPICE"] == pytest.approx((0.35 + 0.15) / 2)
    assert independent["SPICE-L"] == pytest.approx((0.5 + 0.4) / 2)
    assert independent["Precision"] == pytest.approx((0.50 + 0.40) / 2)  # max precision: ref0 for image 1
    assert independent["Recall"] == pytest.approx((0.60 + 0.40) / 2)
    best_f = aggregate_spice(scores, ["1", "2", "3"], "best_f")
    assert best_f["Precision"] == pytest.approx((0.20 + 0.40) / 2)  # precision of the best-F reference
    assert best_f["Recall"] == pytest.approx((0.60 + 0.40) / 2)
    assert best_f["SPICE-L"] == independent["SPICE-L"]


def test_spice_entries_cover_all_refs_and_each_ref():
    entries = spice_entries({"a": "x"}, {"a": ["r1", "r2"]})
    assert entries == [
        {"image_id": "all|0", "test": "x", "refs": ["r1", "r2"]},
        {"image_id": "ref0|0", "test": "x", "refs": ["r1"]},
        {"image_id": "ref1|0", "test": "x", "refs": ["r2"]},
    ]


def test_spice_runner_compiles_against_spice_jar_on_this_java(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    classes = compile_runner()
    assert (classes / "edu" / "anu" / "spice" / "AseSpiceRunner.class").is_file()
    assert compile_runner() == classes  # cached


def test_without_jars_and_downloads_off_the_four_are_unavailable_with_what_to_fetch(tmp_path, meteor):
    metrics = score_predictions(PREDICTIONS, REFERENCES, spice=SpiceOptions(corenlp_dir=tmp_path, download=False),
                                meteor=meteor)
    reason = metrics["unavailable"]["SPICE"]
    for name in ("SPICE", "SPICE-L", "Precision", "Recall"):
        assert metrics[name] is None and metrics["unavailable"][name] == reason
    for jar in CORENLP_JARS:
        assert jar.name in reason and jar.sha256 in reason
        assert f"https://repo1.maven.org/maven2/edu/stanford/nlp/stanford-corenlp/3.6.0/{jar.name}" in reason
    assert str(tmp_path) in reason and "SPICE_CORENLP_DIR" in reason and "--no-download" in reason
    table = format_table(metrics).splitlines()
    assert table[0] == "| " + " | ".join(metric.column for metric in METRIC_TABLE) + " |"
    assert table[0] == "| B1 | B2 | B3 | B4 | M | R | C | S | S-L | Pre | Re |"
    cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert cells[:7] == [f"{metrics[metric.key]:.3f}" for metric in METRIC_TABLE[:7]] and cells[7:] == ["n/a"] * 4
    assert sum(line.startswith("n/a: ") for line in table) == 1  # the reason once, not once per metric
    assert list(tmp_path.iterdir()) == []  # nothing was fetched


def test_score_predictions_file_writes_metrics_and_table(tmp_path, meteor):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in PREDICTIONS.items()))
    references = tmp_path / "references.json"
    references.write_text(json.dumps(REFERENCES))
    metrics = score_predictions_file(predictions, references, tmp_path / "out", spice=False, meteor=meteor)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["CIDEr"] == pytest.approx(metrics["CIDEr"]) and saved["num_images"] == 3
    assert (tmp_path / "out" / "metrics.md").read_text().startswith("| B1 | B2 |")


def test_evaluate_module_loads_offline_and_matches(monkeypatch, meteor):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    module = evaluate.load(EVALUATE_MODULE_PATH)
    ids = list(PREDICTIONS)
    result = module.compute(predictions=[PREDICTIONS[i] for i in ids], references=[REFERENCES[i] for i in ids],
                            spice=False)
    ours = score_predictions(PREDICTIONS, REFERENCES, spice=False, meteor=meteor)
    for key in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert result[key] == pytest.approx(ours[key], abs=1e-12), key


@pytest.mark.parametrize(
    "predictions,references,message",
    [
        ({}, {"a": ["x"]}, "no predictions"),
        ({"a": "nice", "zz": "extra"}, {"a": ["x"]}, "no references for predicted image_id(s) 'zz'"),
        ({"a": "nice"}, {"a": ["x"], "b": ["y"]}, "no prediction for image_id(s) 'b'"),
        ({"a": "nice", "b": "ok"}, {"a": ["x"], "b": []}, "image_id 'b' has an empty reference list"),
        ({"a": "  "}, {"a": ["x"]}, "image_id 'a' has a blank caption"),
    ],
)
def test_bad_input_names_the_id(predictions, references, message):
    with pytest.raises(MetricInputError) as error:
        score_predictions(predictions, references)
    assert message in str(error.value)


def test_bad_predictions_file_names_the_line(tmp_path):
    from modeling_ase_mllm.evaluation.metrics import read_predictions

    path = tmp_path / "predictions.jsonl"
    path.write_text('{"image_id": "a", "caption": "x"}\n{"image": "b"}\n')
    with pytest.raises(MetricInputError, match=r"predictions.jsonl:2"):
        read_predictions(path)
