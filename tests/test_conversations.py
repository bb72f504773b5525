"""Conversion of AIC datasets into TRL vision-format training conversations."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

import aic_fixtures as fx
from modeling_ase_mllm.data.schema import AIC_FEATURES, PCCD_ASPECTS, dataset_from_rows, make_example
from modeling_ase_mllm.data.conversations import (
    conversation,
    iter_conversation_rows,
    sample_reference_index,
    to_conversations,
    to_resampled_epochs,
)
from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT as PROMPT, aspect_prompt


@pytest.fixture()
def aic_split(tmp_path: Path) -> datasets.Dataset:
    """Twelve images with 1 to 4 aspect-labelled critiques each (30 critiques in all)."""
    rows = []
    for i in range(12):
        n_refs = i % 4 + 1
        image = fx.write_image(tmp_path / f"img{i}.png", i, fmt="PNG")
        aspects = [PCCD_ASPECTS[(i + j) % len(PCCD_ASPECTS)] for j in range(n_refs)]
        rows.append(make_example("test", f"img{i}", image, [f"critique {j} of img{i}" for j in range(n_refs)], aspects))
    return dataset_from_rows(rows, AIC_FEATURES)


def assistant_texts(conversations: datasets.Dataset) -> list[str]:
    return [row[1]["content"][0]["text"] for row in conversations["messages"]]


def user_prompts(conversations: datasets.Dataset) -> list[str]:
    return [row[0]["content"][1]["text"] for row in conversations["messages"]]


def test_prompts():
    assert PROMPT == "Comment on this image from an aesthetic perspective."
    assert aspect_prompt("composition") == "Comment on the composition of this image."
    assert aspect_prompt("color_lighting") == "Comment on the color and lighting of this image."
    assert aspect_prompt("depth_of_field") == "Comment on the depth of field of this image."
    assert aspect_prompt("lens_flare") == "Comment on the lens flare of this image."
    assert len({aspect_prompt(a) for a in PCCD_ASPECTS}) == 7


def test_mode_all_gives_one_example_per_critique(aic_split):
    conversations = to_conversations(aic_split, mode="all")
    assert len(conversations) == 30
    assert assistant_texts(conversations)[:3] == ["critique 0 of img0", "critique 0 of img1", "critique 1 of img1"]
    assert set(user_prompts(conversations)) == {PROMPT}


def test_exact_trl_structure(aic_split):
    row = to_conversations(aic_split)[0]
    assert set(row) == {"images", "messages"}
    assert len(row["images"]) == 1 and isinstance(row["images"][0], Image.Image) and row["images"][0].mode == "RGB"
    # Arrow keeps one struct type for content items, so the image item reads back with "text": None.
    assert row["messages"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": "critique 0 of img0"}]},
    ]
    plain = next(iter_conversation_rows(aic_split))
    assert plain["messages"] == conversation("critique 0 of img0")
    assert plain["messages"][0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}
    assert plain["images"][0]["path"].endswith("img0.png")


def test_output_round_trips_through_from_list(aic_split):
    conversations = to_conversations(aic_split, mode="sample", seed=3)
    rebuilt = datasets.Dataset.from_list(conversations.to_list())
    assert rebuilt["messages"] == conversations["messages"]
    rows = list(iter_conversation_rows(aic_split, mode="sample", seed=3))
    assert len(datasets.Dataset.from_list(rows)) == 12


def test_trl_accepts_the_messages(aic_split):
    data_utils = pytest.importorskip("trl.data_utils")
    row = to_conversations(aic_split)[5]
    prepared = data_utils.prepare_multimodal_messages(row["messages"], images=row["images"])
    assert prepared[0]["content"][0]["image"] is row["images"][0]
    assert data_utils.is_conversational(row)


def test_mode_sample_gives_one_example_per_image_deterministically(aic_split):
    first = to_conversations(aic_split, mode="sample", seed=7)
    again = to_conversations(aic_split, mode="sample", seed=7)
    assert len(first) == 12
    assert assistant_texts(first) == assistant_texts(again)
    images = [text.split(" of ")[1] for text in assistant_texts(first)]
    assert images == [f"img{i}" for i in range(12)]
    other_seed = to_conversations(aic_split, mode="sample", seed=8)
    assert assistant_texts(other_seed) != assistant_texts(first)


def test_sampling_depends_on_epoch_and_not_on_order(aic_split):
    epoch0 = assistant_texts(to_conversations(aic_split, mode="sample", seed=7, epoch=0))
    epoch1 = assistant_texts(to_conversations(aic_split, mode="sample", seed=7, epoch=1))
    assert epoch0 != epoch1
    reversed_split = aic_split.select(range(11, -1, -1))
    assert assistant_texts(to_conversations(reversed_split, mode="sample", seed=7)) == epoch0[::-1]
    assert sample_reference_index("img3", 4, seed=7, epoch=0) == int(epoch0[3].split()[1])


def test_sampling_uses_every_reference_over_many_epochs():
    counts = Counter(sample_reference_index("photo", 4, seed=0, epoch=epoch) for epoch in range(400))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 60
    with pytest.raises(ValueError, match="no reference"):
        sample_reference_index("photo", 0, seed=0)


def test_resampled_epochs(aic_split):
    stacked = to_resampled_epochs(aic_split, num_epochs=3, seed=7)
    assert len(stacked) == 36
    epoch2 = to_conversations(aic_split, mode="sample", seed=7, epoch=2)
    assert assistant_texts(stacked)[24:] == assistant_texts(epoch2)


def test_aspect_conditioned_prompts(aic_split):
    conversations = to_conversations(aic_split, mode="all", aspect_conditioned=True)
    expected = [aspect_prompt(aspect) for aspects in aic_split["reference_aspects"] for aspect in aspects]
    assert user_prompts(conversations) == expected
    assert user_prompts(conversations)[0] == "Comment on the general impression of this image."
    sampled = to_conversations(aic_split, mode="sample", aspect_conditioned=True, seed=1)
    for row, aspects in zip(sampled["messages"], aic_split["reference_aspects"]):
        index = int(row[1]["content"][0]["text"].split()[1])
        assert row[0]["content"][1]["text"] == aspect_prompt(aspects[index])


def test_aspect_conditioned_without_aspect_labels_keeps_the_paper_prompt(tmp_path: Path):
    image = fx.write_image(tmp_path / "a.jpg", 1)
    split = dataset_from_rows([make_example("rpcd", "a", image, ["one", "two"])], AIC_FEATURES)
    conversations = to_conversations(split, aspect_conditioned=True)
    assert user_prompts(conversations) == [PROMPT, PROMPT]


def test_empty_split_and_bad_mode(aic_split):
    empty = to_conversations(aic_split.select([]))
    assert len(empty) == 0 and empty.column_names == ["images", "messages"]
    with pytest.raises(ValueError, match="mode must be one of"):
        to_conversations(aic_split, mode="every")
