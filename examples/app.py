"""ASE-MLLM web demo (Hub Space convention): upload a photo, pick an aspect, get a critique, the saliency picture and
EAT's aesthetic score with its rating distribution.

    pip install -e ".[demo]"
    ase-mllm demo                               # once: trains the demo model into outputs/demo/model
    python examples/app.py                      # serves it (found next to this checkout, from any folder)
    python examples/app.py --model PATH_OR_HUB_ID --port 7860
    python examples/app.py --random-model       # development only: an untrained random model
    python examples/app.py --quantization 4bit  # the language model in 4-bit NF4 (pip install -e ".[quant]")

Uploads get the same bounds as `ase-mllm caption` (file size, megapixels; `--max-file-mb`, `--max-megapixels`),
and a photo that cannot be used shows the reason on the page.
"""

import argparse
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from modeling_ase_mllm.inference.photos import DEFAULT_MAX_FILE_MB, PhotoError, PhotoLimits, read_photo  # noqa: E402
from modeling_ase_mllm.cli.arguments import add_quantization_option, check_quantization  # noqa: E402
from modeling_ase_mllm.cli.demo import DEFAULT_OUTPUT_DIR, MODEL_FOLDER  # noqa: E402


OVERALL = "overall (the paper's prompt)"
# Where `ase-mllm demo`, run in the checkout with its default --output-dir, puts its model.
DEMO_MODEL = Path(DEFAULT_OUTPUT_DIR) / MODEL_FOLDER


def find_demo_model(project: Path = PROJECT) -> Path | None:
    """The demo's model folder in `project`, or None if `ase-mllm demo` has not been run there."""
    folder = project / DEMO_MODEL
    return folder if (folder / "config.json").is_file() else None


def no_model_message(project: Path = PROJECT) -> str:
    return (
        f"[app] no model to serve: {project / DEMO_MODEL} does not exist. Make it with `ase-mllm demo` in "
        f"{project} (a few minutes on a CPU), or pass --model PATH_OR_HUB_ID; --random-model serves an untrained "
        "random model (development only)."
    )


def random_model(project: Path = PROJECT) -> str:
    """A small random ASE-MLLM saved under `project/outputs/app/random-tiny` (it critiques nonsense)."""
    from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model

    folder = project / "outputs" / "app" / "random-tiny"
    build_tiny_model(gate=0.5).save_pretrained(folder)
    build_processor().save_pretrained(folder)
    print(f"[app] serving an untrained random model ({folder}): its critiques are noise")
    return str(folder)


def model_label(model_path: str) -> str:
    """How the page names the model: a Hub id as it is, a local folder by its name only (the page is public; the
    server's own paths are not)."""
    return Path(model_path).name if Path(model_path).expanduser().exists() else model_path


def build_app(model_path: str, max_new_tokens: int = 64, limits: PhotoLimits = PhotoLimits(),
              quantization: str | None = None):
    import gradio as gr

    from modeling_ase_mllm.data.schema import PCCD_ASPECTS
    from modeling_ase_mllm.inference.captioning import critique_prompt, load_model_and_processor
    from modeling_ase_mllm.inference.chat import chat
    from modeling_ase_mllm.inference.scores import distribution_chart, model_has_eat, model_score_note, score_text
    from modeling_ase_mllm.inference.visualize import saliency_picture
    from modeling_ase_mllm.utils.quantization import describe_precision

    model, processor = load_model_and_processor(model_path, quantization=quantization)
    precision = describe_precision(model, quantization)
    if precision:
        print(f"[app] {precision}", file=sys.stderr, flush=True)

    def critique(path, aspect):
        if path is None:
            raise gr.Error("Upload a photo first.")
        try:
            photo = read_photo(path, limits)
        except PhotoError as error:
            raise gr.Error(str(error).replace(repr(str(path)), repr(Path(path).name))) from error
        prompt = critique_prompt(aspect=None if aspect == OVERALL else aspect)
        answer = chat(model, processor, photo, prompt, {"max_new_tokens": max_new_tokens})
        if not model_has_eat(model):
            return answer.strip(), saliency_picture(photo, processor, model), "", None
        scored = model.score(images=[photo], processor=processor)
        return (answer.strip(), saliency_picture(photo, processor, model), score_text(float(scored.scores[0])),
                distribution_chart(scored.distribution[0].tolist()))

    note = model_score_note(model)
    with gr.Blocks(title="ASE-MLLM aesthetic critique") as app:
        gr.Markdown("# ASE-MLLM\nAesthetic critique with saliency. Model: `" + model_label(model_path) + "`"
                    + (f"\n\n{precision}" if precision else "") + (f"\n\n**Aesthetic score:** {note}." if note else ""))
        with gr.Row():
            with gr.Column():
                # A file path, not a decoded image: the bounds are checked before anything is decoded.
                image = gr.Image(type="filepath", label="Photo", elem_id="photo")
                aspect = gr.Dropdown([OVERALL, *PCCD_ASPECTS], value=OVERALL, label="Aspect", elem_id="aspect")
                button = gr.Button("Critique", variant="primary", elem_id="critique-button")
            with gr.Column():
                text = gr.Textbox(label="Critique", lines=4, elem_id="critique")
                with gr.Row():
                    saliency = gr.Image(type="pil", label="Where it looked", elem_id="saliency", scale=3)
                    with gr.Column(scale=1):
                        score = gr.Textbox(label="Aesthetic score (EAT, 1-10)", elem_id="score")
                        chart = gr.Image(type="pil", label="Rating distribution (normalised raw outputs)",
                                         elem_id="score-chart")
        button.click(critique, inputs=[image, aspect], outputs=[text, saliency, score, chart])
    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help=f"model folder or Hub id (default: the demo's, {DEMO_MODEL} in this checkout)")
    parser.add_argument("--random-model", action="store_true",
                        help="without --model or the demo's model, serve an untrained random model (development)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest critique (default: %(default)s)")
    parser.add_argument("--max-megapixels", type=float,
                        help="refuse uploads with more megapixels (default: Pillow's decompression-bomb threshold)")
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB,
                        help="refuse larger uploads (default: %(default)g)")
    add_quantization_option(parser)
    args = parser.parse_args(argv)
    check_quantization(parser, args.quantization)
    import PIL.Image

    limits = PhotoLimits(max_megapixels=args.max_megapixels or PIL.Image.MAX_IMAGE_PIXELS / 1e6,
                         max_file_mb=args.max_file_mb)
    # Gradio opens each upload (header only) before we see it; read_photo applies the limit, with its reason.
    PIL.Image.MAX_IMAGE_PIXELS = None
    model = args.model or find_demo_model()
    if model is None:
        if not args.random_model:
            print(no_model_message(), file=sys.stderr)
            return 2
        model = random_model()
    app = build_app(str(model), args.max_new_tokens, limits, args.quantization)
    app.launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
               max_file_size=int(args.max_file_mb * 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
