"""`ase-mllm demo`: the whole loop at smoke scale, offline, on a 2-core CPU in a few minutes.

1. build a small ASE-MLLM (tokenizer trained on the critiques),
2. fine-tune it on the bundled mini AIC set (scikit-image photos, our own critiques; `mini` recipe),
3. publish it as a Hub folder and reload it through the Auto classes with `trust_remote_code=True`,
4. caption the test photos and score them with the AIC metrics (`ase-mllm evaluate`'s code), with the grounding
   control: the same critiques against the other photos' references, and the gap,
5. draw what it looked at (saliency pictures),
6. write the model's card (the evaluation as a table and as the Hub's `model-index`, a saliency picture) and
   `report.md`, and print where it is.

It shows the machinery, not the paper's caption quality.
"""

import json
import shutil
import time
from pathlib import Path

from .arguments import add_metric_arguments, check_output_folder, metric_options, positive_int


DEFAULT_OUTPUT_DIR = "outputs/demo"
MODEL_FOLDER = "model"  # the trained model, inside the output folder (the web demo serves it)


def add_parser(subparsers):
    command = subparsers.add_parser(
        "demo", help="the embedded default: fine-tune a small model on the bundled mini set, evaluate, report",
        description="Build a small ASE-MLLM, fine-tune it on the bundled mini AIC set, reload it through the Auto "
                    "classes, caption and score the test photos, draw the saliency pictures and write report.md. "
                    "Offline, CPU, a few minutes.")
    command.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where it all goes (default: %(default)s)")
    command.add_argument("--steps", type=positive_int, default=300, help="training steps (default: %(default)s)")
    command.add_argument("--max-new-tokens", type=positive_int, default=40,
                         help="longest critique, in tokens (default: %(default)s)")
    add_metric_arguments(command)
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """The embedded default: fine-tune, publish, reload, evaluate and caption a small model, then report."""
    check_output_folder(args.parser, "--output-dir", args.output_dir)
    run_demo(args.output_dir, steps=args.steps, max_new_tokens=args.max_new_tokens, **metric_options(args))
    return 0


def gap_summary(metrics: dict) -> str:
    """One sentence on the grounding control's gap in the demo report."""
    from ..evaluation.vocabulary import METRIC_TABLE

    gaps = metrics["control"]["gap"]
    shown = ", ".join(f"{metric.name} {gaps[metric.key]:+.3f}" for metric in METRIC_TABLE
                      if isinstance(gaps.get(metric.key), (int, float)))
    return f"Gap: {shown}." if shown else "No metric has a gap (every one is n/a)."


def kept(args) -> str:
    return f"what finished is in {args.output_dir} (the model in {Path(args.output_dir) / MODEL_FOLDER} once trained)"


def run_demo(
    output_dir: str = DEFAULT_OUTPUT_DIR, steps: int = 300, max_new_tokens: int = 40, **metric_options
) -> Path:
    """Run the demo; returns the path of the report. `metric_options`: `score_predictions`' (SPICE, P/R variant)."""
    from ..data.mini_aic import load_mini_aic
    from ..evaluation.metrics import format_table
    from ..evaluation.run import PREDICTIONS_FILE, evaluate_model
    from ..hub.model_card import write_model_card
    from ..inference.captioning import load_model_and_processor
    from ..inference.scores import model_score_note, score_text
    from ..inference.visualize import save_saliency_picture
    from ..training.train import train

    started = time.time()
    out = Path(output_dir)
    model_dir = out / MODEL_FOLDER
    print(f"[demo] 1-2/6 fine-tuning a tiny ASE-MLLM on the mini AIC set ({steps} steps)", flush=True)
    # Each demo builds its model anew: an earlier demo's checkpoints in the same folder go first.
    trainer = train("mini", data="mini_aic", model="tiny", output_dir=str(model_dir), max_steps=steps, overwrite=True)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    print(f"[demo] 3-4/6 reloading {model_dir} through AutoModelForImageTextToText (trust_remote_code), captioning "
          "and scoring the test photos", flush=True)
    evaluation_dir = out / "evaluation"
    # min_new_tokens: the metrics refuse blank captions; no_repeat_ngram_size: a tiny model loops otherwise.
    generation = {"max_new_tokens": max_new_tokens, "min_new_tokens": 3, "no_repeat_ngram_size": 3}
    metrics = evaluate_model(str(model_dir), "mini_aic", "test", str(evaluation_dir), generation_config=generation,
                             device="cpu", overwrite=True, control="shuffled", **metric_options)
    predictions = evaluation_dir / PREDICTIONS_FILE

    print("[demo] 5/6 drawing the saliency pictures", flush=True)
    model, processor = load_model_and_processor(str(model_dir), device="cpu")
    test = load_mini_aic(["test"])["test"]
    captions = {json.loads(line)["image_id"]: json.loads(line)["caption"] for line in predictions.read_text().splitlines()}
    sections = []
    for row in test:
        picture = save_saliency_picture(row["image"], out / "saliency" / f"{row['image_id']}.png", processor, model)
        score = score_text(float(model.score(images=[row["image"]], processor=processor).scores[0]))
        sections += [
            f"### {row['image_id']}",
            "",
            f"![saliency: {row['image_id']}]({picture.relative_to(out)})",
            "",
            f"- **ASE-MLLM (demo):** {captions[row['image_id']]}",
            f"- **aesthetic score (EAT):** {score}",
            *[f"- reference: {reference}" for reference in row["references"]],
            "",
        ]

    # The model's card carries its evaluation (table and `model-index`) and the first photo's saliency picture.
    shutil.copyfile(out / "saliency" / f"{test[0]['image_id']}.png", model_dir / "saliency.png")
    write_model_card(model_dir, metrics=metrics)

    report = out / "report.md"
    report.write_text(
        "\n".join([
            "# ase-mllm demo report",
            "",
            f"A smoke-scale model: a random tiny ASE-MLLM fine-tuned for {steps} steps on 6 photos. It shows the machinery "
            "(tiling, saliency, IAS-ViT, training, Hub folder, evaluation), not the paper's caption quality.",
            "",
            f"- training: `mini` recipe, {steps} steps, loss {losses[0]:.2f} → {losses[-1]:.2f}",
            f"- model folder: `{model_dir}` (loads with `AutoModelForImageTextToText.from_pretrained(..., "
            "trust_remote_code=True)`; its README.md holds the evaluation below)",
            f"- predictions: `{predictions}`; metrics: `{evaluation_dir / 'metrics.json'}`",
            f"- total time: {time.time() - started:.0f} s",
            f"- aesthetic scores: EAT's, Σ i·y_i of its 10 AVA bins; {model_score_note(model) or 'trained EAT'}",
            "",
            "## Metrics (test split, paper Table I layout)",
            "",
            format_table(metrics),
            "",
            "The second row scores the same critiques against the references of another test photo (a seeded "
            "derangement); the gap is what the critiques owe to their own photos. " + gap_summary(metrics),
            "",
            "## Critiques and where the model looked",
            "",
            *sections,
        ]),
        encoding="utf-8",
    )
    print(f"[demo] 6/6 model card: {model_dir / 'README.md'}; report: {report.resolve()}", flush=True)
    return report
