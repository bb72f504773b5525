"""ASE-MLLM on Qwen-VL-Chat: the processor (Qwen-VL's image span and ChatML prompt).

Each `<image>` placeholder becomes Qwen-VL's image span `<img>` + `<imgpad>` × 256 + `</img>`; the model replaces
the 256 `<imgpad>` with the Resampler's output (Qwen-VL's own tokenizer puts the image's path there, padded with
`<imgpad>`, and its model overwrites the same 256 positions). The chat template is ChatML as Qwen-VL-Chat's
`chat()` writes it, `<|im_start|>role\\n … <|im_end|>\\n`, with the system message "You are a helpful assistant."
and each image of a message announced as its tokenizer's `from_list_format` does: `Picture 1: <image>\\n`.

Remote code: imports only transformers and sibling modules.
"""

# transformers 5.8-5.9 copy only the direct relative imports of an `auto_map` module into their module cache, so every
# sibling that the modules below import is imported here too.
from .configuration_ase_mllm import SALIENCY_SOURCES  # noqa: F401
from .image_processing_ase_mllm import AseMllmImageProcessor  # noqa: F401
from .image_processing_ase_mllm_qwen_vl import AseMllmQwenVLImageProcessor  # noqa: F401  (copied into Hub folders with us)
from .processing_ase_mllm import AseMllmProcessor, build_chat_template
from .saliency_ase_mllm import map_saliency_to_tiles  # noqa: F401


QWEN_VL_IMAGE_START_TOKEN = "<img>"
QWEN_VL_IMAGE_END_TOKEN = "</img>"
QWEN_VL_IMAGE_PAD_TOKEN = "<imgpad>"
# The system message of Qwen-VL-Chat's `chat()`.
QWEN_VL_SYSTEM_PROMPT = "You are a helpful assistant."
# ChatML (the same layout as InternVL2.5's template), with Qwen-VL's numbered pictures.
QWEN_VL_CHAT_TEMPLATE = build_chat_template("internvl2_5", numbered_pictures=True)


class AseMllmQwenVLProcessor(AseMllmProcessor):
    r"""
    Wraps [`AseMllmQwenVLImageProcessor`] and a tokenizer holding Qwen-VL's special tokens (`<img>`, `</img>`,
    `<imgpad>`, `<|im_start|>`, `<|im_end|>`, …; `ase-mllm convert` carries Qwen-VL-Chat's over).

    Args:
        image_processor ([`AseMllmQwenVLImageProcessor`]): the 448 px picture and the saliency inputs.
        tokenizer: Qwen-VL's tokenizer as a `tokenizers` tokenizer.
        image_seq_length (`int`, defaults to 256): the Resampler's queries.
        chat_template (`str`, *optional*): defaults to Qwen-VL-Chat's ChatML with numbered pictures.
        system_prompt (`str`, *optional*): defaults to "You are a helpful assistant."; `""` for none.
    """

    start_image_token = QWEN_VL_IMAGE_START_TOKEN
    end_image_token = QWEN_VL_IMAGE_END_TOKEN
    context_image_token = QWEN_VL_IMAGE_PAD_TOKEN
    default_chat_template = QWEN_VL_CHAT_TEMPLATE
    default_system_prompt = QWEN_VL_SYSTEM_PROMPT


__all__ = [
    "AseMllmQwenVLProcessor",
    "QWEN_VL_CHAT_TEMPLATE",
    "QWEN_VL_SYSTEM_PROMPT",
    "QWEN_VL_IMAGE_START_TOKEN",
    "QWEN_VL_IMAGE_END_TOKEN",
    "QWEN_VL_IMAGE_PAD_TOKEN",
]
