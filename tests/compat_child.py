"""Load a saved ASE-MLLM folder the way a user does, in whatever transformers this interpreter has, and report.

    python compat_child.py FOLDER IMAGE OUT_DIR [--train]

Run by `compat_fixtures.run_child` in a compatibility environment (or, for the reference, in the development one),
offline, with our package not importable: only the folder's remote code runs. Writes `OUT_DIR/result.json`
(transformers version, greedy tokens, pipeline text, Trainer losses) and `OUT_DIR/logits.npy` `(seq, vocab)`
float32; on any error, `result.json` holds the error and its traceback and the exit status is 1.
"""

import importlib.abc
import importlib.util
import json
import math
import sys
import time
import traceback
from pathlib import Path


PACKAGE = "modeling_ase_mllm"
PROMPT = "Comment on this image from an aesthetic perspective."
ANSWER = "The composition is balanced and the colors are warm."
NEW_TOKENS = 8
TRAIN_STEPS = 3


class BlockOurPackage(importlib.abc.MetaPathFinder):
    """Where the package is installed (the development environment), hide it: only remote code may run."""

    def find_spec(self, name, path=None, target=None):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            raise ImportError(f"{name} is blocked: only the folder's remote code may run")
        return None


def messages(image, answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def train_steps(model, processor, image, out_dir: Path) -> dict:
    """`TRAIN_STEPS` steps of `transformers.Trainer` on one conversation (labels: its text tokens, the image tokens
    masked here so that Trainer counts the tokens the loss averages over): the losses, and how many trainable
    tensors moved."""
    import torch
    from transformers import Trainer, TrainingArguments

    features = processor.apply_chat_template(
        messages(image, ANSWER), tokenize=True, return_dict=True, return_tensors="pt"
    )
    image_tokens = torch.isin(features["input_ids"], torch.tensor(processor.image_token_ids))
    features["labels"] = features["input_ids"].masked_fill(image_tokens, -100)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), max_steps=TRAIN_STEPS, per_device_train_batch_size=1, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
        disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model.train(), args=args, train_dataset=[features] * TRAIN_STEPS, data_collator=lambda rows: rows[0])
    trainer.train()
    model.eval()
    changed = sum(not p.detach().equal(before[name]) for name, p in model.named_parameters() if name in before)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"losses": losses, "trainable_tensors": len(before), "changed_tensors": changed}


def main(folder: str, image_path: str, out_dir: str, train: bool) -> dict:
    if importlib.util.find_spec(PACKAGE) is not None:
        sys.meta_path.insert(0, BlockOurPackage())
    try:
        importlib.import_module(PACKAGE)
        raise SystemExit(f"{PACKAGE} is importable: the check would not be of the remote code alone")
    except ImportError:
        pass

    import numpy as np
    import PIL.Image
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    torch.manual_seed(0)
    result = {"transformers": transformers.__version__}
    out = Path(out_dir)
    image = PIL.Image.open(image_path).convert("RGB")
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    result["classes"] = [type(model).__name__, type(processor).__name__, type(processor.image_processor).__name__]
    result["module"] = type(model).__module__
    inputs = processor.apply_chat_template(
        messages(image), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        np.save(out / "logits.npy", model(**inputs).logits[0].float().numpy())
    generated = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    result["tokens"] = generated[0, inputs["input_ids"].shape[1] :].tolist()
    pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
    output = pipe(text=messages(image), generate_kwargs={"max_new_tokens": NEW_TOKENS, "do_sample": False},
                  return_full_text=False)
    result["pipeline_text"] = output[0]["generated_text"]
    if train:
        result["train"] = train_steps(model, processor, image, out)
        result["train"]["losses_finite"] = all(math.isfinite(loss) for loss in result["train"]["losses"])
    return result


if __name__ == "__main__":
    folder, image_path, out_dir = sys.argv[1:4]
    start = time.perf_counter()
    try:
        report, status = main(folder, image_path, out_dir, "--train" in sys.argv[4:]), 0
    except Exception as error:  # noqa: BLE001  (the parent asserts on it)
        report, status = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}, 1
    report["seconds"] = round(time.perf_counter() - start, 1)
    (Path(out_dir) / "result.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    sys.exit(status)
