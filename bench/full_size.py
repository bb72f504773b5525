"""The full-size shape that `full_size_cost.py` (counted on the `meta` device) and `gpu.py` (timed on a GPU) share.

One 12-megapixel 4:3 photo per sample, tiled as the processor tiles it at `max_patches=12` (a 4 × 3 grid plus the
thumbnail: 13 tiles), and a 64-token prompt around its image tokens; random pixels and token ids, so that no
tokenizer or image is needed at any preset's vocabulary. Both models are built without a CPU copy: on `meta`, or
initialised directly on the GPU, the InternVL twin sharing ASE-MLLM's tensors.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm import AseMllmForConditionalGeneration  # noqa: E402
from modeling_ase_mllm.image_processing_ase_mllm import AseMllmImageProcessor, select_tile_grid  # noqa: E402
from modeling_ase_mllm.convert.twin import build_internvl_twin  # noqa: E402
from modeling_ase_mllm.presets import load_model_preset  # noqa: E402
from modeling_ase_mllm.modeling_ase_mllm import set_saliency_gates  # noqa: E402
from modeling_ase_mllm.testing.tiny import tiny_config  # noqa: E402


PRESETS = ("internvl2-1b", "internvl2-2b", "internvl2-4b", "internvl2-8b")
PHOTO_SIZE = (4032, 3024)  # width × height of a 12-megapixel phone photo
MAX_TILES = 12
PROMPT_TOKENS = 64
TWIN_INPUTS = ("input_ids", "attention_mask", "pixel_values")


def load_config(preset: str):
    """A model preset by name; `tiny` is the test preset (`modeling_ase_mllm.testing.tiny.tiny_config`)."""
    return tiny_config() if preset == "tiny" else load_model_preset(preset)


def photo_tiling(max_patches: int = MAX_TILES) -> tuple[tuple[int, int], int]:
    """`((cols, rows), tiles incl. thumbnail)` of `PHOTO_SIZE` as the processor tiles it."""
    width, height = PHOTO_SIZE
    processor = AseMllmImageProcessor(max_patches=max_patches)
    grid = select_tile_grid(width, height, processor.min_patches, max_patches, processor.size.height)
    return grid, processor.get_number_of_image_patches(height, width)


def synthetic_inputs(config, batch: int = 1, max_patches: int = MAX_TILES, prompt_tokens: int = PROMPT_TOKENS,
                     device="cpu", dtype=torch.float32, ids_device=None, seed: int = 0) -> dict:
    """ASE-MLLM's inputs for `batch` samples of one photo each: what the processor returns, with random values.

    Each sample is `prompt_tokens` text tokens (`<img>` and `</img>` among them) around `tiles × image_seq_length`
    `<IMG_CONTEXT>` tokens. `ids_device` holds the integer inputs (token ids, tile grids; default `device`): on the
    `meta` device they stay on the CPU, so that the models' token-count checks read real values.

    Returns `input_ids`, `attention_mask` `(batch, seq)`; `pixel_values` `(batch·tiles, 3, 448, 448)`;
    `saliency_pixel_values` `(batch, 3, 224, 224)`; `tile_grids` `(batch, 2)`.
    """
    ids_device = device if ids_device is None else ids_device
    generator = torch.Generator().manual_seed(seed)
    (cols, rows), tiles = photo_tiling(max_patches)
    image_tokens = tiles * config.image_seq_length
    special = set(config.image_special_token_ids)
    plain = min(set(range(len(special) + 1)) - special)
    text = torch.randint(0, config.text_config.vocab_size, (batch, prompt_tokens - 2), generator=generator)
    text = text.masked_fill(torch.isin(text, torch.tensor(sorted(special))), plain)
    head = prompt_tokens // 4  # system prompt and question prefix before the image, the rest after it
    image = torch.tensor([config.start_image_token_id, *[config.image_token_id] * image_tokens, config.end_image_token_id])
    input_ids = torch.cat([text[:, :head], image.expand(batch, -1), text[:, head:]], dim=1)
    size = config.vision_config.image_size
    eat_size = config.saliency_config.eat_config.image_size
    return {
        "input_ids": input_ids.to(ids_device),
        "attention_mask": torch.ones_like(input_ids, device=ids_device),
        "pixel_values": torch.randn(batch * tiles, 3, *size, generator=generator).to(device, dtype),
        "saliency_pixel_values": torch.randn(batch, 3, eat_size, eat_size, generator=generator).to(device, dtype),
        "tile_grids": torch.tensor([[cols, rows]] * batch, device=ids_device),
    }


def twin_inputs(inputs: dict) -> dict:
    """The subset of ASE-MLLM's inputs that transformers' InternVL takes."""
    return {key: inputs[key] for key in TWIN_INPUTS if key in inputs}


def build_pair(config, device="meta", dtype=torch.bfloat16, seed: int = 0):
    """ASE-MLLM with random weights initialised on `device` (no CPU copy), and its InternVL twin holding the same
    tensors. Gates open (0.5), so that the cross-attentions' outputs matter, as after training."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AseMllmForConditionalGeneration._from_config(config, dtype=dtype)
    set_saliency_gates(model, 0.5)
    return model.eval(), build_internvl_twin(model, share_weights=True)
