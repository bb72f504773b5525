"""(b) Vision-encoder forward: IAS-ViT against InternViT (same weights), measured and analytic FLOP ratios.

    python bench/vision_encoder.py [--preset small] [--tiles 12] [--repeats 5]
"""


import torch

from common import (
    build_inputs, build_pair, counted_flops, interleaved_medians, matmul_peak_flops, run_model_bench,
    vision_encoder_macs,
)
from modeling_ase_mllm.presets import load_model_preset


def measure(preset="small", tiles=12, repeats=5, device="cpu") -> dict:
    model, twin = build_pair(preset, device)
    inputs = build_inputs(tiles, device)
    pixels, maps = inputs["pixel_values"], inputs["saliency_maps"]

    def ours():
        with torch.no_grad():
            return model.model.vision_tower(pixel_values=pixels, saliency_maps=maps).last_hidden_state

    def reference():
        with torch.no_grad():
            return twin.model.vision_tower(pixel_values=pixels).last_hidden_state

    fns = {"ias_vit": ours, "internvit": reference}
    seconds = interleaved_medians(fns, repeats, device)
    flops = {name: counted_flops(fns[name], m) for name, m in (("ias_vit", model), ("internvit", twin))}
    peak = matmul_peak_flops(device)
    n = int(pixels.shape[0])
    analytic = {
        label: vision_encoder_macs(vision, n, True) / vision_encoder_macs(vision, n, False)
        for label, vision in (("bench config", model.config.vision_config),
                              ("InternViT-300M", load_model_preset("internvl2-8b").vision_config))
    }
    return {
        "preset": preset, "device": device, "tiles": n, "seconds": seconds, "flops": flops,
        "time_ratio": seconds["ias_vit"] / seconds["internvit"],
        "counted_flop_ratio": flops["ias_vit"] / flops["internvit"], "analytic_flop_ratio": analytic,
        "achieved_fraction": {name: flops[name] / seconds[name] / peak for name in fns},
    }


def report(r: dict) -> str:
    return "\n".join([
        f"vision encoder, {r['preset']} config, {r['tiles']} tiles, {r['device']}",
        f"time: IAS-ViT {r['seconds']['ias_vit']:.3f} s, InternViT {r['seconds']['internvit']:.3f} s, ratio {r['time_ratio']:.2f}",
        f"FLOP ratio: counted {r['counted_flop_ratio']:.2f}; analytic "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["analytic_flop_ratio"].items()),
        f"of matmul peak: IAS-ViT {r['achieved_fraction']['ias_vit']:.1%}, InternViT {r['achieved_fraction']['internvit']:.1%}",
    ])


def main(argv=None):
    return run_model_bench(argv, __doc__, measure, report)

if __name__ == "__main__":
    main()
