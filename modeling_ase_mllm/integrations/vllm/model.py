"""ASE-MLLM inside vLLM: vLLM's HF-layout InternVL with the IAS-ViT as its vision tower and saliency in the request.

Built on `vllm.model_executor.models.interns1` (the class vLLM serves transformers' `InternVLForConditionalGeneration`
with), the way vLLM's own InternVL derivatives build on their base:

- `AseMllmProcessingInfo`: the folder's own `AseMllmProcessor` (its tiling decides the token count), images only.
- `AseMllmMultiModalProcessor`: tiles the images with that processor and adds `saliency_maps`, one `(G, G)` map per
  tile, a field cut like `pixel_values` (`flat_from_sizes` by each image's tile count). For the `eat_layercam` source
  the maps are EAT + LayerCAM, computed here (`saliency.py`), in the API-server process, outside the engine's
  inference mode; for `spectral_residual` and `uniform` the image processor computes them. Each `<image>` of the
  prompt becomes `<img>` + `<IMG_CONTEXT>` × 256 × tiles + `</img>`, as the processor writes it.
- `AseMllmForVllm`: `InternS1ForConditionalGeneration` whose vision tower is our `AseMllmVisionModel` (the IAS-ViT);
  the pixel shuffle, the projector and the language model are vLLM's. Weights load from the HF layout we save
  (`InternS1ForConditionalGeneration.hf_to_vllm_mapper`); EAT's stay out of the engine.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

import torch
from transformers import BatchFeature, PreTrainedConfig

from vllm.model_executor.models.internvl import BaseInternVLDummyInputsBuilder
from vllm.model_executor.models.interns1 import (
    InternS1ForConditionalGeneration,
    InternS1ImagePixelInputs,
    InternS1MultiModalProcessor,
    InternS1ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdate, PromptUpdateDetails, cached_encode
from vllm.utils.tensor_schema import TensorShape

from ...modeling_ase_mllm import AseMllmVisionModel, parameter_group
from ...saliency_ase_mllm import check_saliency_source
from .saliency import eat_for, tile_saliency_maps


class AseMllmProcessingInfo(InternS1ProcessingInfo):
    """The folder's `AseMllmProcessor` (remote code, as `AutoProcessor` loads it); images only."""

    def get_hf_processor(self, **kwargs: object):
        return self.ctx.get_hf_processor(**kwargs)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}


class AseMllmDummyInputsBuilder(BaseInternVLDummyInputsBuilder[AseMllmProcessingInfo]):
    """InternVL's: `<image>` per image, each at the size that gives the most tiles."""


class AseMllmMultiModalProcessor(InternS1MultiModalProcessor):
    """Tiles and saliency maps from the folder's processor; `<image>` expanded as the processor expands it."""

    def _get_hf_mm_text(self, mm_counts: Mapping[str, int]) -> None:
        return None  # the image processor alone runs here: vLLM tokenizes the prompt and expands `<image>` itself

    def _apply_hf_processor_main(self, mm_items: MultiModalDataItems, hf_kwargs: Mapping[str, object]) -> BatchFeature:
        hf_data, hf_kwargs, passthrough_data = self._get_hf_mm_inputs(mm_items, hf_kwargs)
        if not hf_data:
            return self._finalize_hf_mm_data(hf_data, hf_kwargs, passthrough_data)
        processor = self.info.get_hf_processor(**hf_kwargs)
        outputs = self.info.ctx.call_hf_processor(processor.image_processor, {"images": hf_data["images"]}, hf_kwargs)
        config = self.info.get_hf_config()
        # A request's `saliency_source` other than the model's is refused (4xx), never run on the wrong maps.
        check_saliency_source(outputs.get("saliency_source"), config.saliency_config)
        if "saliency_maps" not in outputs:  # eat_layercam: the maps are made here, not in the engine
            model_config = self.info.ctx.model_config
            eat = eat_for(model_config.model, model_config.revision, config.saliency_config, model_config.dtype)
            outputs["saliency_maps"] = tile_saliency_maps(
                eat, config.saliency_config, outputs.pop("saliency_pixel_values"), outputs.pop("tile_grids")
            ).to(outputs["pixel_values"].dtype)
        processed = BatchFeature({
            "pixel_values": outputs["pixel_values"],
            "saliency_maps": outputs["saliency_maps"],
            "image_num_patches": torch.as_tensor(outputs["num_patches"]),
            "image_token_id": torch.tensor(processor.image_token_id),
        })
        return self._finalize_hf_mm_data(hf_data, hf_kwargs, passthrough_data, processed)

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
                              ) -> Mapping[str, MultiModalFieldConfig]:
        image_num_patches = hf_inputs.get("image_num_patches", torch.empty(0))
        return {
            **super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs),
            "saliency_maps": MultiModalFieldConfig.flat_from_sizes("image", image_num_patches),
        }

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        tokenizer = self.info.get_tokenizer()
        image_inputs = {"num_patches": out_mm_kwargs.get_data().get("image_num_patches", torch.empty(0)).tolist()}

        def image_span(item_idx: int) -> PromptUpdateDetails:
            span = cached_encode(tokenizer, processor.replace_image_token(image_inputs, item_idx), add_special_tokens=False)
            return PromptUpdateDetails.select_token_id(span, processor.image_token_id)

        return [PromptReplacement(modality="image", target=cached_encode(tokenizer, processor.image_token,
                                                                        add_special_tokens=False),
                                  replacement=image_span)]


class AseMllmImagePixelInputs(InternS1ImagePixelInputs):
    """InternS1's tiles plus one saliency map per tile.

    Dimensions: `bnp` tiles of all images, `g` the side of a tile's map."""

    saliency_maps: Annotated[torch.Tensor, TensorShape("bnp", "g", "g")]


@MULTIMODAL_REGISTRY.register_processor(
    AseMllmMultiModalProcessor, info=AseMllmProcessingInfo, dummy_inputs=AseMllmDummyInputsBuilder
)
class AseMllmForVllm(InternS1ForConditionalGeneration):
    """vLLM's HF-layout InternVL with the IAS-ViT as vision tower; its inputs carry the per-tile saliency maps."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("ASE-MLLM takes images only")

    def _init_vision_model(self, config: PreTrainedConfig, quant_config, *, prefix: str) -> AseMllmVisionModel:
        if config.vision_feature_layer != -1 or config.vision_feature_select_strategy != "default":
            raise ValueError(
                f"the vLLM plugin serves ASE-MLLMs that take the ViT's last layer without its CLS token; this one has "
                f"vision_feature_layer={config.vision_feature_layer}, "
                f"vision_feature_select_strategy={config.vision_feature_select_strategy!r}"
            )
        vision_config = config.vision_config
        vision_config._attn_implementation = "sdpa"  # as `from_pretrained` picks it on this torch
        return AseMllmVisionModel(vision_config)

    def _parse_and_validate_image_input(self, **kwargs: object):
        saliency_maps = kwargs.pop("saliency_maps", None)
        image_input = super()._parse_and_validate_image_input(**kwargs)
        if image_input is None or image_input["type"] != "pixel_values":
            return image_input
        if saliency_maps is None:
            raise ValueError("ASE-MLLM's images need their `saliency_maps` (its multimodal processor adds them)")
        h, w = self.config.vision_config.image_size
        return AseMllmImagePixelInputs(pixel_values=image_input["pixel_values"], num_patches=image_input["num_patches"],
                                       saliency_maps=saliency_maps, resolve_bindings={"h": h, "w": w})

    def extract_feature(self, pixel_values: torch.Tensor, saliency_maps: torch.Tensor) -> torch.Tensor:
        """`(tiles, 3, H, W)` tiles and `(tiles, G, G)` maps -> `(tiles, 256, text_hidden)` image features."""
        vit_embeds = self.vision_tower(pixel_values=pixel_values, saliency_maps=saliency_maps).last_hidden_state
        vit_embeds = vit_embeds[:, 1:, :]
        side = int(vit_embeds.shape[1] ** 0.5)
        vit_embeds = self.pixel_shuffle(vit_embeds.reshape(vit_embeds.shape[0], side, side, -1),
                                        scale_factor=self.downsample_ratio)
        return self.multi_modal_projector(vit_embeds.reshape(vit_embeds.shape[0], -1, vit_embeds.shape[-1]))

    def _process_vision_input(self, image_input) -> tuple[torch.Tensor, ...]:
        if image_input["type"] != "pixel_values":
            return image_input["data"]
        features = self.extract_feature(image_input["pixel_values"], image_input["saliency_maps"])
        per_image = [int(n) * features.shape[1] for n in image_input["num_patches"]]
        return features.reshape(-1, self.config.text_config.hidden_size).split(per_image)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The HF-layout weights, less EAT's (its processor holds EAT; the engine never runs it)."""
        return super().load_weights((name, tensor) for name, tensor in weights if parameter_group(name) != "eat")
