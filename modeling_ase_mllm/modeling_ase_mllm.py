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
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.auto import AutoModel
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
from .image_processing_ase_mllm import has_thumbnail, tile_count
from .saliency_ase_mllm import map_saliency_to_tiles
from .scoring_ase_mllm import AseMllmScoringMixin


# --- transformers compatibility ------------------------------------------------------------------------------------
# Before 5.18 `InternVLModel.forward` takes no `mm_encoder_outputs`: it would encode `pixel_values` itself, without our
# saliency inputs. `AseMllmModel.forward` then merges the image features into the embeddings itself, as it does since.
INTERNVL_TAKES_ENCODER_OUTPUTS = "mm_encoder_outputs" in inspect.signature(InternVLModel.forward).parameters
# -------------------------------------------------------------------------------------------------------------------


# Which part of ASE-MLLM every weight belongs to (as timm's `group_matcher`): each group and the module names that
# open it, matched as whole components of a parameter's path, so `model.vision_tower.encoder.layer.0.saliency_gate
# .weight` is `ias`. The first group that matches wins: EAT and the IAS modules before the ViT they sit in.
# Training (freezing, LoRA), conversion, the InternVL twin and the benches ask `parameter_group`.
PARAMETER_GROUPS = (
    ("eat", ("saliency_model",)),
    ("ias", ("saliency_embeddings", "saliency_query_norm", "saliency_key_value_norm", "saliency_cross_attention",
             "saliency_gate")),
    ("vision", ("vision_tower",)),
    ("projector", ("multi_modal_projector",)),
    ("llm", ("language_model", "lm_head")),
)
# The groups ASE-MLLM adds to InternVL; every other weight is InternVL's own, under InternVL's name.
ADDED_GROUPS = ("eat", "ias")
_GROUP_PATTERNS = tuple(
    (group, re.compile(r"(^|\.)(" + "|".join(names) + r")(\.|$)")) for group, names in PARAMETER_GROUPS
)
# The groups a quantised load (bitsandbytes 8/4-bit, torchao, any transformers quantizer) keeps in floating point:
# LayerCAM differentiates through EAT and its score must stay exact; the ViT, its IAS modules and the projector are a
# small part of the weights. Only the language model is quantised (its LM head too, unless transformers' default
# skip list keeps it, as it does when the user names none).
FLOAT_GROUPS = ("eat", "ias", "vision", "projector")
# Those groups as one `_keep_in_fp32_modules` entry, the list every transformers quantizer (5.4 to 5.25) adds to its
# own skip list. Quantizers match an entry as a regex from the start of a module's name, so this one matches any
# module whose path has one of the groups' names as a whole component (`model.vision_tower.encoder.layer.0.mlp.fc1`
# in the generation model, `vision_tower.…` in the base model).
FLOAT_MODULES_PATTERN = r"(?:.*\.)?(?:" + "|".join(
    name for group, names in PARAMETER_GROUPS if group in FLOAT_GROUPS for name in names
) + r")"

# Run after `save_pretrained` has written a folder, as `hook(folder, model)`, and before `push_to_hub` uploads one,
# as `hook(folder, model, repo_id=...)`. Empty where this module is a Hub folder's remote code; the installed
# package adds its model-card writer (`modeling_ase_mllm.register_auto_classes`).
SAVE_HOOKS: list[Callable] = []


def parameter_group(name: str) -> str | None:
    """The group (`PARAMETER_GROUPS`) of a parameter or module name, also behind a prefix such as PEFT's
    `base_model.model.`; None when it belongs to none."""
    for group, pattern in _GROUP_PATTERNS:
        if pattern.search(name):
            return group
    return None


def set_saliency_gates(model: nn.Module, value: float) -> None:
    """Fill every IAS saliency gate `g` in `model` with `value` (0.0: each block computes exactly InternViT's).

    Gates are found by their class name, so this also reaches PEFT's copies (`modules_to_save`) and a model whose
    classes were loaded as a Hub folder's remote code.
    """
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == AseMllmSaliencyGate.__name__:
                module.weight.fill_(value)


def remote_code_files() -> list[Path]:
    """The modules a Hub folder carries: every module beside this one, without the package's `__init__.py` (from
    the installed package, all of its root; loaded as remote code, those transformers copied with the model)."""
    return sorted(path for path in Path(__file__).parent.glob("*.py") if path.name != "__init__.py")


class AseMllmDropPath(nn.Module):
    """Stochastic depth per sample (InternViT trains with it; identity at inference and at rate 0)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep)
        return hidden_states * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


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
        self.drop_path = AseMllmDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
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


def init_saliency_module(module: nn.Module, ias_gate_init: float) -> bool:
    """Initialise `module` if it is one of the IAS modules with an init of their own (a `Linear` marked
    `saliency_init`, a gate) and say so; any other module is left to its ViT's `_init_weights`."""
    if isinstance(module, nn.Linear) and hasattr(module, "saliency_init"):
        weight_std, bias_range = module.saliency_init
        init.normal_(module.weight, std=weight_std)
        if module.bias is not None:
            init.uniform_(module.bias, *bias_range)
        return True
    if isinstance(module, AseMllmSaliencyGate):
        init.constant_(module.weight, ias_gate_init)
        return True
    return False


class AseMllmVisionPreTrainedModel(InternVLVisionPreTrainedModel):
    config: AseMllmVisionConfig
    _no_split_modules = ["AseMllmVisionLayer"]
    _can_record_outputs = {
        "hidden_states": AseMllmVisionLayer,
        # Only the self-attention: the saliency cross-attention is not a ViT layer's attention map.
        "attentions": OutputRecorder(InternVLVisionAttention, layer_name="attention"),
    }

    @torch.no_grad()
    def _init_weights(self, module):
        if not init_saliency_module(module, self.config.ias_gate_init):
            super()._init_weights(module)


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


def check_pixel_values(pixel_values: torch.Tensor, image_size: tuple[int, int]) -> None:
    """Reject tiles of the wrong shape before they fail deep inside a convolution."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
    expected = (3, *image_size)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
        raise ValueError(
            f"`pixel_values` must have shape (num_tiles, {', '.join(map(str, expected))}), got {tuple(pixel_values.shape)}; "
            "pass the processor's output unchanged."
        )


def check_saliency_maps(saliency_maps: torch.Tensor | None, pixel_values: torch.Tensor) -> None:
    """Saliency maps must come one per tile, square, and finite."""
    if not isinstance(saliency_maps, torch.Tensor):
        raise TypeError(
            f"`saliency_maps` must be a torch.Tensor of shape (num_tiles, G, G), got {type(saliency_maps).__name__}; "
            "AseMllmProcessor returns it next to `pixel_values`."
        )
    num_tiles = pixel_values.shape[0]
    if saliency_maps.ndim != 3 or saliency_maps.shape[0] != num_tiles or saliency_maps.shape[1] != saliency_maps.shape[2]:
        raise ValueError(
            f"`saliency_maps` has shape {tuple(saliency_maps.shape)} but `pixel_values` has {num_tiles} tiles; "
            f"expected ({num_tiles}, G, G), one map per tile in the same order."
        )
    if not torch.isfinite(saliency_maps).all():
        raise ValueError("`saliency_maps` contains NaN or infinite values.")


class AseMllmPreTrainedModel(InternVLPreTrainedModel):
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

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus every remote-code module (so the folder loads without this
        package); then the `SAVE_HOOKS` (the installed package's writes the model card)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        copy_remote_code(save_directory)
        if kwargs.get("is_main_process", True):
            for hook in SAVE_HOOKS:
                hook(save_directory, self)

    def _upload_modified_files(self, working_dir, repo_id: str, *args, **kwargs):
        """`push_to_hub` saves the model, then overwrites `README.md` with the Hub's card (or a generic one) just
        before this upload: the `SAVE_HOOKS` run again, with the repo id (the model card merges its sections back)."""
        for hook in SAVE_HOOKS:
            hook(working_dir, self, repo_id=repo_id)
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)


def copy_remote_code(save_directory) -> list[Path]:
    """Copy every remote-code module (`remote_code_files`) next to a saved config/processor."""
    copied = []
    for source in remote_code_files():
        shutil.copyfile(source, Path(save_directory) / source.name)
        copied.append(Path(save_directory) / source.name)
    return copied


class AseMllmModel(AseMllmPreTrainedModel, InternVLModel):
    """IAS-ViT → drop CLS → pixel shuffle → InternVL's MLP projector → the language model."""

    def __init__(self, config: AseMllmConfig):
        AseMllmPreTrainedModel.__init__(self, config)
        self.vision_tower = AseMllmVisionModel(config.vision_config)
        self.multi_modal_projector = InternVLMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        if config.saliency_config.source == "eat_layercam":
            # The IASM's aesthetic model: its weights live in this checkpoint, and it stays frozen.
            self.saliency_model = EatModel(config.saliency_config.eat_config)
            self.saliency_model.requires_grad_(False)
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

    def resolve_saliency_maps(
        self,
        pixel_values: torch.Tensor,
        saliency_maps: torch.Tensor | None = None,
        saliency_pixel_values: torch.Tensor | None = None,
        tile_grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The per-tile maps to use, `(num_tiles, G, G)`: the given (precomputed) ones; else EAT + LayerCAM mapped
        onto each image's tiles; all ones for the `uniform` source; otherwise a clear error."""
        if saliency_maps is not None:
            return saliency_maps
        source = self.config.saliency_config.source
        grid = self.config.saliency_config.grid_size
        if source == "uniform":
            return pixel_values.new_ones((pixel_values.shape[0], grid, grid))
        if source == "eat_layercam" and saliency_pixel_values is not None and tile_grids is not None:
            check_tile_grids(tile_grids, saliency_pixel_values, pixel_values)
            image_maps = self.get_image_saliency(saliency_pixel_values)
            tiles = [map_saliency_to_tiles(m, (c, r), has_thumbnail(c, r), grid)
                     for m, (c, r) in zip(image_maps, tile_grids.tolist())]
            return torch.cat(tiles).to(pixel_values.device)
        needed = "`saliency_pixel_values` and `tile_grids`" if source == "eat_layercam" else "`saliency_maps`"
        raise ValueError(
            f"the {source!r} saliency source needs {needed} (or precomputed `saliency_maps`): pass everything "
            "AseMllmProcessor returns with `pixel_values`, from a processor with the same `saliency_source`."
        )

    def get_saliency_maps(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The `(num_tiles, G, G)` maps the IAS-ViT receives for these processor outputs."""
        check_pixel_values(pixel_values, tuple(self.config.vision_config.image_size))
        return self.resolve_saliency_maps(pixel_values, saliency_maps, saliency_pixel_values, tile_grids)

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
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

        Returns a `BaseModelOutputWithPooling` whose `pooler_output` is `(num_tiles, 256, text_hidden_size)`.
        """
        saliency_maps = self.get_saliency_maps(pixel_values, saliency_maps, saliency_pixel_values, tile_grids)
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
        **kwargs,
    ):
        if pixel_values is not None and (mm_encoder_outputs or {}).get("image") is None:
            image_outputs = self.get_image_features(
                pixel_values=pixel_values,
                saliency_maps=saliency_maps,
                saliency_pixel_values=saliency_pixel_values,
                tile_grids=tile_grids,
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


def check_tile_grids(tile_grids: torch.Tensor, saliency_pixel_values: torch.Tensor, pixel_values: torch.Tensor) -> None:
    """One `(cols, rows)` per image, and together they must account for every tile of `pixel_values`."""
    if tile_grids.ndim != 2 or tile_grids.shape[1] != 2 or tile_grids.shape[0] != saliency_pixel_values.shape[0]:
        raise ValueError(
            f"`tile_grids` has shape {tuple(tile_grids.shape)} but `saliency_pixel_values` holds "
            f"{saliency_pixel_values.shape[0]} images; expected one (cols, rows) row per image."
        )
    tiles = [tile_count(c, r) for c, r in tile_grids.tolist()]
    if sum(tiles) != pixel_values.shape[0]:
        raise ValueError(
            f"`tile_grids` {tile_grids.tolist()} give {sum(tiles)} tiles (thumbnails included) but `pixel_values` "
            f"has {pixel_values.shape[0]}; pass the processor's outputs together, unmodified."
        )


def check_image_token_count(input_ids: torch.Tensor, image_features: torch.Tensor, image_token_id: int) -> None:
    """Every `<IMG_CONTEXT>` must receive one image feature, per sample; say which sample is off."""
    num_tokens = int((input_ids == image_token_id).sum())
    num_features = image_features.shape[0] * image_features.shape[1]
    if num_tokens != num_features:
        per_sample = (input_ids == image_token_id).sum(dim=1).tolist()
        raise ValueError(
            f"input_ids hold {num_tokens} image tokens (per sample: {per_sample}) but the images give "
            f"{image_features.shape[0]} tiles × {image_features.shape[1]} = {num_features} features. "
            "Use the processor's `input_ids` and `pixel_values` together, unmodified."
        )


class MethodSignature(inspect.Signature):
    """A function's signature that also keeps the one its bound method has (without `self`), once made.

    `inspect.signature(model.forward)` finds the function's `__signature__` at once, but then derives the bound
    form anew (`Signature.replace`, which validates every parameter) at every call. generate() makes that call at
    every decoding step of a remote-code model (to look for the retired `cache_position` argument), which InternVL,
    not remote code, never does; on the tiny test model the check cost ~40 µs of a ~0.9 ms step, ~15 µs of it the
    derivation. Any other `replace` is done as usual.
    """

    __slots__ = ("_bound",)

    def replace(self, **changes):
        parameters = changes.get("parameters")
        if parameters is None or len(changes) != 1:
            return super().replace(**changes)
        parameters = tuple(parameters)
        bound = getattr(self, "_bound", None)
        if bound is None or bound[0] != parameters:  # the same Parameter objects compare by identity, in C
            bound = self._bound = (parameters, super().replace(parameters=parameters))
        return bound[1]


class AseMllmForConditionalGeneration(AseMllmScoringMixin, AseMllmPreTrainedModel, InternVLForConditionalGeneration):
    """ASE-MLLM with a language-modelling head; `generate()` encodes the images once, at prefill."""

    def __init__(self, config: AseMllmConfig):
        AseMllmPreTrainedModel.__init__(self, config)
        self.model = AseMllmModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_saliency(self, saliency_pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_saliency(saliency_pixel_values)

    def get_saliency_maps(self, pixel_values, saliency_maps=None, saliency_pixel_values=None, tile_grids=None, **kwargs):
        return self.model.get_saliency_maps(pixel_values, saliency_maps, saliency_pixel_values, tile_grids)

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        saliency_maps: torch.FloatTensor | None = None,
        saliency_pixel_values: torch.FloatTensor | None = None,
        tile_grids: torch.LongTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ):
        return self.model.get_image_features(
            pixel_values=pixel_values,
            saliency_maps=saliency_maps,
            saliency_pixel_values=saliency_pixel_values,
            tile_grids=tile_grids,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    # --- InternVL-style convenience API (`model.chat(...)`, `model.batch_chat(...)`), for users coming from it ---

    def chat(self, processor, images, question: str, generation_config: dict | None = None, history=None,
             return_history: bool = False):
        """One answer, as InternVL's `chat()`; `images` (PIL image, path or list, or `None`) go with the first user turn.

        Args:
            processor: the model's `AseMllmProcessor` (InternVL takes a tokenizer; tiling and saliency need both).
            history: earlier `(question, answer)` pairs.
        Returns:
            The answer, or `(answer, history)` with `return_history=True`.
        """
        history = list(history or [])
        images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
        turns = [*history, (question, None)]
        messages = []
        for index, (user_text, answer) in enumerate(turns):
            content = ([{"type": "image"}] * len(images) if index == 0 else []) + [{"type": "text", "text": user_text}]
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        answer = self.batch_chat(processor, [images], [messages], generation_config)[0]
        return (answer, [*history, (question, answer)]) if return_history else answer

    def batch_chat(
        self, processor, images, questions, generation_config: dict | None = None, images_kwargs: dict | None = None
    ) -> list[str]:
        """Answers for a batch, left-padded and stripped of surrounding whitespace, as InternVL's `batch_chat()`.

        Args:
            images: per sample, an image, a list of images, or `None`.
            questions: per sample, a question string (the images precede it) or a full message list.
            images_kwargs: image-processor options, e.g. `{"max_patches": 6}`.
        """
        per_sample = [[] if item is None else list(item) if isinstance(item, (list, tuple)) else [item] for item in images]
        prompts = []
        for sample_images, question in zip(per_sample, questions, strict=True):
            messages = question if isinstance(question, list) else [
                {"role": "user", "content": [{"type": "image"}] * len(sample_images) + [{"type": "text", "text": question}]}
            ]
            prompts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
        flat = [image for sample in per_sample for image in sample]
        inputs = processor(
            images=per_sample if flat else None, text=prompts, padding=True, images_kwargs=images_kwargs or {},
            return_tensors="pt",
        )
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        output = self.generate(**inputs, **{"max_new_tokens": 256, "do_sample": False, **(generation_config or {})})
        # Stripped as InternVL strips them: an answer whose first piece is a `▁word` decodes with a leading space.
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [answer.strip() for answer in answers]

    def mask_labels(
        self,
        labels: torch.LongTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Never train on image tokens (`<img>`, `<IMG_CONTEXT>`, `</img>`) or padding.

        Prompt tokens are masked upstream: the chat template's `{% generation %}` block gives the assistant mask
        (`return_assistant_tokens_mask=True`, TRL's `assistant_only_loss=True`, or our data collator).
        """
        image_ids = torch.tensor(self.config.image_special_token_ids, device=labels.device)
        ignore = torch.isin(labels, image_ids)
        if input_ids is not None:
            ignore |= torch.isin(input_ids, image_ids)
        if attention_mask is not None and attention_mask.shape == labels.shape:
            ignore |= attention_mask == 0
        return labels.masked_fill(ignore, -100)

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
        **kwargs,
    ):
        r"""
        saliency_maps (`torch.FloatTensor` of shape `(num_tiles, G, G)`, *optional*):
            One saliency map per tile of `pixel_values` (classical sources, or precomputed; skips EAT).
        saliency_pixel_values (`torch.FloatTensor` of shape `(num_images, 3, 224, 224)`, *optional*):
            Whole images for EAT + LayerCAM (the default `eat_layercam` source), from [`AseMllmProcessor`].
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            Each image's `(cols, rows)` tiling, from [`AseMllmProcessor`].
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; image tokens and padding are set to -100 here.
        """
        if labels is not None:
            labels = self.mask_labels(labels, input_ids, attention_mask)
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
    "AseMllmVisionModel",
    "AseMllmVisionLayer",
    "AseMllmPreTrainedModel",
    "AseMllmModel",
    "AseMllmForConditionalGeneration",
]
