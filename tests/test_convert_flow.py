"""The README's flow on an InternVL2 folder in OpenGVLab's format: `ase-mllm convert`, `ase-mllm train`,
`ase-mllm evaluate`, each through the command line in its own process.

The source is a tiny InternVL2-2B/8B look-alike (InternLM2 LLM with GQA, weights in shards) whose tokenizer is
InternLM2's kind: a SentencePiece BPE model, trained here, behind remote code. Training and evaluation run with
sentencepiece blocked: the converted folder carries its tokenizer as a `tokenizer.json` and needs neither
sentencepiece nor any tokenizer code.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import sentencepiece
from transformers import AutoProcessor

from modeling_ase_mllm.evaluation.vocabulary import COCO_METRICS
from modeling_ase_mllm.data.mini_aic import load_mini_aic
from opengvlab_fixtures import sentencepiece_ids, tokenizer_corpus, write_internlm2_checkpoint


# `ase-mllm` (its entry point, `cli.main`) in a process that cannot import sentencepiece.
WITHOUT_SENTENCEPIECE = (
    "import sys\nsys.modules['sentencepiece'] = None\n"
    "from modeling_ase_mllm.cli import main\nsys.exit(main(sys.argv[1:]))"
)


def ase_mllm(*arguments, without_sentencepiece: bool = False) -> str:
    command = ["-c", WITHOUT_SENTENCEPIECE] if without_sentencepiece else ["-m", "modeling_ase_mllm.cli"]
    run = subprocess.run([sys.executable, *command, *map(str, arguments)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, f"ase-mllm {' '.join(map(str, arguments))}:\n{run.stderr[-4000:]}"
    return run.stdout


@pytest.mark.slow
def test_convert_train_evaluate_an_opengvlab_internvl2_folder(tmp_path):
    source, converted, trained, evaluated = (tmp_path / name for name in ("InternVL2-tiny", "ase", "run", "eval"))
    added, _ = write_internlm2_checkpoint(source, shards=3)

    printed = ase_mllm("convert", source, converted)
    assert "opengvlab checkpoint" in printed
    assert (converted / "tokenizer.json").is_file() and not list(converted.glob("tokenization_*.py"))

    # The converted tokenizer is sentencepiece's own encoding, special tokens included, on the critiques and prompts
    # and on each of them rendered through the chat template.
    processor = AutoProcessor.from_pretrained(converted)
    model = sentencepiece.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    texts = tokenizer_corpus()
    texts += [processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": text}]}],
                                            add_generation_prompt=True) for text in texts]
    differing = [text for text in texts
                 if processor.tokenizer(text)["input_ids"] != sentencepiece_ids(model, added, text)]
    assert len(texts) == 2 * len(tokenizer_corpus()) and not differing

    recipe = tmp_path / "mini-every-step.yaml"
    recipe.write_text("base_recipe: mini\nlogging_steps: 1\n")  # the mini recipe, a loss every step
    ase_mllm("train", "--recipe", recipe, "--data", "mini_aic", "--model", converted, "--output-dir", trained,
             "--max-steps", 3, without_sentencepiece=True)
    state = json.loads((trained / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 3 and len(losses) == 3 and all(math.isfinite(loss) for loss in losses)

    table = ase_mllm("evaluate", "--model", trained, "--dataset", "mini_aic", "--split", "test", "--output-dir",
                     evaluated, "--max-new-tokens", 8, "--max-tiles", 1, "--batch-size", 3,
                     without_sentencepiece=True)
    predictions = [json.loads(line) for line in (evaluated / "predictions.jsonl").read_text().splitlines()]
    assert sorted(row["image_id"] for row in predictions) == sorted(load_mini_aic(["test"])["test"]["image_id"])
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert all(isinstance(metrics[name], float) and 0.0 <= metrics[name] for name in COCO_METRICS), metrics
    print(f"\nconverted -> trained 3 steps (losses {[round(loss, 3) for loss in losses]}) -> evaluated:\n{table}")
