"""Tiny InternVL checkpoints in OpenGVLab's remote-code layout, written by the tests.

- `opengvlab_state_dict`: transformers-InternVL weights under OpenGVLab's names (InternLM2's grouped `wqkv`, or a
  Phi-3 / Qwen2 / Llama LLM under `language_model.`).
- `write_opengvlab_checkpoint`: `config.json` in OpenGVLab's format (`vision_config` + `llm_config`), the tokenizer
  and the weights in safetensors shards with an index.
- `write_internlm2_tokenizer`: InternLM2's tokenizer as OpenGVLab ships it, a SentencePiece BPE `tokenizer.model`
  (trained here, on the spot) behind a remote-code slow tokenizer (`tokenization_internlm2.py`,
  `auto_map` in `tokenizer_config.json`), with InternLM2's chat tokens and InternVL's image tokens as special tokens.
  The remote module is our own small stand-in, not OpenGVLab's code: InternLM2's slow tokenizer is sentencepiece's
  encoding of each piece of text between the added tokens, `<s>` first, and so is this one.
- `sentencepiece_ids`: that encoding computed straight from sentencepiece, the reference the tests compare with.
- `write_internlm2_checkpoint`: all of it, for a tiny random model sized to that tokenizer (InternVL2-2B/8B's layout).
- `write_llama_tokenizer`: a Llama tokenizer that ships only `tokenizer.model` (Llama's SentencePiece options), with
  Phi-3's chat tokens and InternVL's image tokens appended, as in InternVL2-4B.
- `parity_corpus`: texts two tokenizers must encode alike: the critiques and prompts under runs of spaces, tabs and
  newlines, code, non-ASCII text, and every added token at the start, inside and at the end of them.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from modeling_ase_mllm.convert.twin import build_internvl_twin
from modeling_ase_mllm.data.mini_aic import load_mini_aic_records
from modeling_ase_mllm.processing_ase_mllm import INTERNVL2_5_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
from modeling_ase_mllm.testing.tiny import BASE_CORPUS, build_tiny_model, tiny_config


# --- weights ----------------------------------------------------------------------------------------------------


def opengvlab_state_dict(hf: dict, heads: int, kv_heads: int, llm: str = "internlm2") -> dict:
    """transformers-InternVL names -> OpenGVLab names. With `llm="internlm2"`, InternLM2's `wqkv` is built row by row:
    for every KV head, its `heads / kv_heads` query heads, then its key head, then its value head; any other LLM keeps
    its transformers names under `language_model.` (OpenGVLab's Phi-3, Qwen2 and Llama use the same names)."""
    out = {}
    for name, tensor in hf.items():
        parts = name.split(".")
        if name.startswith("model.vision_tower.embeddings."):
            new = {"cls_token": "class_embedding", "position_embeddings": "position_embedding"}.get(parts[3])
            out[f"vision_model.embeddings.{new}" if new else name.replace(
                "model.vision_tower.embeddings.patch_embeddings.projection", "vision_model.embeddings.patch_embedding")] = tensor
        elif name.startswith("model.vision_tower.encoder.layer."):
            i, rest = parts[4], ".".join(parts[5:])
            if rest.startswith("attention.q_proj"):
                kind = parts[-1]
                fused = torch.cat([hf[f"model.vision_tower.encoder.layer.{i}.attention.{p}.{kind}"]
                                   for p in ("q_proj", "k_proj", "v_proj")])
                out[f"vision_model.encoder.layers.{i}.attn.qkv.{kind}"] = fused
                continue
            if rest.startswith(("attention.k_proj", "attention.v_proj")):
                continue
            rest = (rest.replace("attention.projection_layer", "attn.proj").replace("lambda_1", "ls1")
                    .replace("lambda_2", "ls2").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2"))
            out[f"vision_model.encoder.layers.{i}.{rest}"] = tensor
        elif name.startswith("model.multi_modal_projector."):
            index = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}[parts[2]]
            out[f"mlp1.{index}.{parts[3]}"] = tensor
        elif llm != "internlm2":
            if name == "lm_head.weight":
                out["language_model.lm_head.weight"] = tensor
            elif name.startswith("model.language_model."):
                out["language_model.model." + name[len("model.language_model."):]] = tensor
            else:
                raise AssertionError(f"unmapped {name}")
        elif name == "model.language_model.embed_tokens.weight":
            out["language_model.model.tok_embeddings.weight"] = tensor
        elif name == "model.language_model.norm.weight":
            out["language_model.model.norm.weight"] = tensor
        elif name == "lm_head.weight":
            out["language_model.output.weight"] = tensor
        elif name.startswith("model.language_model.layers."):
            i, rest = parts[3], ".".join(parts[4:])
            prefix = f"language_model.model.layers.{i}"
            if rest == "self_attn.q_proj.weight":
                q = hf[f"model.language_model.layers.{i}.self_attn.q_proj.weight"]
                k = hf[f"model.language_model.layers.{i}.self_attn.k_proj.weight"]
                v = hf[f"model.language_model.layers.{i}.self_attn.v_proj.weight"]
                head_dim = q.shape[0] // heads
                rows = []
                for g in range(kv_heads):
                    for j in range(heads // kv_heads):
                        h = g * (heads // kv_heads) + j
                        rows.append(q[h * head_dim:(h + 1) * head_dim])
                    rows.append(k[g * head_dim:(g + 1) * head_dim])
                    rows.append(v[g * head_dim:(g + 1) * head_dim])
                out[f"{prefix}.attention.wqkv.weight"] = torch.cat(rows)
            elif rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                continue
            else:
                new = {"self_attn.o_proj.weight": "attention.wo.weight", "mlp.gate_proj.weight": "feed_forward.w1.weight",
                       "mlp.up_proj.weight": "feed_forward.w3.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
                       "input_layernorm.weight": "attention_norm.weight",
                       "post_attention_layernorm.weight": "ffn_norm.weight"}[rest]
                out[f"{prefix}.{new}"] = tensor
        else:
            raise AssertionError(f"unmapped {name}")
    return out


def write_shards(folder: Path, state: dict, shards: int, materialize=None) -> None:
    """Split by bytes (greedy, in key order) into `shards` files of about equal size, with an index. With
    `materialize`, `state` may hold `meta` tensors: each shard's are made real by it just before that shard is written,
    so that only one shard is ever in memory."""
    materialize = materialize or (lambda tensor: tensor)
    sizes = {n: t.numel() * t.element_size() for n, t in state.items()}
    budget, parts, current, filled = sum(sizes.values()) / shards, [[] for _ in range(shards)], 0, 0
    for name in state:
        if parts[current] and filled + sizes[name] / 2 > budget * (current + 1) and current < shards - 1:
            current += 1
        parts[current].append(name)
        filled += sizes[name]
    weight_map = {}
    for index, part in enumerate(parts):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: materialize(state[n]).contiguous() for n in part}, str(folder / file))
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def internlm2_llm_config(text) -> dict:
    """OpenGVLab's `llm_config` for an InternLM2 LLM with `text`'s (a Llama config's) shapes."""
    return {
        "architectures": ["InternLM2ForCausalLM"], "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
        "rms_norm_eps": text.rms_norm_eps, "rope_theta": text.rope_parameters["rope_theta"],
        "max_position_embeddings": text.max_position_embeddings, "bias": False, "tie_word_embeddings": False,
        "pad_token_id": text.pad_token_id, "eos_token_id": text.eos_token_id, "bos_token_id": text.bos_token_id,
    }


def write_opengvlab_checkpoint(folder: Path, config, state: dict, tokenizer=None, shards: int = 4,
                               template: str = "internlm2-chat", llm_config: dict | None = None,
                               materialize=None, **top_level) -> None:
    """An OpenGVLab InternVL folder: `config.json` (`llm_config` InternLM2's unless given), the tokenizer (saved with
    `save_pretrained` when given; `write_internlm2_tokenizer` writes OpenGVLab's own) and `state` in `shards` files.
    `top_level` sets or overrides top-level config fields (`ps_version`, `torch_dtype`, ...); `materialize`: see
    `write_shards`."""
    folder.mkdir(parents=True, exist_ok=True)
    vision = config.vision_config
    opengvlab = {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
        "select_layer": -1, "template": template, "ps_version": "v2",
        "vision_config": {
            "architectures": ["InternVisionModel"], "hidden_size": vision.hidden_size,
            "num_hidden_layers": vision.num_hidden_layers, "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size, "qkv_bias": vision.attention_bias,
            "qk_normalization": vision.use_qk_norm, "norm_type": vision.norm_type, "layer_norm_eps": vision.layer_norm_eps,
            "image_size": 448, "patch_size": 14, "drop_path_rate": 0.0, "use_flash_attn": False,
        },
        "llm_config": llm_config if llm_config is not None else internlm2_llm_config(config.text_config),
        **top_level,
    }
    (folder / "config.json").write_text(json.dumps(opengvlab, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    write_shards(folder, state, shards, materialize)


# --- InternLM2's tokenizer ----------------------------------------------------------------------------------------

# InternLM2's own special tokens (in its vocabulary) and the ones InternVL2 appends after it, in their id order.
INTERNLM2_CHAT_TOKENS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                         "<|im_start|>"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
CONTROL_TOKENS = ["<unk>", "<s>", "</s>"]

# Our stand-in for OpenGVLab's `tokenization_internlm2.py` (see the module docstring).
INTERNLM2_TOKENIZER_MODULE = '''"""Test stand-in for InternLM2's slow tokenizer: sentencepiece's encoding between added tokens."""
import sentencepiece
from transformers import PreTrainedTokenizer


class InternLM2Tokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, add_bos_token=True, add_eos_token=False, **kwargs):
        self.vocab_file, self.add_bos_token, self.add_eos_token = vocab_file, add_bos_token, add_eos_token
        self.sp_model = sentencepiece.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        return {**{self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}, **self.added_tokens_encoder}

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        ids = token_ids_0 + (token_ids_1 or [])
        return [self.bos_token_id] * self.add_bos_token + ids + [self.eos_token_id] * self.add_eos_token
'''


def tokenizer_corpus() -> list[str]:
    """Text the tests' sentencepiece model is trained on: our critiques, prompts and both system messages."""
    critiques = [c["text"] for photo in load_mini_aic_records() for c in photo["critiques"]]
    return [*BASE_CORPUS, *critiques, INTERNVL2_SYSTEM_PROMPT, INTERNVL2_5_SYSTEM_PROMPT,
            "system\nuser\nassistant\n", "Comment on the lighting, colour and composition of this photo."]


def train_sentencepiece(vocab_size: int = 700, **options) -> bytes:
    """A SentencePiece BPE model of InternLM2's kind: byte fallback, no normalization, whitespace kept, digits split,
    `<unk> <s> </s>` = 0 1 2 and InternLM2's chat tokens as user-defined pieces, no dummy prefix. `options`
    override sentencepiece's trainer options (`add_dummy_prefix=True`, ...)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        **{"byte_fallback": True, "normalization_rule_name": "identity", "remove_extra_whitespaces": False,
           "add_dummy_prefix": False, "split_digits": True, "allow_whitespace_only_pieces": True, **options},
        user_defined_symbols=INTERNLM2_CHAT_TOKENS, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def write_internlm2_tokenizer(folder: Path, **options) -> dict[str, int]:
    """InternLM2's tokenizer files as OpenGVLab ships them (`options` go to `train_sentencepiece`); returns every
    added token's id."""
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_sentencepiece(**options))
    model = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    ids = {token: model.piece_to_id(token) for token in CONTROL_TOKENS + INTERNLM2_CHAT_TOKENS}
    ids.update({token: model.get_piece_size() + index for index, token in enumerate(INTERNVL_TOKENS)})
    (folder / "tokenization_internlm2.py").write_text(INTERNLM2_TOKENIZER_MODULE)
    config = {
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "tokenizer_class": "InternLM2Tokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "added_tokens_decoder": {str(i): added_token(token) for token, i in sorted(ids.items(), key=lambda t: t[1])},
        "additional_special_tokens": INTERNLM2_CHAT_TOKENS[::-1] + INTERNVL_TOKENS,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return ids


def sentencepiece_ids(model, added: dict[str, int], text: str, bos_id: int = 1) -> list[int]:
    """What InternLM2's tokenizer gives for `text`: `<s>`, then every added token as its id and the text between
    them as sentencepiece encodes it (`model` a `SentencePieceProcessor`)."""
    pattern = "|".join(re.escape(token) for token in sorted(added, key=len, reverse=True))
    ids = [bos_id]
    for piece in re.split(f"({pattern})", text):
        ids += [added[piece]] if piece in added else model.encode(piece) if piece else []
    return ids


PHI3_TOKENS = ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<img>", "</img>", "<IMG_CONTEXT>"]


def write_llama_tokenizer(folder: Path, legacy: bool | None = False, rstrip: bool = False) -> dict[str, int]:
    """A Llama tokenizer that ships only `tokenizer.model` (no tokenizer.json), with Phi-3's chat tokens and
    InternVL's image tokens appended, as in InternVL2-4B; returns every added token's id.

    The model is trained with Llama's SentencePiece options (dummy prefix, byte fallback, digits split, whitespace
    kept). `legacy` is the `tokenizer_config.json` field (None: absent, transformers 4's `True`); `rstrip`: the
    appended tokens swallow the blanks after them, as Phi-3's own do.
    """
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_sentencepiece(add_dummy_prefix=True))
    size = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    added = {"<unk>": 0, "<s>": 1, "</s>": 2, **{token: size + i for i, token in enumerate(PHI3_TOKENS)}}
    decoder = {str(i): {**added_token(token), "rstrip": rstrip and i >= size} for token, i in added.items()}
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|end|>", "unk_token": "<unk>",
              "pad_token": "<unk>", "add_bos_token": True, "added_tokens_decoder": decoder}
    if legacy is not None:
        config["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return added


CODE_TEXTS = (
    'def crop(image, margin=10):\n    """Cut the borders."""\n    return image[margin:-margin, margin:-margin]\n',
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\t// tab\n}\n",
    '<div class="caption">  Warm light  </div>\r\n',
    "SELECT *\n  FROM photos\n WHERE score >= 4.5;  -- two spaces\n",
)
NON_ASCII_TEXTS = ("全角ＡＢＣ与中文标点：构图、光线。", "Ça, c'est très beau — naïve café", "Фото: тёплый свет",
                   "emoji 📷🙂 mixed", "Cafe\u0301 with a combining accent", "日本語の写真、 光と影")
# Blanks where tokenizers part: before, after and instead of the spaces of a text, and sentencepiece's own `▁`.
WHITESPACE_VARIANTS = (
    lambda text: text, lambda text: " " + text, lambda text: "   " + text, lambda text: "\t" + text,
    lambda text: "\n" + text, lambda text: " \n " + text, lambda text: text + "   ", lambda text: text + "\n\n",
    lambda text: text.replace(" ", "  "), lambda text: text.replace(" ", "\t"), lambda text: text.replace(" ", "\n"),
    lambda text: "▁" + text.replace(" ", "▁ "),
)


def parity_corpus(added_tokens: list[str]) -> list[str]:
    """About 2,500 texts: our critiques, prompts, code and non-ASCII text, each under `WHITESPACE_VARIANTS`, and
    each with every one of `added_tokens` in front (with and without a blank after it), at the end and inside."""
    base = [*tokenizer_corpus(), *CODE_TEXTS, *NON_ASCII_TEXTS]
    texts = [variant(text) for text in base for variant in WHITESPACE_VARIANTS]
    for token in added_tokens:
        for text in base:
            middle = len(text) // 2
            texts += [token + text, f"{token} {text}", f"{text}{token}", f"{text[:middle]}{token}{text[middle:]}"]
    texts += ["".join(added_tokens), " ".join(added_tokens), " ", "  ", "\t", "\n", " \n ", ""]
    return texts


def internlm2_sized_config(added: dict[str, int]):
    """The tiny preset with the vocabulary, special and image token ids of `write_internlm2_tokenizer`'s tokenizer."""
    text = {**tiny_config().text_config.to_dict(), "vocab_size": max(added.values()) + 1, "bos_token_id": added["<s>"],
            "eos_token_id": added["</s>"], "pad_token_id": added["</s>"]}
    return tiny_config(text_config=text, image_token_id=added["<IMG_CONTEXT>"], start_image_token_id=added["<img>"],
                       end_image_token_id=added["</img>"])


def write_internlm2_checkpoint(folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32, shards: int = 2,
                               tokenizer_options: dict | None = None, **top_level):
    """A tiny InternVL2 folder as OpenGVLab ships InternVL2-2B/8B: InternLM2 LLM (GQA, grouped `wqkv`), InternLM2's
    SentencePiece tokenizer behind its remote code, weights in `dtype` (declared as `torch_dtype`). Returns the added
    token ids and transformers' InternVL holding the same weights (in float32)."""
    added = write_internlm2_tokenizer(folder, **(tokenizer_options or {}))
    config = internlm2_sized_config(added)
    reference = build_internvl_twin(build_tiny_model(config, seed=seed, gate=0.0))
    text = config.text_config
    state = opengvlab_state_dict(reference.state_dict(), text.num_attention_heads, text.num_key_value_heads)
    state = {name: tensor.to(dtype) for name, tensor in state.items()}
    write_opengvlab_checkpoint(folder, config, state, shards=shards, torch_dtype=str(dtype).removeprefix("torch."),
                               **top_level)
    return added, reference
