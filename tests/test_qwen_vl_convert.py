"""Conversion of Qwen-VL-Chat checkpoints (its remote-code format) and of its tiktoken tokenizer."""

import base64
import json
import unicodedata

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

from conftest import chat_inputs, image_turn, random_image
from modeling_ase_mllm.cli import main
from modeling_ase_mllm.convert.qwen_vl import (
    QWEN_VL_SPECIAL_TOKENS,
    convert_qwen_tokenizer,
    convert_qwen_vl_checkpoint,
    qwen_tokenizer_from_tiktoken,
)
from modeling_ase_mllm.data.mini_aic import load_mini_aic
from modeling_ase_mllm.modeling_ase_mllm import set_saliency_gates
from qwen_vl_fixtures import write_qwen_vl_checkpoint


# ------------------------------------------------------------------------------------------------ tokenizer


def tiktoken_file_trained_here(path, corpus: list[str], num_ranks: int = 480):
    """A tiktoken BPE file trained by tiktoken's own trainer on `corpus` with Qwen's regex (Qwen2's, the same)."""
    from tiktoken._educational import bpe_train
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    ranks = bpe_train("\n".join(corpus), num_ranks, PRETOKENIZE_REGEX, visualise=None)
    path.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items()))
    return ranks


def qwen_encode(ranks: dict, text: str) -> list[int]:
    """Qwen's tokenizer on text: NFC, then tiktoken with its regex, its special tokens after the ranks, all allowed."""
    import tiktoken
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    specials = {token: len(ranks) + index for index, token in enumerate(QWEN_VL_SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding("qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens=specials)
    return encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")


@pytest.fixture(scope="module")
def critiques() -> list[str]:
    return [reference for split in load_mini_aic(["train", "test"]).values() for references in split["references"]
            for reference in references]


@pytest.fixture(scope="module")
def trained_tiktoken(critiques, tmp_path_factory):
    """A 480-rank tiktoken file trained on a dozen of our critiques, and its ranks."""
    path = tmp_path_factory.mktemp("tiktoken") / "qwen.tiktoken"
    return path, tiktoken_file_trained_here(path, critiques[:12])


def test_tiktoken_tokenizer_converts_token_for_token(trained_tiktoken, critiques):
    """On a corpus of our critiques (each also as a chat prompt with an image span), every special token between
    words, whitespace runs, digits, CJK, emoji and decomposed accents: the converted tokenizer's ids are Qwen's."""
    tiktoken_file, ranks = trained_tiktoken
    processor = convert_qwen_tokenizer(tiktoken_file)
    tokenizer = processor.tokenizer
    chats = [processor.apply_chat_template(image_turn(None, text), add_generation_prompt=True)
             .replace("<image>", "<img>" + "<imgpad>" * 4 + "</img>") for text in critiques]
    corpus = [
        *critiques, *chats,
        *(f"a{token}b {token}\n" for token in QWEN_VL_SPECIAL_TOKENS),
        "".join(QWEN_VL_SPECIAL_TOKENS),
        "  two  spaces,\ttabs\t\tand\n\n\nnewlines \n ",
        "1234567 3.14159 2024-06-01 ½ ²",
        "构图很好，光线柔和。全角ＡＢＣ 🙂📷👍🏽",
        "Cafe\u0301 cre\u0300me A\u030a n\u0303 \u1e9b\u0323",
        "'s 't 're 've 'm 'll 'd 'S 'LL",
    ]
    tokens = 0
    for text in corpus:
        expected = qwen_encode(ranks, text)
        assert tokenizer(text)["input_ids"] == expected, text
        tokens += len(expected)
    print(f"\n{len(corpus)} texts, {tokens} tokens: converted == tiktoken (Qwen's encoding)")
    assert len(corpus) > 100 and tokens > 5000
    ids = {token: len(ranks) + index for index, token in enumerate(QWEN_VL_SPECIAL_TOKENS)}
    assert tokenizer.convert_tokens_to_ids(list(ids)) == list(ids.values())
    assert tokenizer.decode(tokenizer("Cafe\u0301 <|im_end|>")["input_ids"], skip_special_tokens=True) == "Café "


def test_a_converted_tokenizer_without_nfc_is_caught_by_the_probe(trained_tiktoken, monkeypatch):
    """The check before writing is sharp: drop the NFC normalizer and the probe's decomposed accents stop it."""
    import modeling_ase_mllm.convert.qwen_vl as convert_qwen_vl

    tiktoken_file, _ = trained_tiktoken
    convert_qwen_tokenizer(tiktoken_file)  # as converted: passes

    def without_nfc(path):
        tokenizer = qwen_tokenizer_from_tiktoken(path)
        tokenizer.backend_tokenizer.normalizer = None
        return tokenizer

    monkeypatch.setattr(convert_qwen_vl, "qwen_tokenizer_from_tiktoken", without_nfc)
    with pytest.raises(ValueError, match="encodes 'Cafe\u0301"):
        convert_qwen_tokenizer(tiktoken_file)


# ------------------------------------------------------------------------------------------------ checkpoint


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_qwen_vl_checkpoint_converts_to_identical_weights_and_logits(tmp_path, make_qwen_vl_model, fmt):
    """A tiny model written in Qwen-VL-Chat's format (3 shards) converts back to the same weights; with the new IAS
    weights at gate 0 the converted model's logits are bit-equal to the original's at gate 0."""
    original = make_qwen_vl_model(gate=0.5, seed=3)
    source = write_qwen_vl_checkpoint(original, tmp_path / "Qwen-VL-Chat", fmt=fmt)
    output = tmp_path / "converted"
    with pytest.warns(UserWarning, match="spectral_residual"):
        summary = convert_qwen_vl_checkpoint(source, output, max_shard_size=400_000)
    assert summary["format"] == "qwen-vl" and summary["dtype"] == "float32"
    assert summary["eos_token_id"] == [400, 402, 401]  # <|endoftext|>, then chat()'s stops <|im_end|>, <|im_start|>
    assert len(list(output.glob("model-*.safetensors"))) > 1
    assert all(".saliency_" in name for name in summary["new_weights"])

    converted = AutoModelForImageTextToText.from_pretrained(output, dtype=torch.float32).eval()
    assert type(converted).__name__ == "AseMllmQwenVLForConditionalGeneration"
    assert converted.config.saliency_config.source == "spectral_residual"
    ours = original.state_dict()
    for name, tensor in converted.state_dict().items():
        if ".saliency_" in name:
            if name.endswith("saliency_gate.weight"):
                assert not tensor.any(), name
            continue
        assert torch.equal(tensor, ours[name]), name

    processor = AutoProcessor.from_pretrained(output)
    inputs = chat_inputs(processor, random_image(300, 700, seed=3))
    assert processor.apply_chat_template(image_turn(None)).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPicture 1: <image>\n")
    set_saliency_gates(original, 0.0)
    # The original's source is EAT, the converted one's spectral residual: at gate 0 the maps do not count, so the
    # original takes the converted processor's maps as maps given by hand (no `saliency_source` to refuse).
    by_hand = {key: value for key, value in inputs.items() if key != "saliency_source"}
    with torch.no_grad():
        assert torch.equal(converted(**inputs).logits, original(**by_hand).logits)
    generation = GenerationConfig.from_pretrained(output)
    assert generation.eos_token_id == [400, 402, 401] and generation.pad_token_id == 400 and not generation.do_sample


@pytest.mark.filterwarnings("ignore:no EAT checkpoint given")
def test_ase_mllm_convert_dispatches_qwen_vl_folders_and_refuses_what_differs(tmp_path, make_qwen_vl_model, capsys):
    source = write_qwen_vl_checkpoint(make_qwen_vl_model(), tmp_path / "Qwen-VL-Chat", shards=1)
    with pytest.warns(UserWarning, match="spectral_residual"):
        assert main(["convert", str(source), str(tmp_path / "out")]) == 0
    assert "qwen-vl checkpoint ->" in capsys.readouterr().out  # the summary's `format`, as for InternVL
    with safe_open(str(next((tmp_path / "out").glob("model-*.safetensors"))), framework="pt") as tensors:
        assert "model.multi_modal_projector.proj.weight" in tensors.keys()

    config = json.loads((source / "config.json").read_text())
    for change, message in (({"rotary_pct": 0.5}, "rotary_pct 0.5"),
                            ({"quantization_config": {"quant_method": "gptq"}}, "quantized"),
                            ({"visual": {**config["visual"], "image_start_id": 5}}, "image_start_id 5")):
        (source / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            convert_qwen_vl_checkpoint(source, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
