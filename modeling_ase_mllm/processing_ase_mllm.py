"""ASE-MLLM processor: the tiling + saliency image processor and a tokenizer, with InternVL's token layout.

Each `<image>` placeholder in the text becomes `<img>` + `<IMG_CONTEXT>` × 256 × (tiles of that image) +
`</img>`, the layout of OpenGVLab's InternVL2. The placeholder is a separate string (as in InternVL's own
`chat()`), so a prompt that already holds `<IMG_CONTEXT>`, `<img>` or `</img>` is rejected instead of being
silently mistaken for an image.

Remote code: imports only transformers, torch and sibling modules.
"""

import json
import re
import sys
from pathlib import Path

from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin

# transformers 5.8-5.9 copy only the direct relative imports of an `auto_map` module into their module cache, so every
# sibling that image_processing_ase_mllm imports is imported here too.
from .configuration_ase_mllm import SALIENCY_SOURCES  # noqa: F401
from .image_processing_ase_mllm import AseMllmImageProcessor  # noqa: F401  (copied into Hub folders with us)
from .saliency_ase_mllm import map_saliency_to_tiles  # noqa: F401


IMAGE_PLACEHOLDER = "<image>"
IMAGE_START_TOKEN = "<img>"
IMAGE_END_TOKEN = "</img>"
IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMAGE_TOKENS = (IMAGE_START_TOKEN, IMAGE_END_TOKEN, IMAGE_CONTEXT_TOKEN)

# The system message InternVL2 was trained with (OpenGVLab `conversation.py`, internlm2-chat template).
INTERNVL2_SYSTEM_PROMPT = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

# The system message of InternVL2.5 / InternVL3 (OpenGVLab `conversation.py`, internvl2_5 template).
INTERNVL2_5_SYSTEM_PROMPT = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)

# OpenGVLab's conversation templates (all "MPT" style: each turn is `role prefix + text + separator`), as
# (role prefix opening, role prefix closing, separator, system message). The prefix is `open + role + close`.
CONVERSATION_STYLES = {
    "internvl2_5": ("<|im_start|>", "\n", "<|im_end|>\n", INTERNVL2_5_SYSTEM_PROMPT),
    "internlm2-chat": ("<|im_start|>", "\n", "<|im_end|>", INTERNVL2_SYSTEM_PROMPT),
    "Hermes-2": ("<|im_start|>", "\n", "<|im_end|>", INTERNVL2_SYSTEM_PROMPT),
    "phi3-chat": ("<|", "|>\n", "<|end|>", INTERNVL2_SYSTEM_PROMPT),
}


def build_chat_template(style: str = "internvl2_5") -> str:
    """A Jinja chat template rendering OpenGVLab's conversation template `style` for `<image>` placeholders.

    The assistant's text and its stop token sit inside `{% generation %}`, so `return_assistant_tokens_mask=True`
    (TRL's `assistant_only_loss`) trains exactly the answer and its stop token; the system turn is omitted when
    the system message is empty.
    """
    if style not in CONVERSATION_STYLES:
        raise ValueError(f"unknown conversation style {style!r}; known: {sorted(CONVERSATION_STYLES)}")
    opening, closing, separator, _ = CONVERSATION_STYLES[style]
    stop = separator.rstrip("\n")
    trailer = separator[len(stop):]

    def quoted(text: str) -> str:
        return "'" + text.replace("\n", "\\n") + "'"

    def prefix(role: str) -> str:
        return f"{quoted(opening)} + {role} + {quoted(closing)}"

    message_prefix = prefix("message['role']")
    return (
        "{%- set system_message = default_system_prompt if default_system_prompt is defined else '' -%}"
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- if messages[0]['content'] is string -%}{%- set system_message = messages[0]['content'] -%}"
        "{%- else -%}{%- set system_message = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
        " | map(attribute='text') | join('') -%}{%- endif -%}"
        "{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
        f"{{%- if system_message -%}}{{{{ {prefix(quoted('system'))} + system_message + {quoted(separator)} }}}}"
        "{%- endif -%}"
        "{%- for message in loop_messages -%}"
        f"{{{{ {message_prefix} }}}}"
        "{%- if message['role'] == 'assistant' -%}{% generation %}"
        "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
        "{%- for item in message['content'] if item['type'] == 'text' -%}{{ item['text'] }}{%- endfor -%}{%- endif -%}"
        f"{{{{ {quoted(stop)} }}}}{{% endgeneration %}}{{{{ {quoted(trailer)} }}}}"
        "{%- else -%}"
        "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
        "{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}{{ '<image>\\n' }}"
        "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        f"{{{{ {quoted(separator)} }}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ {prefix(quoted('assistant'))} }}}}{{%- endif -%}}"
    )


# --- transformers compatibility ------------------------------------------------------------------------------------
# Since 5.10 `ProcessorMixin.__call__` expands each image placeholder through `replace_image_token`; before, every
# processor did it in its own `__call__` (ours: `AseMllmProcessor.expand_and_tokenize`).
PROCESSOR_EXPANDS_PLACEHOLDERS = hasattr(ProcessorMixin, "replace_image_token")
# -------------------------------------------------------------------------------------------------------------------


# The default layout: `<|im_start|>role\n … <|im_end|>\n` (InternVL2.5/3; the same tokens as InternLM2-chat).
CHAT_TEMPLATE = build_chat_template("internvl2_5")


class AseMllmProcessorKwargs(ProcessingKwargs, total=False):
    _defaults = {
        "text_kwargs": {"padding_side": "left"},
        "images_kwargs": {"crop_to_patches": True},
    }


class AseMllmProcessor(ProcessorMixin):
    r"""
    Wraps [`AseMllmImageProcessor`] and a tokenizer.

    Args:
        image_processor ([`AseMllmImageProcessor`]): tiling and saliency.
        tokenizer: any tokenizer holding `<img>`, `</img>` and `<IMG_CONTEXT>` (see `add_image_tokens`).
        image_seq_length (`int`, defaults to 256): tokens per tile, `(448/14)² × 0.5²`.
        chat_template (`str`, *optional*): defaults to the InternLM2-chat template above.
        system_prompt (`str`, *optional*): the system message used when a conversation has none;
            defaults to InternVL2's. Pass `""` for none.
    """

    valid_processor_kwargs = AseMllmProcessorKwargs
    text_kwargs = {"padding_side": "left"}
    images_kwargs = {"crop_to_patches": True}

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 256,
        chat_template: str | None = None,
        system_prompt: str | None = None,
        **kwargs,
    ):
        missing = [token for token in IMAGE_TOKENS if token not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"the tokenizer has no {missing}; add them with `modeling_ase_mllm.add_image_tokens(tokenizer)` "
                "(and resize the model's embeddings) or convert an InternVL2 checkpoint."
            )
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)
        self.image_seq_length = image_seq_length
        self.system_prompt = INTERNVL2_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.image_token = IMAGE_PLACEHOLDER
        self.start_image_token, self.end_image_token = IMAGE_START_TOKEN, IMAGE_END_TOKEN
        self.context_image_token = IMAGE_CONTEXT_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
        self.start_image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_START_TOKEN)
        self.end_image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN)

    @property
    def image_token_ids(self) -> list[int]:
        return [self.image_token_id, self.start_image_token_id, self.end_image_token_id]

    def __call__(self, images=None, text=None, **kwargs):
        r"""
        Tile and tokenize. `text` holds one `<image>` per image, in order; `images` is a flat list or one list per
        sample (samples may have several images or none).

        Returns a [`BatchFeature`] with `input_ids`, `attention_mask` and, with images, `pixel_values`
        `(num_tiles, 3, 448, 448)` and `saliency_maps` `(num_tiles, G, G)`.
        """
        call = super().__call__ if PROCESSOR_EXPANDS_PLACEHOLDERS else self.expand_and_tokenize
        outputs = call(images=images, text=text, **kwargs)
        outputs.pop("num_patches", None)
        return outputs

    def expand_and_tokenize(self, images=None, text=None, **kwargs) -> BatchFeature:
        """What `ProcessorMixin.__call__` does since transformers 5.10, for the releases before it: validate, run the
        image processor, replace each `<image>` with `replace_image_token`, tokenize, check the image tokens."""
        text = [text] if isinstance(text, str) else text
        if images is not None:
            images = self.image_processor.fetch_images(images)
        self.validate_inputs(images=images, text=text, **kwargs)
        merged = self._merge_kwargs(AseMllmProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        image_inputs = {}
        if images is not None:
            image_inputs = self.image_processor(images, **merged["images_kwargs"])
            replacements = iter(
                [self.replace_image_token(image_inputs, index) for index in range(len(make_flat_list_of_images(images)))]
            )
            text = [re.sub(re.escape(IMAGE_PLACEHOLDER), lambda _: next(replacements), sample) for sample in text]
        return_tensors = merged["text_kwargs"].pop("return_tensors", None)
        text_inputs = self.tokenizer(text, **merged["text_kwargs"])
        self._check_special_mm_tokens(text, text_inputs, modalities=["image"])
        return BatchFeature(data={**text_inputs, **image_inputs}, tensor_type=return_tensors)

    def validate_inputs(self, images=None, text=None, **kwargs):
        if text is None:
            raise ValueError("AseMllmProcessor needs `text` (use one '<image>' per image).")
        samples = [text] if isinstance(text, str) else list(text)
        for index, sample in enumerate(samples):
            if not isinstance(sample, str):
                raise ValueError(f"text[{index}] is a {type(sample).__name__}, expected a string.")
            for token in IMAGE_TOKENS:
                if token in sample:
                    raise ValueError(
                        f"text[{index}] already contains {token!r}; mark each image with '{IMAGE_PLACEHOLDER}' and "
                        "let the processor expand it."
                    )
        placeholders = [sample.count(IMAGE_PLACEHOLDER) for sample in samples]
        nested = isinstance(images, (list, tuple)) and len(images) == len(samples) and all(
            isinstance(item, (list, tuple)) for item in images
        )
        if nested:
            for index, (count, sample_images) in enumerate(zip(placeholders, images)):
                if count != len(sample_images):
                    raise ValueError(
                        f"text[{index}] has {count} '{IMAGE_PLACEHOLDER}' placeholder(s) but {len(sample_images)} "
                        f"image(s) were given for it."
                    )
        else:
            n_images = 0 if images is None else len(make_flat_list_of_images(images))
            if sum(placeholders) != n_images:
                per_sample = ", ".join(f"text[{i}]: {c}" for i, c in enumerate(placeholders))
                raise ValueError(
                    f"{sum(placeholders)} '{IMAGE_PLACEHOLDER}' placeholder(s) ({per_sample}) but {n_images} image(s)."
                )

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        num_tiles = int(image_inputs["num_patches"][image_idx])
        context = self.context_image_token * (self.image_seq_length * num_tiles)
        return f"{self.start_image_token}{context}{self.end_image_token}"

    def _check_special_mm_tokens(self, text, text_inputs, modalities):
        """After expansion every sample must still hold all its `<IMG_CONTEXT>` tokens (truncation would cut them)."""
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        for index, (sample, ids) in enumerate(zip(text, input_ids)):
            expected = sample.count(self.context_image_token)
            found = list(ids).count(self.image_token_id)
            if found != expected:
                raise ValueError(
                    f"text[{index}]: {found} '{self.context_image_token}' tokens after tokenization, expected {expected}; "
                    "image tokens were truncated. Disable truncation or raise `max_length`."
                )

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """As `ProcessorMixin.apply_chat_template`, with this processor's `system_prompt` as the default one."""
        kwargs.setdefault("default_system_prompt", self.system_prompt)
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        """Tokens per image (`<img>` + 256 × tiles + `</img>`) for `(height, width)` sizes, without processing."""
        if image_sizes is None:
            return MultiModalData()
        images_kwargs = self._merge_kwargs(AseMllmProcessorKwargs, **kwargs)["images_kwargs"]
        patches = [self.image_processor.get_number_of_image_patches(*size, images_kwargs) for size in image_sizes]
        tokens = [2 + self.image_seq_length * n for n in patches]
        return MultiModalData(num_image_tokens=tokens, num_image_patches=patches)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`ProcessorMixin.save_pretrained`, with AutoProcessor and AutoImageProcessor in `processor_config.json`."""
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        config_file = Path(save_directory) / "processor_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config["auto_map"] = {
                **config.get("auto_map", {}),
                "AutoProcessor": f"{Path(__file__).stem}.{type(self).__name__}",
                "AutoImageProcessor": f"{Path(sys.modules[type(self.image_processor).__module__].__file__).stem}."
                f"{type(self.image_processor).__name__}",
            }
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return saved

    @property
    def model_input_names(self):
        return self.tokenizer.model_input_names + self.image_processor.model_input_names


def add_image_tokens(tokenizer) -> int:
    """Add `<img>`, `</img>`, `<IMG_CONTEXT>` (and the chat markers if absent) as special tokens.

    Returns the number of tokens added; resize the model's embeddings by it.
    """
    present = set(tokenizer.get_vocab())
    wanted = [t for t in ("<|im_start|>", "<|im_end|>", *IMAGE_TOKENS) if t not in present]
    if not wanted:
        return 0
    return tokenizer.add_special_tokens({"additional_special_tokens": wanted}, replace_extra_special_tokens=False)


__all__ = [
    "AseMllmProcessor",
    "add_image_tokens",
    "build_chat_template",
    "CHAT_TEMPLATE",
    "CONVERSATION_STYLES",
    "INTERNVL2_SYSTEM_PROMPT",
    "INTERNVL2_5_SYSTEM_PROMPT",
    "IMAGE_PLACEHOLDER",
]
