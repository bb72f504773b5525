"""Quantised loading as users do it: `BitsAndBytesConfig(load_in_8bit / load_in_4bit)` and torchao's int8 weight-only
with no skip list quantise the language model alone (the model declares the rest); generation, saliency, QLoRA.

bitsandbytes runs on its CPU backend here, torchao on the CPU. The model is the tiny preset with a language model at
widths the kernels accept (`QUANTIZABLE_TEXT_WIDTHS`: multiples of 64, head dimension 64).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import PROMPT, random_image
from test_hub_roundtrip import BLOCK_OUR_PACKAGE
from modeling_ase_mllm.modeling_ase_mllm import FLOAT_GROUPS, parameter_group
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, quantizable_tiny_config
from modeling_ase_mllm.utils.quantization import (
    QUANTIZATION_SCHEMES, is_quantized_weight, precision_summary, quantization_config,
)


SEED = 5  # a random model whose greedy continuation of the photo is not one token repeated
NEW_TOKENS = 5
# Linear layers per decoder layer of the language model: q, k, v, o, gate, up, down.
LLM_LINEARS = 2 * 7


def messages(image, answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


@pytest.fixture(scope="module")
def photo():
    return random_image(448, 448, seed=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved model (one tile per photo, to keep the tests short) whose LM head is scaled up: a random head is far
    less confident than a trained one, and near-ties would make greedy tokens a coin toss."""
    path = tmp_path_factory.mktemp("quantizable")
    model = build_tiny_model(quantizable_tiny_config(), seed=SEED, gate=0.5)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    model.save_pretrained(path)
    build_processor(max_patches=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def processor(folder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def inputs(processor, photo):
    return processor.apply_chat_template(messages(photo), add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def load(folder, **kwargs):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder, **kwargs).eval()


def quantized(folder, scheme: str, **kwargs):
    return load(folder, quantization_config=quantization_config(scheme, torch.float32), device_map="cpu", **kwargs)


def outputs(model, inputs) -> dict:
    """Greedy tokens, the saliency maps EAT + LayerCAM give the photo, and EAT's raw score."""
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        score = model.model.saliency_model(inputs["saliency_pixel_values"])
    return {"tokens": tokens.tolist(), "saliency": model.model.get_image_saliency(inputs["saliency_pixel_values"]),
            "score": score}


@pytest.fixture(scope="module")
def float_model(folder):
    return load(folder)


@pytest.fixture(scope="module")
def float_outputs(float_model, inputs):
    result = outputs(float_model, inputs)
    assert len(set(result["tokens"])) > 1, result["tokens"]
    return result


def assert_only_the_language_model_is_quantized(model, float_model):
    """Every linear of the LM's decoder layers quantised; every other parameter float and bit-identical to the float
    model's."""
    quantized_names = {name for name, module in model.named_modules()
                       if isinstance(module, torch.nn.Linear) and is_quantized_weight(module.weight)}
    assert len(quantized_names) == LLM_LINEARS
    assert all(name.startswith("model.language_model.layers.") for name in quantized_names), sorted(quantized_names)
    summary = precision_summary(model)
    assert summary["llm"]["quantized_linears"] == LLM_LINEARS and summary["llm"]["float_linears"] == 1  # the LM head
    reference = dict(float_model.named_parameters())
    kept = 0
    for name, parameter in model.named_parameters():
        if parameter_group(name) in FLOAT_GROUPS:
            assert not is_quantized_weight(parameter) and torch.equal(parameter, reference[name]), name
            kept += 1
    assert kept == sum(parameter_group(name) in FLOAT_GROUPS for name in reference)
    for group in FLOAT_GROUPS:
        assert summary[group]["quantized_linears"] == 0 and summary[group]["float_linears"] > 0, group


@pytest.mark.parametrize("scheme", QUANTIZATION_SCHEMES)
def test_a_quantised_load_quantises_the_language_model_alone(scheme, folder, float_model, inputs, float_outputs):
    model = quantized(folder, scheme)
    assert_only_the_language_model_is_quantized(model, float_model)
    result = outputs(model, inputs)
    assert len(result["tokens"]) == NEW_TOKENS
    # EAT and LayerCAM run in float on the same weights: the same maps and score, to the bit.
    assert torch.equal(result["saliency"], float_outputs["saliency"])
    assert torch.equal(result["score"], float_outputs["score"])
    if scheme == "8bit":
        assert result["tokens"] == float_outputs["tokens"]


def test_a_users_own_skip_list_keeps_ours_too(folder, float_model):
    """The issue's first row: the skip list a careful user writes (names that reach none of the nested modules)."""
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True,
                                llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "saliency_model", "lm_head"])
    assert_only_the_language_model_is_quantized(load(folder, quantization_config=config, device_map="cpu"), float_model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unquantised_loads_keep_the_asked_dtype_everywhere(dtype, folder, float_model):
    """The float groups are listed for quantizers only: transformers would otherwise load them in float32 under a
    float16 load (`_keep_in_fp32_modules`); every weight must be the float model's, cast, as before."""
    model = load(folder, dtype=dtype)
    reference = dict(float_model.named_parameters())
    for name, parameter in model.named_parameters():
        assert parameter.dtype == dtype and torch.equal(parameter, reference[name].to(dtype)), name


def test_the_qwen_vl_family_quantises_its_language_model_alone(tmp_path, photo):
    from modeling_ase_mllm.testing.tiny_qwen_vl import build_qwen_vl_processor, build_tiny_qwen_vl_model

    build_tiny_qwen_vl_model(gate=0.5, seed=1).save_pretrained(tmp_path)  # its LM is 256 wide, heads of 64 already
    processor = build_qwen_vl_processor()
    qwen_inputs = processor.apply_chat_template(messages(photo), add_generation_prompt=True, tokenize=True,
                                                return_dict=True, return_tensors="pt")
    float_model = load(tmp_path)
    expected = outputs(float_model, qwen_inputs)
    assert_only_the_language_model_is_quantized(quantized(tmp_path, "8bit"), float_model)
    model = quantized(tmp_path, "4bit")
    assert_only_the_language_model_is_quantized(model, float_model)
    result = outputs(model, qwen_inputs)
    assert torch.equal(result["saliency"], expected["saliency"]) and torch.equal(result["score"], expected["score"])
    assert len(result["tokens"]) == NEW_TOKENS


# ------------------------------------------------------------------------------------------------ QLoRA

STEPS = 3
ANSWER = "The composition is balanced and the colors are warm."


def qlora_trainer(folder, scheme: str, output_dir, photo):
    """`ase-mllm train`'s own path: the quantised load, PEFT's kbit preparation, TRL's SFTTrainer with our LoRA."""
    from datasets import Dataset
    from trl import SFTConfig

    from modeling_ase_mllm.training.arguments import AseMllmScriptArguments
    from modeling_ase_mllm.training.train import build_trainer, load_model_for_training

    script_args = AseMllmScriptArguments(model=str(folder), llm="lora", quantization=scheme, max_patches=1)
    model, processor = load_model_for_training(script_args)
    args = SFTConfig(output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=1, learning_rate=1e-2,
                     lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     bf16=False, disable_tqdm=True, seed=0, assistant_only_loss=True, max_length=None)
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
             {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}]
    data = Dataset.from_list([{"images": [photo], "messages": turns}])
    return build_trainer(script_args, args, model, processor, data), processor


def logits(model, processor, photo) -> torch.Tensor:
    batch = processor.apply_chat_template(messages(photo, ANSWER), tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.slow
def test_qlora_lowers_the_loss_and_its_adapter_reloads_onto_the_quantised_base(folder, photo, tmp_path):
    from peft import PeftModel

    trainer, processor = qlora_trainer(folder, "4bit", tmp_path, photo)
    trained = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    assert trained and all(".lora_" in name or ".modules_to_save." in name for name in trained)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    trainer.save_model(tmp_path / "adapter")
    expected = logits(trainer.model, processor, photo)

    # Onto a fresh 4-bit base, as PEFT loads an adapter by default.
    reloaded = PeftModel.from_pretrained(quantized(folder, "4bit"), tmp_path / "adapter")
    assert torch.equal(logits(reloaded, processor, photo), expected)

    # Merged into the float model: the same as the float model with the adapter beside it.
    beside = PeftModel.from_pretrained(load(folder), tmp_path / "adapter")
    unmerged = logits(beside, processor, photo)
    merged = beside.merge_and_unload()
    assert all(not is_quantized_weight(p) for p in merged.parameters())
    torch.testing.assert_close(logits(merged, processor, photo), unmerged, atol=1e-5, rtol=1e-5)


def test_training_refuses_quantisation_without_lora():
    from modeling_ase_mllm.training.arguments import AseMllmScriptArguments

    with pytest.raises(ValueError, match="needs `llm: lora`, got `llm: full`"):
        AseMllmScriptArguments(model="x", quantization="4bit")


# ------------------------------------------------------------------------------------------------ the commands


def test_caption_prints_what_stayed_in_float(folder, photo, tmp_path, capsys):
    from modeling_ase_mllm.cli import main

    path = tmp_path / "photo.png"
    photo.save(path)
    assert main(["caption", str(path), "--model", str(folder), "--quantization", "8bit", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: ")
    # (followed by the tiny model's untrained-score note)
    report = next(line for line in captured.err.splitlines() if line.startswith("--quantization"))
    assert report.startswith(f"--quantization 8bit: quantised llm ({LLM_LINEARS} linear layers); kept in floating point: ")
    for group in FLOAT_GROUPS:
        assert f" {group} (" in report and "float32" in report, group


def test_serve_loads_the_model_quantised_and_says_what_stayed_in_float(folder, capsys):
    from modeling_ase_mllm.inference.serving import build_app

    _, manager, state = build_app(str(folder), device="cpu", quantization="4bit")
    try:
        report = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        state.shutdown()
        manager.shutdown()
    assert report.startswith(f"[serve] --quantization 4bit: quantised llm ({LLM_LINEARS} linear layers); kept in "
                             "floating point: ")


# ------------------------------------------------------------------------------------------------ the Hub folder alone

FRESH_PROCESS = BLOCK_OUR_PACKAGE + textwrap.dedent(
    """
    import PIL.Image, torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import (AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig, TorchAoConfig, Trainer,
                              TrainingArguments)

    folder, image_path, prompt, answer, out, new_tokens = sys.argv[1:7]
    image = PIL.Image.open(image_path).convert("RGB")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    user = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
    inputs = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    configs = {"8bit": BitsAndBytesConfig(load_in_8bit=True),
               "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
               "int8-weight-only": TorchAoConfig(Int8WeightOnlyConfig())}
    result = {}
    for scheme, config in configs.items():
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, quantization_config=config,
                                                            device_map="cpu")
        linears = {n: not m.weight.is_floating_point() or type(m.weight) is not torch.nn.Parameter
                   for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        saliency = model.model.get_image_saliency(inputs["saliency_pixel_values"])
        result[scheme] = {"module": type(model).__module__, "quantized": sorted(n for n, q in linears.items() if q),
                          "float_linears": sum(not q for q in linears.values()), "saliency": saliency.tolist()}
        if scheme == "8bit":  # the in-process test generates with every scheme
            with torch.no_grad():
                tokens = model.generate(**inputs, max_new_tokens=int(new_tokens), do_sample=False)
            result[scheme]["tokens"] = tokens[0, inputs["input_ids"].shape[1]:].tolist()

    # QLoRA as PEFT documents it, on the 4-bit model, three steps of transformers' Trainer.
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, quantization_config=configs["4bit"],
                                                        device_map="cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\\.(q|k|v|o|gate|up|down)_proj",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    turns = user + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    batch = processor.apply_chat_template(turns, tokenize=True, return_dict=True, return_tensors="pt")
    features = dict(batch, labels=batch["input_ids"].masked_fill(
        torch.isin(batch["input_ids"], torch.tensor(processor.image_token_ids)), -100))
    args = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=1, learning_rate=1e-2,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=[features] * 3, data_collator=lambda rows: rows[0])
    trainer.train()
    model.save_pretrained(out + "/adapter")
    with torch.no_grad():
        trained = model.eval()(**batch).logits
        base = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True,
                                                           quantization_config=configs["4bit"], device_map="cpu")
        reloaded = PeftModel.from_pretrained(base, out + "/adapter").eval()(**batch).logits
    result["qlora"] = {"losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                       "reloaded_equal": bool(torch.equal(trained, reloaded))}
    print("RESULT" + json.dumps(result))
    """
)


@pytest.mark.slow
def test_a_hub_folder_loads_quantised_and_trains_qlora_with_remote_code_only(folder, photo, float_outputs, tmp_path):
    image_path = tmp_path / "photo.png"
    photo.save(image_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    arguments = [str(folder), str(image_path), PROMPT, ANSWER, str(tmp_path / "out"), str(NEW_TOKENS)]
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *arguments], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    for scheme in QUANTIZATION_SCHEMES:
        loaded = result[scheme]
        assert loaded["module"].startswith("transformers_modules.")
        assert len(loaded["quantized"]) == LLM_LINEARS, loaded["quantized"]
        assert all(name.startswith("model.language_model.layers.") for name in loaded["quantized"])
        assert loaded["float_linears"] == sum(isinstance(m, torch.nn.Linear) for m in build_tiny_model(
            quantizable_tiny_config()).modules()) - LLM_LINEARS
        assert torch.equal(torch.tensor(loaded["saliency"]), float_outputs["saliency"])
    assert result["8bit"]["tokens"] == float_outputs["tokens"]
    losses = result["qlora"]["losses"]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    assert result["qlora"]["reloaded_equal"]

