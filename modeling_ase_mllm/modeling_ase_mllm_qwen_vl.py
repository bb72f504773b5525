"""ASE-MLLM on Qwen-VL-Chat (the paper's Table III): its ViT-bigG/14 steered by aesthetic saliency.

Qwen-VL-Chat = a ViT (OpenCLIP ViT-bigG/14 without a class token) → a Resampler (256 learned queries) → Qwen-7B.
Built the way the InternVL family is:

- the ViT block is transformers' `CLIPEncoderLayer` (pre-norm self-attention and GELU MLP, which is Qwen-VL's
  `VisualAttentionBlock`); `AseMllmQwenVLVisionLayer` adds ASE-MLLM's saliency branch to it
  (`AseMllmSaliencyBlockMixin`: the same norms, `AseMllmSaliencyCrossAttention` and zero-initialised gate as the
  InternVL family), so that at gate 0 every block is Qwen-VL's;
- the saliency features are `AseMllmSaliencyEmbeddings`' (without the class-token slot: this ViT has none);
- the Resampler is the multi-modal projector, its attention ASE-MLLM's cross-attention given the values apart;
- the LLM is transformers' `qwen2` (Qwen-7B, see `configuration_ase_mllm_qwen_vl`);
- the composite model, generation, label masking, saliency sources (EAT + LayerCAM, spectral residual, uniform)
  and saving are `AseMllmModel`'s and `AseMllmForConditionalGeneration`'s: one image is one "tile".

Shapes: `pixel_values (I, 3, 448, 448)` → patches `(I, 1024, 1664)` (+ positions, `ln_pre`) → IAS-ViT
`(I, 1024, 1664)` → Resampler `(I, 256, 4096)`, which replace the 256 `<imgpad>` tokens of each image.

Remote code: imports only torch, transformers and sibling modules.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel
from transformers.models.auto import AutoModel
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer, CLIPPreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

# transformers 5.8-5.9 copy only the direct relative imports of an `auto_map` module into their module cache, so every
# sibling that the modules below import is imported here too.
from .configuration_ase_mllm import SALIENCY_SOURCES  # noqa: F401
from .configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig, AseMllmQwenVLResamplerConfig, AseMllmQwenVLVisionConfig
from .eat_ase_mllm import compute_dtype
from .image_processing_ase_mllm import tile_count  # noqa: F401
from .modeling_ase_mllm import (
    AseMllmForConditionalGeneration,
    AseMllmModel,
    AseMllmPreTrainedModel,
    AseMllmSaliencyBlockMixin,
    AseMllmSaliencyCrossAttention,
    AseMllmSaliencyEmbeddings,
    AseMllmSaliencyInitMixin,
)
from .inputs_ase_mllm import check_saliency_maps
from .packaging_ase_mllm import PARAMETER_GROUPS  # noqa: F401  (imported here too: transformers copies only direct siblings)
from .saliency_ase_mllm import map_saliency_to_tiles  # noqa: F401
from .scoring_ase_mllm import AseMllmScoringMixin  # noqa: F401


logger = logging.get_logger(__name__)


def resize_position_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A square table of positions resized onto a `grid`, as Qwen-VL resizes its ViT's and its Resampler's.

    Args:
        table: `(side², width)` positions of a `side × side` grid, row-major.
        grid: `(rows, cols)` wanted.
    Returns:
        `(rows · cols, width)`: `table` itself when the grid is the table's, else its bicubic resize (computed in
        float32, returned in the table's dtype).
    """
    side = round(table.shape[0] ** 0.5)
    if (side, side) == tuple(grid):
        return table
    square = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


def sincos_2d_positions(side: int, width: int) -> torch.Tensor:
    """MAE's 2-D sin-cos positions in the layout Qwen-VL's Resampler starts from.

    Row `y · side + x` (the patch at row `y`, column `x`) is `[sin(xω), cos(xω), sin(yω), cos(yω)]` with
    `ω_k = 10000^(-k / (width/4))`, `k < width/4`: the column coordinate comes first, as in MAE's released code.

    Returns:
        `(side², width)` float32.
    """
    if width % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {width}")
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")
    x, y = cols.flatten()[:, None] * omega, rows.flatten()[:, None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


class AseMllmQwenVLVisionEmbeddings(nn.Module):
    """Qwen-VL's patch embedding: a bias-free `patch × patch` convolution plus learned absolute positions, whose
    square table (16 × 16) is resized bicubically onto the patch grid (32 × 32 at 448 px). No class token."""

    def __init__(self, config: AseMllmQwenVLVisionConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.position_embedding = nn.Parameter(torch.empty(config.num_position_embeddings, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(num_images, 3, H, W)` → `(num_images, (H/patch)·(W/patch), hidden)`, patches row-major."""
        patches = self.patch_embedding(pixel_values.to(compute_dtype(self)))
        grid = tuple(patches.shape[-2:])
        return patches.flatten(2).transpose(1, 2) + resize_position_table(self.position_embedding, grid)


class AseMllmQwenVLSaliencyEmbeddings(AseMllmSaliencyEmbeddings):
    """`AseMllmSaliencyEmbeddings` without the class-token slot: Qwen-VL's ViT has no class token."""

    def forward(self, saliency_maps: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
        """`(num_images, G, G)` maps → `(num_images, rows · cols, hidden)` saliency features, one per patch."""
        return super().forward(saliency_maps, patch_grid)[:, 1:]


class AseMllmQwenVLVisionLayer(AseMllmSaliencyBlockMixin, CLIPEncoderLayer):
    """An IAS-ViT block for Qwen-VL: CLIP's encoder block (Qwen-VL's `VisualAttentionBlock`), plus (when
    `has_saliency_cross_attention`) `h ← h + tanh(g) ⊙ CrossAttn(q = LN_q(h) + z, k = v = LN_kv(h))` between the
    self-attention and the MLP residuals. With `g = 0` the block is exactly Qwen-VL's."""

    def __init__(self, config: AseMllmQwenVLVisionConfig, layer_idx: int) -> None:
        super().__init__(config)
        self.add_saliency_cross_attention(config, layer_idx, nn.LayerNorm)

    def forward(self, hidden_states: torch.Tensor, saliency_features: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """
        Args:
            hidden_states: `(num_images, num_patches, hidden)`.
            saliency_features: `(num_images, num_patches, hidden)`; required when the block has a cross-attention.
        """
        attention_output, _ = self.self_attn(hidden_states=self.layer_norm1(hidden_states), attention_mask=None, **kwargs)
        hidden_states = hidden_states + attention_output
        if self.has_saliency_cross_attention:
            hidden_states = hidden_states + self.saliency_update(hidden_states, saliency_features)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class AseMllmQwenVLVisionEncoder(nn.Module):
    def __init__(self, config: AseMllmQwenVLVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([AseMllmQwenVLVisionLayer(config, index) for index in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, saliency_features: torch.Tensor) -> BaseModelOutput:
        for layer in self.layers:
            hidden_states = layer(hidden_states, saliency_features)
        return BaseModelOutput(last_hidden_state=hidden_states)


class AseMllmQwenVLVisionPreTrainedModel(AseMllmSaliencyInitMixin, CLIPPreTrainedModel):
    config: AseMllmQwenVLVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["AseMllmQwenVLVisionLayer"]
    _can_record_outputs = {
        "hidden_states": AseMllmQwenVLVisionLayer,
        # Only the self-attention: the saliency cross-attention is not a ViT layer's attention map.
        "attentions": OutputRecorder(CLIPAttention, layer_name="self_attn"),
    }

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, AseMllmQwenVLVisionEmbeddings):
            # Qwen-VL's own init: unit-variance positions scaled by width^-1/2.
            init.normal_(module.position_embedding, std=self.config.hidden_size**-0.5)


class AseMllmQwenVLVisionModel(AseMllmQwenVLVisionPreTrainedModel):
    """IAS-ViT for Qwen-VL: patches + positions, `ln_pre`, the IAS blocks; no final norm (the Resampler has its own)."""

    def __init__(self, config: AseMllmQwenVLVisionConfig) -> None:
        super().__init__(config)
        self.embeddings = AseMllmQwenVLVisionEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.saliency_embeddings = AseMllmQwenVLSaliencyEmbeddings(config)
        self.encoder = AseMllmQwenVLVisionEncoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, saliency_maps: torch.Tensor, **kwargs) -> BaseModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_images, 3, H, W)`):
            Normalised images.
        saliency_maps (`torch.FloatTensor` of shape `(num_images, G, G)`):
            One saliency map per image, aligned with `pixel_values`.

        Returns a `BaseModelOutput` whose `last_hidden_state` is `(num_images, num_patches, hidden)`.
        """
        check_saliency_maps(saliency_maps, pixel_values)
        hidden_states = self.pre_layernorm(self.embeddings(pixel_values))
        patch_size = self.config.patch_size
        patch_grid = (pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size)
        saliency_features = self.saliency_embeddings(saliency_maps, patch_grid).to(hidden_states.dtype)
        return BaseModelOutput(last_hidden_state=self.encoder(hidden_states, saliency_features).last_hidden_state)


class AseMllmQwenVLResamplerAttention(AseMllmSaliencyCrossAttention):
    """The Resampler's attention (Qwen-VL: a `torch.nn.MultiheadAttention`): the queries attend to the image tokens,
    whose keys carry positions and whose values do not."""


class AseMllmQwenVLResampler(PreTrainedModel):
    """Qwen-VL's Resampler, ASE-MLLM's multi-modal projector for this family:

        q = LN_q(Q) + P,   kv = LN_kv(W_kv x),   out = W_proj · LN_post(Attn(q, k = kv + resize(P), v = kv))

    with `Q` the learned queries, `P` their 2-D sin-cos positions (16 × 16; resized bicubically onto the patch grid
    for the keys) and `W_proj` bias-free. A model of its own (as Idefics2's perceiver resampler), so that its
    attention follows the attention implementation chosen for the whole model.

    Args:
        config: the Resampler's shape.
        kv_size: width of the image tokens it reads (the ViT's).
    """

    config: AseMllmQwenVLResamplerConfig
    base_model_prefix = "resampler"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: AseMllmQwenVLResamplerConfig, kv_size: int):
        super().__init__(config)
        width = config.hidden_size
        self.query = nn.Parameter(torch.empty(config.num_queries, width))
        self.position_embedding = nn.Parameter(torch.empty(config.num_queries, width))
        self.kv_proj = nn.Linear(kv_size, width, bias=False) if kv_size != width else nn.Identity()
        self.layer_norm_kv = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.layer_norm_q = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = AseMllmQwenVLResamplerAttention(config)
        self.layer_norm_post = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.proj = nn.Linear(width, width, bias=False)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, AseMllmQwenVLResampler):
            # Qwen-VL's own init: small queries, sin-cos positions.
            init.trunc_normal_(module.query, std=0.02)
            side = round(module.position_embedding.shape[0] ** 0.5)
            init.copy_(module.position_embedding, sincos_2d_positions(side, module.position_embedding.shape[1]))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """`(num_images, rows · cols, kv_size)` square patch grids → `(num_images, num_queries, hidden)`."""
        side = round(image_features.shape[1] ** 0.5)
        keys_values = self.layer_norm_kv(self.kv_proj(image_features))
        queries = (self.layer_norm_q(self.query) + self.position_embedding).expand(image_features.shape[0], -1, -1)
        keys = keys_values + resize_position_table(self.position_embedding, (side, side))
        output, _ = self.attention(queries, keys, value_input=keys_values)
        return self.proj(self.layer_norm_post(output))


class AseMllmQwenVLPreTrainedModel(AseMllmPreTrainedModel):
    config: AseMllmQwenVLConfig
    _no_split_modules = ["AseMllmQwenVLVisionLayer", "EatModel"]


class AseMllmQwenVLModel(AseMllmQwenVLPreTrainedModel, AseMllmModel):
    """IAS-ViT (ViT-bigG/14) → Resampler → the language model (Qwen-7B as qwen2); one image per `pixel_values` row."""

    def __init__(self, config: AseMllmQwenVLConfig):
        AseMllmQwenVLPreTrainedModel.__init__(self, config)
        self.vision_tower = AseMllmQwenVLVisionModel(config.vision_config)
        self.multi_modal_projector = AseMllmQwenVLResampler(config.resampler_config, config.vision_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.add_saliency_model(config)
        self.post_init()

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        saliency_source: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_images, 3, 448, 448)`):
            Normalised images (CLIP mean/std), one per image of the batch.
        saliency_maps (`torch.FloatTensor` of shape `(num_images, G, G)`, *optional*):
            One saliency map per image (classical sources, or precomputed EAT maps); skips EAT when given.
        saliency_pixel_values (`torch.FloatTensor` of shape `(num_images, 3, 224, 224)`, *optional*):
            Whole images for EAT (the `eat_layercam` source).
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            `(1, 1)` per image: Qwen-VL does not tile, so each map lands on its image whole.

        Returns a `BaseModelOutputWithPooling`: `last_hidden_state` `(num_images, num_patches, vision_hidden)` (the
        IAS-ViT's output) and `pooler_output` `(num_images, 256, text_hidden)` (the Resampler's).
        """
        saliency_maps = self.get_saliency_maps(pixel_values, saliency_maps, saliency_pixel_values, tile_grids,
                                               saliency_source)
        vision = self.vision_tower(pixel_values=pixel_values.to(self.dtype), saliency_maps=saliency_maps)
        return BaseModelOutputWithPooling(
            last_hidden_state=vision.last_hidden_state,
            pooler_output=self.multi_modal_projector(vision.last_hidden_state),
        )

    def forward(self, input_ids=None, pixel_values=None, past_key_values=None, inputs_embeds=None, **kwargs):
        """`AseMllmModel.forward`, warning once when an inference context passes Qwen-7B's `seq_length`."""
        if not self.training:
            length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            length += past_key_values.get_seq_length() if past_key_values is not None else 0
            if length > self.config.seq_length:
                logger.warning_once(
                    f"the context is {length} tokens, past Qwen-7B's seq_length {self.config.seq_length}: there "
                    "Qwen-VL-Chat scales its queries by log(position)/log(seq_length) and stretches RoPE (dynamic NTK) at "
                    "inference, which this model (transformers' qwen2) does not, so from here on its outputs differ "
                    "from Qwen-VL-Chat's."
                )
        return super().forward(
            input_ids=input_ids, pixel_values=pixel_values, past_key_values=past_key_values, inputs_embeds=inputs_embeds,
            **kwargs,
        )


class AseMllmQwenVLForConditionalGeneration(AseMllmQwenVLPreTrainedModel, AseMllmForConditionalGeneration):
    """ASE-MLLM on Qwen-VL-Chat with a language-modelling head; `generate()` (and `inference.chat`) as for the
    InternVL family (images are encoded once, at prefill)."""

    def __init__(self, config: AseMllmQwenVLConfig):
        AseMllmQwenVLPreTrainedModel.__init__(self, config)
        self.model = AseMllmQwenVLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


__all__ = [
    "AseMllmQwenVLVisionModel",
    "AseMllmQwenVLVisionLayer",
    "AseMllmQwenVLResampler",
    "AseMllmQwenVLPreTrainedModel",
    "AseMllmQwenVLModel",
    "AseMllmQwenVLForConditionalGeneration",
]
