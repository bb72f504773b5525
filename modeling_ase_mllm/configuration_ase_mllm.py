"""ASE-MLLM configuration: InternVL's configs plus the IAS-ViT cross-attention and the saliency source.

Remote code: this module ships inside Hub checkpoints, so it imports only transformers, the standard
library and (as `from .x import Y`) its sibling modules.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto import AutoConfig
from transformers.models.internvl.configuration_internvl import InternVLConfig, InternVLVisionConfig


# Saliency sources. The classical ones are computed by the image processor; later sources that need
# weights (EAT + LayerCAM) are computed inside the model.
SALIENCY_SOURCES = ("spectral_residual", "uniform")

# The `auto_map` every saved ASE-MLLM folder carries (config.json and the processor's configs), so that it
# loads with `trust_remote_code=True` where this package is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_ase_mllm.AseMllmConfig",
    "AutoModel": "modeling_ase_mllm.AseMllmModel",
    "AutoModelForImageTextToText": "modeling_ase_mllm.AseMllmForConditionalGeneration",
    "AutoProcessor": "processing_ase_mllm.AseMllmProcessor",
    "AutoImageProcessor": "image_processing_ase_mllm.AseMllmImageProcessor",
}


@strict
class AseMllmVisionConfig(InternVLVisionConfig):
    r"""
    IAS-ViT: InternViT with a saliency cross-attention after the self-attention of each chosen block.

    drop_path_rate (`float`, defaults to 0.0):
        Stochastic-depth rate of the last block (linearly increasing from 0 over the blocks, as InternViT).
    ias_layers (`list[int]`, *optional*):
        Indices of the blocks that carry the saliency cross-attention. `None` means every block.
    ias_gate_init (`float`, defaults to 0.0):
        Initial value of the per-channel gate `g`; the cross-attention output is scaled by `tanh(g)`, so 0.0 makes
        every block compute exactly InternViT's block.
    saliency_embed_dim (`int`, defaults to 256):
        Hidden width of the MLP that embeds each patch's saliency value.
    """

    model_type = "ase_mllm_vision"
    base_config_key = "vision_config"

    drop_path_rate: float = 0.0
    ias_layers: list[int] | None = None
    ias_gate_init: float = 0.0
    saliency_embed_dim: int = 256

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.ias_layers is not None:
            self.ias_layers = sorted(set(int(i) for i in self.ias_layers))
            bad = [i for i in self.ias_layers if not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(
                    f"`ias_layers` {bad} out of range for a {self.num_hidden_layers}-block encoder "
                    f"(valid: 0..{self.num_hidden_layers - 1})."
                )

    @property
    def ias_layer_indices(self) -> list[int]:
        """The blocks that carry a saliency cross-attention."""
        return list(range(self.num_hidden_layers)) if self.ias_layers is None else list(self.ias_layers)


@strict
class AseMllmSaliencyConfig(PreTrainedConfig):
    r"""
    Where the aesthetic-saliency maps come from and at which resolution they reach each tile.

    source (`str`, defaults to `"spectral_residual"`):
        One of `"spectral_residual"` (classical, computed once per image by the processor) or `"uniform"`
        (an all-ones map, for ablations).
    grid_size (`int`, defaults to 32):
        Side of the per-tile saliency map (32 = the 448/14 patch grid of a tile).
    working_size (`int`, defaults to 64):
        Spectral residual: side of the square the whole image is resized to before the FFT.
    blur_sigma (`float`, defaults to 2.5):
        Spectral residual: Gaussian blur (in working-size pixels) applied to the saliency energy.
    """

    model_type = "ase_mllm_saliency"
    base_config_key = "saliency_config"

    source: str = "spectral_residual"
    grid_size: int = 32
    working_size: int = 64
    blur_sigma: float = 2.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.source not in SALIENCY_SOURCES:
            raise ValueError(f"saliency `source` must be one of {SALIENCY_SOURCES}, got {self.source!r}.")


@strict
class AseMllmConfig(InternVLConfig):
    r"""
    ASE-MLLM = IAS-ViT + pixel shuffle + InternVL's MLP projector + any causal LM that transformers ships.

    saliency_config (`AseMllmSaliencyConfig` or `dict`, *optional*):
        The saliency source and grid.
    image_token_id (`int`):
        Id of `<IMG_CONTEXT>`, the token each image feature replaces.
    start_image_token_id / end_image_token_id (`int`, *optional*):
        Ids of `<img>` and `</img>`; they are never trained as labels.
    image_seq_length (`int`, defaults to 256):
        Tokens per 448 px tile after pixel shuffle: (448 / 14)² × downsample_ratio².
    """

    model_type = "ase_mllm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "vision_config": AseMllmVisionConfig,
        "saliency_config": AseMllmSaliencyConfig,
    }

    saliency_config: dict | PreTrainedConfig | None = None
    start_image_token_id: int | None = None
    end_image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        patches = self.vision_config.image_size[0] // self.vision_config.patch_size[0]
        expected = int(patches * self.downsample_ratio) ** 2
        if self.image_seq_length != expected:
            raise ValueError(
                f"`image_seq_length`={self.image_seq_length} does not match the vision geometry: "
                f"({patches} patches per side × downsample_ratio {self.downsample_ratio})² = {expected}."
            )

    @property
    def image_special_token_ids(self) -> list[int]:
        """Ids of every token that belongs to an image span and must never carry a label."""
        ids = [self.image_token_id, self.start_image_token_id, self.end_image_token_id]
        return [i for i in ids if i is not None]


__all__ = ["AUTO_MAP", "AseMllmVisionConfig", "AseMllmSaliencyConfig", "AseMllmConfig", "SALIENCY_SOURCES"]
