"""ASE-MLLM on Qwen-VL-Chat (the paper's Table III): configuration.

Qwen-VL-Chat is a ViT-bigG/14 (no tiling: one 448 px image), a Resampler of 256 learned queries and Qwen-7B. Its
config is a class of its own rather than a variant of `AseMllmConfig`: `AseMllmConfig` is InternVL's config (pixel
shuffle, `downsample_ratio`, an MLP projector, `vision_feature_layer`), none of which Qwen-VL has, while the
Resampler has a shape of its own (`resampler_config`). What the two families share (the saliency source, the IAS
settings, the image-token ids) has the same names and meaning in both.

The defaults are Qwen-VL-Chat's shape:

- vision (`AseMllmQwenVLVisionConfig`, CLIP's vision config): width 1664, 48 blocks, 16 heads, MLP 8192
  (`int(1664 × 4.9231)`), exact GELU, LayerNorm eps 1e-6, 14 px patches on a 448 px image (32 × 32 patches), a
  learned 16 × 16 position table resized bicubically onto the patch grid, `ln_pre` and no final norm;
- Resampler (`AseMllmQwenVLResamplerConfig`): 256 queries of width 4096, 32 heads (`4096 // 128`), LayerNorm eps
  1e-6, then `ln_post` and a bias-free 4096 × 4096 projection: 256 tokens per image;
- text: transformers' own `qwen2`. Qwen-7B is that architecture: fused `c_attn` (with bias) = q/k/v (with bias),
  `c_proj` (no bias) = `o_proj`, RMSNorm eps 1e-6, RoPE base 10000 on the whole head; its MLP computes
  `c_proj(w1(x) · SiLU(w2(x)))`, so `w2` is qwen2's `gate_proj`, `w1` its `up_proj` and `c_proj` its `down_proj`,
  and Qwen's `intermediate_size` (22016) is twice qwen2's (11008). The two compute the same for contexts up to
  `seq_length` (2048): past it, at inference, Qwen-7B scales its queries by `log_seq_length(position)` (logn
  attention) and stretches RoPE (dynamic NTK); qwen2 does neither, and the model warns when a context gets there.

Remote code: imports only transformers, the standard library and (as `from .x import Y`) its sibling modules.
"""

# First: importing it checks the installed transformers (one clear error below the supported release).
from .configuration_ase_mllm import (
    CUSTOM_PIPELINES,
    AseMllmSaliencyConfig,
    IasVisionConfigMixin,
    ImageSpanTokenIds,
    SubConfigSpec,
    build_sub_configs,
    sub_config_specs,
)

from huggingface_hub.dataclasses import strict  # noqa: E402  (after the version check, which names the fix)
from transformers import PreTrainedConfig  # noqa: E402
from transformers.models.auto import AutoConfig  # noqa: E402
from transformers.models.clip.configuration_clip import CLIPVisionConfig  # noqa: E402


# The `auto_map` every saved Qwen-VL ASE-MLLM folder carries, so that it loads with `trust_remote_code=True`.
QWEN_VL_AUTO_MAP = {
    "AutoConfig": "configuration_ase_mllm_qwen_vl.AseMllmQwenVLConfig",
    "AutoModel": "modeling_ase_mllm_qwen_vl.AseMllmQwenVLModel",
    "AutoModelForImageTextToText": "modeling_ase_mllm_qwen_vl.AseMllmQwenVLForConditionalGeneration",
    "AutoProcessor": "processing_ase_mllm_qwen_vl.AseMllmQwenVLProcessor",
    "AutoImageProcessor": "image_processing_ase_mllm_qwen_vl.AseMllmQwenVLImageProcessor",
}

# Qwen-7B as transformers' qwen2 (see the module docstring): the text config's defaults.
QWEN_7B_AS_QWEN2 = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "bos_token_id": None,
    "eos_token_id": 151643,
    "pad_token_id": 151643,
}


@strict
class AseMllmQwenVLVisionConfig(IasVisionConfigMixin, CLIPVisionConfig):
    r"""
    IAS-ViT for Qwen-VL-Chat: its ViT-bigG/14 (CLIP's encoder block) with ASE-MLLM's saliency cross-attention after
    the self-attention of each chosen block.

    num_position_embeddings (`int`, defaults to 256):
        Rows of the learned position table, a square grid (16 × 16) resized bicubically onto the patch grid
        (32 × 32 at 448 px), as Qwen-VL does.
    ias_layers / ias_gate_init / saliency_embed_dim:
        `IasVisionConfigMixin`'s. `ias_layers=None` means every block (all 48): the paper does not say which blocks
        of Qwen-VL's ViT it used, so this is a setting.
    attention_bias / use_qk_norm / projection_dropout:
        Of the saliency cross-attention (ASE-MLLM's, built on InternVL's attention): q/k/v biases as the ViT's own
        attention, no qk-norm.
    """

    model_type = "ase_mllm_qwen_vl_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1664
    intermediate_size: int = 8192
    num_hidden_layers: int = 48
    num_attention_heads: int = 16
    image_size: int = 448  # the side of the one square picture per image
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    num_position_embeddings: int = 256
    attention_bias: bool = True
    use_qk_norm: bool = False
    projection_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        side = round(self.num_position_embeddings**0.5)
        if side * side != self.num_position_embeddings:
            raise ValueError(f"`num_position_embeddings` must be a square (a side × side table), got {self.num_position_embeddings}.")


@strict
class AseMllmQwenVLResamplerConfig(PreTrainedConfig):
    r"""
    Qwen-VL's Resampler: `num_queries` learned queries attend, in one cross-attention layer, to the ViT's patch
    tokens (projected to `hidden_size`), with 2-D sin-cos positions on queries and keys; then a LayerNorm and a
    bias-free projection. Its output (`num_queries` tokens of `hidden_size`) goes to the LLM as it is.

    hidden_size (`int`, defaults to 4096): the query width, which is the LLM's width.
    num_attention_heads (`int`, defaults to 32): Qwen-VL uses `hidden_size // 128`.
    num_queries (`int`, defaults to 256): tokens per image, a square (16 × 16).
    layer_norm_eps (`float`, defaults to 1e-6).
    """

    model_type = "ase_mllm_qwen_vl_resampler"
    base_config_key = "resampler_config"

    hidden_size: int = 4096
    num_attention_heads: int = 32
    num_queries: int = 256
    layer_norm_eps: float = 1e-6
    attention_bias: bool = True
    use_qk_norm: bool = False
    attention_dropout: float = 0.0
    projection_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        side = round(self.num_queries**0.5)
        if side * side != self.num_queries:
            raise ValueError(f"the Resampler's `num_queries` must be a square (a side × side grid), got {self.num_queries}.")
        if self.num_attention_heads < 1 or self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"the Resampler's `hidden_size` {self.hidden_size} is not a multiple of its {self.num_attention_heads} heads."
            )


@strict
class AseMllmQwenVLConfig(ImageSpanTokenIds, PreTrainedConfig):
    r"""
    ASE-MLLM on Qwen-VL-Chat: IAS-ViT (ViT-bigG/14) → Resampler → Qwen-7B (as transformers' qwen2).

    vision_config (`AseMllmQwenVLVisionConfig` or `dict`, *optional*): the ViT and its IAS settings.
    resampler_config (`AseMllmQwenVLResamplerConfig` or `dict`, *optional*): the Resampler.
    text_config (`dict` or config, *optional*): the LLM; defaults to Qwen-7B as qwen2 (`QWEN_7B_AS_QWEN2`).
    saliency_config (`AseMllmSaliencyConfig` or `dict`, *optional*): the saliency source, as for InternVL (one map
        per image: Qwen-VL does not tile).
    image_token_id (`int`, defaults to 151859): `<imgpad>`, the tokens the image features replace.
    start_image_token_id / end_image_token_id (`int`, defaults to 151857 / 151858): `<img>` and `</img>`.
    image_seq_length (`int`, defaults to 256): tokens per image, the Resampler's queries.
    seq_length (`int`, defaults to 2048): Qwen-7B's training context; up to it Qwen-7B's logn attention scaling and
        dynamic NTK RoPE change nothing, past it (at inference) this model, like qwen2, differs from Qwen-VL-Chat.
    """

    model_type = "ase_mllm_qwen_vl"
    sub_configs = {"text_config": AutoConfig, "vision_config": AseMllmQwenVLVisionConfig,
                   "resampler_config": AseMllmQwenVLResamplerConfig, "saliency_config": AseMllmSaliencyConfig}
    sub_configs_defaults = sub_config_specs(
        vision_config=AseMllmQwenVLVisionConfig, resampler_config=AseMllmQwenVLResamplerConfig,
        saliency_config=AseMllmSaliencyConfig,
    )
    if SubConfigSpec is not None:
        sub_configs_defaults["text_config"] = SubConfigSpec(
            config_class=AutoConfig, model_type="qwen2", init_kwargs=QWEN_7B_AS_QWEN2
        )

    vision_config: dict | PreTrainedConfig | None = None
    resampler_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    saliency_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 151859
    start_image_token_id: int | None = 151857
    end_image_token_id: int | None = 151858
    image_seq_length: int = 256
    seq_length: int = 2048
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        build_sub_configs(self)
        if SubConfigSpec is None and not isinstance(self.text_config, PreTrainedConfig):
            # Before 5.20 nothing builds an `AutoConfig` sub-config for a config without a parent that does; as
            # 5.20+ does: a dict by its `model_type` (default qwen2), `None` as Qwen-7B.
            text = dict(QWEN_7B_AS_QWEN2 if self.text_config is None else self.text_config)
            self.text_config = AutoConfig.for_model(text.pop("model_type", "qwen2"), **text)
        super().__post_init__(**kwargs)
        self.auto_map = {**QWEN_VL_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        # The same task as the InternVL family's: its `impl` resolves through this folder's own auto_map.
        self.custom_pipelines = {**CUSTOM_PIPELINES, **(getattr(self, "custom_pipelines", None) or {})}
        if self.image_seq_length != self.resampler_config.num_queries:
            raise ValueError(
                f"`image_seq_length`={self.image_seq_length} must equal the Resampler's `num_queries` "
                f"({self.resampler_config.num_queries}): each image becomes that many tokens."
            )
        if self.resampler_config.hidden_size != self.text_config.hidden_size:
            raise ValueError(
                f"the Resampler's `hidden_size` ({self.resampler_config.hidden_size}) must equal the LLM's "
                f"({self.text_config.hidden_size}): its output goes to the LLM unprojected, as in Qwen-VL."
            )


__all__ = [
    "QWEN_VL_AUTO_MAP",
    "QWEN_7B_AS_QWEN2",
    "AseMllmQwenVLVisionConfig",
    "AseMllmQwenVLResamplerConfig",
    "AseMllmQwenVLConfig",
]
