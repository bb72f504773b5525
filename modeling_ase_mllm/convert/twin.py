"""Move between transformers' native InternVL and ASE-MLLM: configs, weights, and the InternVL twin.

ASE-MLLM keeps every InternVL parameter name, so an InternVL state dict is an ASE-MLLM state dict minus the weights
ASE-MLLM adds (the model's `ADDED_GROUPS`: the IAS modules and the EAT saliency model). The twin,
`InternVLForConditionalGeneration` holding the same weights, is what the parity tests and the benches compare with.
"""

import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration

from ..configuration_ase_mllm import AseMllmConfig, AseMllmVisionConfig
from ..modeling_ase_mllm import ADDED_GROUPS, parameter_group


VISION_ONLY_FIELDS = ("drop_path_rate", "ias_layers", "ias_gate_init", "saliency_embed_dim")
COMPOSITE_FIELDS = (
    "image_token_id",
    "image_seq_length",
    "downsample_ratio",
    "projector_hidden_act",
    "vision_feature_layer",
    "vision_feature_select_strategy",
    "tie_word_embeddings",
)


def is_added_weight(name: str) -> bool:
    """True for the weights ASE-MLLM adds to InternVL: the IAS modules' and the EAT saliency model's."""
    return parameter_group(name) in ADDED_GROUPS


def _clean(config_dict: dict) -> dict:
    for key in ("model_type", "architectures", "transformers_version", "auto_map", "dtype"):
        config_dict.pop(key, None)
    return config_dict


def internvl_config_from_ase(config: AseMllmConfig) -> InternVLConfig:
    """The transformers InternVL config with the same shapes (IAS and saliency settings dropped)."""
    vision = _clean(config.vision_config.to_dict())
    for key in VISION_ONLY_FIELDS:
        vision.pop(key, None)
    return InternVLConfig(
        vision_config=vision,
        text_config=config.text_config.to_dict(),
        **{key: getattr(config, key) for key in COMPOSITE_FIELDS},
    )


def ase_config_from_internvl(config: InternVLConfig, **overrides) -> AseMllmConfig:
    """An ASE-MLLM config around an InternVL config's shapes; `overrides` set top-level fields."""
    vision = AseMllmVisionConfig(**_clean(config.vision_config.to_dict()))
    fields = {key: getattr(config, key) for key in COMPOSITE_FIELDS}
    fields.update(overrides)
    return AseMllmConfig(vision_config=vision, text_config=config.text_config.to_dict(), **fields)


def internvl_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The ASE-MLLM state dict without the weights ASE-MLLM adds (IAS and EAT)."""
    return {name: tensor for name, tensor in model.state_dict().items() if not is_added_weight(name)}


def build_internvl_twin(model: torch.nn.Module, share_weights: bool = False) -> InternVLForConditionalGeneration:
    """transformers' `InternVLForConditionalGeneration` holding exactly `model`'s non-IAS weights.

    By default the twin owns a copy, built on the CPU. With `share_weights=True` it is built on the `meta` device
    and handed `model`'s own tensors and buffers (no copy, nothing initialised on the CPU), so it lives wherever
    `model` does: a GPU, or `meta` for counting.
    """
    config = internvl_config_from_ase(model.config)
    if not share_weights:
        twin = InternVLForConditionalGeneration(config).to(model.dtype)
        missing, unexpected = twin.load_state_dict(internvl_state_dict(model), strict=False)
    else:
        with torch.device("meta"):
            twin = InternVLForConditionalGeneration(config)
        missing, unexpected = twin.load_state_dict(internvl_state_dict(model), strict=False, assign=True)
        # Non-persistent buffers (rotary frequencies) are in no state dict: take `model`'s, which has the same names.
        buffers = dict(model.named_buffers())
        for name, _ in list(twin.named_buffers()):
            module, _, leaf = name.rpartition(".")
            twin.get_submodule(module)._buffers[leaf] = buffers[name]
        twin.tie_weights()
        twin.config._attn_implementation = model.config._attn_implementation
    # Tied heads are the only keys an InternVL state dict may legitimately lack.
    missing = [key for key in missing if key != "lm_head.weight" or not twin.config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"InternVL twin does not match: missing {missing}, unexpected {unexpected}")
    return twin.eval()
