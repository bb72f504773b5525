"""ASE-MLLM web demo (Hub Space convention): upload a photo, pick an aspect, get a critique and the saliency picture.

    pip install -e ".[demo]"
    python examples/app.py                      # the demo model (outputs/demo/model), built if missing
    python examples/app.py --model PATH_OR_HUB_ID --port 7860
"""

import argparse
import sys
from pathlib import Path

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.aic_datasets import PCCD_ASPECTS  # noqa: E402
from modeling_ase_mllm.captioning import critique_prompt, load_model_and_processor  # noqa: E402
from modeling_ase_mllm.visualize import saliency_picture  # noqa: E402


OVERALL = "overall (the paper's prompt)"
DEFAULT_MODEL = Path("outputs/demo/model")


def default_model() -> str:
    """The demo's model; if the demo has not run yet, a small random one (machinery only) is built."""
    if (DEFAULT_MODEL / "config.json").is_file():
        return str(DEFAULT_MODEL)
    from modeling_ase_mllm.tiny import build_processor, build_tiny_model

    print(f"[app] {DEFAULT_MODEL} not found (run `ase-mllm demo` to train it); using a random tiny model")
    folder = Path("outputs/app/random-tiny")
    build_tiny_model(gate=0.5).save_pretrained(folder)
    build_processor().save_pretrained(folder)
    return str(folder)


def build_app(model_path: str, max_new_tokens: int = 64) -> gr.Blocks:
    model, processor = load_model_and_processor(model_path)

    def critique(image, aspect):
        if image is None:
            raise gr.Error("Upload a photo first.")
        prompt = critique_prompt(aspect=None if aspect == OVERALL else aspect)
        answer = model.chat(processor, image, prompt, {"max_new_tokens": max_new_tokens})
        return answer.strip(), saliency_picture(image, processor, model)

    with gr.Blocks(title="ASE-MLLM aesthetic critique") as app:
        gr.Markdown("# ASE-MLLM\nAesthetic critique with saliency. Model: `" + model_path + "`")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Photo", elem_id="photo")
                aspect = gr.Dropdown([OVERALL, *PCCD_ASPECTS], value=OVERALL, label="Aspect", elem_id="aspect")
                button = gr.Button("Critique", variant="primary", elem_id="critique-button")
            with gr.Column():
                text = gr.Textbox(label="Critique", lines=4, elem_id="critique")
                saliency = gr.Image(type="pil", label="Where it looked", elem_id="saliency")
        button.click(critique, inputs=[image, aspect], outputs=[text, saliency])
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder or Hub id (default: the demo model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    build_app(args.model or default_model(), args.max_new_tokens).launch(
        server_name=args.host, server_port=args.port, share=False
    )


if __name__ == "__main__":
    main()
