"""A random EAT state dict in the released AVA checkpoint's naming and shapes, built without our EatModel.

Written from reading the public EAT/DAT code (not copied): the checkpoint is a flat `torch.save(state_dict)`
whose keys are, per part of the network,

- stem: `patch_proj.0` (conv, patch × patch, stride patch) and `patch_proj.1.norm` (LayerNorm);
- stage `i`: `stages.i.proj` only when its input width differs; `stages.i.layer_norms.{0..2·depth-1}.norm`
  (two per block: before attention, before MLP); `stages.i.mlps.j.chunk.linear1/linear2`;
  `stages.i.attns.j` is either a window attention (`proj_qkv`, `proj_out`, `relative_position_bias_table`
  and the buffer `relative_position_index`, plus the buffer `attn_mask` when shifted) or a deformable attention
  (`conv_offset.0` depthwise conv, `conv_offset.1.norm`, `conv_offset.3` 1×1 conv without bias, 1×1 convs
  `proj_q/k/v/out` and `ref_point14`, and `rpe_table` when position bias is on);
- between stages: `down_projs.i.0` (2×2 stride-2 conv without bias) and `down_projs.i.1.norm`;
- head: `cls_norm.norm` and `cls_head`.

Buffers hold their real values, computed here with plain loops, so the test can check ours against them.
"""

import torch


def relative_index_by_loops(window: int) -> torch.Tensor:
    cells = [(y, x) for y in range(window) for x in range(window)]
    index = torch.zeros(len(cells), len(cells), dtype=torch.long)
    for a, (ya, xa) in enumerate(cells):
        for b, (yb, xb) in enumerate(cells):
            index[a, b] = (ya - yb + window - 1) * (2 * window - 1) + (xa - xb + window - 1)
    return index


def shift_mask_by_loops(size: int, window: int, shift: int) -> torch.Tensor:
    def band(v):  # which of the three bands (kept, wrapped window, wrapped shift) a row/column is in
        return 0 if v < size - window else (1 if v < size - shift else 2)

    masks = []
    for wy in range(size // window):
        for wx in range(size // window):
            cells = [(wy * window + y, wx * window + x) for y in range(window) for x in range(window)]
            labels = [band(y) * 3 + band(x) for y, x in cells]
            masks.append(torch.tensor([[0.0 if la == lb else -100.0 for lb in labels] for la in labels]))
    return torch.stack(masks)


def released_eat_state_dict(config, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random weights (real buffers) under the released names for an `AseMllmEatConfig`."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def add(name, *shape):
        if device == "meta":
            state[name] = torch.empty(shape, device="meta")
        else:
            state[name] = torch.randn(shape, generator=generator) * 0.05

    def norm(prefix, width):
        add(f"{prefix}.norm.weight", width)
        add(f"{prefix}.norm.bias", width)

    add("patch_proj.0.weight", config.dim_stem, 3, config.patch_size, config.patch_size)
    add("patch_proj.0.bias", config.dim_stem)
    norm("patch_proj.1", config.dim_stem)
    side = config.image_size // config.patch_size
    for i in range(4):
        width, heads, window = config.dims[i], config.heads[i], config.window_sizes[i]
        width_in = config.dim_stem if i == 0 else 2 * config.dims[i - 1]
        prefix = f"stages.{i}"
        if width_in != width:
            add(f"{prefix}.proj.weight", width, width_in, 1, 1)
            add(f"{prefix}.proj.bias", width)
        for j in range(2 * config.depths[i]):
            norm(f"{prefix}.layer_norms.{j}", width)
        for j in range(config.depths[i]):
            add(f"{prefix}.mlps.{j}.chunk.linear1.weight", config.expansion * width, width)
            add(f"{prefix}.mlps.{j}.chunk.linear1.bias", config.expansion * width)
            add(f"{prefix}.mlps.{j}.chunk.linear2.weight", width, config.expansion * width)
            add(f"{prefix}.mlps.{j}.chunk.linear2.bias", width)
        for j, kind in enumerate(config.stage_spec[i]):
            attn = f"{prefix}.attns.{j}"
            if kind in ("L", "S"):
                add(f"{attn}.relative_position_bias_table", (2 * window - 1) ** 2, heads)
                state[f"{attn}.relative_position_index"] = relative_index_by_loops(window)
                if kind == "S":
                    state[f"{attn}.attn_mask"] = shift_mask_by_loops(side, window, (window + 1) // 2)
                add(f"{attn}.proj_qkv.weight", 3 * width, width)
                add(f"{attn}.proj_qkv.bias", 3 * width)
                add(f"{attn}.proj_out.weight", width, width)
                add(f"{attn}.proj_out.bias", width)
            else:
                group_width, kernel = width // config.groups[i], (9, 7, 5, 3)[i]
                if config.use_pes[i]:
                    add(f"{attn}.rpe_table", heads, 2 * side - 1, 2 * side - 1)
                add(f"{attn}.conv_offset.0.weight", group_width, 1, kernel, kernel)
                add(f"{attn}.conv_offset.0.bias", group_width)
                norm(f"{attn}.conv_offset.1", group_width)
                add(f"{attn}.conv_offset.3.weight", 2, group_width, 1, 1)
                for projection in ("proj_q", "proj_k", "proj_v", "proj_out"):
                    add(f"{attn}.{projection}.weight", width, width, 1, 1)
                    add(f"{attn}.{projection}.bias", width)
                add(f"{attn}.ref_point14.weight", 2, width, 1, 1)
                add(f"{attn}.ref_point14.bias", 2)
        if i < 3:
            add(f"down_projs.{i}.0.weight", config.dims[i + 1], width, 2, 2)
            norm(f"down_projs.{i}.1", config.dims[i + 1])
        side //= 2
    norm("cls_norm", config.dims[-1])
    add("cls_head.weight", config.num_classes, config.dims[-1])
    add("cls_head.bias", config.num_classes)
    return state


BUFFER_SUFFIXES = ("relative_position_index", "attn_mask")


def parameter_count(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for name, t in state.items() if not name.endswith(BUFFER_SUFFIXES))
