"""Folders saved by the release before issue 26 (`tests/fixtures/before_issue26`, see its `make.py`) load with the
code of today and compute exactly what that release computed: the same greedy tokens and the same logits (diff 0.0)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch


BEFORE = Path(__file__).parent / "fixtures" / "before_issue26"


def load_make():
    spec = importlib.util.spec_from_file_location("before_issue26_make", BEFORE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The expected numbers were computed on one thread; a reduction split otherwise may round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", ["internvl", "qwen_vl"])
def test_folder_saved_before_issue26_gives_identical_tokens_and_logits(family, one_thread):
    import PIL.Image

    expected = json.loads((BEFORE / "expected.json").read_text(encoding="utf-8"))
    with PIL.Image.open(BEFORE / "photos" / expected["photo"]) as image:
        got = load_make().outputs(BEFORE / family, family, image.convert("RGB"))
    assert got["tokens"] == expected[family]["tokens"]
    diff = (torch.tensor(got["last_logits"]) - torch.tensor(expected[family]["last_logits"])).abs().max().item()
    assert diff == 0.0
    assert got["logits_sha256"] == expected[family]["logits_sha256"]
