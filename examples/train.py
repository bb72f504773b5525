"""Fine-tune ASE-MLLM from a recipe, then caption a held-out photo with the result.

Same arguments as `ase-mllm train` (a recipe and any of its fields; see docs/training.md):

    python examples/train.py --recipe mini --dataset mini_aic                    # CPU, about a minute
    accelerate launch --config_file configuration/accelerate/ddp.yaml --num_processes 8 examples/train.py \
        --recipe pccd --dataset pccd --data-root /data/PCCD --model checkpoints/ase-mllm-internvl2-8b
"""

import sys
from pathlib import Path

import torch

try:
    import modeling_ase_mllm  # noqa: F401
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_ase_mllm.data.mini_aic import load_mini_aic  # noqa: E402
from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT  # noqa: E402
from modeling_ase_mllm.training.recipes import parse_recipe  # noqa: E402
from modeling_ase_mllm.training.train import main as train  # noqa: E402


def caption(model, processor, image, max_new_tokens: int = 40) -> str:
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": AESTHETIC_PROMPT}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(tokens[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def main(argv=None) -> int:
    trainer = train(*parse_recipe(sys.argv[1:] if argv is None else argv))
    if trainer.is_world_process_zero():
        photo = load_mini_aic(["test"])["test"][0]
        model = trainer.model.eval()
        print(f"[example] {photo['image_id']}: {caption(model, trainer.processing_class, photo['image'])!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
