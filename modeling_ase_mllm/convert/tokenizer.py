"""Carry an InternVL checkpoint's tokenizer over as a `tokenizers` tokenizer of transformers' own class.

InternLM2's tokenizer (InternVL2-2B, 8B, 26B) is remote code over a SentencePiece BPE `tokenizer.model`; it is
rebuilt here with transformers' SentencePiece extractor, and the rebuilt tokenizer must encode a probe text (the chat
template rendered, every added token, whitespace and Unicode edge cases) exactly as the source's does, or the
conversion stops. Reading a `tokenizer.model` needs `sentencepiece` and `protobuf` (`pip install "ase-mllm[convert]"`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..processing_ase_mllm import IMAGE_CONTEXT_TOKEN, IMAGE_END_TOKEN, IMAGE_PLACEHOLDER, IMAGE_START_TOKEN


# Text the carried-over tokenizer must encode exactly as the source's, beside the chat template and every added
# token: runs of spaces, leading and trailing blanks, tabs and newlines, digits, CJK, full-width letters, emoji.
PROBE_TEXTS = (
    " A photo,  two spaces;   three.\n\n\tTabbed 2024-06-01 ",
    "全角ＡＢＣ与中文标点：构图、光线。 🙂📷\n",
)


def check_sentencepiece_backends(source: Path) -> None:
    """A `tokenizer.model` is read with sentencepiece and protobuf: name what is missing before transformers tries
    (it would report a missing `tiktoken` instead)."""
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    model = source / "tokenizer.model"
    available = {"sentencepiece": is_sentencepiece_available(), "protobuf": is_protobuf_available()}
    missing = [name for name, found in available.items() if not found]
    if model.is_file() and missing:
        raise ImportError(
            f"{model} is a SentencePiece model: reading it needs {' and '.join(missing)} "
            '(pip install "ase-mllm[convert]").'
        )


def sentencepiece_bpe(model_file: str):
    """A SentencePiece BPE model as a `tokenizers` tokenizer that encodes as sentencepiece does.

    transformers' SentencePiece extractor reads the vocabulary, merges and user-defined pieces, and its builder makes
    the byte-fallback BPE with sentencepiece's normalization. sentencepiece's dummy prefix (a `▁` before every text
    it encodes, so before every stretch of text between two added tokens) becomes a normalizer, which `tokenizers`
    too applies stretch by stretch; the decoder drops it again.
    """
    from tokenizers import decoders, normalizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    extractor = SentencePieceExtractor(model_file)
    if extractor.proto.trainer_spec.model_type != 2:  # sentencepiece's ModelType.BPE
        raise ValueError(f"{model_file}: only SentencePiece BPE models can be rebuilt (InternLM2's is one)")
    pieces = extractor.extract(BPE)
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(extractor.proto, pieces["vocab"], pieces["merges"])
    tokenizer.add_tokens(pieces["additional_special_tokens"])
    if extractor.proto.normalizer_spec.add_dummy_prefix:
        tokenizer.normalizer = normalizers.Sequence([tokenizer.normalizer, normalizers.Prepend("▁")])
        tokenizer.decoder = decoders.Sequence([tokenizer.decoder, decoders.Strip(" ", 1, 0)])
    return tokenizer


def native_tokenizer(tokenizer, source: Path):
    """The source's tokenizer if it is one of transformers' own, else the same tokenizer as a `tokenizers` one
    (saved as `tokenizer.json`), with the same added tokens at the same ids and the same special tokens."""
    from transformers import PreTrainedTokenizerFast

    if type(tokenizer).__module__.startswith("transformers."):
        return tokenizer
    if tokenizer.is_fast:
        backend = tokenizer.backend_tokenizer
    elif str(getattr(tokenizer, "vocab_file", "")).endswith(".model"):
        backend = sentencepiece_bpe(tokenizer.vocab_file)
    else:
        raise ValueError(
            f"{source}: its tokenizer {type(tokenizer).__name__} is remote code with neither a `tokenizers` backend "
            "nor a SentencePiece model, so it cannot be carried over without its code."
        )
    native = PreTrainedTokenizerFast(
        tokenizer_object=backend, added_tokens_decoder=tokenizer.added_tokens_decoder, **tokenizer.special_tokens_map,
        extra_special_tokens=tokenizer.extra_special_tokens, add_bos_token=getattr(tokenizer, "add_bos_token", False),
        add_eos_token=getattr(tokenizer, "add_eos_token", False), padding_side=tokenizer.padding_side,
        model_max_length=tokenizer.model_max_length,
        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
    )
    moved = {token.content: index for index, token in tokenizer.added_tokens_decoder.items()
             if native.convert_tokens_to_ids(token.content) != index}
    if moved:
        raise ValueError(f"{source}: the rebuilt tokenizer gives these added tokens other ids: {moved}")
    return native


def remote_tokenizer(folder: str | Path):
    """The folder's remote-code tokenizer classes (`auto_map` of its `tokenizer_config.json`: a slow, fast pair),
    or None when its tokenizer is one of transformers' own."""
    config = Path(folder) / "tokenizer_config.json"
    return json.loads(config.read_text()).get("auto_map", {}).get("AutoTokenizer") if config.is_file() else None


def load_source_tokenizer(source: Path):
    """The source's tokenizer; a remote-code one as its slow class (the reference the rebuild is checked against).

    transformers 5's `AutoTokenizer` always takes the fast class of a remote [slow, fast] pair, and InternLM2's
    remote fast class, built by transformers 5, does not encode as sentencepiece does.
    """
    from transformers import AutoTokenizer
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote = remote_tokenizer(source)
    if isinstance(remote, (list, tuple)) and remote[0]:
        return get_class_from_dynamic_module(remote[0], str(source)).from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=True)


def check_tokenizer_is_ours(folder: str | Path) -> None:
    """A model folder whose tokenizer is remote code (converted before tokenizers were carried over as
    `tokenizer.json`) is named, with the fix, instead of failing deep in transformers for want of
    `trust_remote_code`."""
    if remote := remote_tokenizer(folder):
        raise ValueError(
            f"{Path(folder) / 'tokenizer_config.json'}: the tokenizer is remote code ({remote}); convert the InternVL "
            "source again with `ase-mllm convert`, which writes it as a tokenizer.json that needs no code."
        )


def check_same_encoding(source_tokenizer, tokenizer, texts, source: Path) -> None:
    """Every text encodes to the same ids with both tokenizers, or the conversion stops, naming the first that does
    not and where the two part."""
    for text in texts:
        expected, got = source_tokenizer(text)["input_ids"], tokenizer(text)["input_ids"]
        if expected != got:
            at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
            raise ValueError(
                f"{source}: the tokenizer rebuilt from {type(source_tokenizer).__name__} encodes {text[:80]!r} "
                f"differently from it (from token {at}: {expected[at:at + 5]} expected, {got[at:at + 5]} given); "
                "nothing was converted."
            )


def probe_texts(processor, tokenizer) -> list[str]:
    """The chat template rendered (system message, an image, a reply, a second turn) with the image tokens in
    place, every added token between words and on its own, and `PROBE_TEXTS`."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": " The light is warm,  and soft."}]},
        {"role": "user", "content": [{"type": "text", "text": "And the composition?\n"}]},
    ]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = IMAGE_START_TOKEN + IMAGE_CONTEXT_TOKEN * 3 + IMAGE_END_TOKEN
    added = sorted(tokenizer.get_added_vocab())
    between_words = [f"a{token}b {token} {token}\n" for token in added]
    return [chat.replace(IMAGE_PLACEHOLDER, image), *between_words, "".join(added), *PROBE_TEXTS]

