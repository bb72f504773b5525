"""IASM cost: EAT + LayerCAM once per image, as a fraction of the IAS-ViT encoder on the same image at 12 tiles.

    python bench/saliency_cost.py [--preset small] [--tiles 12] [--repeats 3]

Both run in one process on the same image: the saliency path (EAT forward, the gradient back to the LayerCAM
layer, the tile mapping) and the IAS-ViT forward over its tiles + thumbnail. EAT is measured at its real size
(DAT-Base, 224 px: the paper fixes it) and at the tiny test size; FLOPs are counted by torch's FlopCounterMode
(forward and backward). The expected ratio at full size puts DAT-Base's counted FLOPs over InternViT-300M + IAS
(analytic) at the same tile count.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import (
    build_config, build_inputs, counted_flops, interleaved_medians, run_model_bench, vision_encoder_macs,
)
from modeling_ase_mllm.configuration_ase_mllm import AseMllmEatConfig
from modeling_ase_mllm.eat_ase_mllm import EatModel, EatWindowAttention, aesthetic_target, layer_cam
from modeling_ase_mllm.image_processing_ase_mllm import has_thumbnail
from modeling_ase_mllm.presets import load_model_preset
from modeling_ase_mllm.saliency_ase_mllm import map_saliency_to_tiles
from modeling_ase_mllm.testing.tiny import build_tiny_model


def measure(preset="small", tiles=12, repeats=3, device="cpu") -> dict:
    model = build_tiny_model(build_config(preset), gate=0.5).to(device)
    inputs = build_inputs(tiles, device, saliency_source="eat_layercam")
    pixels, eat_pixels, grids = inputs["pixel_values"], inputs["saliency_pixel_values"], inputs["tile_grids"]
    saliency = model.config.saliency_config
    eats = {
        "DAT-Base": EatModel(AseMllmEatConfig()).to(device).eval().requires_grad_(False),
        "tiny": model.model.saliency_model,
    }

    def saliency_path(eat):
        layer = eat.get_submodule(eat.config.default_layercam_layer)

        def run():
            image_map = layer_cam(eat, eat_pixels, layer, saliency.layercam_target)[0]
            grid = tuple(grids[0].tolist())
            return map_saliency_to_tiles(image_map, grid, has_thumbnail(*grid), saliency.grid_size)

        return run

    maps = saliency_path(eats["tiny"])()

    def encoder():
        with torch.no_grad():
            return model.model.vision_tower(pixel_values=pixels, saliency_maps=maps).last_hidden_state

    fns = {"ias_vit": encoder, **{f"eat {name}": saliency_path(eat) for name, eat in eats.items()}}
    seconds = interleaved_medians(fns, repeats, device)
    flops = {"ias_vit": counted_flops(encoder, model)}
    flops.update({f"eat {name}": eat_flops(eat, eat_pixels, saliency.layercam_target) for name, eat in eats.items()})
    full = load_model_preset("internvl2-8b").vision_config
    n = int(pixels.shape[0])
    full_vit_flops = 2 * vision_encoder_macs(full, n, True)
    return {
        "preset": preset, "device": device, "tiles": n, "seconds": seconds, "flops": flops,
        "time_fraction": {name: seconds[name] / seconds["ias_vit"] for name in fns if name != "ias_vit"},
        "flop_fraction": {name: flops[name] / flops["ias_vit"] for name in fns if name != "ias_vit"},
        "expected_full_size_flop_fraction": flops["eat DAT-Base"] / full_vit_flops,
        "full_size_ias_vit_flops": full_vit_flops,
    }


def eat_flops(eat, pixels, target: str) -> int:
    """FLOPs of LayerCAM on `eat` as FlopCounterMode counts them, plus the window attentions' score and mixing
    matmuls (2·2·tokens·window²·C each), which run in SDPA, whose CPU kernel it counts as 0 (their backward,
    stages 3-4 only, is left out).

    FlopCounterMode's module tracking cannot follow `autograd.grad` to a leaf, so this repeats LayerCAM's work
    with `backward(inputs=[A])`, which runs the same gradient ops.
    """
    layer = eat.get_submodule(eat.config.default_layercam_layer)
    kept = []
    handle = layer.register_forward_hook(lambda m, i, o: kept.append(o.detach().requires_grad_(True)) or kept[-1])
    try:
        with FlopCounterMode(display=False) as counter, torch.enable_grad():
            aesthetic_target(eat(pixels), target).sum().backward(inputs=[kept[-1]])
    finally:
        handle.remove()
    windows = 0  # one image
    for stage, config_size in enumerate(eat.config.feature_map_sizes):
        for block in eat.stages[stage].attns:
            if isinstance(block, EatWindowAttention):
                windows += 4 * config_size**2 * block.window**2 * eat.config.dims[stage]
    return counter.get_total_flops() + windows


def report(r: dict) -> str:
    lines = [f"saliency cost per image vs IAS-ViT, {r['preset']} config, {r['tiles']} tiles, {r['device']}",
             f"IAS-ViT forward: {r['seconds']['ias_vit']:.3f} s, {r['flops']['ias_vit'] / 1e9:.1f} GFLOP"]
    for name in r["time_fraction"]:
        lines.append(
            f"{name} + LayerCAM: {r['seconds'][name]:.3f} s ({r['time_fraction'][name]:.1%} of IAS-ViT), "
            f"{r['flops'][name] / 1e9:.2f} GFLOP ({r['flop_fraction'][name]:.1%})"
        )
    lines.append(
        f"expected at full size (DAT-Base vs InternViT-300M + IAS, {r['tiles']} tiles, "
        f"{r['full_size_ias_vit_flops'] / 1e12:.1f} TFLOP): {r['expected_full_size_flop_fraction']:.2%} of the encoder's FLOPs"
    )
    return "\n".join(lines)


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report)


if __name__ == "__main__":
    main()
