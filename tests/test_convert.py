"""Conversion from InternVL checkpoints (OpenGVLab remote-code and transformers formats) to ASE-MLLM folders."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    InternVLForConditionalGeneration,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from modeling_ase_mllm.convert.internvl import ase_config_from_opengvlab, convert_internvl_checkpoint, new_ias_weights, rope_parameters
from modeling_ase_mllm.convert.twin import build_internvl_twin, internvl_config_from_ase, is_added_weight
from modeling_ase_mllm.modeling_ase_mllm import AseMllmVisionModel
from modeling_ase_mllm.processing_ase_mllm import INTERNVL2_5_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT, build_chat_template
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, tiny_config
from opengvlab_fixtures import (
    opengvlab_state_dict,
    parity_corpus,
    sentencepiece_ids,
    tokenizer_corpus,
    write_internlm2_checkpoint,
    write_internlm2_tokenizer,
    write_llama_tokenizer,
    write_opengvlab_checkpoint,
)


ROOT = Path(__file__).resolve().parent.parent
PROMPT = "<image>\nComment on this image from an aesthetic perspective."


def internlm2_attention(wqkv, wo, hidden, heads, kv_heads, cos, sin):
    """InternLM2 attention computed straight from `wqkv`'s grouped layout (causal, no bias)."""
    batch, length, _ = hidden.shape
    groups = heads // kv_heads
    head_dim = wqkv.shape[0] // (heads + 2 * kv_heads)
    qkv = (hidden @ wqkv.T).view(batch, length, kv_heads, groups + 2, head_dim)
    q = qkv[..., :groups, :].reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = qkv[..., groups, :].transpose(1, 2)
    v = qkv[..., groups + 1, :].transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(batch, length, heads * head_dim) @ wo.T


# OpenGVLab conversation.py, "MPT" separator style, transcribed: (system template, user role, assistant role, sep).
OPENGVLAB_TEMPLATES = {
    "internlm2-chat": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "Hermes-2": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "phi3-chat": ("<|system|>\n{}", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
    "internvl2_5": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"),
}


def opengvlab_prompt(name: str, system: str, exchanges: list) -> str:
    """`Conversation.get_prompt()`: system + sep, then role + message + sep per turn; an open turn is its role."""
    system_template, user, assistant, sep = OPENGVLAB_TEMPLATES[name]
    prompt = system_template.format(system) + sep
    for question, answer in exchanges:
        prompt += user + question + sep + assistant
        if answer is not None:
            prompt += answer + sep
    return prompt


@pytest.mark.parametrize("name,system", [("internlm2-chat", INTERNVL2_SYSTEM_PROMPT), ("Hermes-2", INTERNVL2_SYSTEM_PROMPT),
                                         ("phi3-chat", INTERNVL2_SYSTEM_PROMPT), ("internvl2_5", INTERNVL2_5_SYSTEM_PROMPT)])
def test_chat_templates_render_opengvlab_conversations(name, system):
    tokenizer = build_processor().tokenizer
    processor = type(build_processor())(image_processor=build_processor().image_processor, tokenizer=tokenizer,
                                        chat_template=build_chat_template(name), system_prompt=system)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Warm light."}]},
        {"role": "user", "content": [{"type": "text", "text": "And the composition?"}]},
    ]
    expected = opengvlab_prompt(name, system, [("<image>\nComment on this image.", "Warm light."),
                                               ("And the composition?", None)])
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == expected


@pytest.fixture(scope="module")
def source_model():
    return build_tiny_model(seed=11, gate=0.0)


@pytest.fixture(scope="module")
def reference(source_model):
    return build_internvl_twin(source_model)


def sample_inputs(saliency_config):
    """Two prompts with images, from a processor built for the model with this `saliency_config`."""
    from conftest import random_image

    processor = build_processor(saliency_config=saliency_config)
    return processor(images=[random_image(300, 700, seed=1), random_image(200, 200, seed=2)],
                     text=[PROMPT, "Hello <image> there"], return_tensors="pt", padding=True)


def test_opengvlab_internlm2_checkpoint_converts_to_identical_logits(tmp_path, source_model, reference):
    config = source_model.config
    heads, kv_heads = config.text_config.num_attention_heads, config.text_config.num_key_value_heads
    assert heads != kv_heads  # GQA
    opengvlab = opengvlab_state_dict(reference.state_dict(), heads, kv_heads)
    assert "language_model.model.layers.0.attention.wqkv.weight" in opengvlab
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in opengvlab and "mlp1.3.weight" in opengvlab

    # The wqkv layout, checked on its own: InternLM2 attention from wqkv equals the Llama layer of the reference.
    layer = reference.model.language_model.layers[0].self_attn
    hidden = torch.randn(2, 7, config.text_config.hidden_size)
    positions = torch.arange(7)[None].expand(2, -1)
    cos, sin = reference.model.language_model.rotary_emb(hidden, positions)
    with torch.no_grad():
        llama = layer(hidden, position_embeddings=(cos, sin), attention_mask=None)[0]
        direct = internlm2_attention(opengvlab["language_model.model.layers.0.attention.wqkv.weight"],
                                     opengvlab["language_model.model.layers.0.attention.wo.weight"],
                                     hidden, heads, kv_heads, cos, sin)
    assert (llama - direct).abs().max() < 1e-5

    source = tmp_path / "InternVL2-tiny"
    processor = build_processor()
    write_opengvlab_checkpoint(source, config, opengvlab, processor.tokenizer, shards=4)
    with pytest.warns(UserWarning, match="spectral_residual"):
        summary = convert_internvl_checkpoint(source, tmp_path / "ase", max_shard_size=200_000)
    assert summary["format"] == "opengvlab" and summary["saliency_source"] == "spectral_residual"
    assert all("saliency_" in name for name in summary["new_weights"]) and summary["new_weights"]
    index = json.loads((tmp_path / "ase" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded output with an index

    # The tokenizer and the conversation template (internlm2-chat: no newline after <|im_end|>) are carried over,
    # and generation stops at <|im_end|> as InternVL's chat() does.
    converted_processor = AutoProcessor.from_pretrained(tmp_path / "ase")
    assert converted_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    assert converted_processor.apply_chat_template(turns, add_generation_prompt=True) == opengvlab_prompt(
        "internlm2-chat", converted_processor.system_prompt, [("<image>\nQ", None)])
    stop = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop in GenerationConfig.from_pretrained(tmp_path / "ase").eos_token_id
    assert summary["conversation_template"] == "internlm2-chat"

    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    assert not any(p.abs().sum() for n, p in converted.named_parameters() if n.endswith("saliency_gate.weight"))
    inputs = sample_inputs(converted.config.saliency_config)
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert (ours - theirs).abs().max() < 1e-5


def test_transformers_internvl_folder_converts_to_identical_logits(tmp_path, reference):
    source = tmp_path / "internvl-hf"
    reference.save_pretrained(source)
    build_processor().tokenizer.save_pretrained(source)
    eat_state = build_tiny_model(seed=3).model.saliency_model.state_dict()
    eat_file = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in eat_state.items()}, str(eat_file))
    eat_config = tiny_config().saliency_config.eat_config.to_dict()
    summary = convert_internvl_checkpoint(source, tmp_path / "ase", eat=eat_file, eat_config=eat_config)
    assert summary["format"] == "transformers" and summary["saliency_source"] == "eat_layercam"
    assert any(name.startswith("model.saliency_model.") for name in summary["new_weights"])
    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    for name, tensor in eat_state.items():
        assert torch.equal(converted.model.saliency_model.state_dict()[name], tensor), name
    inputs = sample_inputs(converted.config.saliency_config)
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert torch.equal(ours, theirs)


# --- InternLM2's SentencePiece tokenizer, Phi-3's RoPE, pixel shuffle, dtype ------------------------------------


def tokenizer_test_texts(processor) -> list[str]:
    """Our critiques and prompts, each also rendered as a chat (system message, image tokens, the critique as the
    reply, InternLM2's turn tokens), every added token in text, and whitespace / Unicode / digit edge cases."""
    texts = tokenizer_corpus()
    image = "<img>" + "<IMG_CONTEXT>" * 4 + "</img>"
    for text in texts[:]:
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on it."}]},
                {"role": "assistant", "content": [{"type": "text", "text": text}]}]
        texts.append(processor.apply_chat_template(chat).replace("<image>", image))
    added = list(processor.tokenizer.get_added_vocab())
    texts += [f"x{token}y {token}\n{token}" for token in added] + ["".join(added)]
    texts += ["  two leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n", "digits 1234567890 3.14",
              "全角ＡＢＣ、标点。", "emoji 📷🙂 mixed", "unseen words: zygomorphic quixotry", " ", ""]
    return texts


@pytest.fixture(scope="module", params=[False, True], ids=["internlm2", "dummy-prefix"])
def internlm2_conversion(request, tmp_path_factory):
    """A tiny InternVL2 folder with InternLM2's kind of SentencePiece tokenizer (behind its remote code), converted;
    once without and once with sentencepiece's dummy prefix, which the rebuild reads from the model file."""
    root = tmp_path_factory.mktemp("internlm2")
    added, _ = write_internlm2_checkpoint(root / "src", tokenizer_options={"add_dummy_prefix": request.param})
    with pytest.warns(UserWarning, match="spectral_residual"):
        summary = convert_internvl_checkpoint(root / "src", root / "ase")
    return root, added, summary


def test_internlm2_tokenizer_is_carried_over_as_a_tokenizers_one_that_encodes_as_sentencepiece(internlm2_conversion):
    import sentencepiece

    root, added, summary = internlm2_conversion
    ase = root / "ase"
    # No tokenizer remote code in the folder: a `tokenizer.json` of transformers' own class.
    assert (ase / "tokenizer.json").is_file() and not list(ase.glob("tokenization_*.py"))
    assert "AutoTokenizer" not in json.loads((ase / "tokenizer_config.json").read_text()).get("auto_map", {})
    processor = AutoProcessor.from_pretrained(ase)
    tokenizer = processor.tokenizer
    assert type(tokenizer).__module__.startswith("transformers.") and summary["tokenizer"] == type(tokenizer).__name__
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in added} == added

    model = sentencepiece.SentencePieceProcessor(model_file=str(root / "src" / "tokenizer.model"))
    source = AutoTokenizer.from_pretrained(root / "src", trust_remote_code=True)
    texts = tokenizer_test_texts(processor)
    compared = 0
    for text in texts:
        expected = sentencepiece_ids(model, added, text)
        assert source(text)["input_ids"] == expected, text  # the remote tokenizer is sentencepiece's encoding
        assert tokenizer(text)["input_ids"] == expected, text
        compared += len(expected)
    print(f"\n{len(texts)} texts, {compared} tokens: the converted tokenizer equals sentencepiece's encoding")
    assert compared > 3000

    # Decoding gives the text back (what the captions go through), as sentencepiece's own decoder does.
    for text in tokenizer_corpus():
        ids = sentencepiece_ids(model, added, text)
        assert tokenizer.decode(ids, skip_special_tokens=True) == model.decode(ids[1:]) == text

    # The processor's own tokenization, image tokens expanded (256 per tile), is the same encoding.
    from conftest import random_image

    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this photo."}]}]
    prompt = processor.apply_chat_template(turns, add_generation_prompt=True)
    inputs = processor(images=[random_image(300, 300, seed=5)], text=[prompt], images_kwargs={"max_patches": 1})
    expanded = prompt.replace("<image>", "<img>" + "<IMG_CONTEXT>" * 256 + "</img>")
    assert inputs["input_ids"][0] == sentencepiece_ids(model, added, expanded)


def test_a_remote_fast_tokenizer_beside_the_slow_one_is_not_used(tmp_path):
    """InternLM2's own repositories pair the slow tokenizer with a remote fast one (`auto_map` [slow, fast]).
    transformers 5's AutoTokenizer always builds the fast one, and InternLM2's, built so, does not encode as
    sentencepiece does; the conversion reads the slow one. The stand-in fast class here refuses to be built."""
    added, _ = write_internlm2_checkpoint(tmp_path / "src")
    config_file = tmp_path / "src" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"]["AutoTokenizer"] = ["tokenization_internlm2.InternLM2Tokenizer",
                                           "tokenization_internlm2_fast.InternLM2TokenizerFast"]
    config_file.write_text(json.dumps(config))
    (tmp_path / "src" / "tokenization_internlm2_fast.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\nclass InternLM2TokenizerFast(PreTrainedTokenizerFast):\n"
        "    def __init__(self, *args, **kwargs):\n        raise RuntimeError('the remote fast tokenizer was built')\n"
    )
    with pytest.raises(RuntimeError, match="remote fast tokenizer was built"):
        AutoTokenizer.from_pretrained(tmp_path / "src", trust_remote_code=True)
    with pytest.warns(UserWarning, match="spectral_residual"):
        convert_internvl_checkpoint(tmp_path / "src", tmp_path / "ase")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ase")
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in added} == added


def test_training_names_a_folder_whose_tokenizer_is_still_remote_code(internlm2_conversion, tmp_path):
    """A folder as the converter wrote it before: InternLM2's remote tokenizer. Training says to convert again, where
    transformers would ask for a `trust_remote_code` that `ase-mllm train` does not take."""
    import shutil

    from modeling_ase_mllm.training.recipes import parse_recipe
    from modeling_ase_mllm.training.train import load_model_for_training

    root, _, _ = internlm2_conversion
    shutil.copytree(root / "ase", tmp_path / "old")
    AutoTokenizer.from_pretrained(root / "src", trust_remote_code=True).save_pretrained(tmp_path / "old")
    assert (tmp_path / "old" / "tokenization_internlm2.py").is_file()
    with pytest.raises(ValueError, match="tokenizer is remote code .*convert the InternVL source again"):
        load_model_for_training(parse_recipe(recipe="mini", overrides={"model": str(tmp_path / "old")})[0])


def test_a_rebuilt_tokenizer_that_encodes_differently_stops_the_conversion(tmp_path):
    """sentencepiece's `remove_extra_whitespaces` (collapse runs of spaces) has no `tokenizers` counterpart in the
    rebuild: the probe text shows the difference, and nothing is written."""
    write_internlm2_checkpoint(tmp_path / "src", tokenizer_options={"remove_extra_whitespaces": True})
    with pytest.warns(UserWarning, match="spectral_residual"), pytest.raises(ValueError) as error:
        convert_internvl_checkpoint(tmp_path / "src", tmp_path / "ase")
    message = str(error.value)
    assert str(tmp_path / "src") in message and "encodes" in message and "nothing was converted" in message
    assert not (tmp_path / "ase").exists()


@pytest.mark.parametrize("legacy,rstrip", [(False, False), (False, True), (None, False)],
                         ids=["phi3-legacy-false", "phi3-rstrip-tokens", "legacy-default"])
def test_a_llama_tokenizer_model_alone_encodes_as_the_slow_llama_tokenizer(tmp_path, legacy, rstrip):
    """Row 4 and "what it must show" 4: a Llama/Phi-3 folder with only `tokenizer.model` (InternVL2-4B's kind),
    converted, encodes ~2,500 texts (runs of spaces, tabs, newlines, code, non-ASCII, every added token at the start,
    inside and at the end) as transformers 4's slow `LlamaTokenizer` does, the class OpenGVLab's code loads
    (`SlowLlamaEncoding`, itself checked against transformers 4.57's own class in `test_compat.py`); transformers 5's
    `LlamaTokenizer` of the same folder does not (leading blanks, a leading added token)."""
    from modeling_ase_mllm.convert.tokenizer import load_source_tokenizer, native_tokenizer

    source = tmp_path / "src"
    added = write_llama_tokenizer(source, legacy=legacy, rstrip=rstrip)
    tokenizer, reference = native_tokenizer(load_source_tokenizer(source), source)
    tokenizer.save_pretrained(tmp_path / "converted")
    converted = AutoTokenizer.from_pretrained(tmp_path / "converted")
    assert type(converted).__module__.startswith("transformers.") and not (tmp_path / "converted" / "tokenizer.model").exists()
    assert {token: converted.convert_tokens_to_ids(token) for token in added} == added

    texts = parity_corpus(list(added))
    expected = [reference(text)["input_ids"] for text in texts]
    mismatches = [text for text, ids in zip(texts, expected) if converted(text)["input_ids"] != ids]
    transformers5 = AutoTokenizer.from_pretrained(source)
    theirs = [text for text, ids in zip(texts, expected) if transformers5(text)["input_ids"] != ids]
    tokens = sum(map(len, expected))
    print(f"\n{len(texts)} texts, {tokens} tokens: the converted tokenizer differs from the slow Llama tokenizer on "
          f"{len(mismatches)}; transformers 5's LlamaTokenizer of the same folder on {len(theirs)}")
    assert len(texts) > 2000 and not mismatches, mismatches[:5]
    assert theirs if legacy is False else True
    for text in texts[:200]:  # decoding gives the text back, as the slow tokenizer's decoding does
        ids = converted(text)["input_ids"]
        if not any(token in text for token in added) and "▁" not in text:
            assert converted.decode(ids, skip_special_tokens=True) == text, text


MISSING_SENTENCEPIECE_CHILD = """
import json, sys
sys.modules["sentencepiece"] = sys.modules["google.protobuf"] = None
from modeling_ase_mllm.convert.internvl import convert_internvl_checkpoint
messages = {}
for source in sys.argv[1:]:
    try:
        convert_internvl_checkpoint(source, source + "-ase")
    except ImportError as error:
        messages[source] = str(error)
print(json.dumps(messages))
"""


def test_missing_sentencepiece_is_named_with_the_extra_that_installs_it(tmp_path):
    """Without sentencepiece and protobuf (blocked in a child process), converting a folder with a `tokenizer.model`
    (InternLM2's remote tokenizer, or a Llama tokenizer with no tokenizer.json) says which packages are missing and
    how to install them; for the Llama one transformers would blame a missing tiktoken."""
    sources = [tmp_path / "internlm2", tmp_path / "llama"]
    for source, write_tokenizer in zip(sources, (write_internlm2_tokenizer, write_llama_tokenizer)):
        source.mkdir()
        write_tokenizer(source)
        (source / "config.json").write_text(json.dumps({"architectures": ["InternVLChatModel"], "ps_version": "v2",
                                                        "llm_config": {"architectures": ["Phi3ForCausalLM"]}}))
    run = subprocess.run([sys.executable, "-c", MISSING_SENTENCEPIECE_CHILD, *map(str, sources)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    messages = json.loads(run.stdout.strip().splitlines()[-1])
    assert messages == {str(source): f"{source / 'tokenizer.model'} is a SentencePiece model: reading it needs "
                                     'sentencepiece and protobuf (pip install "ase-mllm[convert]").'
                        for source in sources}
    assert not any(Path(f"{source}-ase").exists() for source in sources)


@pytest.mark.parametrize("version", ["v1", None])
def test_pixel_shuffle_v1_is_refused(tmp_path, version):
    """OpenGVLab's pixel shuffle "v1" (its default when `ps_version` is absent) leaves each tile's 16x16 feature
    grid transposed against "v2", ours: refused before anything is read or written."""
    grid = torch.arange(2 * 32 * 32 * 4.0).reshape(2, 32, 32, 4)

    def pixel_shuffle(x, version):  # OpenGVLab's InternVLChatModel.pixel_shuffle, transcribed (scale 0.5)
        n, w, h, c = x.shape
        x = x.reshape(n, w, h // 2, c * 2).permute(0, 2, 1, 3).reshape(n, h // 2, w // 2, c * 4)
        return x if version == "v1" else x.permute(0, 2, 1, 3)

    assert torch.equal(pixel_shuffle(grid, "v1"), pixel_shuffle(grid, "v2").transpose(1, 2))
    assert not torch.equal(pixel_shuffle(grid, "v1"), pixel_shuffle(grid, "v2"))

    overrides = {"ps_version": version} if version else {}
    write_internlm2_checkpoint(tmp_path / "src", **overrides)
    if version is None:
        config = json.loads((tmp_path / "src" / "config.json").read_text())
        del config["ps_version"]
        (tmp_path / "src" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="only pixel shuffle 'v2' converts") as error:
        convert_internvl_checkpoint(tmp_path / "src", tmp_path / "ase")
    assert str(tmp_path / "src" / "config.json") in str(error.value)
    assert ("ps_version 'v1'" if version else "no ps_version (OpenGVLab's default is 'v1')") in str(error.value)
    assert not (tmp_path / "ase").exists()


def phi3_su_cos_sin(positions, factors, dim, base, max_positions, original):
    """OpenGVLab's Phi-3 `Phi3SuScaledRotaryEmbedding`, transcribed: inverse frequencies divided by the short or long
    factors (long once the sequence passes `original` positions), cos/sin scaled by sqrt(1 + ln(max/orig)/ln(orig))."""
    inv_freq = 1.0 / (torch.tensor(factors) * base ** (torch.arange(0, dim, 2).float() / dim))
    scale = math.sqrt(1 + math.log(max_positions / original) / math.log(original))
    freqs = positions[:, None].float() * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def test_internvl2_4b_phi3_with_su_rope_converts(tmp_path):
    """InternVL2-4B's Phi-3 `llm_config` (OpenGVLab's field names: `rope_scaling: {"type": "su", "short_factor",
    "long_factor"}`, `original_max_position_embeddings` beside it, 128K positions) and a tokenizer that is only a
    `tokenizer.model`: converted, the RoPE is transformers' LongRoPE with the same numbers, its cos/sin equal the
    "su" formula below and beyond the original 4096 positions, and the logits equal InternVL's."""
    source = tmp_path / "InternVL2-4B-tiny"
    source.mkdir()
    added = write_llama_tokenizer(source)
    head_dim, theta, original, longest = 16, 10000.0, 4096, 131072
    short = [1.0 + 0.05 * i for i in range(head_dim // 2)]
    long = [1.0 + 1.5 * i for i in range(head_dim // 2)]
    text = {**tiny_config("phi3").text_config.to_dict(), "vocab_size": max(added.values()) + 1,
            "max_position_embeddings": longest, "original_max_position_embeddings": original,
            "rope_parameters": {"rope_type": "longrope", "rope_theta": theta, "short_factor": short,
                                "long_factor": long, "original_max_position_embeddings": original},
            "bos_token_id": 1, "eos_token_id": added["<|end|>"], "pad_token_id": 0}
    config = tiny_config("phi3", text_config=text, image_token_id=added["<IMG_CONTEXT>"],
                         start_image_token_id=added["<img>"], end_image_token_id=added["</img>"])
    reference = build_internvl_twin(build_tiny_model(config, seed=5, gate=0.0))
    llm = config.text_config
    assert llm.hidden_size // llm.num_attention_heads == head_dim
    llm_config = {  # InternVL2-4B's llm_config fields, at tiny widths
        "_name_or_path": "microsoft/Phi-3-mini-128k-instruct", "architectures": ["Phi3ForCausalLM"],
        "attention_dropout": 0.0, "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                                               "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": added["<|end|>"], "hidden_act": "silu",
        "hidden_size": llm.hidden_size, "initializer_range": 0.02, "intermediate_size": llm.intermediate_size,
        "max_position_embeddings": longest, "model_type": "phi3", "num_attention_heads": llm.num_attention_heads,
        "num_hidden_layers": llm.num_hidden_layers, "num_key_value_heads": llm.num_key_value_heads,
        "original_max_position_embeddings": original, "pad_token_id": 0, "resid_pdrop": 0.0,
        "rms_norm_eps": llm.rms_norm_eps,
        "rope_scaling": {"long_factor": long, "short_factor": short, "type": "su"}, "rope_theta": theta,
        "sliding_window": 262144, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.37.2", "use_cache": True, "vocab_size": llm.vocab_size,
    }
    state = opengvlab_state_dict(reference.state_dict(), llm.num_attention_heads, llm.num_key_value_heads, llm="phi3")
    assert "language_model.model.layers.0.self_attn.qkv_proj.weight" in state
    write_opengvlab_checkpoint(source, config, state, shards=2, template="phi3-chat", llm_config=llm_config,
                               torch_dtype="float32")
    with pytest.warns(UserWarning, match="spectral_residual"):
        summary = convert_internvl_checkpoint(source, tmp_path / "ase")
    assert summary["conversation_template"] == "phi3-chat" and added["<|end|>"] in summary["eos_token_id"]

    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "ase").eval()
    rope = converted.config.text_config.rope_parameters
    assert rope["rope_type"] == "longrope" and rope["original_max_position_embeddings"] == original
    assert rope["short_factor"] == short and rope["long_factor"] == long and rope["rope_theta"] == theta
    rotary = converted.model.language_model.rotary_emb
    for start in (0, 5000):  # short factors up to 4096 positions, long ones past them
        positions = torch.arange(start, start + 8)
        cos, sin = rotary(torch.zeros(1, 8, llm.hidden_size), positions[None])
        expected_cos, expected_sin = phi3_su_cos_sin(positions, long if start else short, head_dim, theta, longest,
                                                     original)
        assert (cos[0] - expected_cos).abs().max() < 1e-5 and (sin[0] - expected_sin).abs().max() < 1e-5

    from conftest import random_image

    processor = AutoProcessor.from_pretrained(tmp_path / "ase")
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on it."}]}]
    inputs = processor(images=[random_image(300, 500, seed=2)], return_tensors="pt",
                       text=[processor.apply_chat_template(turns, add_generation_prompt=True)])
    with torch.no_grad():
        ours = converted(**inputs).logits
        theirs = reference(**{k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert (ours - theirs).abs().max() < 1e-5


def test_legacy_rope_settings_become_transformers_rope_parameters():
    """`rope_scaling` + `rope_theta` as InternVL2's LLM configs write them -> `rope_parameters`, which transformers
    accepts as they are (Phi-3's "su" under its current name, LongRoPE)."""
    su = {"type": "su", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    assert rope_parameters({"rope_theta": 1e6}) == {"rope_type": "default", "rope_theta": 1e6}  # Qwen2
    assert rope_parameters({"rope_theta": 1e4, "rope_scaling": {"type": "dynamic", "factor": 2.0}}) == {
        "rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}  # InternLM2.5-7B (InternVL2-8B)
    assert rope_parameters({"rope_theta": 1e4, "rope_scaling": su}) == {
        "rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8, "rope_theta": 1e4}
    assert rope_parameters({"rope_parameters": {"rope_type": "linear", "factor": 4.0}}) == {
        "rope_type": "linear", "factor": 4.0}
    # InternLM2's "linear" scaling reaches the Llama config (it was dropped before).
    vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
    source = {"vision_config": vision, "llm_config": {
        "architectures": ["InternLM2ForCausalLM"], "vocab_size": 64, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e6,
        "rope_scaling": {"type": "linear", "factor": 4.0}}}
    text = ase_config_from_opengvlab(source, {"image_token_id": 5}).text_config
    assert text.rope_parameters == {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}


def written_dtypes(folder: Path) -> dict[torch.dtype, int]:
    """How many tensors of each dtype the folder's safetensors shards hold."""
    counts = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as tensors:
            for name in tensors.keys():
                dtype = tensors.get_tensor(name).dtype
                counts[dtype] = counts.get(dtype, 0) + 1
    return counts


def test_every_tensor_is_written_in_the_source_dtype_unless_told(tmp_path):
    """A bfloat16 source with an fp32 EAT file: converted, new IAS and EAT weights all bfloat16 (the config says so
    and the model loads so); `--dtype float32` gives all float32."""
    write_internlm2_checkpoint(tmp_path / "src", dtype=torch.bfloat16)
    eat_file = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in build_tiny_model(seed=3).model.saliency_model.state_dict().items()},
              str(eat_file))
    eat_config = tiny_config().saliency_config.eat_config.to_dict()
    summary = convert_internvl_checkpoint(tmp_path / "src", tmp_path / "bf16", eat=eat_file, eat_config=eat_config)
    counts = written_dtypes(tmp_path / "bf16")
    assert sum(counts.values()) == summary["converted_tensors"] + len(summary["new_weights"])
    assert [dtype for dtype in counts if dtype.is_floating_point] == [torch.bfloat16]
    assert summary["dtype"] == "bfloat16"
    assert any(name.startswith("model.saliency_model.") for name in summary["new_weights"])
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16

    from modeling_ase_mllm.cli import main

    with pytest.warns(UserWarning, match="spectral_residual"):
        assert main(["convert", str(tmp_path / "src"), str(tmp_path / "fp32"), "--dtype", "float32"]) == 0
    assert [dtype for dtype in written_dtypes(tmp_path / "fp32") if dtype.is_floating_point] == [torch.float32]


def test_new_ias_weights_are_initialised_as_a_built_model_initialises_them():
    """The conversion materialises only the IAS modules of a vision tower built on `meta`; their weights follow the
    init of a tower built whole: the same names and shapes, the same constants (zero gates, unit norms, zero biases)
    and, for the random ones, the same mean and spread (within 4 standard errors)."""
    config = tiny_config(vision_config={**tiny_config().vision_config.to_dict(), "hidden_size": 256,
                                        "intermediate_size": 512, "saliency_embed_dim": 64})
    torch.manual_seed(0)
    whole = AseMllmVisionModel(config.vision_config).state_dict()
    reference = {f"model.vision_tower.{k}": v for k, v in whole.items() if is_added_weight(f"model.vision_tower.{k}")}
    new = dict(new_ias_weights(config, torch.bfloat16))
    assert list(new) == list(reference)
    for name, tensor in new.items():
        expected = reference[name]
        assert tensor.dtype == torch.bfloat16 and tensor.shape == expected.shape, name
        if expected.min() == expected.max():
            assert torch.equal(tensor, expected.to(torch.bfloat16)), name
            continue
        values, n = tensor.float(), expected.numel()
        assert abs(values.mean() - expected.mean()) < 4 * expected.std() / n**0.5, name
        assert abs(values.std() / expected.std() - 1) < 4 / (2 * n) ** 0.5, name


MEMORY_CHILD = """
import sys, warnings
import modeling_ase_mllm.convert.internvl as convert
warnings.simplefilter("ignore")

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
convert.convert_internvl_checkpoint(sys.argv[1], sys.argv[2], max_shard_size=int(sys.argv[3]))
print(before, status("VmHWM:"))
"""


@pytest.mark.slow
def test_conversion_holds_about_two_shards_in_memory(tmp_path):
    """4 source shards of ~31 MiB: the converter's peak RSS (VmHWM, reset just before converting) grows by less than
    2 shards, where loading the checkpoint whole would need all 4 (`bench/convert_memory.py` measures InternVL2-1B)."""
    config = tiny_config(text_config={**tiny_config().text_config.to_dict(), "hidden_size": 512, "intermediate_size": 1536,
                                      "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4,
                                      "vocab_size": 16384})
    model = build_tiny_model(config, seed=1)
    state = opengvlab_state_dict(build_internvl_twin(model).state_dict(), 8, 4)
    total = sum(t.numel() * t.element_size() for t in state.values())
    del model
    source = tmp_path / "src"
    write_opengvlab_checkpoint(source, config, state, build_processor().tokenizer, shards=4)
    sizes = sorted(p.stat().st_size for p in source.glob("*.safetensors"))
    shard = sum(sizes) / len(sizes)
    print(f"\nsource shards (MiB): {[round(size / 2**20, 1) for size in sizes]}")
    del state
    run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(source), str(tmp_path / "out"), str(int(shard))],
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    before, after = (int(v) * 1024 for v in run.stdout.split()[-2:])
    growth = after - before
    print(f"\n4 shards of {shard / 2**20:.1f} MiB ({total / 2**20:.1f} MiB in all): peak RSS grew {growth / 2**20:.1f} MiB")
    assert growth < 2 * shard and 3.5 * shard < total  # measured 1.45: one output shard, one input tensor (a 32 MiB embedding)
