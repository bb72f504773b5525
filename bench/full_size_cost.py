"""Full-size cost, counted on the `meta` device: FLOPs, parameters and training memory of ASE-MLLM against
transformers' InternVL at every InternVL2 preset (nothing is allocated, so InternVL2-8B counts in seconds on a CPU).

    python bench/full_size_cost.py [--presets internvl2-1b internvl2-8b] [--out bench/results-full-size.md] [--json]

The shape is `full_size.py`'s: one 12-megapixel photo at 12 tiles + thumbnail (13 tiles × 256 image tokens) and a
64-token prompt, batch 1. Both models hold the same weights; ASE-MLLM computes its saliency with EAT + LayerCAM, as
the presets configure. Counted, for each model:

- forward: `model(**inputs)`, logits at every position (as in training);
- prefill: the first step of `generate()`, `model(**inputs, use_cache=True, logits_to_keep=1)`;
- one training step, forward with labels + backward, in two of the bundled recipes: `pccd-full` (ViT frozen,
  projector and LLM trained in full) and `pccd` (the paper's: LLM LoRA r=16 on q/k/v/o/gate/up/down, projector in
  full); ASE-MLLM also trains its IAS weights, which needs the gradient through every ViT block (InternVL's frozen
  ViT needs no backward at all). Gradient checkpointing off (with it, each block's forward runs once more in the
  backward); AdamW's update is elementwise and not counted;
- EAT + LayerCAM for one image (EAT forward, gradient back to the LayerCAM layer).

How: `torch.utils.flop_counter.FlopCounterMode`'s own formulas (matrix products, convolutions, attention; 2 FLOPs per
multiply-accumulate; elementwise ops, norms and softmax are not counted, in either model), with three changes,
each needed on these models:

1. its module tracker registers backward hooks that break LayerCAM's `torch.autograd.grad` ("A leaf node was passed
   to _will_engine_execute_node ..."); `PartTracker` replaces it, following modules with forward hooks only, and
   books every operation under the part of the model (`training.freezing.training_part`) whose module runs it; operations
   outside any part (LayerCAM's backward, run from `EatModel.layer_cam`) are `other`;
2. meta tensors hold no values: token ids and tile grids stay on the CPU (the models' token-count checks read them),
   and a boolean read from a meta tensor (the finite-saliency check) is answered True (`MetaChecksPass`);
3. `grid_sample` (EAT's deformable attention) has no formula; `GRID_SAMPLE_FLOPS` counts it analytically: bilinear
   sampling is 4 multiply-accumulates per output value, and its backward 4 more per output value for each gradient
   it computes (input, grid).

`scaled_dot_product_attention` on `meta` runs its math fallback, whose matrix products are counted (the full score
matrix, as FlopCounterMode's own SDPA formula counts it, causal or not).
"""

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
import transformers
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from full_size import MAX_TILES, PRESETS, PROMPT_TOKENS, build_pair, load_config, photo_tiling, synthetic_inputs, twin_inputs
from modeling_ase_mllm.training.freezing import apply_freezing, lora_config_for, training_part
from modeling_ase_mllm.training.recipes import parse_recipe


OUT = Path(__file__).resolve().parent / "results-full-size.md"
aten = torch.ops.aten
# Recipes whose training step is counted: (recipe, how the table names it).
TRAINING_RECIPES = (("pccd-full", "full LLM"), ("pccd", "LoRA (paper recipe)"))
GIB = 2**30


def grid_sample_flops(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """Bilinear `grid_sampler_2d`: 4 multiply-accumulates (8 FLOPs) per output value `(N, C, H_out, W_out)`."""
    return 8 * out_shape.numel()


def grid_sample_backward_flops(grad_output_shape, *args, out_shape=None, **kwargs) -> int:
    """`grid_sampler_2d_backward`: 4 multiply-accumulates per output value for each gradient computed."""
    return 8 * grad_output_shape.numel() * sum(shape is not None for shape in out_shape)


GRID_SAMPLE_FLOPS = {aten.grid_sampler_2d: grid_sample_flops, aten.grid_sampler_2d_backward: grid_sample_backward_flops}


def part_of(module_name: str) -> str:
    """The part of ASE-MLLM (or InternVL) a module belongs to: the model's parameter groups, and PEFT's LoRA, as
    training counts them (`training.freezing.training_part`)."""
    try:
        return training_part(module_name + ".")
    except ValueError:
        return "other"


class PartTracker:
    """Stands in for FlopCounterMode's module tracker: `parents` is `{"Global", part of the innermost running
    module}`, so every operation is booked once in the total and once under its part. Forward hooks only."""

    def __init__(self, model: torch.nn.Module):
        self.parts = {id(module): part_of(name) for name, module in model.named_modules()}
        self.stack: list[str] = []
        self.parents = {"Global", "other"}
        self.handles = []

    def __enter__(self):
        self.handles = [register_module_forward_pre_hook(self.enter_module),
                        register_module_forward_hook(self.exit_module, always_call=True)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.stack, self.parents = [], {"Global", "other"}

    def enter_module(self, module, args):
        if id(module) in self.parts:
            self.stack.append(self.parts[id(module)])
            self.parents = {"Global", self.stack[-1]}

    def exit_module(self, module, args, output):
        if id(module) in self.parts:
            self.stack.pop()
            self.parents = {"Global", self.stack[-1] if self.stack else "other"}


class MetaChecksPass(TorchDispatchMode):
    """A boolean read from a `meta` tensor (input validation, which computes nothing) is answered True; reading
    any other value from one is an error, so no count can silently depend on made-up data."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten._local_scalar_dense.default and args[0].device.type == "meta":
            if args[0].dtype != torch.bool:
                raise RuntimeError(f"a {args[0].dtype} value was read from a meta tensor: the count would depend on it")
            return True
        return func(*args, **(kwargs or {}))


def count_flops(fn, model: torch.nn.Module) -> dict[str, int]:
    """FLOPs of `fn()`: `{"total": ..., part: ...}` for every part (`training.freezing.training_part`'s names, and `other`)
    that ran an operation."""
    counter = FlopCounterMode(display=False, custom_mapping=GRID_SAMPLE_FLOPS)
    counter.mod_tracker = PartTracker(model)
    with counter, MetaChecksPass():
        fn()
    counts = {part: sum(ops.values()) for part, ops in counter.get_flop_counts().items()}
    return {"total": counts.pop("Global", 0), **counts}


def parameter_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def prepare_training(model, script_args, is_ours: bool):
    """`model` set up as the recipe (its parsed script arguments) trains it: LoRA wrapping (PEFT) if `llm: lora`,
    then its freezing preset. InternVL has no IAS weights, so it gets the recipe's preset without them (the paper's
    Table II ablation)."""
    preset = script_args.freezing if is_ours else dataclasses.replace(script_args.freezing, ias=False)
    if preset.llm == "lora":
        from peft import get_peft_model

        config = lora_config_for(model, r=script_args.lora_r, lora_alpha=script_args.lora_alpha,
                                 lora_dropout=script_args.lora_dropout, preset=preset)
        model = get_peft_model(model, config)
    apply_freezing(model, preset)
    return model.train()


def counting_inputs(config, max_patches: int = MAX_TILES, prompt_tokens: int = PROMPT_TOKENS) -> dict:
    """One sample's inputs, float tensors on `meta`; no attention mask (all ones is the same as none, and whether a
    meta mask is all ones could only be guessed)."""
    inputs = synthetic_inputs(config, 1, max_patches, prompt_tokens, device="meta", ids_device="cpu")
    inputs.pop("attention_mask")
    return inputs


def measure_preset(preset: str, max_patches: int = MAX_TILES, prompt_tokens: int = PROMPT_TOKENS,
                   recipes=tuple(name for name, _ in TRAINING_RECIPES)) -> dict:
    """Every count of one preset, for ASE-MLLM (`ase_mllm`) and InternVL (`internvl`); training steps in `recipes`."""
    config = load_config(preset)
    inputs = counting_inputs(config, max_patches, prompt_tokens)
    model, twin = build_pair(config, "meta")
    models = {"ase_mllm": (model, inputs), "internvl": (twin, twin_inputs(inputs))}
    result = {"preset": preset, "tiles": int(inputs["pixel_values"].shape[0]),
              "sequence": int(inputs["input_ids"].shape[1]), "models": {}}
    for name, (m, kwargs) in models.items():
        with torch.no_grad():
            forward = count_flops(lambda: m(**kwargs), m)
            prefill = count_flops(lambda: m(**kwargs, use_cache=True, logits_to_keep=1), m)
        result["models"][name] = {"forward": forward, "prefill": prefill, "parameters": parameter_count(m),
                                  "training": {}}
    with torch.no_grad():
        image = inputs["saliency_pixel_values"][:1]
        result["saliency_per_image"] = count_flops(lambda: model.model.get_image_saliency(image), model)["total"]
    for recipe_name in recipes:
        recipe = parse_recipe(recipe=recipe_name)[0]
        fresh = dict(zip(models, build_pair(config, "meta")))
        for name, m in fresh.items():
            kwargs = models[name][1]
            m = prepare_training(m, recipe, name == "ase_mllm")
            step = count_flops(lambda: m(**kwargs, labels=kwargs["input_ids"]).loss.backward(), m)
            result["models"][name]["training"][recipe_name] = {
                "flops": step["total"], "parameters": parameter_count(m),
                "trainable": parameter_count(m, trainable_only=True),
            }
    return result


def training_gib(parameters: int, trainable: int, bytes_per_value: int) -> float:
    """Weights + gradients + AdamW's two moments, all in one dtype, in GiB."""
    return (parameters + 3 * trainable) * bytes_per_value / GIB


def tflop(value: int) -> str:
    return f"{value / 1e12:.2f}"


def ratio_cell(ours: int, theirs: int) -> str:
    return f"{tflop(ours)} / {tflop(theirs)} (×{ours / theirs:.3f})"


def markdown_report(results: list[dict], seconds: float) -> str:
    """The full-size tables: FLOPs, where the forward goes, parameters and training memory."""
    first = results[0]
    (cols, rows), _ = photo_tiling(MAX_TILES)
    lines = [
        "# Full-size cost, counted",
        "",
        f"`python bench/full_size_cost.py` ({seconds:.0f} s; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {platform.machine()}): every model built on the `meta` device, FLOPs counted by "
        "`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-accumulate; `grid_sample` counted analytically, "
        "see the script's docstring). One photo at "
        f"{first['tiles']} tiles ({cols} × {rows} + thumbnail) and a {PROMPT_TOKENS}-token prompt: "
        f"{first['sequence']} tokens, batch 1. TFLOP, ASE-MLLM / InternVL (ratio). A training step is the forward with "
        "labels and the backward (gradient checkpointing off; AdamW's elementwise update not counted): `full LLM` is "
        "recipe `pccd-full` (ViT frozen; projector, LLM and ASE-MLLM's IAS weights trained), `LoRA` recipe `pccd` (LLM "
        "LoRA r=16; projector and IAS weights in full).",
        "",
        "| preset | forward | prefill | training step, " + " | training step, ".join(n for _, n in TRAINING_RECIPES)
        + " | EAT + LayerCAM per image, GFLOP (share of forward) |",
        "|---|---|---|" + "---|" * len(TRAINING_RECIPES) + "---|",
    ]
    for r in results:
        ours, theirs = r["models"]["ase_mllm"], r["models"]["internvl"]
        cells = [r["preset"], ratio_cell(ours["forward"]["total"], theirs["forward"]["total"]),
                 ratio_cell(ours["prefill"]["total"], theirs["prefill"]["total"])]
        cells += [ratio_cell(ours["training"][n]["flops"], theirs["training"][n]["flops"]) for n, _ in TRAINING_RECIPES]
        cells.append(f"{r['saliency_per_image'] / 1e9:.1f} ({r['saliency_per_image'] / ours['forward']['total']:.2%})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "A training step costs ASE-MLLM relatively more than a forward: its IAS weights sit in every ViT block, so their "
        "gradient needs a backward pass through the whole ViT, which InternVL, with its ViT frozen, skips.",
        "",
        "Where the forward goes, TFLOP (ASE-MLLM; InternVL's parts are the same but IAS and EAT): the extra is the IAS "
        "cross-attentions (one per ViT block, each `4C²N + 2N²C` multiply-accumulates per tile against the block's "
        "`12C²N + 2N²C`) plus EAT + LayerCAM; its share of the whole falls as the LLM grows.",
        "",
        "| preset | InternViT | IAS | EAT + LayerCAM | projector | LLM + LM head | extra over InternVL |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        forward = r["models"]["ase_mllm"]["forward"]
        extra = forward["total"] - r["models"]["internvl"]["forward"]["total"]
        saliency = forward.get("eat", 0) + forward.get("other", 0)
        lines.append("| " + " | ".join([
            r["preset"], tflop(forward.get("vision", 0)), tflop(forward.get("ias", 0)), f"{saliency / 1e12:.3f}",
            tflop(forward.get("projector", 0)), tflop(forward.get("llm", 0)),
            f"{tflop(extra)} ({extra / forward['total']:.1%} of ASE-MLLM's forward)",
        ]) + " |")
    lines += [
        "",
        "Parameters (millions) and the memory of weights + gradients + AdamW's two moments (GiB), every value in "
        "bf16 (2 bytes) or fp32 (4 bytes); activations not included. EAT (frozen) is part of ASE-MLLM's weights; "
        "PEFT's LoRA keeps a frozen copy of every `modules_to_save` module (projector, IAS), counted.",
        "",
        "| preset | model | parameters | " + " | ".join(
            f"{n}: trainable | {n}: GiB bf16 / fp32" for _, n in TRAINING_RECIPES) + " |",
        "|---|---|---|" + "---|---|" * len(TRAINING_RECIPES),
    ]
    for r in results:
        for name, label in (("ase_mllm", "ASE-MLLM"), ("internvl", "InternVL")):
            m = r["models"][name]
            cells = [r["preset"], label, f"{m['parameters'] / 1e6:,.1f}"]
            for recipe, _ in TRAINING_RECIPES:
                t = m["training"][recipe]
                cells += [f"{t['trainable'] / 1e6:,.1f}", f"{training_gib(t['parameters'], t['trainable'], 2):.1f} / "
                          f"{training_gib(t['parameters'], t['trainable'], 4):.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    last = results[-1]
    ratio = last["models"]["ase_mllm"]["forward"]["total"] / last["models"]["internvl"]["forward"]["total"]
    lines += ["", f"{last['preset']} whole-forward ratio: ×{ratio:.3f} (goal ≤ 1.10).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--out", default=str(OUT), help="markdown file to write, and the counts as JSON beside it "
                        "(read by gpu.py); '' = none")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON instead of the tables")
    args = parser.parse_args(argv)
    started = time.time()
    results = []
    for preset in args.presets:
        results.append(measure_preset(preset))
        print(f"{preset}: counted ({time.time() - started:.0f} s)", flush=True)
    text = markdown_report(results, time.time() - started)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1) if args.json else text)
    return results


if __name__ == "__main__":
    main()
