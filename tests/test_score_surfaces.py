"""Every surface that shows a critique shows the aesthetic score, the same number: `ase-mllm score` (EAT alone),
`caption --json` and its plain lines, and `serve`'s extra message field; an untrained EAT is labelled once."""

import json

import pytest

from conftest import random_image
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.inference.scores import SCORE_FIELD
from modeling_ase_mllm.scoring_ase_mllm import UNTRAINED_NOTE


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    random_image(300, 700, seed=21).save(folder / "wide.png")
    random_image(260, 200, seed=22).save(folder / "tall.jpg")
    (folder / "broken.jpg").write_bytes(b"not a photo" * 10)
    return [folder / "wide.png", folder / "tall.jpg", folder / "broken.jpg"]


def run(argv, capsys):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_score_and_caption_give_the_same_score_and_say_once_that_it_is_untrained(saved_model, photo_files, capsys):
    status, out, err = run(["score", *photo_files, "--model", saved_model, "--json"], capsys)
    scored = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and [line["image"] for line in scored] == [str(p) for p in photo_files]
    assert "could not be read" in scored[2]["error"] and "score" not in scored[2]
    assert all(len(line["rating_outputs"]) == 10 for line in scored[:2])
    assert err.count(UNTRAINED_NOTE) == 1  # the tiny random model's EAT carries no trained weights

    status, out, err = run(["caption", *photo_files, "--model", saved_model, "--json", "--max-new-tokens", "3",
                            "--batch-size", "2", "--max-tiles", "1"], capsys)
    captioned = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and err.count(UNTRAINED_NOTE) == 1
    for a, b in zip(scored[:2], captioned[:2]):
        assert b["caption"] and b["score"] == pytest.approx(a["score"], abs=1e-6)
        assert b["rating_outputs"] == pytest.approx(a["rating_outputs"], abs=1e-6)
    assert "score" not in captioned[2]

    _, plain, _ = run(["score", *photo_files[:2], "--model", saved_model], capsys)
    assert plain.splitlines() == [f"{line['image']}: {line['score']:.2f}" for line in scored[:2]]
    _, plain, _ = run(["caption", photo_files[0], "--model", saved_model, "--max-new-tokens", "3", "--max-tiles", "1"], capsys)
    assert plain.startswith(f"{photo_files[0]}: [{scored[0]['score']:.2f}] ")


def test_the_server_answer_carries_the_score_as_an_extra_field(saved_model, photo_files, capsys):
    import PIL.Image
    from serving_helpers import chat_body, data_url, post, served

    _, out, _ = run(["score", photo_files[0], "--model", saved_model, "--json"], capsys)
    expected = json.loads(out)
    with served(saved_model) as base:
        answer = post(base, chat_body(data_url(PIL.Image.open(photo_files[0])), max_tokens=3))
    assert answer.status == 200 and answer.content is not None
    field = answer.json["choices"][0]["message"][SCORE_FIELD]
    assert field["trained"] is False and field["note"] == UNTRAINED_NOTE
    [image] = field["images"]
    assert image["score"] == pytest.approx(expected["score"], abs=1e-6)
    assert image["rating_outputs"] == pytest.approx(expected["rating_outputs"], abs=1e-6)
