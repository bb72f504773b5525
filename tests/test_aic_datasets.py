"""Readers of the AIC releases, run on the synthetic releases of ``aic_fixtures``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import pytest
from PIL import Image

import aic_fixtures as fx
from modeling_ase_mllm.data.ava_captions import load_ava_captions
from modeling_ase_mllm.data.dpc2022 import load_dpc2022
from modeling_ase_mllm.data.errors import (
    AICDataError,
    AnnotationFileNotFoundError,
    EmptyReferencesWarning,
    EmptySplitError,
    EmptySplitWarning,
    FilteredImageWarning,
    MissingImageWarning,
    UnavailableRecordWarning,
)
from modeling_ase_mllm.data.pccd import load_pccd
from modeling_ase_mllm.data.registry import load_aic_dataset
from modeling_ase_mllm.data.rpcd import load_rpcd
from modeling_ase_mllm.data.schema import AIC_FEATURES, PCCD_ASPECTS
from modeling_ase_mllm.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent


def load_quietly(loader, *args, **kwargs):
    """Run a reader, returning its result and the warnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loader(*args, **kwargs)
    return result, caught


def by_id(split: datasets.Dataset) -> dict[str, dict]:
    return {row["image_id"]: row for row in split}


# -------------------------------------------------------------------------------------------- PCCD


@pytest.fixture()
def pccd_root(tmp_path: Path) -> Path:
    return fx.write_pccd_release(tmp_path / "PCCD")


def test_pccd_splits_references_and_scores(pccd_root: Path):
    dataset, caught = load_quietly(load_pccd, pccd_root)
    missing = [str(w.message) for w in caught if w.category is MissingImageWarning]
    assert len(missing) == 1 and "pccd: skipped 1 of 7 records" in missing[0] and "3_gamma" in missing[0]
    assert list(dataset) == ["train", "validation", "test"]
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "validation": 1, "test": 2}
    assert dataset["train"].features == AIC_FEATURES
    train = by_id(dataset["train"])
    alpha, beta = train["1_alpha"], train["2_beta"]
    assert alpha["references"] == [f"{aspect} note for 1_alpha." for aspect in PCCD_ASPECTS]
    assert alpha["reference_aspects"] == list(PCCD_ASPECTS)
    assert alpha["score"] == 8.5
    assert alpha["aspect_scores"] == {
        "general_impression": 8.0, "subject_of_photo": 9.0, "composition": 7.0, "use_of_camera": None,
        "depth_of_field": 6.0, "color_lighting": 10.0, "focus": 5.0,
    }
    # Blank, null and whitespace-only aspect texts are dropped together with their aspect labels.
    kept = ["general_impression", "subject_of_photo", "composition", "color_lighting"]
    assert beta["references"] == [f"{aspect} note for 2_beta." for aspect in kept]
    assert beta["reference_aspects"] == kept
    assert beta["aspect_scores"]["general_impression"] is None and beta["aspect_scores"]["focus"] == 4.0
    assert dataset["validation"][0]["image_id"] == "5_epsilon" and dataset["validation"][0]["score"] is None
    assert alpha["reference_aspect_probs"] == [] and alpha["reference_relevance"] == []
    assert {row["dataset"] for row in dataset["test"]} == {"pccd"}


def test_pccd_images_decode_lazily_from_paths(pccd_root: Path):
    dataset, _ = load_quietly(load_pccd, pccd_root, splits=["train"])
    paths = dataset["train"].cast_column("image", datasets.Image(decode=False))["image"]
    assert [Path(item["path"]).name for item in paths] == ["1_alpha.jpg", "2_beta"]
    assert all(item["bytes"] is None for item in paths)
    image = dataset["train"][1]["image"]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 24)


def test_pccd_skips_are_reported_once_per_reason(pccd_root: Path):
    _, caught = load_quietly(load_pccd, pccd_root)
    categories = [w.category for w in caught]
    assert categories.count(MissingImageWarning) == 1
    assert categories.count(EmptyReferencesWarning) == 1
    empty = next(w for w in caught if w.category is EmptyReferencesWarning)
    assert "skipped 1 of 7" in str(empty.message) and "validation/4_delta" in str(empty.message)


def test_pccd_accepts_guru_val_and_split_subset(tmp_path: Path):
    root = fx.write_pccd_release(tmp_path / "PCCD", val_name="guru_val.json")
    dataset, _ = load_quietly(load_pccd, root, splits=["validation"])
    assert list(dataset) == ["validation"] and dataset["validation"]["image_id"] == ["5_epsilon"]
    with pytest.raises(ValueError, match="unknown split"):
        load_pccd(root, splits=["dev"])


def test_pccd_reads_aestheval_processed_records(tmp_path: Path):
    records = fx.pccd_records()
    for split_records in records.values():
        for record in split_records:
            record["im_name"] = record.pop("title")  # Aestheval's processed files rename the field
    root = fx.write_pccd_release(tmp_path / "PCCD", records)
    dataset, _ = load_quietly(load_pccd, root, splits=["train"])
    assert dataset["train"]["image_id"] == ["1_alpha", "2_beta"]


def test_pccd_missing_split_file_names_the_file(pccd_root: Path):
    (pccd_root / "guru_test.json").unlink()
    with pytest.raises(AnnotationFileNotFoundError, match=r"guru_test\.json.*not found") as info:
        load_pccd(pccd_root)
    assert isinstance(info.value, FileNotFoundError)


def test_pccd_bad_json_names_file_and_position(pccd_root: Path):
    (pccd_root / "guru_train.json").write_text('[{"title": "1_alpha",\n "composition": ', encoding="utf-8")
    with pytest.raises(AICDataError, match=r"guru_train\.json: invalid JSON at line 2"):
        load_pccd(pccd_root)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("composition"), r"record 1 \(id '2_beta'\): field 'composition': required field is missing"),
        (lambda r: r.pop("title"), r"record 1: field 'title': required field is missing"),
        (lambda r: r.update(score="8,9"), r"record 1 \(id '2_beta'\): field 'score': expected list, got str"),
        (lambda r: r.update(score=["8"] * 6), r"record 1 \(id '2_beta'\): field 'score': expected 7 aspect scores"),
        (lambda r: r.update(overall="great"), r"record 1 \(id '2_beta'\): field 'overall': expected a number or 'NA'"),
        (lambda r: r.update(focus=7), r"record 1 \(id '2_beta'\): field 'focus': expected str or NoneType, got int"),
    ],
)
def test_pccd_malformed_record_names_file_record_and_field(tmp_path: Path, mutate, expected):
    records = fx.pccd_records()
    mutate(records["train"][1])
    root = fx.write_pccd_release(tmp_path / "PCCD", records)
    with pytest.raises(AICDataError, match=expected) as info:
        load_pccd(root)
    assert str(root / "guru_train.json") in str(info.value)


def test_pccd_wrong_image_folder_is_an_error(pccd_root: Path):
    with pytest.raises(FileNotFoundError, match="PCCD image folder not found"):
        load_pccd(pccd_root, image_dir="nowhere")


# -------------------------------------------------------------------------------------------- RPCD


def test_rpcd_from_prepared_json(tmp_path: Path):
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")
    dataset, caught = load_quietly(load_rpcd, root)
    # The test split's one image is missing: the split is left out, with a warning that names it and why.
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "validation": 1}
    train = by_id(dataset["train"])
    assert train["aa1"]["references"] == ["Made-up critique one for aa1.", "Made-up critique two for aa1."]
    assert train["aa1"]["reference_aspect_probs"] == [
        [0.1, 0.1, 0.4, 0.1, 0.1, 0.1, 0.1],  # composition
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4],  # focus
    ]
    # The empty second comment of aa2 is dropped with its aspect probabilities.
    assert train["aa2"]["references"] == ["Only critique for aa2."]
    assert train["aa2"]["reference_aspect_probs"] == [[0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.1]]
    assert train["aa2"]["reference_aspects"] == [] and train["aa2"]["score"] is None
    assert dataset["validation"][0]["references"] == ["Validation critique for bb1."]
    messages = {w.category: str(w.message) for w in caught}
    assert "skipped 1 of 5" in messages[UnavailableRecordWarning]
    assert "train/gone9" in messages[UnavailableRecordWarning]
    assert "cc1-image.jpg" in messages[MissingImageWarning]
    assert messages[EmptySplitWarning].startswith("rpcd: split 'test' has no rows and is left out: all 1 of its "
                                                  "records were skipped: 1 because their image file is missing")


def test_rpcd_json_as_a_list_of_records(tmp_path: Path):
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")
    path = root / "reddit_photocritique_image_comments.json"
    columns = json.loads(path.read_text(encoding="utf-8"))
    records = [dict(zip(columns, values)) for values in zip(*columns.values())]
    fx.write_json(path, records)
    dataset, _ = load_quietly(load_rpcd, root, source="json")
    assert dataset["train"]["image_id"] == ["aa1", "aa2"]
    assert dataset["train"]["references"][1] == ["Only critique for aa2."]


def test_rpcd_from_raw_comment_files(tmp_path: Path):
    root = fx.write_rpcd_raw_release(tmp_path / "RPCD")
    dataset, caught = load_quietly(load_rpcd, root, source="auto")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 1, "validation": 1, "test": 1}
    # Only first-level comments by others than the author; deletions and bot notices are dropped.
    assert dataset["train"][0]["references"] == ["Raw critique one for aa1.", "Raw critique two,\nwith a line break."]
    assert dataset["validation"][0]["image"].size == fx.RPCD_SIZE
    assert dataset["test"]["image_id"] == ["cc1"]
    assert {w.category for w in caught} == {EmptyReferencesWarning, UnavailableRecordWarning}


def edit_json(path: Path, mutate) -> None:
    """Rewrite the JSON file at ``path`` after ``mutate(data)``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    mutate(data)
    fx.write_json(path, data)


def set_item(container, key, value):
    container[key] = value


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: set_item(d["first_level_comments_values"], 2, "not a list"),
            r"record 2 \(id 'bb1'\): field 'first_level_comments_values': expected list, got str",
        ),
        (
            lambda d: set_item(d["aspect_prediction"], 0, d["aspect_prediction"][0][:1]),
            r"record 0 \(id 'aa1'\): field 'aspect_prediction': has 1 entries for 2 comments",
        ),
        (
            lambda d: set_item(d["aspect_prediction"][1], 0, [{"label": "focus", "score": 1.0}]),
            r"record 1 \(id 'aa2'\): field 'aspect_prediction\[0\]': lacks aspect label",
        ),
        (lambda d: d.pop("im_paths"), r"required column 'im_paths' is missing"),
    ],
)
def test_rpcd_malformed_json_names_record_and_field(tmp_path: Path, mutate, expected):
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")
    path = root / "reddit_photocritique_image_comments.json"
    edit_json(path, mutate)
    with pytest.raises(AICDataError, match=expected) as info:
        load_rpcd(root)
    assert str(path) in str(info.value)


def test_rpcd_missing_split_file(tmp_path: Path):
    root = fx.write_rpcd_json_release(tmp_path / "RPCD")
    (root / "validation_ids.csv").unlink()
    with pytest.raises(AnnotationFileNotFoundError, match=r"validation_ids\.csv: RPCD split id file not found"):
        load_rpcd(root)


def test_rpcd_raw_comment_file_without_required_column(tmp_path: Path):
    root = fx.write_rpcd_raw_release(tmp_path / "RPCD")
    path = root / "photocritique/comments/submissions_0/bb1-comments.csv"
    fx.write_csv(path, ["comment_id", "comment_body"], [["c", "x"]])
    with pytest.raises(AICDataError, match=r"bb1-comments\.csv: header lacks required column"):
        load_rpcd(root, source="raw")


# ----------------------------------------------------------------------------------------- DPC2022


def test_dpc2022_splits_references_and_relevance(tmp_path: Path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    with pytest.warns(MissingImageWarning, match=r"skipped 1 of 5 records .*1004\.jpg"):
        dataset = load_dpc2022(root, protocol="release")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "val": 1, "test": 1}
    first = dataset["train"][0]
    assert first["image_id"] == "1001" and first["score"] == 6.25
    assert first["references"] == ["nice light on the water", "great shot"]
    assert [entry["ars"] for entry in first["reference_relevance"]] == [4.0, 1.5]
    assert first["reference_relevance"][0] == {
        "ars": 4.0, "ars_normalized": 0.4, "tfidf": 0.5, "length": 1.0, "aesthetic": 2.0,
        "objective": 0.0, "sentiment": 0.75, "clip": 0.25, "clip_normalized": 0.5,
    }
    assert dataset["train"][1]["score"] is None
    # "1003.0" in the split CSV names 1003.json; its empty sentence is dropped with its scores.
    val = dataset["val"][0]
    assert val["image_id"] == "1003" and val["references"] == ["colours are muted"]
    assert len(val["reference_relevance"]) == 1
    assert dataset["test"]["image_id"] == ["1005"]


def test_dpc2022_clean_comments_as_references(tmp_path: Path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    dataset, _ = load_quietly(load_dpc2022, root, splits=["train"], reference_field="clean_comments",
                              protocol="release")
    assert dataset["train"][0]["references"] == ["clean nice light on the water", "clean great shot"]
    assert dataset["train"][0]["reference_relevance"] == []


def test_dpc2022_split_id_without_its_json_is_skipped_and_counted(tmp_path: Path):
    """The release was re-packed to pass Baidu's review (PengZai/ARIC #1-#3): an id whose <ID>.json is missing is
    skipped and counted, like a missing image, instead of aborting the whole load."""
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    (root / "anotation/clean_and_all_score/1002.json").unlink()
    dataset, caught = load_quietly(load_dpc2022, root, protocol="release")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 1, "val": 1, "test": 1}
    unavailable = [str(w.message) for w in caught if w.category is UnavailableRecordWarning]
    assert len(unavailable) == 1 and "skipped 1 of 5 records because the split lists them but the release has no " \
        f"data for them (e.g. {root / 'anotation/clean_and_all_score/1002.json'})" in unavailable[0]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r.pop("score_comments"),
            r"1001\.json: record id '1001': field 'score_comments': required field is missing",
        ),
        (
            lambda r: r["score_comments"][1].update(sum_score="high"),
            r"field 'score_comments\[1\]\.sum_score': expected a number or 'NA'",
        ),
        (
            lambda r: r["score_comments"][0].update(comment={"comment": ["two", "sentences"]}),
            r"field 'score_comments\[0\]\.comment\.comment': expected the sentence text, got list",
        ),
    ],
)
def test_dpc2022_malformed_record(tmp_path: Path, mutate, expected):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    edit_json(root / "anotation/clean_and_all_score/1001.json", mutate)
    with pytest.raises(AICDataError, match=expected):
        load_dpc2022(root, protocol="release")


def test_dpc2022_split_file_with_byte_order_mark(tmp_path: Path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    (root / "anotation/test_and_val/val.csv").write_text("\ufeffID,score\n1003,5.0\n", encoding="utf-8")
    dataset = load_dpc2022(root, splits=["val"])
    assert dataset["val"]["image_id"] == ["1003"]


def test_dpc2022_split_file_without_id_column(tmp_path: Path):
    root = fx.write_dpc2022_release(tmp_path / "DPC2022")
    fx.write_csv(root / "anotation/test_and_val/val.csv", ["image", "score"], [[1003, 5.0]])
    with pytest.raises(AICDataError, match=r"val\.csv: header lacks required column\(s\) \['ID'\]"):
        load_dpc2022(root, splits=["val"])


# ------------------------------------------------------------------------------------ AVA-Captions


def test_ava_captions_karpathy_file(tmp_path: Path):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    with pytest.warns(MissingImageWarning, match=r"skipped 1 of 5 .*15\.jpg"):
        dataset = load_ava_captions(root)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 2, "val": 1, "test": 1}
    assert dataset["train"]["image_id"] == ["11", "12"]
    assert dataset["train"][0]["references"] == ["the colours pop", "nice framing here"]
    assert dataset["test"][0]["references"] == ["sharp and clean", "good timing", "great light"]
    row = dataset["val"][0]
    assert row["reference_aspects"] == [] and row["score"] is None and row["aspect_scores"] is None


def test_ava_captions_raw_text_and_coco_file(tmp_path: Path):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    raw, _ = load_quietly(load_ava_captions, root, splits=["val"], text_field="raw")
    assert raw["val"][0]["references"] == ["RAW: love the reflection!"]
    coco = load_ava_captions(root, annotation_file="AVA_FULL_VALIDATION.json")
    # 9,362 images in the authors' file: not the main file's 5,000-image `val` split, so not called `val`.
    assert list(coco) == ["full_validation"]
    assert by_id(coco["full_validation"])["13"]["references"] == ["coco caption a", "coco caption b"]
    assert by_id(coco["full_validation"])["12"]["references"] == ["coco caption c"]


def test_ava_captions_missing_split_field(tmp_path: Path):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    edit_json(root / "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json", lambda data: data["images"][3].pop("split"))
    with pytest.raises(AICDataError, match=r"record 3 \(id '14'\): field 'split': required field is missing"):
        load_ava_captions(root)


# -------------------------------------------------------------------------------- registry and CLI


def test_load_aic_dataset_dispatches_by_name(tmp_path: Path):
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    dataset, _ = load_quietly(load_aic_dataset, "AVA-Captions", root, splits=["test"])
    assert dataset["test"]["image_id"] == ["14"]
    with pytest.raises(ValueError, match="unknown AIC dataset 'coco'"):
        load_aic_dataset("coco", root)
    with pytest.raises(ValueError, match="root"):
        load_aic_dataset("pccd")


def test_prepare_data_saves_a_loadable_dataset_dict(pccd_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "saved"
    status, caught = load_quietly(
        cli_main, ["prepare-data", "--dataset", "pccd", "--data-root", str(pccd_root), "--output-dir", str(out)]
    )
    assert {w.category for w in caught} == {MissingImageWarning, EmptyReferencesWarning}
    assert status == 0
    assert "pccd train: 2 images, 11 references" in capsys.readouterr().out
    saved = datasets.load_from_disk(str(out))
    assert {name: len(split) for name, split in saved.items()} == {"train": 2, "validation": 1, "test": 2}
    # The saved copy embeds the images, so it no longer depends on the release folder.
    (pccd_root / "images/full/1_alpha.jpg").unlink()
    assert saved["train"][0]["image"].size == (32, 24)


def test_prepare_data_reports_errors_with_exit_status(tmp_path: Path, capsys):
    # A release folder without its images: the reader's error, one line, status 1 (the old spellings still work).
    (tmp_path / "DPC2022").mkdir()
    status = cli_main(["prepare-data", "--dataset", "dpc2022", "--root", str(tmp_path / "DPC2022"), "--out",
                       str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 1
    assert "DPC2022 image folder not found" in err and len(err.strip().splitlines()) == 1
    # A folder that does not exist is an argument error, found before reading anything.
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["prepare-data", "--dataset", "dpc2022", "--data-root", str(tmp_path / "missing"), "--output-dir",
                  str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert f"argument --data-root: no folder '{tmp_path / 'missing'}'" in capsys.readouterr().err


def test_prepare_data_runs_from_a_checkout(tmp_path: Path):
    """`python -m modeling_ase_mllm.cli prepare-data` from a source checkout (what processing/prepare_dataset.py
    repeated before it was removed), outside the checkout's folder."""
    root = fx.write_ava_captions_release(tmp_path / "AVA")
    out = tmp_path / "saved"
    arguments = ["--dataset", "ava_captions", "--data-root", str(root), "--output-dir", str(out), "--split", "train"]
    command = [sys.executable, "-m", "modeling_ase_mllm.cli", "prepare-data", *arguments]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ava_captions train: 2 images, 3 references" in result.stdout
    assert len(datasets.load_from_disk(str(out))["train"]) == 2
