"""IASM: EAT, the aesthetics-oriented deformable-attention transformer, and LayerCAM over it.

EAT (He et al., ACM MM 2023) is DAT (Xia et al., CVPR 2022) trained to predict the 10 AVA rating bins. This is
our own implementation, written from the papers and from reading the released code; the module and parameter
names follow the released AVA checkpoint so that its `.pth` loads with `strict=True`
(`load_eat_state_dict`). Two deliberate departures from the released code:

1. *Batch-invariant scores.* The released deformable block averages the predicted interest points over the
   batch, so an image's score depends on its batch-mates. Here each image keeps its own interest points
   (the per-image average of a batch of one).
2. *No host round trip.* The sign-agreement offset scaling is computed with torch ops on the device instead
   of a numpy mask in every deformable block.

LayerCAM (Jiang et al., TIP 2021) then gives, for the chosen output `y^c`,
`M = ReLU(Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k)` at one layer `A`, normalised per image.

Remote code: imports only torch and sibling modules.
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_ase_mllm import AseMllmEatConfig
from .saliency_ase_mllm import normalize_saliency


# Kernel of the depthwise offset convolution, by stage (coarser maps get smaller kernels).
OFFSET_KERNEL_SIZES = (9, 7, 5, 3)


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The floating-point dtype `module` computes in: that of its first floating-point parameter, whatever a quantizer
    made of the others (bitsandbytes stores int8/uint8 weights), else torch's default dtype."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.get_default_dtype()


class EatLayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (the parameters live in `.norm`, as in the checkpoint)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, C, H, W)`."""
        return self.norm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class EatMlp(nn.Module):
    """Per-position MLP `C -> expansion·C -> C` with GELU."""

    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.chunk = nn.Sequential(
            OrderedDict(
                linear1=nn.Linear(channels, channels * expansion),
                act=nn.GELU(),
                linear2=nn.Linear(channels * expansion, channels),
            )
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, C, H, W)`."""
        return self.chunk(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def relative_position_index(window: int) -> torch.Tensor:
    """`(window², window²)` index into a `((2·window-1)², heads)` bias table (Swin's layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return delta[0] * (2 * window - 1) + delta[1]


def shifted_window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """`(num_windows, window², window²)` additive mask: -100 between tokens that the roll brought together
    from different regions of the map, 0 elsewhere."""
    region = torch.zeros(size, size)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bounds for c in bounds):
        region[rows, cols] = label
    windows = region.reshape(size // window, window, size // window, window).permute(0, 2, 1, 3).flatten(2)
    windows = windows.flatten(0, 1)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class EatWindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping `window × window` windows, with a learned relative
    position bias; with `shift > 0` the map is rolled first (Swin's shifted windows) and masked."""

    def __init__(self, dim: int, heads: int, window: int, fmap_size: int, shift: int = 0):
        super().__init__()
        if dim % heads or fmap_size % window:
            raise ValueError(f"window attention: dim {dim} / heads {heads}, map {fmap_size} / window {window} must divide")
        self.heads, self.window, self.shift, self.attn_mask_size = heads, window, shift, fmap_size
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        self.register_buffer("relative_position_index", relative_position_index(window))
        if shift:
            self.register_buffer("attn_mask", shifted_window_mask(fmap_size, window, shift))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, C, H, W)`."""
        batch, channels, height, width = hidden_states.shape
        window, rows, cols = self.window, height // self.window, width // self.window
        if self.shift:
            hidden_states = torch.roll(hidden_states, shifts=(-self.shift, -self.shift), dims=(2, 3))
        # (B, C, rows·w, cols·w) -> (B·rows·cols, w², C), windows row-major.
        tokens = hidden_states.reshape(batch, channels, rows, window, cols, window).permute(0, 2, 4, 3, 5, 1)
        tokens = tokens.reshape(batch * rows * cols, window * window, channels)
        query, key, value = (
            self.proj_qkv(tokens).reshape(tokens.shape[0], window * window, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        )
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (heads, w², w²)
        if self.shift:
            # One mask per window position; the windows of one image are consecutive along the batch dim.
            bias = (bias[None] + self.attn_mask[:, None])[None].expand(batch, -1, -1, -1, -1)
            bias = bias.reshape(batch * rows * cols, self.heads, window * window, window * window)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        attended = self.proj_out(attended.transpose(1, 2).reshape(tokens.shape[0], window * window, channels))
        output = attended.reshape(batch, rows, cols, window, window, channels).permute(0, 5, 1, 3, 2, 4)
        output = output.reshape(batch, channels, height, width)
        if self.shift:
            output = torch.roll(output, shifts=(self.shift, self.shift), dims=(2, 3))
        return output


class EatDeformableAttention(nn.Module):
    """EAT's deformable attention: every query attends to `H × W` points sampled around predicted interest
    points.

    Per offset group, a depthwise conv on the queries predicts offsets; a 1×1 conv (`ref_point14`) predicts each
    image's interest points `r` (tanh, in [-1, 1]). Offsets keep full size where they point the same way as `r` on
    both axes and are scaled by 0.25 elsewhere, then the map is sampled bilinearly at `r + offset`. Keys and
    values come from the samples; a relative-position bias is read from `rpe_table` at the query-to-sample
    displacement.
    """

    def __init__(self, dim: int, heads: int, groups: int, fmap_size: int, stage: int, offset_range_factor: float,
                 use_pe: bool, eps: float = 1e-5):
        super().__init__()
        if dim % heads or dim % groups or heads % groups:
            raise ValueError(f"deformable attention: dim {dim}, heads {heads}, groups {groups} must divide")
        self.heads, self.groups, self.head_dim = heads, groups, dim // heads
        self.offset_range_factor = offset_range_factor
        group_channels = dim // groups
        kernel = OFFSET_KERNEL_SIZES[stage]
        self.conv_offset = nn.Sequential(
            nn.Conv2d(group_channels, group_channels, kernel, 1, kernel // 2, groups=group_channels),
            EatLayerNorm2d(group_channels, eps),
            nn.GELU(),
            nn.Conv2d(group_channels, 2, 1, 1, 0, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.ref_point14 = nn.Conv2d(dim, 2, 1)
        self.rpe_table = None
        if use_pe:
            self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * fmap_size - 1, 2 * fmap_size - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01)

    def sampling_positions(self, queries: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """Where each group samples the map: `(B·groups, H, W, 2)` as `(y, x)` in [-1, 1] coordinates."""
        batch, channels, height, width = queries.shape
        offset = self.conv_offset(queries.reshape(batch * self.groups, channels // self.groups, height, width))
        if self.offset_range_factor > 0:
            scale = offset.new_tensor([1.0 / height, 1.0 / width]).reshape(1, 2, 1, 1) * self.offset_range_factor
            offset = offset.tanh() * scale
        offset = offset.permute(0, 2, 3, 1)
        # Fix 1: each image's own interest points (the release averaged them over the batch).
        reference = self.ref_point14(hidden_states).permute(0, 2, 3, 1).tanh().repeat_interleave(self.groups, dim=0)
        # Fix 2: the sign-agreement scaling as a device-side torch op (the release went through numpy).
        agree = ((offset * reference) > 0).all(dim=-1, keepdim=True)
        offset = offset * torch.where(agree, 1.0, 0.25).to(offset.dtype)
        positions = offset + reference
        return positions if self.offset_range_factor >= 0 else positions.tanh()

    def position_bias(self, positions: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """`(B·heads, H·W, samples)` bias read from `rpe_table` at half the query-to-sample displacement."""
        dtype, device = positions.dtype, positions.device
        ys = torch.linspace(0.5, height - 0.5, height, dtype=dtype, device=device) / height * 2 - 1
        xs = torch.linspace(0.5, width - 0.5, width, dtype=dtype, device=device) / width * 2 - 1
        query_grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(1, height * width, 1, 2)
        displacement = (query_grid - positions.reshape(batch * self.groups, 1, -1, 2)) * 0.5
        table = self.rpe_table.to(dtype)[None].expand(batch, -1, -1, -1)
        table = table.reshape(batch * self.groups, self.heads // self.groups, 2 * height - 1, 2 * width - 1)
        bias = F.grid_sample(table, displacement.flip(-1), mode="bilinear", align_corners=True)
        return bias.reshape(batch * self.heads, height * width, -1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, C, H, W)`."""
        batch, channels, height, width = hidden_states.shape
        queries = self.proj_q(hidden_states)
        positions = self.sampling_positions(queries, hidden_states)
        sampled = F.grid_sample(
            hidden_states.reshape(batch * self.groups, channels // self.groups, height, width),
            positions.flip(-1),  # grid_sample wants (x, y)
            mode="bilinear",
            align_corners=True,
        ).reshape(batch, channels, 1, -1)
        samples = sampled.shape[-1]
        query = queries.reshape(batch * self.heads, self.head_dim, height * width)
        key = self.proj_k(sampled).reshape(batch * self.heads, self.head_dim, samples)
        value = self.proj_v(sampled).reshape(batch * self.heads, self.head_dim, samples)
        scores = torch.bmm(query.transpose(1, 2), key) * self.head_dim**-0.5  # (B·heads, H·W, samples)
        if self.rpe_table is not None:
            scores = scores + self.position_bias(positions, batch, height, width)
        output = torch.bmm(value, scores.softmax(dim=-1).transpose(1, 2))  # (B·heads, head_dim, H·W)
        return self.proj_out(output.reshape(batch, channels, height, width))


class EatStage(nn.Module):
    """One DAT stage: pre-norm residual blocks, attention then MLP, each with its own LayerNorm."""

    def __init__(self, config: AseMllmEatConfig, stage: int, dim_in: int):
        super().__init__()
        dim, depth, fmap = config.dims[stage], config.depths[stage], config.feature_map_sizes[stage]
        window = config.window_sizes[stage]
        self.proj = nn.Conv2d(dim_in, dim, 1) if dim_in != dim else nn.Identity()
        self.layer_norms = nn.ModuleList(EatLayerNorm2d(dim, config.layer_norm_eps) for _ in range(2 * depth))
        self.mlps = nn.ModuleList(EatMlp(dim, config.expansion) for _ in range(depth))
        self.attns = nn.ModuleList()
        for kind in config.stage_spec[stage]:
            if kind == "D":
                self.attns.append(
                    EatDeformableAttention(
                        dim, config.heads[stage], config.groups[stage], fmap, stage,
                        config.offset_range_factor[stage], config.use_pes[stage], config.layer_norm_eps,
                    )
                )
            else:
                shift = math.ceil(window / 2) if kind == "S" else 0
                self.attns.append(EatWindowAttention(dim, config.heads[stage], window, fmap, shift))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.proj(hidden_states)
        for index, (attention, mlp) in enumerate(zip(self.attns, self.mlps)):
            hidden_states = hidden_states + attention(self.layer_norms[2 * index](hidden_states))
            hidden_states = hidden_states + mlp(self.layer_norms[2 * index + 1](hidden_states))
        return hidden_states


class EatModel(nn.Module):
    """EAT: patch stem, 4 DAT stages with 2×2 downsampling between them, LayerNorm → global average pool →
    Linear to the AVA rating bins. Inference only (no dropout or stochastic depth); it is frozen in ASE-MLLM."""

    def __init__(self, config: AseMllmEatConfig):
        super().__init__()
        self.config = config
        eps = config.layer_norm_eps
        self.patch_proj = nn.Sequential(
            nn.Conv2d(3, config.dim_stem, config.patch_size, config.patch_size), EatLayerNorm2d(config.dim_stem, eps)
        )
        self.stages = nn.ModuleList(
            EatStage(config, stage, config.dim_stem if stage == 0 else 2 * config.dims[stage - 1]) for stage in range(4)
        )
        self.down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(config.dims[i], config.dims[i + 1], 2, 2, bias=False), EatLayerNorm2d(config.dims[i + 1], eps))
            for i in range(3)
        )
        self.cls_norm = EatLayerNorm2d(config.dims[-1], eps)
        self.cls_head = nn.Linear(config.dims[-1], config.num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, S, S)` ImageNet-normalised images at `config.image_size` -> `(B, num_classes)` raw bin outputs."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"`saliency_pixel_values` must be (num_images, 3, {size}, {size}) for EAT, got {tuple(pixel_values.shape)}."
            )
        hidden_states = self.patch_proj(pixel_values.to(compute_dtype(self)))
        for stage, block in enumerate(self.stages):
            hidden_states = block(hidden_states)
            if stage < 3:
                hidden_states = self.down_projs[stage](hidden_states)
        pooled = self.cls_norm(hidden_states).mean(dim=(2, 3))
        return self.cls_head(pooled)

    def layer_cam(self, pixel_values: torch.Tensor, layer: str, target: str = "top_bin") -> torch.Tensor:
        """LayerCAM maps at module `layer`, `(B, h, w)` normalised to [0, 1] per image (see `layer_cam`)."""
        return layer_cam(self, pixel_values, self.get_submodule(layer), target)


def aesthetic_score(logits: torch.Tensor) -> torch.Tensor:
    """EAT's aesthetic score, `(B, num_classes)` raw bin outputs -> `(B,)`: Σ_i i·y_i over the ratings 1..num_classes,
    on the raw outputs with no softmax, as EAT's own `get_score` (it is trained with an EMD loss on them)."""
    ratings = torch.arange(1, logits.shape[1] + 1, dtype=logits.dtype, device=logits.device)
    return (logits * ratings).sum(dim=1)


def aesthetic_target(logits: torch.Tensor, target: str) -> torch.Tensor:
    """The per-image scalar LayerCAM differentiates, `(B,)`: the top raw bin, or the expected score Σ i·y_i."""
    if target == "top_bin":
        return logits.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    if target == "mean_score":
        return aesthetic_score(logits)
    raise ValueError(f"LayerCAM `target` must be 'top_bin' or 'mean_score', got {target!r}.")


def layer_cam(model: nn.Module, pixel_values: torch.Tensor, layer: nn.Module, target: str = "top_bin") -> torch.Tensor:
    """LayerCAM of `model`'s aesthetic output at `layer`: `ReLU(Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k)`, min–max per image.

    A forward hook detaches `layer`'s output `A` and makes it require grad, so `torch.autograd.grad` reaches
    exactly `A`: no parameter gets a `.grad` and nothing before `layer` is recorded. Works when the caller is in
    `torch.no_grad()` (as `generate()` is) or `torch.inference_mode()`. Images are independent, so one backward
    of the summed targets gives every image its own gradient.

    Args:
        pixel_values: `(B, 3, S, S)` model inputs.
        layer: a module of `model` returning an NCHW map `A` of shape `(B, K, h, w)`.
        target: `"top_bin"` or `"mean_score"` (see `aesthetic_target`).
    Returns:
        `(B, h, w)` float32 maps in [0, 1], detached; an all-zero map becomes all ones (uniform), never NaN.
    """
    captured = []

    def keep_activation(module, inputs, output):
        activation = output.detach().requires_grad_(True)
        captured.append(activation)
        return activation

    handle = layer.register_forward_hook(keep_activation)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            # An inference-mode tensor cannot enter autograd; a clone made outside inference mode can.
            logits = model(pixel_values.clone())
            (gradient,) = torch.autograd.grad(aesthetic_target(logits, target).sum(), captured[-1])
    finally:
        handle.remove()
    activation = captured[-1].detach()
    saliency = F.relu((F.relu(gradient) * activation).sum(dim=1)).float()
    return normalize_saliency(saliency)


def eat_parameter_count(config: AseMllmEatConfig) -> int:
    """EAT's parameter count from its shapes alone (no module built), to cross-check the implementation."""
    def layer_norm(c):
        return 2 * c

    def linear(i, o, bias=True):
        return i * o + (o if bias else 0)

    total = linear(3 * config.patch_size**2, config.dim_stem) + layer_norm(config.dim_stem)
    for stage in range(4):
        dim, depth = config.dims[stage], config.depths[stage]
        dim_in = config.dim_stem if stage == 0 else 2 * config.dims[stage - 1]
        fmap, window, heads = config.feature_map_sizes[stage], config.window_sizes[stage], config.heads[stage]
        total += linear(dim_in, dim) if dim_in != dim else 0
        total += 2 * depth * layer_norm(dim) + depth * (linear(dim, config.expansion * dim) + linear(config.expansion * dim, dim))
        for kind in config.stage_spec[stage]:
            if kind == "D":
                group_channels, kernel = dim // config.groups[stage], OFFSET_KERNEL_SIZES[stage]
                total += group_channels * kernel**2 + group_channels + layer_norm(group_channels) + 2 * group_channels
                total += 4 * linear(dim, dim) + linear(dim, 2)
                total += heads * (2 * fmap - 1) ** 2 if config.use_pes[stage] else 0
            else:
                total += linear(dim, 3 * dim) + linear(dim, dim) + (2 * window - 1) ** 2 * heads
    for i in range(3):
        total += linear(4 * config.dims[i], config.dims[i + 1], bias=False) + layer_norm(config.dims[i + 1])
    return total + layer_norm(config.dims[-1]) + linear(config.dims[-1], config.num_classes)


__all__ = ["compute_dtype", "EatModel", "EatWindowAttention", "EatDeformableAttention", "layer_cam", "aesthetic_score", "aesthetic_target", "eat_parameter_count"]
