"""The bundled mini AIC set: offline, complete and in the readers' schema."""

from __future__ import annotations

import socket

import pytest
from PIL import Image

from modeling_ase_mllm.data.registry import load_aic_dataset
from modeling_ase_mllm.data.schema import AIC_FEATURES, PCCD_ASPECTS
from modeling_ase_mllm.data.conversations import to_conversations
from modeling_ase_mllm.data.mini_aic import MINI_AIC_FILE, load_mini_aic, load_mini_aic_records


@pytest.fixture()
def offline(monkeypatch):
    """Hugging Face offline mode, and any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def mini():
    return load_mini_aic()


def test_loads_offline_with_split_sizes(offline):
    dataset = load_mini_aic()
    assert {name: len(split) for name, split in dataset.items()} == {"train": 6, "test": 3}
    assert dataset["train"].features == AIC_FEATURES
    assert set(dataset["train"]["image_id"]).isdisjoint(dataset["test"]["image_id"])
    assert dataset["test"]["image_id"] == ["coffee", "camera", "moon"]


def test_every_photo_decodes(mini):
    for split in mini.values():
        for row in split:
            image = row["image"]
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert min(image.size) >= 256
            image.load()


def test_every_pccd_aspect_is_covered(mini):
    for name, split in mini.items():
        covered = {aspect for aspects in split["reference_aspects"] for aspect in aspects}
        assert covered == set(PCCD_ASPECTS), name


def test_two_to_four_aligned_critiques_per_photo(mini):
    for split in mini.values():
        for row in split:
            assert 2 <= len(row["references"]) <= 4
            assert len(row["reference_aspects"]) == len(row["references"])
            assert all(len(text.split()) >= 8 for text in row["references"])
            assert row["dataset"] == "mini_aic" and row["score"] is None


def test_data_file_matches_loaded_set(mini):
    records = load_mini_aic_records(MINI_AIC_FILE)
    assert len(records) == 9 and sum(len(r["critiques"]) for r in records) == 28
    assert sum(len(refs) for split in mini.values() for refs in split["references"]) == 28


def test_registry_and_conversations(offline):
    dataset = load_aic_dataset("mini_aic", splits=["test"])
    assert list(dataset) == ["test"]
    conversations = to_conversations(dataset["test"], mode="all", aspect_conditioned=True)
    assert len(conversations) == 9
    assert conversations[0]["messages"][0]["content"][1]["text"] == "Comment on the color and lighting of this image."
    with pytest.raises(ValueError, match="unknown split"):
        load_mini_aic(splits=["validation"])
