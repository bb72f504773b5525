"""ASE-MLLM: InternVL2 whose vision encoder (IAS-ViT) attends to an aesthetic-saliency map.

Built on transformers' InternVL, the way its own `modular_*.py` files build on other models: the ViT block,
its attention, the embeddings, the projector, the pixel shuffle, the merge of image features into the text
and the LM head are InternVL's. This module only adds

- `AseMllmSaliencyEmbeddings`: one saliency feature vector per ViT token;
- `AseMllmSaliencyCrossAttention`: queries from saliency features, keys and values from image features;
- `AseMllmVisionLayer`: InternVL's block with that cross-attention after self-attention, behind a
  zero-initialised `tanh` gate, so that a converted InternVL2 checkpoint computes exactly InternVL2
  (`AseMllmSaliencyBlockMixin` holds that branch, for every ViT family).

Remote code: imports only torch, transformers and sibling modules.
"""

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.auto import AutoModel
from transformers.models.beit.modeling_beit import BeitDropPath
from transformers.models.internvl.modeling_internvl import (
    NORM2FN,
    InternVLForConditionalGeneration,
    InternVLModel,
    InternVLMultiModalProjector,
    InternVLPreTrainedModel,
    InternVLVisionAttention,
    InternVLVisionEmbeddings,
    InternVLVisionLayer,
    InternVLVisionModelOutputWithPooling,
    InternVLVisionPreTrainedModel,
    eager_attention_forward,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_ase_mllm import AseMllmConfig, AseMllmVisionConfig
from .eat_ase_mllm import (
    EatDeformableAttention, EatModel, EatWindowAttention, compute_dtype, relative_position_index, shifted_window_mask,
)
from .image_processing_ase_mllm import has_thumbnail
from .inputs_ase_mllm import check_image_token_count, check_pixel_values, check_saliency_maps, check_tile_grids
from .packaging_ase_mllm import (  # noqa: F401  (re-exported: where the package's tools look for them)
    ADDED_GROUPS, FLOAT_GROUPS, FLOAT_MODULES_PATTERN, PARAMETER_GROUPS, SAVE_HOOKS, MethodSignature, SaveHooksMixin,
    copy_remote_code, parameter_group, remote_code_files,
)
from .saliency_ase_mllm import check_saliency_source, map_saliency_to_tiles, uniform_saliency_maps
from .scoring_ase_mllm import AseMllmScoringMixin


# --- transformers compatibility ------------------------------------------------------------------------------------
# Before 5.18 `InternVLModel.forward` takes no `mm_encoder_outputs`: it would encode `pixel_values` itself, without our
# saliency inputs. `AseMllmModel.forward` then merges the image features into the embeddings itself, as it does since.
INTERNVL_TAKES_ENCODER_OUTPUTS = "mm_encoder_outputs" in inspect.signature(InternVLModel.forward).parameters
# -------------------------------------------------------------------------------------------------------------------


def image_maps_onto_tiles(image_maps: torch.Tensor, tile_grids: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Each whole image's map resampled onto its tiles (and its thumbnail, when it has one), in the image
    processor's tile order: the maps the IAS-ViT receives (`AseMllmModel` and the vLLM plugin alike).

    Args:
        image_maps: `(num_images, h, w)` maps in [0, 1] (EAT + LayerCAM's).
        tile_grids: `(num_images, 2)` each image's `(cols, rows)`.
    Returns:
        `(num_tiles, grid_size, grid_size)` maps.
    """
    return torch.cat([map_saliency_to_tiles(image_map, (cols, rows), has_thumbnail(cols, rows), grid_size)
                      for image_map, (cols, rows) in zip(image_maps, tile_grids.tolist(), strict=True)])


def set_saliency_gates(model: nn.Module, value: float) -> None:
    """Fill every IAS saliency gate `g` in `model` with `value` (0.0: each block computes exactly InternViT's).

    Gates are found by their class name, so this also reaches PEFT's copies (`modules_to_save`) and a model whose
    classes were loaded as a Hub folder's remote code.
    """
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == AseMllmSaliencyGate.__name__:
                module.weight.fill_(value)


class AseMllmSaliencyEmbeddings(nn.Module):
    """Turns each tile's saliency map into one feature vector per ViT token.

    The map is area-pooled onto the tile's patch grid, giving one value `s_i ∈ [0, 1]` per patch (the CLS token
    gets the tile's mean), and each value is embedded by a small MLP: `z_i = W₂ act(W₁ s_i + b₁) + b₂`.
    It is initialised so that `z` has the unit scale of a normalised token: with the transformers default
    (std 0.02 on a scalar input) `z` would start ~1e-3 and the queries would ignore saliency.
    """

    def __init__(self, config: AseMllmVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(1, config.saliency_embed_dim)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.saliency_embed_dim, config.hidden_size)
        # (weight std, bias range) for `_init_weights`: spread the first layer's kinks over s ∈ [0, 1] and keep
        # the output at the unit scale of a LayerNorm'd token.
        self.fc1.saliency_init = (1.0, (-1.0, 0.0))
        self.fc2.saliency_init = (config.saliency_embed_dim**-0.5, (0.0, 0.0))

    def forward(self, saliency_maps: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
        """
        Args:
            saliency_maps: `(num_tiles, G, G)`, any grid side `G`.
            patch_grid: `(rows, cols)` of ViT patches in a tile (32 × 32 at 448 px).
        Returns:
            `(num_tiles, 1 + rows * cols, hidden_size)` saliency features, aligned with the ViT tokens.
        """
        per_patch = F.adaptive_avg_pool2d(saliency_maps[:, None].to(compute_dtype(self)), patch_grid).flatten(1)
        per_token = torch.cat([per_patch.mean(dim=1, keepdim=True), per_patch], dim=1)
        return self.fc2(self.activation_fn(self.fc1(per_token[..., None])))


class AseMllmSaliencyGate(nn.Module):
    """Per-channel `tanh` gate; its own module so that PEFT's `modules_to_save` can train and save it alone."""

    def __init__(self, hidden_size: int, init_value: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((hidden_size,), float(init_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.weight) * hidden_states


class AseMllmSaliencyCrossAttention(InternVLVisionAttention):
    """InternVL's vision attention with queries and keys/values taken from two different inputs."""

    def forward(
        self, query_input: torch.Tensor, key_value_input: torch.Tensor, value_input: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query_input: `(batch, seq, hidden)` saliency features.
            key_value_input: `(batch, seq_kv, hidden)` image features.
            value_input: `(batch, seq_kv, hidden)` values when they differ from the keys' input (Qwen-VL's Resampler
                adds positions to its keys only); default `key_value_input`.
        Returns:
            `(batch, seq, hidden)` attention output and the attention weights (eager only).
        """
        batch_size, seq_len, _ = query_input.shape
        kv_len = key_value_input.shape[1]
        query_states = self.q_norm(self.q_proj(query_input))
        key_states = self.k_norm(self.k_proj(key_value_input))
        value_states = self.v_proj(key_value_input if value_input is None else value_input)

        query_states = query_states.view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(batch_size, kv_len, self.num_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(batch_size, kv_len, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            None,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scale,
            is_causal=False,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, seq_len, self.embed_dim)
        return self.projection_dropout(self.projection_layer(attn_output)), attn_weights


class AseMllmSaliencyBlockMixin:
    """The saliency branch an IAS-ViT block adds to its ViT's block, for any ViT family (InternViT, Qwen-VL's
    ViT-bigG): two norms, the cross-attention and the gate, in the block's own namespace (their parameter names are
    the same in every family)."""

    def add_saliency_cross_attention(self, config, layer_idx: int, norm_class) -> None:
        """Give the block the saliency branch when `layer_idx` is one of `config.ias_layer_indices`."""
        self.has_saliency_cross_attention = layer_idx in config.ias_layer_indices
        if self.has_saliency_cross_attention:
            self.saliency_query_norm = norm_class(config.hidden_size, eps=config.layer_norm_eps)
            self.saliency_key_value_norm = norm_class(config.hidden_size, eps=config.layer_norm_eps)
            self.saliency_cross_attention = AseMllmSaliencyCrossAttention(config)
            # Fan-in init for the new query/key maps: with std 0.02 the attention logits start ~0, the attention is
            # uniform and ignores the (saliency-tagged) queries until training sharpens it.
            for projection in (self.saliency_cross_attention.q_proj, self.saliency_cross_attention.k_proj):
                projection.saliency_init = (config.hidden_size**-0.5, (0.0, 0.0))
            self.saliency_gate = AseMllmSaliencyGate(config.hidden_size, config.ias_gate_init)

    def saliency_update(self, hidden_states: torch.Tensor, saliency_features: torch.Tensor) -> torch.Tensor:
        """`tanh(g) ⊙ CrossAttn(q = LN_q(h) + z, k = v = LN_kv(h))`, the block's residual update from saliency.

        Args:
            hidden_states: `(num_tiles, seq, hidden)` image tokens `h`.
            saliency_features: `(num_tiles, seq, hidden)` saliency features `z` of the same tokens.
        """
        # Saliency features: the normalised image tokens, each tagged with the embedding of its saliency.
        queries = self.saliency_query_norm(hidden_states) + saliency_features
        cross_output, _ = self.saliency_cross_attention(queries, self.saliency_key_value_norm(hidden_states))
        return self.saliency_gate(cross_output)


class AseMllmVisionLayer(AseMllmSaliencyBlockMixin, InternVLVisionLayer):
    """An IAS-ViT block: InternVL's ViT block, plus (when `has_saliency_cross_attention`)

        h ← h + tanh(g) ⊙ CrossAttn(q = LN_q(h) + z, k = v = LN_kv(h))

    between the self-attention and the MLP residuals, `z` being the saliency features of the tile's tokens.
    With `g = 0` the block is exactly InternVL's.
    """

    def __init__(self, config: AseMllmVisionConfig, layer_idx: int, drop_path_rate: float = 0.0) -> None:
        super().__init__(config)
        self.drop_path = BeitDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.add_saliency_cross_attention(config, layer_idx, NORM2FN[config.norm_type])

    def forward(self, hidden_states: torch.Tensor, saliency_features: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states: `(num_tiles, 1 + num_patches, hidden)`.
            saliency_features: `(num_tiles, 1 + num_patches, hidden)`; required when the block has a cross-attention.
        """
        attention_output, _ = self.attention(self.layernorm_before(hidden_states))
        hidden_states = self.drop_path(self.lambda_1 * attention_output) + hidden_states

        if self.has_saliency_cross_attention:
            hidden_states = self.drop_path(self.saliency_update(hidden_states, saliency_features)) + hidden_states

        layer_output = self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return self.drop_path(self.lambda_2 * layer_output) + hidden_states


class AseMllmVisionEncoder(nn.Module):
    def __init__(self, config: AseMllmVisionConfig) -> None:
        super().__init__()
        self.config = config
        # Linear stochastic-depth schedule, computed in Python so that building on the `meta` device works.
        last = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]
        self.layer = nn.ModuleList(
            [AseMllmVisionLayer(config, index, rate) for index, rate in enumerate(rates)]
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, saliency_features: torch.Tensor) -> BaseModelOutput:
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states, saliency_features)
        return BaseModelOutput(last_hidden_state=hidden_states)


class AseMllmSaliencyInitMixin:
    """`_init_weights` of an IAS-ViT (either family's): the IAS modules with an init of their own (a `Linear` marked
    `saliency_init`, a gate at `config.ias_gate_init`) here, every other module by the ViT's own `_init_weights`."""

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and hasattr(module, "saliency_init"):
            weight_std, bias_range = module.saliency_init
            init.normal_(module.weight, std=weight_std)
            if module.bias is not None:
                init.uniform_(module.bias, *bias_range)
        elif isinstance(module, AseMllmSaliencyGate):
            init.constant_(module.weight, self.config.ias_gate_init)
        else:
            super()._init_weights(module)


class AseMllmVisionPreTrainedModel(AseMllmSaliencyInitMixin, InternVLVisionPreTrainedModel):
    config: AseMllmVisionConfig
    _no_split_modules = ["AseMllmVisionLayer"]
    _can_record_outputs = {
        "hidden_states": AseMllmVisionLayer,
        # Only the self-attention: the saliency cross-attention is not a ViT layer's attention map.
        "attentions": OutputRecorder(InternVLVisionAttention, layer_name="attention"),
    }


class AseMllmVisionModel(AseMllmVisionPreTrainedModel):
    """IAS-ViT: InternViT embeddings + IAS blocks; InternVL2's ViT has no final norm (`use_mean_pooling`)."""

    def __init__(self, config: AseMllmVisionConfig) -> None:
        super().__init__(config)
        self.embeddings = InternVLVisionEmbeddings(config)
        self.saliency_embeddings = AseMllmSaliencyEmbeddings(config)
        self.encoder = AseMllmVisionEncoder(config)
        self.layernorm = (
            nn.Identity() if config.use_mean_pooling else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        )
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        saliency_maps: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        **kwargs,
    ) -> InternVLVisionModelOutputWithPooling:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, H, W)`):
            Normalised tiles.
        saliency_maps (`torch.FloatTensor` of shape `(num_tiles, G, G)`):
            One saliency map per tile, aligned with `pixel_values`.
        """
        check_saliency_maps(saliency_maps, pixel_values)
        embedding_output = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        patch_size = self.config.patch_size
        patch_grid = (pixel_values.shape[-2] // patch_size[0], pixel_values.shape[-1] // patch_size[1])
        saliency_features = self.saliency_embeddings(saliency_maps, patch_grid).to(embedding_output.dtype)
        encoder_outputs = self.encoder(embedding_output, saliency_features)
        sequence_output = self.layernorm(encoder_outputs.last_hidden_state)
        return InternVLVisionModelOutputWithPooling(last_hidden_state=sequence_output)


class AseMllmPreTrainedModel(SaveHooksMixin, InternVLPreTrainedModel):
    config: AseMllmConfig
    _no_split_modules = ["AseMllmVisionLayer", "EatModel"]
    # Read by every transformers quantizer: these modules are never quantised (see `FLOAT_MODULES_PATTERN`).
    _keep_in_fp32_modules = [FLOAT_MODULES_PATTERN]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        # EAT's own parameters and index buffers (a released checkpoint overwrites all of them).
        if isinstance(module, EatWindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=0.01)
            init.copy_(module.relative_position_index, relative_position_index(module.window))
            if module.shift:
                init.copy_(module.attn_mask, shifted_window_mask(module.attn_mask_size, module.window, module.shift))
        elif isinstance(module, EatDeformableAttention) and module.rpe_table is not None:
            init.trunc_normal_(module.rpe_table, std=0.01)

    def add_saliency_model(self, config) -> None:
        """The IASM's aesthetic model (EAT, for the `eat_layercam` source) of either family: its weights live in this
        checkpoint, and it stays frozen."""
        if config.saliency_config.source == "eat_layercam":
            self.saliency_model = EatModel(config.saliency_config.eat_config)
            self.saliency_model.requires_grad_(False)

    def _get_dtype_plan(self, dtype: torch.dtype) -> dict:
        """transformers' plan of modules loaded in float32 (`from_pretrained` asks it, 5.4 to 5.25), less ours: a
        float16 load would upcast every `_keep_in_fp32_modules` module, and ours are listed there only to keep
        quantizers off them. The float parts keep the dtype the load asks for, quantised or not."""
        plan = super()._get_dtype_plan(dtype)
        plan.pop(FLOAT_MODULES_PATTERN, None)
        return plan

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; EAT comes back frozen (loading re-creates parameters as trainable)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, EatModel):
                module.requires_grad_(False)
        return loaded


class AseMllmModel(AseMllmPreTrainedModel, InternVLModel):
    """IAS-ViT → drop CLS → pixel shuffle → InternVL's MLP projector → the language model."""

    def __init__(self, config: AseMllmConfig):
        AseMllmPreTrainedModel.__init__(self, config)
        self.vision_tower = AseMllmVisionModel(config.vision_config)
        self.multi_modal_projector = InternVLMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.add_saliency_model(config)
        self.post_init()

    def get_image_saliency(self, saliency_pixel_values: torch.Tensor) -> torch.Tensor:
        """The IASM: EAT + LayerCAM on whole images, once per image.

        Args:
            saliency_pixel_values: `(num_images, 3, 224, 224)` ImageNet-normalised whole images.
        Returns:
            `(num_images, h, w)` float32 maps in [0, 1] (14 × 14 at the default layer), detached.
        """
        if getattr(self, "saliency_model", None) is None:
            raise ValueError(
                f"this model's saliency source is {self.config.saliency_config.source!r}, which has no EAT; "
                "`saliency_pixel_values` are only used by the 'eat_layercam' source."
            )
        saliency = self.config.saliency_config
        return self.saliency_model.layer_cam(saliency_pixel_values, saliency.layercam_layer_name, saliency.layercam_target)

    def get_saliency_maps(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        saliency_source: str | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The `(num_tiles, G, G)` maps the IAS-ViT receives for these processor outputs (the one getter of them):
        the given (precomputed) ones; else EAT + LayerCAM mapped onto each image's tiles; all ones for the `uniform`
        source; otherwise a clear error. `saliency_source`, the processor's, must be the model's."""
        size = self.config.vision_config.image_size
        check_pixel_values(pixel_values, tuple(size) if isinstance(size, (list, tuple)) else (size, size))
        check_saliency_source(saliency_source, self.config.saliency_config)
        if saliency_maps is not None:
            return saliency_maps
        source = self.config.saliency_config.source
        grid = self.config.saliency_config.grid_size
        if source == "uniform":
            return uniform_saliency_maps(pixel_values.shape[0], grid, like=pixel_values)
        if source == "eat_layercam" and saliency_pixel_values is not None and tile_grids is not None:
            check_tile_grids(tile_grids, saliency_pixel_values, pixel_values)
            return image_maps_onto_tiles(self.get_image_saliency(saliency_pixel_values), tile_grids, grid).to(pixel_values.device)
        needed = "`saliency_pixel_values` and `tile_grids`" if source == "eat_layercam" else "`saliency_maps`"
        raise ValueError(
            f"the {source!r} saliency source needs {needed} (or precomputed `saliency_maps`): pass everything "
            "AseMllmProcessor returns with `pixel_values`, from a processor with the same `saliency_source`."
        )

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        saliency_source: str | None = None,
        **kwargs,
    ):
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, 448, 448)`):
            Normalised tiles of every image in the batch.
        saliency_maps (`torch.FloatTensor` of shape `(num_tiles, G, G)`, *optional*):
            One saliency map per tile (classical sources, or precomputed EAT maps); skips EAT when given.
        saliency_pixel_values (`torch.FloatTensor` of shape `(num_images, 3, 224, 224)`, *optional*):
            Whole images for EAT (the `eat_layercam` source).
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            `(cols, rows)` of each image's tiling, to map its saliency onto its tiles and thumbnail.
        saliency_source (`str`, *optional*):
            The source the processor made its saliency inputs for; must be the model's.

        Returns a `BaseModelOutputWithPooling` whose `pooler_output` is `(num_tiles, 256, text_hidden_size)`.
        """
        saliency_maps = self.get_saliency_maps(pixel_values, saliency_maps, saliency_pixel_values, tile_grids,
                                               saliency_source)
        return super().get_image_features(
            pixel_values=pixel_values,
            saliency_maps=saliency_maps,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        mm_encoder_outputs: dict | None = None,
        saliency_source: str | None = None,
        **kwargs,
    ):
        if pixel_values is not None and (mm_encoder_outputs or {}).get("image") is None:
            image_outputs = self.get_image_features(
                pixel_values=pixel_values,
                saliency_maps=saliency_maps,
                saliency_pixel_values=saliency_pixel_values,
                tile_grids=tile_grids,
                saliency_source=saliency_source,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                return_dict=True,
            )
            mm_encoder_outputs = {**(mm_encoder_outputs or {}), "image": image_outputs}
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is not None and input_ids is not None:
            check_image_token_count(input_ids, image_outputs.pooler_output, self.config.image_token_id)
        if INTERNVL_TAKES_ENCODER_OUTPUTS:
            kwargs["mm_encoder_outputs"] = mm_encoder_outputs
        elif image_outputs is not None:
            if inputs_embeds is None:
                inputs_embeds = self.get_input_embeddings()(input_ids)
            image_features = image_outputs.pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
            inputs_embeds, input_ids = inputs_embeds.masked_scatter(mask, image_features), None
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        if not INTERNVL_TAKES_ENCODER_OUTPUTS and image_outputs is not None and not isinstance(outputs, tuple):
            outputs.image_hidden_states = image_features
        return outputs


class AseMllmForConditionalGeneration(AseMllmScoringMixin, AseMllmPreTrainedModel, InternVLForConditionalGeneration):
    """ASE-MLLM with a language-modelling head; `generate()` encodes the images once, at prefill."""

    def __init__(self, config: AseMllmConfig):
        AseMllmPreTrainedModel.__init__(self, config)
        self.model = AseMllmModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_saliency(self, saliency_pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_saliency(saliency_pixel_values)

    def get_saliency_maps(self, pixel_values, **kwargs):
        return self.model.get_saliency_maps(pixel_values, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict | None = None,
        saliency_source: str | None = None,
        **kwargs,
    ):
        r"""
        saliency_maps (`torch.FloatTensor` of shape `(num_tiles, G, G)`, *optional*):
            One saliency map per tile of `pixel_values` (classical sources, or precomputed; skips EAT).
        saliency_pixel_values (`torch.FloatTensor` of shape `(num_images, 3, 224, 224)`, *optional*):
            Whole images for EAT + LayerCAM (the default `eat_layercam` source), from [`AseMllmProcessor`].
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            Each image's `(cols, rows)` tiling, from [`AseMllmProcessor`].
        saliency_source (`str`, *optional*):
            The source [`AseMllmProcessor`] made the saliency inputs for; a source other than the model's is an error.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets, -100 where no loss is taken (`AseMllmDataCollator` sets it on padding, image tokens
            and, by default, everything but the assistant's answer).
        """
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            saliency_maps=saliency_maps,
            saliency_pixel_values=saliency_pixel_values,
            tile_grids=tile_grids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            labels=labels,
            logits_to_keep=logits_to_keep,
            mm_encoder_outputs=mm_encoder_outputs,
            saliency_source=saliency_source,
            **kwargs,
        )

    # generate() asks `inspect.signature(self.forward)` at every decoding step of a remote-code model (to look for
    # the retired `cache_position` argument), which InternVL, not remote code, never does. Computed from the code
    # each time, that took 0.2 ms a step, ~4 % of the small bench model's decode rate; Python's own hook for a known
    # signature makes it a lookup, and `MethodSignature` keeps the bound form too.
    forward.__signature__ = MethodSignature.from_callable(forward)


__all__ = [
    "PARAMETER_GROUPS",
    "FLOAT_GROUPS",
    "parameter_group",
    "set_saliency_gates",
    "image_maps_onto_tiles",
    "AseMllmVisionModel",
    "AseMllmVisionLayer",
    "AseMllmPreTrainedModel",
    "AseMllmModel",
    "AseMllmForConditionalGeneration",
]
