"""Writers of small synthetic AIC releases on disk, in each dataset's own file layout.

All text is made up for the tests; images are tiny generated pictures. Each writer returns the root
folder it filled. The tests assert the exact values written here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image, ImageDraw

from modeling_ase_mllm.data.schema import PCCD_ASPECTS


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24), fmt: str = "JPEG") -> Path:
    """Draw a small picture (background colour and a rectangle that depend on ``seed``) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256)
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((4, 4, 4 + seed % 10, 12), fill=(255 - colour[0], 200, 40))
    image.save(path, format=fmt)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------- PCCD


def pccd_record(title: str, texts: dict[str, Any] | None = None, score: Any = None, overall: Any = "7.5") -> dict:
    """A PCCD-shaped record; aspects not in ``texts`` get ``"<aspect> note for <title>."``."""
    texts = texts or {}
    record = {aspect: texts.get(aspect, f"{aspect} note for {title}.") for aspect in PCCD_ASPECTS}
    record.update(
        title=title,
        category="test-photography",
        description=f"Made-up description of {title}.",
        overall=overall,
        score=score if score is not None else ["7"] * 7,
        site="http://example.invalid/critique",
        image_url="http://example.invalid/image.jpg",
    )
    return record


def pccd_records() -> dict[str, list[dict]]:
    """Split name -> records of the default PCCD fixture (see the expectations in the tests)."""
    return {
        "train": [
            pccd_record("1_alpha", score=["8", "9", "7", "NA", "6", "10", "5"], overall="8.5"),
            pccd_record(
                "2_beta",
                texts={"use_of_camera": "", "depth_of_field": None, "focus": "   "},
                score=["N", "7", "7", "7", "7", "7", 4],
            ),
            pccd_record("3_gamma"),  # its image is not written
        ],
        "validation": [
            pccd_record("4_delta", texts={aspect: "" for aspect in PCCD_ASPECTS}),  # no critique at all
            pccd_record("5_epsilon", overall=None),
        ],
        "test": [pccd_record("6_zeta"), pccd_record("7_eta")],
    }


def write_pccd_release(root: Path, records: dict | None = None, val_name: str = "guru_validation.json") -> Path:
    """PCCD layout: ``guru_{train,validation,test}.json`` and ``images/full/<title>[.jpg]``."""
    records = pccd_records() if records is None else records
    names = {"train": "guru_train.json", "validation": val_name, "test": "guru_test.json"}
    for split, split_records in records.items():
        write_json(root / names[split], split_records)
    image_dir = root / "images" / "full"
    image_dir.mkdir(parents=True, exist_ok=True)
    write_image(image_dir / "1_alpha.jpg", 1)
    write_image(image_dir / "2_beta", 2)  # no extension, as the title alone
    for seed, title in enumerate(("4_delta", "5_epsilon", "6_zeta", "7_eta"), start=4):
        write_image(image_dir / f"{title}.png", seed, fmt="PNG")
    return root


# --------------------------------------------------------------------------------------------- RPCD

RPCD_SPLIT_IDS = {"train": ["aa1", "aa2", "gone9"], "validation": ["bb1"], "test": ["cc1"]}


def aspect_prediction(top: str) -> list[dict[str, float]]:
    """Pipeline-style label scores with 0.4 on ``top`` and 0.1 on every other PCCD aspect."""
    return [{"label": aspect, "score": 0.4 if aspect == top else 0.1} for aspect in PCCD_ASPECTS]


def write_rpcd_split_ids(root: Path, split_ids: dict[str, list[str]] = RPCD_SPLIT_IDS) -> None:
    for split, ids in split_ids.items():
        write_csv(root / f"{split}_ids.csv", None, [[image_id] for image_id in ids])


def write_rpcd_json_release(root: Path) -> Path:
    """Prepared layout: split id files, the column-wise comments JSON and ``photocritique/images``."""
    write_rpcd_split_ids(root)
    posts = [
        ("submissions_0/aa1-image.jpg", ["Made-up critique one for aa1.", "Made-up critique two for aa1."],
         ["composition", "focus"]),
        ("submissions_0/aa2-image.png", ["Only critique for aa2.", ""], ["color_lighting", "general_impression"]),
        ("submissions_1/bb1-image.jpg", ["Validation critique for bb1."], ["subject_of_photo"]),
        ("submissions_1/cc1-image.jpg", ["Test critique for cc1."], ["use_of_camera"]),  # image not written
        ("submissions_1/dd7-image.jpg", ["Post in no split."], ["focus"]),
    ]
    write_json(
        root / "reddit_photocritique_image_comments.json",
        {
            "im_paths": [path for path, _, _ in posts],
            "aspect_prediction": [[aspect_prediction(top) for top in tops] for _, _, tops in posts],
            "first_level_comments_values": [comments for _, comments, _ in posts],
        },
    )
    jpegs = ("submissions_0/aa1-image.jpg", "submissions_1/bb1-image.jpg", "submissions_1/dd7-image.jpg")
    for seed, path in enumerate(jpegs):
        write_image(root / "photocritique" / "images" / path, seed)
    write_image(root / "photocritique" / "images" / "submissions_0/aa2-image.png", 5, fmt="PNG")
    return root


RPCD_COMMENT_HEADER = ["comment_id", "comment_author", "comment_parent_id", "comment_body", "comment_score"]


def write_rpcd_raw_release(root: Path) -> Path:
    """Scraped layout: split id files, ``photocritique/submissions_0.csv``, per-post comment CSVs, images."""
    write_rpcd_split_ids(root)
    sub = root / "photocritique"
    write_csv(sub / "submissions_0.csv", ["id", "title", "author_id", "score"], [
        ["aa1", "My first post", "op1", 3],
        ["aa2", "Second post", "op2", 1],
        ["bb1", "Third post", "op3", 0],
        ["cc1", "Fourth post", "op4", 2],
    ])
    comments = sub / "comments" / "submissions_0"
    write_csv(comments / "aa1-comments.csv", RPCD_COMMENT_HEADER, [
        ["c1", "u1", "t3_aa1", "Raw critique one for aa1.", 5],
        ["c2", "op1", "t3_aa1", "Thanks, the author replying at top level.", 1],
        ["c3", "u2", "t1_c1", "A reply to a comment, not a critique.", 1],
        ["c4", "u3", "t3_aa1", "[deleted]", 0],
        ["c5", "u4", "t3_aa1", "Raw critique two,\nwith a line break.", 2],
        ["c6", "bot9", "t3_aa1", "Removed. I am a bot, and this action was performed automatically.", 1],
    ])
    header = RPCD_COMMENT_HEADER
    write_csv(comments / "aa2-comments.csv", header, [["c7", "op2", "t3_aa2", "Only the author spoke.", 1]])
    write_csv(comments / "bb1-comments.csv", header, [["c8", "u5", "t3_bb1", "Raw validation critique.", 1]])
    write_csv(comments / "cc1-comments.csv", RPCD_COMMENT_HEADER, [["c9", "u6", "t3_cc1", "Raw test critique.", 1]])
    images = sub / "images" / "submissions_0"
    write_image(images / "aa1-image.jpg", 1)
    write_image(images / "aa2-image.jpg", 2)
    write_image(images / "bb1-image.png", 3, fmt="PNG")
    write_image(images / "cc1-image.jpg", 4)
    return root


# ------------------------------------------------------------------------------------------ DPC2022


def scored_sentence(text: str, ars: float, clip: float = 0.25) -> dict:
    """A ``score_comments`` entry with made-up relevance components."""
    return {
        "comment": {"comment": text, "tfidf_cscore": 0.5, "length": len(text.split()), "words": []},
        "sum_score": ars,
        "norm_sum_score": ars / 10,
        "tfidf": 0.5,
        "length": 1.0,
        "aesthetic": 2.0,
        "objective": 0.0,
        "sentiment": 0.75,
        "sentiments": {"neg_score": 0.0, "neu_score": 0.25, "pos_score": 0.75},
        "clip_score": clip,
        "norm_clip_score": clip * 2,
    }


def dpc2022_record(image_id: str, sentences: Sequence[tuple[str, float]], score: float | None = 5.5) -> dict:
    return {
        "ID": image_id,
        "avg_all_users_score": score,
        "raw_comments": [" ".join(text for text, _ in sentences)],
        "clean_comments": [f"clean {text}" for text, _ in sentences],
        "score_comments": [scored_sentence(text, ars) for text, ars in sentences],
    }


def write_dpc2022_release(root: Path) -> Path:
    """ARIC layout: ``anotation/{train,test_and_val}/*.csv``, ``anotation/clean_and_all_score/<ID>.json``,
    ``img_256x256/<ID>.jpg``."""
    annotation = root / "anotation"
    records = {
        "1001": dpc2022_record("1001", [("nice light on the water", 4.0), ("great shot", 1.5)], score=6.25),
        "1002": dpc2022_record("1002", [("the crop is tight", 3.0)], score=None),
        "1003": dpc2022_record("1003", [("colours are muted", 2.0), ("", 0.0)]),
        "1004": dpc2022_record("1004", [("sharp focus on the eye", 5.0)]),  # image not written
        "1005": dpc2022_record("1005", [("lovely tones", 2.5)]),
    }
    for image_id, record in records.items():
        write_json(annotation / "clean_and_all_score" / f"{image_id}.json", record)
    write_csv(annotation / "train" / "train.csv", ["", "ID", "score"], [[0, 1001, 6.25], [1, 1002, 4.0]])
    write_csv(annotation / "test_and_val" / "val.csv", ["", "ID", "score"], [[0, "1003.0", 5.5]])
    write_csv(annotation / "test_and_val" / "test.csv", ["", "ID", "score"], [[0, 1004, 5.5], [1, 1005, 5.5]])
    for seed, image_id in enumerate(("1001", "1002", "1003", "1005")):
        write_image(root / "img_256x256" / f"{image_id}.jpg", seed)
    return root


# ------------------------------------------------------------------------------------- AVA-Captions


def ava_image(imgid: int, split: str, captions: Sequence[str]) -> dict:
    """A Karpathy-style image entry as in AVA-Captions' JSON."""
    return {
        "filename": f"{imgid}.jpg",
        "imgid": imgid,
        "cocoid": imgid,
        "split": split,
        "filepath": "",
        "sentids": "",
        "sentences": [
            {"raw": f"RAW: {text}!", "clean": text, "tokens": text.split(), "imgid": imgid, "sentid": ""}
            for text in captions
        ],
    }


def write_ava_captions_release(root: Path) -> Path:
    """``CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json`` plus ``images/<id>.jpg``, and a COCO caption file."""
    images = [
        ava_image(11, "train", ["the colours pop", "nice framing here"]),
        ava_image(12, "train", ["too dark for me"]),
        ava_image(13, "val", ["love the reflection"]),
        ava_image(14, "test", ["sharp and clean", "good timing", "great light"]),
        ava_image(15, "test", ["missing image example"]),  # image not written
    ]
    write_json(root / "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json", {"images": images, "dataset": "AVA"})
    write_json(root / "AVA_FULL_VALIDATION.json", {
        "images": [{"id": 13, "file_name": "13.jpg"}, {"id": 12}],
        "annotations": [
            {"image_id": 13, "id": 1, "caption": "coco caption a"},
            {"image_id": 13, "id": 2, "caption": "coco caption b"},
            {"image_id": 12, "id": 3, "caption": "coco caption c"},
        ],
    })
    for image_id in (11, 12, 13, 14):
        write_image(root / "images" / f"{image_id}.jpg", image_id)
    return root
