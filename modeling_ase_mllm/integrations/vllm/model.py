"""ASE-MLLM inside vLLM: vLLM's HF-layout InternVL with the IAS-ViT as its vision tower and saliency in the request.

Built on `vllm.model_executor.models.interns1` (the class vLLM serves transformers' `InternVLForConditionalGeneration`
with), the way vLLM's own InternVL derivatives build on their base:

- `AseMllmProcessingInfo`: the folder's own `AseMllmProcessor` (its tiling decides the token count), images only.
- `AseMllmMultiModalProcessor`: tiles the images with that processor. For `spectral_residual` and `uniform` it adds
  the image processor's `saliency_maps`, one `(G, G)` map per tile, a field cut like `pixel_values`
  (`flat_from_sizes` by each image's tile count); for `eat_layercam` it adds EAT's input, `saliency_pixel_values`,
  and each image's `tile_grids` (one of each per image). Each `<image>` of the prompt becomes `<img>` +
  `<IMG_CONTEXT>` × 256 × tiles + `</img>`, as the processor writes it.
- `AseMllmForVllm`: `InternS1ForConditionalGeneration` whose vision tower is our `AseMllmVisionModel` (the IAS-ViT),
  with the folder's frozen EAT beside it; the pixel shuffle, the projector and the language model are vLLM's.
  Weights load from the HF layout we save (`InternS1ForConditionalGeneration.hf_to_vllm_mapper`, plus EAT's prefix).

EAT + LayerCAM runs in the engine, on its device, on every image of the encoder batch at once (`AseMllmForVllm.
_saliency_maps`): vLLM's engine runs under `torch.inference_mode()`, and `eat_ase_mllm.layer_cam` leaves it for its
forward and backward pass (on a clone of the input), so the autograd it needs is there. Run in the API-server
process instead, the maps would cost that process's CPU 0.3 s per image at the released EAT's size, whatever GPU
serves the model. Each map depends on its own image only (EAT is batch-invariant, to float rounding), so vLLM's
caches (processor outputs by image hash, encoder outputs) stay right.
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
from vllm.model_executor.models.utils import WeightsMapper
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdate, PromptUpdateDetails, cached_encode
from vllm.utils.tensor_schema import TensorShape

from ...eat_ase_mllm import EatModel
from ...modeling_ase_mllm import PARAMETER_GROUPS, AseMllmVisionModel, image_maps_onto_tiles, parameter_group
from ...saliency_ase_mllm import check_saliency_source


# EAT's module, `model.saliency_model` in the HF layout we save (`AseMllmForVllm.saliency_model`).
EAT_MODULE = dict(PARAMETER_GROUPS)["eat"][0]


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
        processed = BatchFeature({
            "pixel_values": outputs["pixel_values"],
            "image_num_patches": torch.as_tensor(outputs["num_patches"]),
            "image_token_id": torch.tensor(processor.image_token_id),
        })
        # The classical sources' per-tile maps, or (eat_layercam) what the engine makes them from.
        for name in ("saliency_maps", "saliency_pixel_values", "tile_grids"):
            if name in outputs:
                processed[name] = outputs[name]
        return self._finalize_hf_mm_data(hf_data, hf_kwargs, passthrough_data, processed)

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
                              ) -> Mapping[str, MultiModalFieldConfig]:
        image_num_patches = hf_inputs.get("image_num_patches", torch.empty(0))
        return {
            **super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs),
            "saliency_maps": MultiModalFieldConfig.flat_from_sizes("image", image_num_patches),
            "saliency_pixel_values": MultiModalFieldConfig.batched("image"),
            "tile_grids": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
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
    """InternS1's tiles plus one saliency map per tile (the classical sources).

    Dimensions: `bnp` tiles of all images, `g` the side of a tile's map."""

    saliency_maps: Annotated[torch.Tensor, TensorShape("bnp", "g", "g")]


class AseMllmImageEatInputs(InternS1ImagePixelInputs):
    """InternS1's tiles plus what EAT + LayerCAM makes their maps from (the `eat_layercam` source).

    Dimensions: `bn` images, `s` EAT's input side."""

    saliency_pixel_values: Annotated[torch.Tensor, TensorShape("bn", 3, "s", "s")]
    tile_grids: Annotated[torch.Tensor, TensorShape("bn", 2)]


@MULTIMODAL_REGISTRY.register_processor(
    AseMllmMultiModalProcessor, info=AseMllmProcessingInfo, dummy_inputs=AseMllmDummyInputsBuilder
)
class AseMllmForVllm(InternS1ForConditionalGeneration):
    """vLLM's HF-layout InternVL with the IAS-ViT as vision tower and, for `eat_layercam`, the frozen EAT beside it."""

    hf_to_vllm_mapper = InternS1ForConditionalGeneration.hf_to_vllm_mapper | WeightsMapper(
        orig_to_new_prefix={f"model.{EAT_MODULE}.": f"{EAT_MODULE}."}
    )

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        saliency = self.config.saliency_config
        if saliency.source == "eat_layercam":
            with self._mark_tower_model(vllm_config, "image"):
                # Frozen: LayerCAM differentiates activations only (`eat_ase_mllm.layer_cam`).
                self.saliency_model = EatModel(saliency.eat_config).requires_grad_(False).eval()

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
        saliency = {name: kwargs.pop(name, None) for name in ("saliency_maps", "saliency_pixel_values", "tile_grids")}
        image_input = super()._parse_and_validate_image_input(**kwargs)
        if image_input is None or image_input["type"] != "pixel_values":
            return image_input
        h, w = self.config.vision_config.image_size
        tiles = {"pixel_values": image_input["pixel_values"], "num_patches": image_input["num_patches"],
                 "resolve_bindings": {"h": h, "w": w}}
        if saliency["saliency_maps"] is not None:
            return AseMllmImagePixelInputs(**tiles, saliency_maps=saliency["saliency_maps"])
        if saliency["saliency_pixel_values"] is None or saliency["tile_grids"] is None:
            raise ValueError("ASE-MLLM's images need their `saliency_maps`, or (eat_layercam) their "
                             "`saliency_pixel_values` and `tile_grids`: its multimodal processor adds them")
        return AseMllmImageEatInputs(**tiles, saliency_pixel_values=saliency["saliency_pixel_values"],
                                     tile_grids=saliency["tile_grids"])

    def _saliency_maps(self, image_input) -> torch.Tensor:
        """`(tiles, G, G)` maps of an encoder batch: the processor's, or EAT + LayerCAM on all its images at once."""
        if isinstance(image_input, AseMllmImagePixelInputs):
            return image_input["saliency_maps"]
        saliency = self.config.saliency_config
        image_maps = self.saliency_model.layer_cam(image_input["saliency_pixel_values"], saliency.layercam_layer_name,
                                                   saliency.layercam_target)
        return image_maps_onto_tiles(image_maps, image_input["tile_grids"], saliency.grid_size)

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
        pixel_values = image_input["pixel_values"]
        features = self.extract_feature(pixel_values, self._saliency_maps(image_input).to(pixel_values.dtype))
        per_image = [int(n) * features.shape[1] for n in image_input["num_patches"]]
        return features.reshape(-1, self.config.text_config.hidden_size).split(per_image)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The HF-layout weights; a folder whose source runs no EAT may still hold EAT's (a model saved with EAT,
        its source changed since), which then stay out, as `from_pretrained` leaves them unused."""
        if self.config.saliency_config.source != "eat_layercam":
            weights = ((name, tensor) for name, tensor in weights if parameter_group(name) != "eat")
        return super().load_weights(weights)
