"""Carry an InternVL checkpoint's tokenizer over as a `tokenizers` tokenizer of transformers' own class.

Two kinds of source tokenizer are a SentencePiece BPE `tokenizer.model` and nothing else, and both are rebuilt here
with transformers' SentencePiece extractor:

- InternLM2's (InternVL2-2B, 8B, 26B), remote code: sentencepiece's encoding of each stretch of text between added
  tokens (`sentencepiece_bpe`); the reference is the source's own (slow, remote) class.
- Llama's (Phi-3 in InternVL2-4B, and any Llama folder without a `tokenizer.json`). OpenGVLab's code loads it with
  `use_fast=False`: transformers 4's slow `LlamaTokenizer`, which with `legacy: false` puts one `▁` before the whole
  text (even before leading blanks, and alone before a leading added token unless that one is among the named
  special tokens) and none after an added token. transformers 5 has no slow class left, and its `LlamaTokenizer`
  (and the converter behind it) add no `▁` before a text that starts with a blank. `sentencepiece_llama` builds
  the pipeline that encodes as the slow class; the reference, `SlowLlamaEncoding`, is that class's encoding
  computed with sentencepiece itself.

Every rebuilt tokenizer must encode a probe (the chat template rendered, every added token, whitespace, code and
Unicode edge cases) exactly as its reference, or the conversion stops. Reading a `tokenizer.model` needs
`sentencepiece` and `protobuf` (`pip install "ase-mllm[convert]"`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..processing_ase_mllm import IMAGE_PLACEHOLDER


# Text the carried-over tokenizer must encode exactly as the source's, beside the chat template and every added
# token: runs of spaces, leading and trailing blanks, tabs and newlines, digits, CJK, full-width letters, emoji.
PROBE_TEXTS = (
    " A photo,  two spaces;   three.\n\n\tTabbed 2024-06-01 ",
    "全角ＡＢＣ与中文标点：构图、光线。 🙂📷\n",
    "  leading blanks", "\tleading tab", "\nleading newline", " ", "▁literal ▁ marks",
    "def crop(image):\n    return image[:, 10:-10]  # keep the centre\n\tif x:\n\t\tpass\n",
)
# `tokenizer_class` values whose `tokenizer.model` alone is rebuilt as transformers 4's slow Llama tokenizer encodes.
SLOW_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
# transformers 4's named special tokens (`SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES`, less the list).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


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


def sentencepiece_bpe_model(model_file: str):
    """`(extractor, pieces, tokenizer)`: transformers' SentencePiece extractor of `model_file`, what it extracts
    (vocabulary, merges, user-defined pieces) and the byte-fallback BPE its builder makes of them, with
    sentencepiece's normalization."""
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    extractor = SentencePieceExtractor(model_file)
    if extractor.proto.trainer_spec.model_type != 2:  # sentencepiece's ModelType.BPE
        raise ValueError(f"{model_file}: only SentencePiece BPE models can be rebuilt (InternLM2's and Llama's are)")
    pieces = extractor.extract(BPE)
    return extractor, pieces, SpmConverter.build_tokenizer_from_spm_proto(extractor.proto, pieces["vocab"],
                                                                          pieces["merges"])


def sentencepiece_bpe(model_file: str):
    """A SentencePiece BPE model as a `tokenizers` tokenizer that encodes as sentencepiece does.

    transformers' SentencePiece extractor reads the vocabulary, merges and user-defined pieces, and its builder makes
    the byte-fallback BPE with sentencepiece's normalization. sentencepiece's dummy prefix (a `▁` before every text
    it encodes, so before every stretch of text between two added tokens) becomes a normalizer, which `tokenizers`
    too applies stretch by stretch; the decoder drops it again.
    """
    from tokenizers import decoders, normalizers

    extractor, pieces, tokenizer = sentencepiece_bpe_model(model_file)
    tokenizer.add_tokens(pieces["additional_special_tokens"])
    if extractor.proto.normalizer_spec.add_dummy_prefix:
        tokenizer.normalizer = normalizers.Sequence([tokenizer.normalizer, normalizers.Prepend("▁")])
        tokenizer.decoder = decoders.Sequence([tokenizer.decoder, decoders.Strip(" ", 1, 0)])
    return tokenizer


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _alternatives(tokens) -> str:
    return "|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True))


def named_special_tokens(config: dict) -> list[str]:
    """transformers 4's `all_special_tokens` from a `tokenizer_config.json`: the named special tokens and the
    `additional_special_tokens` (not every added token marked special)."""
    named = [_content(config[key]) for key in NAMED_SPECIAL_TOKENS if config.get(key)]
    return list(dict.fromkeys(named + [_content(token) for token in config.get("additional_special_tokens") or []]))


def sentencepiece_model(model_file: str, legacy: bool):
    """The sentencepiece processor the slow Llama tokenizer encodes with: the model's, without its dummy prefix
    unless `legacy` (the slow class puts the `▁` itself)."""
    import sentencepiece
    from transformers.convert_slow_tokenizer import import_protobuf

    processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
    if not legacy:
        proto = import_protobuf().ModelProto.FromString(processor.serialized_model_proto())
        proto.normalizer_spec.add_dummy_prefix = False
        processor.LoadFromSerializedProto(proto.SerializeToString())
    return processor


def sentencepiece_llama(model_file: str, added_tokens: dict, special: list[str], legacy: bool, add_prefix_space: bool):
    """A Llama SentencePiece BPE model as a `tokenizers` tokenizer that encodes as transformers 4's slow
    `LlamaTokenizer` does; `added_tokens` is `{id: AddedToken}`, `special` its `all_special_tokens`.

    `legacy`: sentencepiece's encoding of each stretch between added tokens (`sentencepiece_bpe`). Otherwise the
    slow class turns `▁` into a blank, puts one `▁` before the whole text (`add_prefix_space`) and encodes each
    stretch without a dummy prefix; before a leading added token that `▁` stays alone, unless the token is in
    `special`. In `tokenizers` that is one normalizer over the whole text: every added token is matched after
    normalization (`normalized=True`), and the `▁` goes in at the start (`\\A`) unless the text starts with a token of
    `special`, is empty, or is one added token whose own normalization must leave it unchanged (so a text that is
    exactly one such token alone gets no `▁`, where the slow class gives it one; a text is never one token alone in
    a prompt or a critique). Without the prefix, the slow class still drops a single leading blank before a token of
    `special`, and so does the normalizer. Blanks become `▁` in the pre-tokenizer, after the added tokens'
    `lstrip`/`rstrip` have seen them as blanks.
    """
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers

    if legacy:
        tokenizer = sentencepiece_bpe(model_file)
    else:
        extractor, _, tokenizer = sentencepiece_bpe_model(model_file)
        steps = [normalizers.Replace("▁", " ")]
        if add_prefix_space:
            others = [token.content for token in added_tokens.values() if token.content not in special]
            unprefixed = [_alternatives(special)] if special else []
            unprefixed += [rf"(?:{_alternatives(others)})\z"] if others else []
            unprefixed.append(r"\z")
            steps.append(normalizers.Replace(Regex(rf"\A(?!{'|'.join(unprefixed)})"), "▁"))
        elif special:  # the slow class drops a leading lone `▁` before a special token with or without its prefix
            steps.append(normalizers.Replace(Regex(rf"\A (?=(?:{_alternatives(special)}))"), ""))
        if extractor.proto.normalizer_spec.precompiled_charsmap:
            steps.append(normalizers.Precompiled(extractor.proto.normalizer_spec.precompiled_charsmap))
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
            + ([decoders.Strip(" ", 1, 0)] if add_prefix_space else []))
    tokenizer.add_special_tokens([
        AddedToken(token.content, single_word=token.single_word, lstrip=token.lstrip, rstrip=token.rstrip,
                   normalized=not legacy, special=token.special)
        for _, token in sorted(added_tokens.items())
    ])
    return tokenizer


class SlowLlamaEncoding:
    """How transformers 4's slow `LlamaTokenizer` encodes text (`tokenize`, then ids, BOS/EOS), computed with
    sentencepiece: the reference a rebuilt Llama tokenizer is checked against. `encoding(text)["input_ids"]`, as
    a tokenizer's call.

    The text is split on the added tokens (the longest first; an `rstrip`/`lstrip` token strips the blanks after
    or before it); without `legacy`, `▁` is a blank, one `▁` goes before the text (`add_prefix_space`), dropped
    again when a token of `special` follows it at once, and a stretch that starts with a blank is encoded after a
    throw-away `unk_token` so that sentencepiece keeps that blank.
    """

    def __init__(self, model_file: str, config: dict, added_tokens: dict):
        self.legacy = config.get("legacy", True)  # transformers 4's default, with a warning
        self.add_prefix_space = config.get("add_prefix_space", True)
        self.special = set(named_special_tokens(config))
        self.unk = _content(config.get("unk_token") or "<unk>")
        self.model_file, self.model = model_file, sentencepiece_model(model_file, self.legacy)
        self.added = {token.content: (index, token) for index, token in added_tokens.items()}
        self.pattern = re.compile(f"({_alternatives(self.added)})") if self.added else None
        self.bos = self.added.get(_content(config.get("bos_token") or ""), (None,))[0]
        self.eos = self.added.get(_content(config.get("eos_token") or ""), (None,))[0]
        self.add_bos, self.add_eos = config.get("add_bos_token", True), config.get("add_eos_token", False)

    def stretch(self, text: str) -> list[str]:
        if self.legacy or not text.startswith(("▁", " ")):
            return self.model.encode(text, out_type=str)
        skip = len(self.model.encode(self.unk, out_type=str))
        pieces = self.model.encode(self.unk + text, out_type=str)
        return pieces[skip:] if len(pieces) >= skip else pieces

    def tokenize(self, text: str) -> list[str]:
        if not self.legacy and text:
            text = ("▁" if self.add_prefix_space else "") + text.replace("▁", " ")
        parts = self.pattern.split(text) if self.pattern else [text]
        for index in range(1, len(parts), 2):  # the added tokens' places
            token = self.added[parts[index]][1]
            if token.rstrip and index + 1 < len(parts):
                parts[index + 1] = parts[index + 1].lstrip()
            if token.lstrip:
                parts[index - 1] = parts[index - 1].rstrip()
        tokens = []
        for index, part in enumerate(parts):
            if part:
                tokens += [part] if index % 2 else self.stretch(part)
        if not self.legacy and len(tokens) > 1 and tokens[0] == "▁" and tokens[1] in self.special:
            tokens = tokens[1:]
        return tokens

    def __call__(self, text: str) -> dict[str, list[int]]:
        ids = [self.added[token][0] if token in self.added else self.model.piece_to_id(token)
               for token in self.tokenize(text)]
        ids = [self.bos] * bool(self.add_bos and self.bos is not None) + ids
        return {"input_ids": ids + [self.eos] * bool(self.add_eos and self.eos is not None)}


def slow_llama_source(source: Path) -> dict | None:
    """The `tokenizer_config.json` of a folder whose tokenizer is Llama's `tokenizer.model` alone, else None."""
    config_file = source / "tokenizer_config.json"
    if not (source / "tokenizer.model").is_file() or (source / "tokenizer.json").is_file() or not config_file.is_file():
        return None
    from .shards import read_json

    config = read_json(config_file)
    return config if config.get("tokenizer_class") in SLOW_LLAMA_CLASSES and not remote_tokenizer(source) else None


def native_tokenizer(tokenizer, source: Path):
    """`(tokenizer, reference)`: the tokenizer to save, as a `tokenizers` one of transformers' own class (saved as
    `tokenizer.json`) with the same added tokens at the same ids and the same special tokens, and what it must encode
    as (None when it is the source's own `tokenizer.json`).

    A Llama `tokenizer.model` alone is rebuilt to encode as the slow class (`sentencepiece_llama`, reference
    `SlowLlamaEncoding`); a remote-code tokenizer becomes its `tokenizers` backend (or, for a SentencePiece one,
    `sentencepiece_bpe`), its reference itself. Any other `tokenizer.model` alone is refused: nothing here could
    tell whether transformers 5 encodes it as the source's code did.
    """
    from transformers import PreTrainedTokenizerFast

    reference = tokenizer
    if (config := slow_llama_source(source)) is not None:
        added = dict(tokenizer.added_tokens_decoder)
        reference = SlowLlamaEncoding(str(source / "tokenizer.model"), config, added)
        backend = sentencepiece_llama(reference.model_file, added, sorted(reference.special), reference.legacy,
                                      reference.add_prefix_space)
        added = {index: token for index, token in backend.get_added_tokens_decoder().items()}
    elif type(tokenizer).__module__.startswith("transformers."):
        if (source / "tokenizer.model").is_file() and not (source / "tokenizer.json").is_file():
            raise ValueError(
                f"{source}: its tokenizer {type(tokenizer).__name__} is a tokenizer.model alone, which only Llama's "
                f"({', '.join(SLOW_LLAMA_CLASSES)}) is rebuilt from and checked against; add the source's "
                "tokenizer.json, or convert its tokenizer first."
            )
        return tokenizer, None
    elif tokenizer.is_fast:
        backend, added = tokenizer.backend_tokenizer, tokenizer.added_tokens_decoder
    elif str(getattr(tokenizer, "vocab_file", "")).endswith(".model"):
        backend, added = sentencepiece_bpe(tokenizer.vocab_file), tokenizer.added_tokens_decoder
    else:
        raise ValueError(
            f"{source}: its tokenizer {type(tokenizer).__name__} is remote code with neither a `tokenizers` backend "
            "nor a SentencePiece model, so it cannot be carried over without its code."
        )
    native = PreTrainedTokenizerFast(
        tokenizer_object=backend, added_tokens_decoder=added, **tokenizer.special_tokens_map,
        extra_special_tokens=tokenizer.extra_special_tokens, add_bos_token=getattr(tokenizer, "add_bos_token", False),
        add_eos_token=getattr(tokenizer, "add_eos_token", False), padding_side=tokenizer.padding_side,
        model_max_length=tokenizer.model_max_length,
        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
    )
    moved = {token.content: index for index, token in tokenizer.added_tokens_decoder.items()
             if native.convert_tokens_to_ids(token.content) != index}
    if moved:
        raise ValueError(f"{source}: the rebuilt tokenizer gives these added tokens other ids: {moved}")
    return native, reference


def remote_tokenizer(folder: str | Path):
    """The folder's remote-code tokenizer classes (`auto_map` of its `tokenizer_config.json`: a slow, fast pair),
    or None when its tokenizer is one of transformers' own."""
    from .shards import read_json

    config = Path(folder) / "tokenizer_config.json"
    return read_json(config).get("auto_map", {}).get("AutoTokenizer") if config.is_file() else None


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
    image = processor.start_image_token + processor.context_image_token * 3 + processor.end_image_token
    added = sorted(tokenizer.get_added_vocab())
    between_words = [f"a{token}b {token} {token}\n" for token in added]
    return [chat.replace(IMAGE_PLACEHOLDER, image), *between_words, "".join(added), *PROBE_TEXTS]

