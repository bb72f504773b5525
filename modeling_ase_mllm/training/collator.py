"""`AseMllmDataCollator`: TRL's vision-language collator, plus precomputed saliency maps.

TRL's `DataCollatorForVisionLanguageModeling` already does everything ASE-MLLM needs: it renders the conversation
with the processor's chat template, tiles the images and computes their saliency inputs, pads on the right and, with
`assistant_only_loss`, labels only the assistant's answer (the template's `{% generation %}` block). This subclass
adds two things: no loss on image tokens (TRL leaves them labelled with `assistant_only_loss=False`); and an
example's precomputed EAT + LayerCAM maps (the `saliency` column of `data.saliency
.precompute_saliency`) go to the processor as `image_saliency`, so the model does not run EAT again.
"""

from dataclasses import dataclass, replace
from typing import Any

import torch
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from ..data.saliency import SALIENCY_COLUMN


@dataclass
class AseMllmDataCollator(DataCollatorForVisionLanguageModeling):
    """Collate TRL vision-format examples (`images` + `messages`) for `transformers.Trainer` or `SFTTrainer`.

    Input: examples holding `images` (one per `{"type": "image"}` entry, in order; or a single `image`), `messages`
    and, optionally, `saliency`: one `(h, w)` whole-image map per image (used when every example of the batch has it).
    Output: `input_ids`, `attention_mask` and `labels` `(batch, seq)`, right-padded, labels -100 except on the
    assistant's answer and its `<|im_end|>`; `pixel_values` `(tiles, 3, 448, 448)`; and `saliency_pixel_values`
    `(images, 3, 224, 224)` + `tile_grids` `(images, 2)` (EAT runs in the model), or `saliency_maps` `(tiles, G, G)`
    (precomputed or classical saliency).

        >>> collator = AseMllmDataCollator(processor)
        >>> batch = collator([{"images": [photo], "messages": conversation}])
        >>> model(**batch).loss

    Args:
        processor ([`AseMllmProcessor`]): tokenizer + tiling/saliency image processor.
        assistant_only_loss (`bool`, defaults to `True`): labels on the answer only (TRL's default is `False`).
        saliency_column (`str`, defaults to `"saliency"`): the column of precomputed maps.
    """

    assistant_only_loss: bool = True
    saliency_column: str = SALIENCY_COLUMN

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        maps = [example.pop(self.saliency_column, None) for example in examples]
        if any(example_maps is None for example_maps in maps):
            return mask_image_tokens(super().torch_call(examples), self.processor.image_token_ids)
        flat = [image_map for example_maps in maps for image_map in example_maps]
        return replace(self, processor=_WithImageSaliency(self.processor, flat)).torch_call(examples)


def mask_image_tokens(batch: dict[str, Any], image_token_ids: list[int]) -> dict[str, Any]:
    """No loss on an image span (`<img>`, `<IMG_CONTEXT>`, `</img>`), also where `assistant_only_loss=False` leaves
    the prompt labelled: `labels` `(batch, seq)` set to -100 wherever `input_ids` holds one of `image_token_ids`."""
    ids = torch.tensor(image_token_ids, device=batch["input_ids"].device)
    batch["labels"] = batch["labels"].masked_fill(torch.isin(batch["input_ids"], ids), -100)
    return batch


class _WithImageSaliency:
    """The processor, with `image_saliency` added to the processor arguments of `apply_chat_template` (the one call
    through which TRL's collator runs it)."""

    def __init__(self, processor, image_saliency: list):
        self._processor, self._image_saliency = processor, image_saliency

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def apply_chat_template(self, *args, processor_kwargs=None, **kwargs):
        processor_kwargs = {**(processor_kwargs or {}), "image_saliency": self._image_saliency}
        return self._processor.apply_chat_template(*args, processor_kwargs=processor_kwargs, **kwargs)


__all__ = ["AseMllmDataCollator", "mask_image_tokens"]
