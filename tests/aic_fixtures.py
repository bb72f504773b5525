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


RPCD_SIZE = (300, 200)
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
    # Longer than 256 px: Aestheval's filter_bad_images drops anything smaller.
    write_image(images / "aa1-image.jpg", 1, size=RPCD_SIZE)
    write_image(images / "aa2-image.jpg", 2, size=RPCD_SIZE)
    write_image(images / "bb1-image.png", 3, size=RPCD_SIZE, fmt="PNG")
    write_image(images / "cc1-image.jpg", 4, size=RPCD_SIZE)
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
    write_dpc2022_aric_pairs(root)
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


# ------------------------------------------------- the layouts users get today (issue 25), each after its source

# Aestheval's scraper, year naming (e78199b .. 3ab80c6): columns in the order `reddit_scraper.py` writes them.
RPCD_SUBMISSION_COLUMNS = ["id", "url", "title", "score", "num_comments", "created_utc", "selftext", "author_id",
                           "upvote_ratio", "ups", "downs", "gilded"]
RPCD_SCRAPER_COMMENT_COLUMNS = ["comment_id", "comment_parent_id", "comment_body", "comment_link_id", "comment_score",
                                "comment_ups", "comment_downs", "comment_gilded", "comment_author", "created_utc"]
# Made-up posts in Reddit's base-36 id style: (id, year, author, title, first-level critiques by others).
RPCD_YEAR_POSTS = [
    ("4kq2xa", 2016, "t2_op1", "Portrait in the park [CC]", ["The light on her face is soft; crop a bit tighter.",
                                                             "Nice bokeh, but the horizon tilts."]),
    ("5hx0bd", 2016, "t2_op2", "First long exposure", ["Lovely trails; the foreground is too dark."]),
    ("6ab9qe", 2017, "t2_op3", "Street at dusk", ["Strong leading lines.", "I would lift the shadows a little."]),
    ("7mm3rt", 2017, "t2_op4", "Macro of a fly", ["Focus falls just behind the eyes."]),
    ("8zz1kk", 2018, "t2_op5", "Weekly discussion thread: gear", ["Anyone tried the new 50mm?"]),
    ("8ab2cd", 2018, "t2_op6", "Sunset over the bay", ["The sun is centred; try the thirds.", "Colours are rich."]),
    ("9qq4rs", 2018, "t2_op7", "Black and white stairs", ["Great geometry, the grain suits it."]),
]
RPCD_YEAR_SPLITS = {"train": ["4kq2xa", "5hx0bd", "6ab9qe", "8zz1kk"], "validation": ["7mm3rt"],
                    "test": ["8ab2cd", "9qq4rs"]}


def rpcd_year_name(post_id: str, year: int, what: str) -> str:
    """``2016-photocritique-submission_4kq2xa-image`` (what: image or comments), the scraper's year naming."""
    return f"{year}-photocritique-submission_{post_id}-{what}"


def write_rpcd_year_release(root: Path, prepared: bool = True, path_split_files: bool = False) -> Path:
    """RPCD as the paper's authors prepared it: ``<year>/photocritique/...`` (scraper at 3ab80c6), with Aestheval's
    column-wise JSON whose ``im_paths`` are ``<year>/photocritique/images/<year>-photocritique-submission_<id>-image.jpeg``
    and whose ``aspect_prediction`` holds one ``{aspect: probability}`` per comment (the record printed in
    ``experiments/reddit_eva.ipynb`` at f72fd12). ``path_split_files``: split files listing image paths, as Aestheval's
    did before 69374ac."""
    for year in sorted({year for _, year, _, _, _ in RPCD_YEAR_POSTS}):
        sub = root / str(year) / "photocritique"
        posts = [post for post in RPCD_YEAR_POSTS if post[1] == year]
        write_csv(sub / f"{year}-photocritique-submissions.csv", RPCD_SUBMISSION_COLUMNS, [
            [post_id, f"https://i.redd.it/{post_id}.jpg", title, 3, len(critiques) + 1, 1460000000, "", author,
             0.9, 3, 0, 0]
            for post_id, _, author, title, critiques in posts])
        for index, (post_id, _, author, _, critiques) in enumerate(posts):
            rows = [[f"c{post_id}{i}", f"t3_{post_id}", text, f"t3_{post_id}", 2, 2, 0, 0, f"t2_u{i}", 1460000100]
                    for i, text in enumerate(critiques)]
            rows.append([f"c{post_id}op", f"t3_{post_id}", "Thanks all!", f"t3_{post_id}", 1, 1, 0, 0, author, 1460000200])
            write_csv(sub / "comments" / f"{rpcd_year_name(post_id, year, 'comments')}.csv", RPCD_SCRAPER_COMMENT_COLUMNS, rows)
            write_image(sub / "images" / f"{rpcd_year_name(post_id, year, 'image')}.jpeg", index, size=RPCD_SIZE)
    def im_path(post_id, year):
        return f"{year}/photocritique/images/{rpcd_year_name(post_id, year, 'image')}.jpeg"

    kept = [post for post in RPCD_YEAR_POSTS if "discussion thread" not in post[3].lower()]
    if prepared:
        write_json(root / "reddit_photocritique_image_comments.json", {
            "im_paths": [im_path(post_id, year) for post_id, year, _, _, _ in kept],
            "aspect_prediction": [[{aspect: 0.4 if aspect == "composition" else 0.1 for aspect in PCCD_ASPECTS}
                                   for _ in critiques] for _, _, _, _, critiques in kept],
            "first_level_comments_values": [critiques for _, _, _, _, critiques in kept],
        })
    years = {post_id: year for post_id, year, _, _, _ in RPCD_YEAR_POSTS}
    split_ids = {split: [im_path(i, years[i]) if path_split_files else i for i in ids]
                 for split, ids in RPCD_YEAR_SPLITS.items()}
    write_rpcd_split_ids(root, split_ids)
    return root


def write_truncated_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = RPCD_SIZE) -> Path:
    """A JPEG cut off half-way: its header opens, its pixels do not decode (a download that stopped)."""
    write_image(path, seed, size=size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_rpcd_bad_scrape(root: Path) -> Path:
    """The chunk-named raw layout (scraper since 96c91fd) with what a scrape really leaves: an error page saved as
    ``<id>-image.html; charset=utf-8`` (the scraper takes the extension from the content type), a GIF, an image of
    256 px or less, a truncated JPEG, and two good posts."""
    split_ids = {"train": ["ok1", "html1", "gif1", "small1", "cut1"], "validation": ["ok2"], "test": ["ok3"]}
    write_rpcd_split_ids(root, split_ids)
    sub = root / "photocritique"
    ids = [post_id for ids in split_ids.values() for post_id in ids]
    write_csv(sub / "submissions_0.csv", ["id", "title", "author_id", "score"],
              [[post_id, f"Post {post_id}", f"op_{post_id}", 1] for post_id in ids])
    for post_id in ids:
        write_csv(sub / "comments" / "submissions_0" / f"{post_id}-comments.csv", RPCD_COMMENT_HEADER,
                  [[f"c_{post_id}", "critic", f"t3_{post_id}", f"Made-up critique of {post_id}.", 1]])
    images = sub / "images" / "submissions_0"
    for seed, post_id in enumerate(("ok1", "ok2", "ok3")):
        write_image(images / f"{post_id}-image.jpeg", seed, size=RPCD_SIZE)
    (images / "html1-image.html; charset=utf-8").write_text("<html><body>429 Too Many Requests</body></html>")
    write_image(images / "gif1-image.gif", 7, size=RPCD_SIZE, fmt="GIF")
    write_image(images / "small1-image.jpeg", 8, size=(256, 180))
    write_truncated_jpeg(images / "cut1-image.jpeg", 9)
    return root


def write_pccd_authors_release(root: Path, split_dir: Path, records: dict | None = None) -> tuple[Path, Path]:
    """PCCD as its authors distribute it: ``raw.json`` (every record) and ``images/<title>.jpg``, no split
    (DeepPhotoCritic-ICCV17's README, pull request #3); the split files apart, in ``split_dir``, as Aestheval
    publishes them (``aestheval/data/PCCD/guru_{train,validation,test}.json``)."""
    records = pccd_records() if records is None else records
    write_json(root / "raw.json", [record for split in records.values() for record in split])
    for seed, record in enumerate(record for split in records.values() for record in split):
        if record["title"] != "3_gamma":  # as in the default fixture: one image missing
            write_image(root / "images" / f"{record['title']}.jpg", seed)
    for split, split_records in records.items():
        write_json(split_dir / f"guru_{split}.json", split_records)
    return root, split_dir


# ARIC's training file (`anotation/comments/train_split_by_val_scored_comment_id_pair.csv`): pandas' index, then the
# columns ARIC's `DPC2022` dataset reads.
DPC2022_PAIRS = [("1001", "warm tones suit the subject", 4.5, 0.45), ("1001", "the crop is tight", 2.0, 0.2),
                 ("1006", "nice depth", 3.0, 0.3), ("1002", "great shot", 1.0, 0.1)]


def write_dpc2022_aric_pairs(root: Path, pairs=DPC2022_PAIRS) -> Path:
    path = root / "anotation" / "comments" / "train_split_by_val_scored_comment_id_pair.csv"
    write_csv(path, ["", "ID", "comment", "sum_score", "norm_sum_score"],
              [[index, image_id, text, ars, norm] for index, (image_id, text, ars, norm) in enumerate(pairs)])
    write_image(root / "img_256x256" / "1006.jpg", 6)
    return path
