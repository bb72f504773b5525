"""The AIC datasets as their users get them today (issue 25): the authors' layouts load, no split is silently empty,
bad image files are caught at prepare time, split files come from where they are published, and DPC2022 follows
ARIC's protocol.

One test (or more) per row of the issue's table, each on a fixture written in that row's real layout
(`aic_fixtures`, made-up critiques), asserting the row counts, or the exit status and the message naming the input.
"""

from __future__ import annotations

import json
import warnings

import datasets
import pytest

import aic_fixtures as fx
from modeling_ase_mllm.cli import main as cli_main
from modeling_ase_mllm.data.dpc2022 import load_dpc2022
from modeling_ase_mllm.data.errors import (
    EmptySplitError, EmptySplitWarning, FilteredImageWarning, UnavailableRecordWarning, UndecodableImageWarning,
)
from modeling_ase_mllm.data.pccd import load_pccd
from modeling_ase_mllm.data.prepared import INFO_FILE, decode_error
from modeling_ase_mllm.data.protocols import PROTOCOLS, get_protocol
from modeling_ase_mllm.data.registry import DATASET_NAMES
from modeling_ase_mllm.data.rpcd import load_rpcd, rpcd_id_from_image_path


def run(argv, capsys):
    """`ase-mllm ARGV` in this process: (status, stdout, stderr, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err, caught


def prepare(capsys, dataset, root, out, *extra):
    return run(["prepare-data", "--dataset", dataset, "--data-root", root, "--output-dir", out, "--num-proc", "2",
                *extra], capsys)


def rows(folder) -> dict[str, int]:
    return {name: len(split) for name, split in datasets.load_from_disk(str(folder)).items()}


def messages(caught, category) -> list[str]:
    return [str(w.message) for w in caught if w.category is category]


# --- row 1: RPCD as its authors prepared it (`<year>/photocritique/...-submission_<id>-image.jpeg`) ----------------


def test_rpcd_id_follows_submission_in_the_year_naming_and_the_file_name_otherwise():
    assert rpcd_id_from_image_path("2016/photocritique/images/2016-photocritique-submission_5es9dz-image.jpeg") == "5es9dz"
    assert rpcd_id_from_image_path("2017-photocritique-submission_6kkk81-comments.csv") == "6kkk81"
    assert rpcd_id_from_image_path("submissions_3/abc123-image.jpg") == "abc123"
    assert rpcd_id_from_image_path("8mlk4n") == "8mlk4n"


@pytest.mark.parametrize("path_split_files", [False, True], ids=["id split files", "image-path split files"])
def test_rpcd_year_naming_prepared_json_loads_every_split(tmp_path, path_split_files):
    """Was: every split 0 rows (the id taken to be the year, '2016'). The split files before Aestheval's 69374ac
    listed image paths; those give the same ids."""
    root = fx.write_rpcd_year_release(tmp_path / "RPCD", path_split_files=path_split_files)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_rpcd(root)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 3, "validation": 1, "test": 2}
    assert dataset["train"]["image_id"] == ["4kq2xa", "5hx0bd", "6ab9qe"]
    assert dataset["test"][0]["references"] == ["The sun is centred; try the thirds.", "Colours are rich."]
    assert dataset["test"][0]["reference_aspect_probs"][0] == [0.1, 0.1, 0.4, 0.1, 0.1, 0.1, 0.1]
    # The discussion thread is not in Aestheval's prepared JSON: its id is reported as unavailable.
    assert messages(caught, UnavailableRecordWarning) == [
        "rpcd: skipped 1 of 7 records because the split lists them but the release has no data for them "
        "(e.g. train/8zz1kk)"]


def test_rpcd_year_naming_raw_files_apply_aesthevals_preparation(tmp_path):
    root = fx.write_rpcd_year_release(tmp_path / "RPCD", prepared=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_rpcd(root, source="raw")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 3, "validation": 1, "test": 2}
    # First-level critiques by others than the author ("Thanks all!" is the author's).
    assert dataset["train"][0]["references"] == ["The light on her face is soft; crop a bit tighter.",
                                                 "Nice bokeh, but the horizon tilts."]
    assert dataset["train"][0]["image"].size == fx.RPCD_SIZE
    assert messages(caught, FilteredImageWarning) == [
        "rpcd: skipped 1 of 7 records because they are discussion threads (Aestheval's prepare_dataset.py) "
        "(e.g. 8zz1kk)"]


def test_prepare_data_rpcd_year_naming_counts_and_a_split_that_matches_nothing_exits_1(tmp_path, capsys):
    root = fx.write_rpcd_year_release(tmp_path / "RPCD")
    status, out, err, _ = prepare(capsys, "rpcd", root, tmp_path / "out")
    assert status == 0, err
    assert "rpcd train: 3 images, 5 references" in out and "rpcd test: 2 images, 3 references" in out
    assert rows(tmp_path / "out") == {"train": 3, "validation": 1, "test": 2}
    # Ids that match no post (the old failure: 0 rows and exit 0) now stop, naming the file and the first of each.
    fx.write_csv(root / "train_ids.csv", None, [["zz0001"], ["zz0002"]])
    status, out, err, _ = prepare(capsys, "rpcd", root, tmp_path / "out2", "--split", "train")
    assert status == 1 and not (tmp_path / "out2" / "dataset_dict.json").exists()
    assert err.strip() == (
        "ase-mllm prepare-data: error: rpcd: split 'train' has no rows: all 2 of its records were skipped: 2 because "
        "the split lists them but the release has no data for them (e.g. train/zz0001, train/zz0002). 0 of 2 ids of "
        f"{root / 'train_ids.csv'} matched the posts of reddit_photocritique_image_comments.json; the first id there "
        f"is 'zz0001', the first post there '4kq2xa' (image "
        f"'{root / '2016/photocritique/images/2016-photocritique-submission_4kq2xa-image.jpeg'}')")


# --- row 2: a split that ends up empty (its images not downloaded yet) ----------------------------------------------


def test_prepare_data_leaves_an_empty_split_out_and_a_requested_one_exits_1(tmp_path, capsys):
    root = fx.write_pccd_release(tmp_path / "PCCD")
    for title in ("6_zeta", "7_eta"):  # the test split's images
        (root / "images" / "full" / f"{title}.png").unlink()
    status, out, err, caught = prepare(capsys, "pccd", root, tmp_path / "out")
    assert status == 0, err
    cause = ("all 2 of its records were skipped: 2 because their image file is missing (e.g. "
             f"{root / 'images/full/6_zeta'}[.jpg|.png|...], {root / 'images/full/7_eta'}[.jpg|.png|...])")
    assert messages(caught, EmptySplitWarning) == [f"pccd: split 'test' has no rows and is left out: {cause}"]
    assert f"pccd test: left out, no rows ({cause})" in out
    # Was: an IndexError in datasets' load_from_disk.
    assert rows(tmp_path / "out") == {"train": 2, "validation": 1}
    info = json.loads((tmp_path / "out" / INFO_FILE).read_text())
    assert info["left_out"] == {"test": cause} and info["splits"] == {"train": 2, "validation": 1}

    status, out, err, _ = prepare(capsys, "pccd", root, tmp_path / "out2", "--split", "test")
    assert status == 1 and err.strip() == f"ase-mllm prepare-data: error: pccd: split 'test' has no rows: {cause}"
    assert not (tmp_path / "out2" / "dataset_dict.json").exists()
    with pytest.raises(EmptySplitError, match="split 'test' has no rows"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_pccd(root, splits=["test"])


def test_train_names_a_missing_split_and_why_prepare_data_left_it_out(tmp_path, capsys):
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")  # the test split's one image is missing
    assert prepare(capsys, "rpcd", root, tmp_path / "out")[0] == 0
    status, out, err, _ = run(["train", "--recipe", "mini", "--model", "tiny", "--dataset", tmp_path / "out",
                               "--train_split", "test", "--max-steps", "1", "--output-dir", tmp_path / "run"], capsys)
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        f"ase-mllm train: error: {tmp_path / 'out'}: no split 'test' (it has 'train', 'validation'); prepare-data left "
        "it out: all 1 of its records were skipped: 1 because their image file is missing (e.g. "
        f"{root / 'submissions_1/cc1-image.jpg'})")


# --- row 3: failed downloads, GIFs, small images, truncated JPEGs --------------------------------------------------


def test_rpcd_raw_mode_applies_aesthevals_image_filter_and_reports_why(tmp_path):
    root = fx.write_rpcd_bad_scrape(tmp_path / "RPCD")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_rpcd(root)
    # The truncated JPEG's header opens: the reader keeps it, prepare-data's decoding drops it.
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "validation": 1, "test": 1}
    assert dataset["train"]["image_id"] == ["ok1", "cut1"]
    assert messages(caught, FilteredImageWarning) == [
        "rpcd: skipped 2 of 7 records because their image is not a .jpeg/.jpg/.png file (Aestheval's "
        "filter_bad_images) (e.g. html1-image.html; charset=utf-8, gif1-image.gif)",
        "rpcd: skipped 1 of 7 records because their image's longest edge is 256 px or less (Aestheval's "
        "filter_bad_images) (e.g. small1-image.jpeg)",
    ]


def test_prepare_data_decodes_every_image_and_skips_or_refuses_the_bad_ones(tmp_path, capsys):
    root = fx.write_rpcd_bad_scrape(tmp_path / "RPCD")
    cut = root / "photocritique/images/submissions_0/cut1-image.jpeg"
    status, out, err, caught = prepare(capsys, "rpcd", root, tmp_path / "out")
    assert status == 0, err
    assert "rpcd train: 1 images, 1 references (1 undecodable image(s) left out)" in out
    [message] = messages(caught, UndecodableImageWarning)
    assert message.startswith(f"rpcd: skipped 1 of 2 rows of split 'train' because their image file does not decode "
                              f"(e.g. {cut} (OSError: image file is truncated")
    assert rows(tmp_path / "out") == {"train": 1, "validation": 1, "test": 1}
    assert json.loads((tmp_path / "out" / INFO_FILE).read_text())["undecodable"] == {"train": [str(cut)]}
    saved = datasets.load_from_disk(str(tmp_path / "out"))
    assert saved["train"][0]["image_id"] == "ok1" and saved["train"][0]["image"].size == fx.RPCD_SIZE

    status, out, err, _ = prepare(capsys, "rpcd", root, tmp_path / "strict", "--strict")
    assert status == 1 and not (tmp_path / "strict" / "dataset_dict.json").exists()
    assert err.strip().splitlines()[-1].startswith(
        f"ase-mllm prepare-data: error: rpcd: 1 image(s) do not decode (--strict): {cut} (OSError: image file is "
        "truncated")


def test_prepare_data_drops_a_truncated_ava_jpeg(tmp_path, capsys):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    fx.write_truncated_jpeg(root / "images" / "11.jpg", 11, size=(64, 48))
    status, out, err, caught = prepare(capsys, "ava_captions", root, tmp_path / "out")
    assert status == 0, err
    assert "ava_captions train: 1 images, 1 references (1 undecodable image(s) left out)" in out
    assert rows(tmp_path / "out") == {"train": 1, "val": 1, "test": 1}
    assert str(root / "images" / "11.jpg") in messages(caught, UndecodableImageWarning)[0]
    assert decode_error({"bytes": None, "path": str(root / "images" / "12.jpg")}) is None


# --- row 4: PCCD as its authors distribute it; split files from where they are published ---------------------------


def test_pccd_authors_release_needs_the_split_files_and_says_where_they_are(tmp_path, capsys):
    root, split_dir = fx.write_pccd_authors_release(tmp_path / "PCCD", tmp_path / "aestheval" / "PCCD")
    status, out, err, _ = prepare(capsys, "pccd", root, tmp_path / "out")
    assert status == 1
    assert err.strip() == (
        f"ase-mllm prepare-data: error: {root / 'guru_train.json'}: PCCD split file for split 'train' not found; the "
        "authors' release (raw.json + images/) has no split; the split files are published in "
        "github.com/mediatechnologycenter/Aestheval under aestheval/data/PCCD/ (guru_train.json, guru_validation.json, "
        "guru_test.json): put them in the release folder or point at them with split_dir= / --split-dir")
    status, out, err, _ = prepare(capsys, "pccd", root, tmp_path / "out", "--split-dir", split_dir)
    assert status == 0, err
    assert rows(tmp_path / "out") == {"train": 2, "validation": 1, "test": 2}  # images/, not images/full/
    assert "protocol: pccd protocol 'aestheval': train on train, evaluate on test (Aestheval's 2022 split" in out


def test_rpcd_missing_split_ids_say_where_they_are_published(tmp_path, capsys):
    root = fx.write_rpcd_year_release(tmp_path / "RPCD")
    (root / "validation_ids.csv").unlink()
    status, out, err, _ = prepare(capsys, "rpcd", root, tmp_path / "out")
    assert status == 1 and err.startswith(
        f"ase-mllm prepare-data: error: {root / 'validation_ids.csv'}: RPCD split id file not found; the split id "
        "files are published on Zenodo (record 6985507) and in github.com/mediatechnologycenter/Aestheval under "
        "aestheval/data/reddit/")
    (tmp_path / "ids").mkdir()
    for split in ("train", "validation", "test"):
        (tmp_path / "ids" / f"{split}_ids.csv").write_text("\r\n".join(fx.RPCD_YEAR_SPLITS[split]) + "\r\n")
    status, out, err, _ = prepare(capsys, "rpcd", root, tmp_path / "out", "--split-dir", tmp_path / "ids")
    assert status == 0, err
    assert rows(tmp_path / "out") == {"train": 3, "validation": 1, "test": 2}


def test_split_dir_is_only_for_datasets_whose_split_files_are_published_apart(tmp_path, capsys):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    with pytest.raises(SystemExit) as exit_info:
        prepare(capsys, "dpc2022", root, tmp_path / "out", "--split-dir", tmp_path)
    assert exit_info.value.code == 2
    assert ("argument --split-dir: dpc2022 keeps its split files in its release; only pccd and rpcd take them from "
            "elsewhere") in capsys.readouterr().err


# --- row 5: DPC2022 re-packed; ARIC's protocol -----------------------------------------------------------------------


def test_dpc2022_follows_arics_protocol_by_default(tmp_path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        aric, release = load_dpc2022(root), load_dpc2022(root, protocol="release")
    # ARIC trains on its comment-pair file (one row per sentence, grouped per image in file order).
    assert {name: len(split) for name, split in aric.items()} == {"train": 3, "val": 1, "test": 1}
    assert aric["train"]["image_id"] == ["1001", "1006", "1002"]
    assert aric["train"][0]["references"] == ["warm tones suit the subject", "the crop is tight"]
    assert [(r["ars"], r["ars_normalized"], r["clip"]) for r in aric["train"][0]["reference_relevance"]] == [
        (4.5, 0.45, None), (2.0, 0.2, None)]
    assert release["train"]["image_id"] == ["1001", "1002"]
    assert aric["val"]["references"] == release["val"]["references"]


def test_dpc2022_reads_a_number_as_aric_does_and_null_as_no_sentence(tmp_path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    path = root / "anotation/clean_and_all_score/1003.json"
    record = json.loads(path.read_text())
    record["score_comments"][1]["comment"]["comment"] = 10  # ARIC: str(10)
    record["score_comments"].append(fx.scored_sentence("x", 1.0))
    record["score_comments"][2]["comment"]["comment"] = None
    fx.write_json(path, record)
    dataset = load_dpc2022(root, splits=["val"])
    assert dataset["val"][0]["references"] == ["colours are muted", "10"]
    assert len(dataset["val"][0]["reference_relevance"]) == 2


def test_dpc2022_release_protocol_and_training_on_a_folder_of_another_protocol(tmp_path, capsys):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    status, out, err, _ = prepare(capsys, "dpc2022", root, tmp_path / "out", "--protocol", "release")
    assert status == 0, err
    assert "protocol: dpc2022 protocol 'release': train on train, evaluate on test" in out
    assert rows(tmp_path / "out") == {"train": 2, "val": 1, "test": 1}
    status, out, err, _ = run(["train", "--recipe", "dpc2022", "--model", "tiny", "--dataset", tmp_path / "out",
                               "--max-steps", "1", "--output-dir", tmp_path / "run"], capsys)
    assert status == 1 and err.strip().splitlines()[-1] == (
        f"ase-mllm train: error: {tmp_path / 'out'} was prepared under protocol 'release', the recipe names 'aric': "
        "prepare it again with --protocol aric, or pass --protocol release")
    with pytest.raises(SystemExit):
        prepare(capsys, "dpc2022", root, tmp_path / "out3", "--protocol", "aestheval")
    assert "argument --protocol: 'aestheval' is not a known dpc2022 protocol; choose one of aric, release" in \
        capsys.readouterr().err


# --- protocols -------------------------------------------------------------------------------------------------------


def test_every_dataset_has_a_default_protocol_and_dpc2022s_is_arics():
    assert {protocol.dataset for protocol in PROTOCOLS} == set(DATASET_NAMES)
    assert [(p.name, p.train_split, p.eval_split) for p in PROTOCOLS if p.dataset == "dpc2022"] == [
        ("aric", "train", "val"), ("release", "train", "test")]
    assert get_protocol("dpc2022").name == "aric" and get_protocol("pccd").eval_split == "test"
    assert "203 of the 300 photos" in get_protocol("pccd").whose
    with pytest.raises(ValueError, match=r"dpc2022: unknown protocol 'x'; it has \['aric', 'release'\]"):
        get_protocol("dpc2022", "x")


def test_evaluate_scores_the_protocols_split_and_says_when_a_number_follows_none():
    from modeling_ase_mllm.evaluation.run import default_split, protocol_record

    assert (default_split("dpc2022"), default_split("dpc2022", "release"), default_split("AVA-Captions")) == (
        "val", "test", "test")
    assert protocol_record("dpc2022", "val")["protocol"] == get_protocol("dpc2022", "aric").to_dict()
    assert protocol_record("dpc2022", "test") == {"protocol": None, "protocol_note": (
        "split 'test' is not the evaluation split of dpc2022 protocol 'aric' ('val'): this number follows no "
        "published protocol")}
    assert protocol_record("pccd", "test", scored=2, total=848) == {"protocol": None, "protocol_note": (
        "only the first 2 of the 848 images of split 'test' were scored (--limit): this number follows no published "
        "protocol")}


# --- prepare-data -> train (3 steps) -> evaluate, from a clean folder ------------------------------------------------

# A random tiny model, one example a step, and no checkpoints: the flow, not the learning.
TRAIN_QUICKLY = ["--recipe", "mini", "--model", "tiny", "--max-steps", "3", "--effective_batch_size", "1",
                 "--per_device_train_batch_size", "1", "--save_strategy", "no", "--logging_steps", "1"]
EVALUATE_QUICKLY = ["--no-spice", "--max-new-tokens", "4", "--min-new-tokens", "2", "--max-tiles", "1", "--batch-size",
                    "4"]


def flow(capsys, tmp_path, dataset, root, *prepare_extra):
    """prepare-data, then train on the folder; returns (prepared folder, model folder)."""
    data, model = tmp_path / "prepared", tmp_path / "model"
    status, out, err, _ = prepare(capsys, dataset, root, data, *prepare_extra)
    assert status == 0, err
    status, out, err, _ = run(["train", *TRAIN_QUICKLY, "--dataset", data, "--output-dir", model], capsys)
    assert status == 0, err
    assert [entry["step"] for entry in json.loads((model / "trainer_state.json").read_text())["log_history"]
            if "loss" in entry] == [1, 2, 3]
    return data, model


def evaluate(capsys, model, data, out, *extra):
    return run(["evaluate", "--model", model, "--dataset", data, "--output-dir", out, *EVALUATE_QUICKLY, *extra],
               capsys)


@pytest.mark.slow
def test_flow_rpcd_year_naming_with_the_grounding_control(tmp_path, capsys):
    """The authors' copy (year naming, prepared JSON); the evaluation follows Aestheval's protocol and runs the
    shuffled-references control, whose pairing is a derangement of the test split."""
    data, model = flow(capsys, tmp_path, "rpcd", fx.write_rpcd_year_release(tmp_path / "RPCD"))
    status, out, err, _ = evaluate(capsys, model, data, tmp_path / "eval", "--control", "shuffled",
                                   "--update-model-card")
    assert status == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"], metrics["num_images"]) == ("prepared", "test", 2)
    assert metrics["protocol"] == get_protocol("rpcd").to_dict()
    pairs = json.loads((tmp_path / "eval" / "control_pairs.json").read_text())
    assert sorted(pairs) == sorted(pairs.values()) == ["8ab2cd", "9qq4rs"]
    assert all(image != reference_image for image, reference_image in pairs.items())
    control = metrics["control"]
    assert (control["kind"], control["seed"]) == ("shuffled", 0)
    for key in ("Bleu_1", "METEOR", "ROUGE_L", "CIDEr"):
        assert control["gap"][key] == metrics[key] - control["metrics"][key]
    assert "| gap (own − shuffled) |" in out
    card = (model / "README.md").read_text()
    assert "| another photo's (shuffled, seed 0) |" in card
    assert "Protocol: trained on `train`, scored on `test`, the split of the RPCD authors' random 70/10/20 split" in card


@pytest.mark.slow
def test_flow_rpcd_chunk_naming_with_a_split_left_out(tmp_path, capsys):
    """The chunk naming (prepared JSON); the test split's only image is missing, so prepare-data leaves it out:
    the folder loads, trains and evaluates (validation), and evaluating the protocol's split names what is missing."""
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")
    data, model = flow(capsys, tmp_path, "rpcd", root)
    assert rows(data) == {"train": 2, "validation": 1}
    status, out, err, _ = evaluate(capsys, model, data, tmp_path / "eval", "--split", "validation")
    assert status == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 1 and metrics["protocol"] is None
    assert metrics["protocol_note"] == ("split 'validation' is not the evaluation split of rpcd protocol 'aestheval' "
                                        "('test'): this number follows no published protocol")
    status, out, err, _ = evaluate(capsys, model, data, tmp_path / "eval2")  # the protocol's split: test
    assert status == 1 and err.strip().splitlines()[-1] == (
        f"ase-mllm evaluate: error: {data}: no split 'test' (it has 'train', 'validation'); prepare-data left it out: "
        "all 1 of its records were skipped: 1 because their image file is missing (e.g. "
        f"{root / 'submissions_1/cc1-image.jpg'})")


@pytest.mark.slow
def test_flow_pccd_authors_release_with_split_dir(tmp_path, capsys):
    root, split_dir = fx.write_pccd_authors_release(tmp_path / "PCCD", tmp_path / "aestheval" / "PCCD")
    data, model = flow(capsys, tmp_path, "pccd", root, "--split-dir", split_dir)
    status, out, err, _ = evaluate(capsys, model, data, tmp_path / "eval")
    assert status == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["split"], metrics["num_images"], metrics["protocol"]["name"]) == ("test", 2, "aestheval")
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["protocol"] == "aestheval"
    assert "Protocol: pccd protocol 'aestheval': train on train, evaluate on test" in out


# --- the prepared folder is written whole or not at all --------------------------------------------------------------


def test_prepare_data_replaces_a_folder_only_once_the_new_one_is_complete(tmp_path, capsys, monkeypatch):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    out = tmp_path / "out"
    assert prepare(capsys, "ava_captions", root, out, "--split", "train")[0] == 0
    before = rows(out)
    # A save that dies half-way (disk full, a kill): the earlier preparation stays, and no partial folder is left.
    original = datasets.DatasetDict.save_to_disk

    def dies_half_way(self, path, **kwargs):
        original(self, path, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", dies_half_way)
    status, out_text, err, _ = prepare(capsys, "ava_captions", root, out)
    assert status == 1 and err.strip().endswith("No space left on device")
    assert rows(out) == before == {"train": 2}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["AVA", "out"]
    monkeypatch.undo()
    assert prepare(capsys, "ava_captions", root, out)[0] == 0
    assert rows(out) == {"train": 2, "val": 1, "test": 1}
    # A folder that holds something else is not replaced.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        prepare(capsys, "ava_captions", root, tmp_path / "notes")
    assert exit_info.value.code == 2 and (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert "holds files but no prepared dataset; give an empty or a new folder" in capsys.readouterr().err
