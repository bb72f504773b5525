"""ASE-MLLM configuration: InternVL's configs plus the IAS-ViT cross-attention and the saliency source.

Remote code: this module ships inside Hub checkpoints, so it imports only transformers, the standard
library and (as `from .x import Y`) its sibling modules.
"""

import re
from dataclasses import dataclass

import transformers


# --- transformers compatibility ------------------------------------------------------------------------------------
# AutoConfig imports this module first, so an unsupported transformers is named here, before any import below fails
# deep inside transformers. 5.4.0 is the first release with dataclass configs: before it `PreTrainedConfig` is a
# plain class (`dataclasses.is_dataclass(PreTrainedConfig)` is False in 5.3.0) and `@strict` refuses ours, which
# are dataclasses with `__post_init__`; the sections below bridge the smaller changes since then.
TRANSFORMERS_REQUIREMENT = ">=5.4.0,<6"
TORCH_REQUIREMENT = ">=2.6"
PYTHON_REQUIREMENT = ">=3.10"


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Raise one `ImportError` naming the installed transformers, the supported range and the fix."""
    minimum = TRANSFORMERS_REQUIREMENT.split(",")[0].removeprefix(">=")
    release = tuple(int(part) for part in re.findall(r"\d+", installed)[:3])
    if release < tuple(int(part) for part in minimum.split(".")):
        raise ImportError(
            f"ASE-MLLM needs transformers {TRANSFORMERS_REQUIREMENT} but transformers {installed} is installed; "
            f'upgrade it with: pip install "transformers{TRANSFORMERS_REQUIREMENT}"'
        )


check_transformers_version()

from huggingface_hub.dataclasses import strict  # noqa: E402  (after the version check, which names the fix)
from transformers import PreTrainedConfig  # noqa: E402
from transformers.models.auto import AutoConfig  # noqa: E402
from transformers.models.internvl.configuration_internvl import InternVLConfig, InternVLVisionConfig  # noqa: E402


try:  # transformers >= 5.20 builds sub-configs from `sub_configs_defaults` in `PreTrainedConfig.__post_init__`
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # older releases list them in `sub_configs` and each config builds its own (`build_sub_configs`)
    SubConfigSpec = None


def sub_config_specs(**specs) -> dict:
    """`sub_configs_defaults` for a class body: `name=ConfigClass` or `name=(AutoConfig, default_model_type)`."""
    if SubConfigSpec is None:
        return {}
    return {
        name: SubConfigSpec(config_class=spec[0], model_type=spec[1]) if isinstance(spec, tuple) else SubConfigSpec(config_class=spec)
        for name, spec in specs.items()
    }


def build_sub_configs(config: PreTrainedConfig) -> None:
    """Before 5.20: turn this config's own sub-config dicts (or `None`) into config objects, as 5.20+ does.

    `AutoConfig` entries are left to the parent class (InternVLConfig builds `text_config` itself)."""
    if SubConfigSpec is not None:
        return
    for name, config_class in type(config).sub_configs.items():
        value = getattr(config, name)
        if config_class is not AutoConfig and not isinstance(value, PreTrainedConfig):
            setattr(config, name, config_class(**(value or {})))
# -------------------------------------------------------------------------------------------------------------------


# Saliency sources. `eat_layercam` (the paper's IASM, the default) needs weights and runs inside the model; the
# classical ones are computed by the image processor and stay selectable for ablations.
SALIENCY_SOURCES = ("eat_layercam", "spectral_residual", "uniform")

# What LayerCAM differentiates: the top AVA rating bin (the paper's "most salient category") or the expected
# score Σ i·y_i over the 10 bins.
LAYERCAM_TARGETS = ("top_bin", "mean_score")

# The `auto_map` every saved ASE-MLLM folder carries (config.json and the processor's configs), so that it
# loads with `trust_remote_code=True` where this package is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_ase_mllm.AseMllmConfig",
    "AutoModel": "modeling_ase_mllm.AseMllmModel",
    "AutoModelForImageTextToText": "modeling_ase_mllm.AseMllmForConditionalGeneration",
    "AutoProcessor": "processing_ase_mllm.AseMllmProcessor",
    "AutoImageProcessor": "image_processing_ase_mllm.AseMllmImageProcessor",
}

# The pipeline task every saved ASE-MLLM folder declares (config.json's `custom_pipelines`): critique, aesthetic score
# and saliency in one call, with `pipeline("aesthetic-critique", model=folder, trust_remote_code=True)`.
CUSTOM_PIPELINES = {
    "aesthetic-critique": {
        "impl": "scoring_ase_mllm.AseMllmCritiquePipeline", "pt": ["AutoModelForImageTextToText"], "type": "multimodal",
    },
}


def check_ias_layers(ias_layers: list[int] | None, num_hidden_layers: int) -> list[int] | None:
    """`ias_layers` sorted and deduplicated, or a `ValueError` naming the indices outside the encoder."""
    if ias_layers is None:
        return None
    ias_layers = sorted(set(int(i) for i in ias_layers))
    bad = [i for i in ias_layers if not 0 <= i < num_hidden_layers]
    if bad:
        raise ValueError(
            f"`ias_layers` {bad} out of range for a {num_hidden_layers}-block encoder (valid: 0..{num_hidden_layers - 1})."
        )
    return ias_layers


@dataclass(kw_only=True, repr=False)
class IasVisionConfigMixin:
    r"""
    The IAS-ViT fields of a vision config, shared by both families (InternVL's and Qwen-VL's encoder): a dataclass,
    so that the config class that inherits it (a dataclass through `PreTrainedConfig`) takes its fields.

    ias_layers (`list[int]`, *optional*):
        Indices of the blocks that carry the saliency cross-attention. `None` means every block.
    ias_gate_init (`float`, defaults to 0.0):
        Initial value of the per-channel gate `g`; the cross-attention output is scaled by `tanh(g)`, so 0.0 makes
        every block compute exactly the base encoder's block.
    saliency_embed_dim (`int`, defaults to 256):
        Hidden width of the MLP that embeds each patch's saliency value.
    """

    ias_layers: list[int] | None = None
    ias_gate_init: float = 0.0
    saliency_embed_dim: int = 256

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.ias_layers = check_ias_layers(self.ias_layers, self.num_hidden_layers)

    @property
    def ias_layer_indices(self) -> list[int]:
        """The blocks that carry a saliency cross-attention: `ias_layers`, or every block when it is `None`."""
        return list(range(self.num_hidden_layers)) if self.ias_layers is None else list(self.ias_layers)


@strict
class AseMllmVisionConfig(IasVisionConfigMixin, InternVLVisionConfig):
    r"""
    IAS-ViT: InternViT with a saliency cross-attention after the self-attention of each chosen block (the fields of
    `IasVisionConfigMixin`).

    drop_path_rate (`float`, defaults to 0.0):
        Stochastic-depth rate of the last block (linearly increasing from 0 over the blocks, as InternViT).
    """

    model_type = "ase_mllm_vision"
    base_config_key = "vision_config"

    drop_path_rate: float = 0.0


@strict
class AseMllmEatConfig(PreTrainedConfig):
    r"""
    EAT (He et al., ACM MM 2023): a DAT deformable-attention transformer scoring aesthetics as the 10 AVA rating
    bins. Defaults are the released AVA model (DAT-Base at 224 px). Field names follow DAT's own configs.

    image_size (`int`, defaults to 224): the fixed input side (feature maps 56/28/14/7 are built for it).
    patch_size (`int`, defaults to 4): the stem's patch.
    num_classes (`int`, defaults to 10): the AVA rating bins 1..10 (raw outputs).
    expansion (`int`, defaults to 4): MLP width factor.
    dim_stem / dims / depths / heads: widths, blocks and heads of the 4 stages.
    window_sizes (`list[int]`): local-attention window per stage.
    stage_spec (`list[list[str]]`): block types per stage: `L` local window, `S` shifted window, `D` deformable.
    groups (`list[int]`): offset groups of the deformable blocks per stage (-1 where a stage has none).
    use_pes (`list[bool]`): relative position bias (`rpe_table`) in the deformable blocks.
    offset_range_factor (`list[float]`): offsets are `tanh(·) × factor / feature-map side`.
    layer_norm_eps (`float`, defaults to 1e-5): PyTorch's LayerNorm default, as trained.
    weights_file / weights_sha256 (`str`, *optional*): the name and SHA-256 of the checkpoint EAT's weights were
        converted from (`ase-mllm convert --eat`); `None` when EAT was never loaded from one, so that its aesthetic
        score is labelled untrained.
    """

    model_type = "ase_mllm_eat"
    base_config_key = "eat_config"

    image_size: int = 224
    patch_size: int = 4
    num_classes: int = 10
    expansion: int = 4
    dim_stem: int = 128
    dims: list[int] | tuple[int, ...] = (128, 256, 512, 1024)
    depths: list[int] | tuple[int, ...] = (2, 2, 18, 2)
    heads: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    window_sizes: list[int] | tuple[int, ...] = (7, 7, 7, 7)
    stage_spec: list | tuple | None = None
    groups: list[int] | tuple[int, ...] = (-1, -1, 4, 8)
    use_pes: list[bool] | tuple[bool, ...] = (False, False, True, True)
    offset_range_factor: list[int | float] | tuple[int | float, ...] = (-1, -1, 2, 2)
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    weights_file: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self, **kwargs):
        for name in ("dims", "depths", "heads", "window_sizes", "groups", "use_pes", "offset_range_factor"):
            setattr(self, name, list(getattr(self, name)))
        if self.stage_spec is None:
            # DAT-Base: local/shifted windows in stages 1-2, local/deformable alternating in stages 3-4.
            self.stage_spec = [["L", "S"] * (d // 2) if i < 2 else ["L", "D"] * (d // 2) for i, d in enumerate(self.depths)]
        self.stage_spec = [list(spec) for spec in self.stage_spec]
        super().__post_init__(**kwargs)
        for name in ("dims", "depths", "heads", "window_sizes", "groups", "use_pes", "offset_range_factor", "stage_spec"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"EAT `{name}` needs one entry per stage (4), got {getattr(self, name)}.")
        for stage, (spec, depth) in enumerate(zip(self.stage_spec, self.depths)):
            if len(spec) != depth or set(spec) - {"L", "S", "D"}:
                raise ValueError(f"EAT stage {stage}: `stage_spec` {spec} must list {depth} blocks of 'L', 'S' or 'D'.")
        # DAT builds stage k+1's input projection for 2·dims[k] channels, the width its 2×2 down-projection would give
        # if it doubled; any other width is accepted here and fails only in `forward`.
        for stage in range(1, 4):
            if self.dims[stage] != 2 * self.dims[stage - 1]:
                raise ValueError(
                    f"EAT `dims` {self.dims} must double from stage to stage (DAT's layout): dims[{stage}] is "
                    f"{self.dims[stage]}, expected 2 × {self.dims[stage - 1]} = {2 * self.dims[stage - 1]}."
                )

    @property
    def default_layercam_layer(self) -> str:
        """The last LayerNorm of stage 3 (`stages.2.layer_norms.{2·depth-1}`), LayerCAM's default target."""
        return f"stages.2.layer_norms.{2 * self.depths[2] - 1}"

    @property
    def feature_map_sizes(self) -> list[int]:
        """Side of each stage's feature map (56, 28, 14, 7 at 224 px)."""
        return [self.image_size // self.patch_size // 2**stage for stage in range(4)]


@strict
class AseMllmSaliencyConfig(PreTrainedConfig):
    r"""
    Where the aesthetic-saliency maps come from and at which resolution they reach each tile.

    source (`str`, defaults to `"eat_layercam"`):
        `"eat_layercam"` (the paper's IASM: EAT + LayerCAM, weights in the checkpoint, computed in the model once
        per image), `"spectral_residual"` (classical, computed once per image by the processor) or `"uniform"`
        (an all-ones map). The last two are for ablations and need no weights.
    eat_config (`AseMllmEatConfig` or `dict`, *optional*):
        The EAT architecture (default: the released AVA DAT-Base). Used by `"eat_layercam"` only.
    layercam_layer (`str`, *optional*):
        Module path inside EAT whose output LayerCAM uses. `None` = the last LayerNorm of stage 3
        (`stages.2.layer_norms.{2·depth-1}`, 14×14 at 224 px). Not `cls_norm`: after global pooling its gradient is
        spatially constant and LayerCAM would collapse to CAM. Saved folders write `null` here, so `None` keeps this
        meaning for good: another default would be written into new configs by name. docs/saliency.md gives the
        evidence for the layer (`ase-mllm saliency-report`).
    layercam_target (`str`, defaults to `"top_bin"`):
        `"top_bin"` (the highest raw AVA bin, as the paper) or `"mean_score"` (Σ i·y_i).
    grid_size (`int`, defaults to 32):
        Side of the per-tile saliency map (32 = the 448/14 patch grid of a tile).
    working_size (`int`, defaults to 64):
        Spectral residual: side of the square the whole image is resized to before the FFT.
    blur_sigma (`float`, defaults to 2.5):
        Spectral residual: Gaussian blur (in working-size pixels) applied to the saliency energy.
    """

    model_type = "ase_mllm_saliency"
    base_config_key = "saliency_config"

    sub_configs = {"eat_config": AseMllmEatConfig}
    sub_configs_defaults = sub_config_specs(eat_config=AseMllmEatConfig)

    source: str = "eat_layercam"
    grid_size: int = 32
    working_size: int = 64
    blur_sigma: float = 2.5
    eat_config: dict | PreTrainedConfig | None = None
    layercam_layer: str | None = None
    layercam_target: str = "top_bin"

    def __post_init__(self, **kwargs):
        build_sub_configs(self)
        super().__post_init__(**kwargs)
        if self.source not in SALIENCY_SOURCES:
            raise ValueError(f"saliency `source` must be one of {SALIENCY_SOURCES}, got {self.source!r}.")
        if self.layercam_target not in LAYERCAM_TARGETS:
            raise ValueError(f"`layercam_target` must be one of {LAYERCAM_TARGETS}, got {self.layercam_target!r}.")

    @property
    def layercam_layer_name(self) -> str:
        """The LayerCAM target module inside EAT (default: last LayerNorm of stage 3)."""
        return self.layercam_layer if self.layercam_layer is not None else self.eat_config.default_layercam_layer


class ImageSpanTokenIds:
    """For a config holding an image span's token ids (`image_token_id`, `start_image_token_id`, `end_image_token_id`)."""

    @property
    def image_special_token_ids(self) -> list[int]:
        """Ids of every token that belongs to an image span and must never carry a label."""
        ids = [self.image_token_id, self.start_image_token_id, self.end_image_token_id]
        return [i for i in ids if i is not None]


@strict
class AseMllmConfig(ImageSpanTokenIds, InternVLConfig):
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
    sub_configs = {"text_config": AutoConfig, "vision_config": AseMllmVisionConfig, "saliency_config": AseMllmSaliencyConfig}
    sub_configs_defaults = sub_config_specs(
        text_config=(AutoConfig, "qwen2"), vision_config=AseMllmVisionConfig, saliency_config=AseMllmSaliencyConfig
    )

    saliency_config: dict | PreTrainedConfig | None = None
    start_image_token_id: int | None = None
    end_image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        build_sub_configs(self)
        super().__post_init__(**kwargs)
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.custom_pipelines = {**CUSTOM_PIPELINES, **(getattr(self, "custom_pipelines", None) or {})}
        patches = self.vision_config.image_size[0] // self.vision_config.patch_size[0]
        expected = int(patches * self.downsample_ratio) ** 2
        if self.image_seq_length != expected:
            raise ValueError(
                f"`image_seq_length`={self.image_seq_length} does not match the vision geometry: "
                f"({patches} patches per side × downsample_ratio {self.downsample_ratio})² = {expected}."
            )


__all__ = [
    "AUTO_MAP",
    "CUSTOM_PIPELINES",
    "AseMllmVisionConfig",
    "AseMllmEatConfig",
    "AseMllmSaliencyConfig",
    "AseMllmConfig",
    "SALIENCY_SOURCES",
    "LAYERCAM_TARGETS",
]
