"""Fine-tuning: collator labels, Trainer / SFTTrainer / LoRA training and reloading, resume, DDP, the paper's recipe in
both families, freezing (recipes: test_recipes.py).

Everything runs on CPU with the tiny config and four photos of the bundled mini set, each tiled as one 448 px tile.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_ase_mllm import AseMllmForConditionalGeneration
from modeling_ase_mllm.data.conversations import to_conversations
from modeling_ase_mllm.data.mini_aic import load_mini_aic
from modeling_ase_mllm.data.prompts import AESTHETIC_PROMPT as PROMPT
from modeling_ase_mllm.modeling_ase_mllm import (
    AseMllmSaliencyCrossAttention,
    AseMllmSaliencyEmbeddings,
    AseMllmSaliencyGate,
    AseMllmVisionLayer,
)
from modeling_ase_mllm.testing.tiny import build_processor, build_tiny_model, build_tokenizer
from modeling_ase_mllm.training.collator import AseMllmDataCollator
from modeling_ase_mllm.training.freezing import LLM_LORA_TARGET_MODULES, FreezingPreset, apply_freezing, lora_config_for
from modeling_ase_mllm.training.recipes import parse_recipe
from modeling_ase_mllm.training.train import assistant_texts, train


REPO = Path(__file__).resolve().parent.parent
STEPS = 30


@pytest.fixture(scope="module")
def conversations():
    """Four photos of the mini set with one critique each, in TRL's vision format."""
    return to_conversations(load_mini_aic(["train"])["train"], mode="sample").select(range(4))


@pytest.fixture(scope="module")
def one_tile_processor(tokenizer):
    return build_processor(tokenizer, max_patches=1)


@pytest.fixture(scope="module")
def saved_conversations(conversations, tmp_path_factory):
    """The conversations as a `save_to_disk` folder, the `--data` form of the command line."""
    path = tmp_path_factory.mktemp("data") / "mini4"
    conversations.save_to_disk(str(path))
    return path


# Shared by `TrainingArguments` and `SFTConfig`: full batch of the four examples, a high constant learning rate.
TRAINING_FIELDS = dict(
    max_steps=STEPS, per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant",
    optim="adamw_torch", weight_decay=0.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
    bf16=False, activation_checkpointing=False, disable_tqdm=True, seed=0,
)


def sft_config(output_dir):
    from trl import SFTConfig

    return SFTConfig(output_dir=str(output_dir), **TRAINING_FIELDS, assistant_only_loss=True, max_length=None)


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def answer(example) -> str:
    return example["messages"][1]["content"][0]["text"]


def prompt_inputs(processor, example):
    messages = [{"role": "user", "content": [{"type": "image", "image": example["images"][0]},
                                             {"type": "text", "text": PROMPT}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


# ------------------------------------------------------------------------------------------------ labels


def test_collator_labels_are_the_answer_tokens_only(one_tile_processor, conversations):
    example = conversations[0]
    batch = AseMllmDataCollator(one_tile_processor)([example])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    tokenizer = one_tile_processor.tokenizer

    # The prompt as generation sees it is a prefix of the training sequence; the answer and <|im_end|> follow,
    # then the template's trailing newline.
    prompt_ids = prompt_inputs(one_tile_processor, example)["input_ids"][0].tolist()
    answer_ids = tokenizer(answer(example) + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    assert ids[len(prompt_ids) : len(prompt_ids) + len(answer_ids)] == answer_ids
    assert tokenizer.decode(ids[len(prompt_ids) + len(answer_ids) :]) == "\n"
    expected = [-100] * len(prompt_ids) + answer_ids + [-100] * (len(ids) - len(prompt_ids) - len(answer_ids))
    for position, (label, wanted) in enumerate(zip(labels, expected, strict=True)):
        assert label == wanted, f"position {position} ({tokenizer.decode([ids[position]])!r})"
    assert batch["pixel_values"].shape == (1, 3, 448, 448) and batch["saliency_pixel_values"].shape == (1, 3, 224, 224)


def test_sft_trainer_collates_exactly_like_our_collator(make_model, one_tile_processor, conversations, tmp_path):
    from trl import SFTTrainer

    trainer = SFTTrainer(model=make_model(), args=sft_config(tmp_path), train_dataset=conversations,
                         processing_class=one_tile_processor)
    examples = [conversations[0], conversations[1]]
    ours = AseMllmDataCollator(one_tile_processor)([dict(e) for e in examples])
    trl = trainer.data_collator([dict(e) for e in examples])
    assert set(trl) == set(ours) == {"input_ids", "attention_mask", "pixel_values", "saliency_pixel_values", "tile_grids",
                                     "saliency_source", "labels"}
    assert ours["saliency_source"] == trl["saliency_source"] == "eat_layercam"
    for key in ours.keys() - {"saliency_source"}:
        assert torch.equal(ours[key], trl[key]), key
    # Right padding: the shorter sequence ends in padding, which carries no label.
    mask = ours["attention_mask"]
    assert mask[:, 0].all() and not mask.all()
    assert (ours["labels"][mask == 0] == -100).all()


# ------------------------------------------------------------------------------------------------ training


def assert_reloaded_model_matches(trained, reloaded, processor, example):
    """Same logits on a training example and the same greedy continuation of its prompt."""
    trained.eval(), reloaded.eval()
    batch = AseMllmDataCollator(processor)([example])
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained(**batch).logits, atol=1e-5, rtol=1e-5)
    inputs = prompt_inputs(processor, example)
    new_tokens = [model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
                  for model in (trained, reloaded)]
    assert len(new_tokens[0]) > 0 and torch.equal(new_tokens[0], new_tokens[1])


def full_batch_loss(model, processor, conversations) -> float:
    """The model's own loss on all the examples at once: what the first logged step must report."""
    with torch.no_grad():
        return float(model(**AseMllmDataCollator(processor)(list(conversations))).loss)


def assert_overfits(trainer, initial_loss: float):
    curve = losses(trainer)
    assert len(curve) == STEPS
    assert abs(curve[0] - initial_loss) < 1e-4, (curve[0], initial_loss)
    assert curve[-1] <= 0.5 * curve[0], curve


@pytest.mark.slow
def test_trainer_with_our_collator_overfits_and_reloads(make_model, one_tile_processor, conversations, tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), **TRAINING_FIELDS, remove_unused_columns=False)
    model = make_model().train()
    initial_loss = full_batch_loss(model, one_tile_processor, conversations)
    trainer = Trainer(model=model, args=args, train_dataset=conversations,
                      data_collator=AseMllmDataCollator(one_tile_processor), processing_class=one_tile_processor)
    trainer.train()
    assert_overfits(trainer, initial_loss)
    print(f"\nTrainer: loss {losses(trainer)[0]:.3f} -> {losses(trainer)[-1]:.3f}")

    trainer.save_model(tmp_path / "final")
    reloaded = AseMllmForConditionalGeneration.from_pretrained(tmp_path / "final")
    assert_reloaded_model_matches(trainer.model, reloaded, one_tile_processor, conversations[0])


@pytest.mark.slow
def test_sft_trainer_overfits_and_reloads(make_model, one_tile_processor, conversations, tmp_path):
    from transformers import AutoProcessor
    from trl import SFTTrainer

    model = make_model().train()
    initial_loss = full_batch_loss(model, one_tile_processor, conversations)
    trainer = SFTTrainer(model=model, args=sft_config(tmp_path), train_dataset=conversations,
                         processing_class=one_tile_processor)
    trainer.train()
    assert_overfits(trainer, initial_loss)
    print(f"\nSFTTrainer: loss {losses(trainer)[0]:.3f} -> {losses(trainer)[-1]:.3f}")

    trainer.save_model(tmp_path / "final")
    reloaded = AseMllmForConditionalGeneration.from_pretrained(tmp_path / "final")
    processor = AutoProcessor.from_pretrained(tmp_path / "final")
    assert processor.image_processor.max_patches == 1
    assert_reloaded_model_matches(trainer.model, reloaded, processor, conversations[0])


@pytest.mark.slow
def test_sft_trainer_with_lora_overfits_and_reloads(make_model, one_tile_processor, conversations, tmp_path):
    from peft import PeftModel
    from trl import SFTTrainer

    base = make_model()
    # A random LM head is ~10x less confident than a pretrained one; frozen under LoRA, it would cap how far
    # the loss can fall. Scale it once, before saving the base.
    with torch.no_grad():
        base.lm_head.weight.mul_(10)
    base.save_pretrained(tmp_path / "base")
    initial_loss = full_batch_loss(base.train(), one_tile_processor, conversations)
    trainer = SFTTrainer(model=base, args=sft_config(tmp_path), train_dataset=conversations,
                         processing_class=one_tile_processor, peft_config=lora_config_for(base))
    trainer.train()
    assert_overfits(trainer, initial_loss)
    print(f"\nSFTTrainer + LoRA: loss {losses(trainer)[0]:.3f} -> {losses(trainer)[-1]:.3f}")

    trainer.save_model(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any(".lora_A." in key for key in saved)
    assert any("saliency_gate" in key for key in saved) and any("multi_modal_projector" in key for key in saved)
    assert not any("vision_tower.encoder.layer.0.attention." in key for key in saved)

    fresh = AseMllmForConditionalGeneration.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    assert_reloaded_model_matches(trainer.model, reloaded, one_tile_processor, conversations[0])


# SFTTrainer given only a Hub folder's path, in a process that cannot import this package: remote code only.
HUB_FOLDER_SFT = """
import json, sys
import numpy as np, PIL.Image
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

rng = np.random.default_rng(0)
rows = [{"images": [PIL.Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8))],
         "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Comment on it."}]},
                      {"role": "assistant", "content": [{"type": "text", "text": f"The colors are warm {i}."}]}]}
        for i in range(4)]
args = SFTConfig(output_dir=sys.argv[2], max_steps=2, per_device_train_batch_size=2, logging_steps=1,
                 save_strategy="no", report_to="none", use_cpu=True, bf16=False, activation_checkpointing=False,
                 assistant_only_loss=True, max_length=None, trust_remote_code=True,
                 model_init_kwargs={"dtype": "float32", "trust_remote_code": True})
trainer = SFTTrainer(model=sys.argv[1], args=args, train_dataset=Dataset.from_list(rows))
trainer.train()
print(json.dumps({"model": type(trainer.model).__module__, "processor": type(trainer.processing_class).__name__,
                  "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                  "package_imported": "modeling_ase_mllm" in sys.modules}))
"""


def test_sft_trainer_trains_a_hub_folder_by_path_with_remote_code_only(make_model, processor, tmp_path):
    folder = tmp_path / "hub"
    make_model().save_pretrained(folder)
    processor.save_pretrained(folder)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", HUB_FOLDER_SFT, str(folder), str(tmp_path / "out")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules.") and report["processor"] == "AseMllmProcessor"
    assert not report["package_imported"] and len(report["losses"]) == 2
    assert all(6.0 < loss < 8.0 for loss in report["losses"])


# ------------------------------------------------------------------------------------------------ resume and DDP


def write_recipe(path: Path, per_device: int, effective: int, extra: str = "") -> Path:
    """A recipe file on top of `mini`: the given batch sizes, a loss value every step, a checkpoint every 10."""
    path.write_text(
        "base_recipe: mini\n"
        f"effective_batch_size: {effective}\n"
        f"per_device_train_batch_size: {per_device}\n"
        "logging_steps: 1\n"
        "save_steps: 10\n"
        "disable_tqdm: true\n" + extra,
        encoding="utf-8",
    )
    return path


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_resume_from_checkpoint_gives_the_same_weights(conversations, saved_conversations, tmp_path):
    """20 steps straight vs the same run's step-10 checkpoint resumed for 10 steps (shuffled data, cosine schedule).

    The resumed run starts from a differently initialised model, so it can only match by loading the checkpoint.
    """
    recipe = write_recipe(tmp_path / "resume.yaml", per_device=2, effective=2)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(str(recipe), str(saved_conversations), model="tiny", output_dir=str(straight), max_steps=20)

    other_init = tmp_path / "other-init"
    build_tiny_model(seed=1).save_pretrained(other_init)
    build_processor(build_tokenizer(assistant_texts(conversations))).save_pretrained(other_init)
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-10", resumed / "checkpoint-10")
    train(str(recipe), str(saved_conversations), model=str(other_init), output_dir=str(resumed), max_steps=20,
          resume=True)

    a, b = saved_weights(straight), saved_weights(resumed)
    at_step_10 = saved_weights(straight / "checkpoint-10")
    assert a.keys() == b.keys()
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((a[k] - at_step_10[k]).abs().max()) for k in a)
    print(f"\nresume: max |straight - resumed| = {max_diff:.3g} (weights moved {moved:.3g} in steps 11-20)")
    assert moved > 1e-3
    assert max_diff <= 1e-6


def run_train_command(launcher: list[str], recipe: Path, data: Path, output_dir: Path, steps: int, *extra) -> str:
    """`ase-mllm train` in a subprocess on CPU (both DDP and the reference run the same device and code)."""
    command = [*launcher, "-m", "modeling_ase_mllm.cli", "train", "--recipe", str(recipe), "--data", str(data),
               "--model", "tiny", "--output-dir", str(output_dir), "--max-steps", str(steps), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def loss_curve(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_double_batch(saved_conversations, tmp_path):
    """`accelerate launch` of the DDP config (gloo on CPU) vs one process with the per-device batch doubled."""
    steps = 6
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "configuration/accelerate/ddp.yaml"), "--num_processes", "2",
                  "--num_cpu_threads_per_process", "1"]
    two = run_train_command(accelerate, write_recipe(tmp_path / "ddp.yaml", 1, 2), saved_conversations,
                            tmp_path / "two", steps)
    one = run_train_command([sys.executable], write_recipe(tmp_path / "one.yaml", 2, 2), saved_conversations,
                            tmp_path / "one", steps)
    curves, max_diff = compare_two_with_one("DDP", two, one, tmp_path / "two", tmp_path / "one", steps)
    assert max_diff <= 1e-4
    assert curves[0][-1] < curves[0][0]


def compare_two_with_one(name: str, two: str, one: str, two_dir: Path, one_dir: Path, steps: int):
    """The loss curves of a 2-process and a 1-process `ase-mllm train` (their stdout and folders), printed; returns
    `([two, one], max |difference|)` after checking that both ran one optimizer step per step."""
    assert "2 process(es), gradient accumulation 1" in two and "1 process(es), gradient accumulation 1" in one
    curves = [loss_curve(two_dir), loss_curve(one_dir)]
    assert len(curves[0]) == len(curves[1]) == steps
    max_diff = max(abs(a - b) for a, b in zip(*curves))
    print(f"\n{name}: 2 processes {curves[0]}\n{' ' * len(name)}  1 process   {curves[1]}\n"
          f"{' ' * len(name)}  max diff {max_diff:.3g}")
    return curves, max_diff


def test_no_ias_recipe_trains_plain_internvl(conversations, saved_conversations, tmp_path):
    """Table II's ablation through `train()`: gates zeroed and frozen, every IAS and ViT weight left as it was."""
    start = tmp_path / "start"
    build_tiny_model(gate=0.5).save_pretrained(start)
    build_processor(build_tokenizer(assistant_texts(conversations))).save_pretrained(start)
    recipe = write_recipe(tmp_path / "no-ias.yaml", per_device=2, effective=2, extra="ias: false\n")
    train(str(recipe), str(saved_conversations), model=str(start), output_dir=str(tmp_path / "out"), max_steps=3)

    before, after = saved_weights(start), saved_weights(tmp_path / "out")
    gates = [name for name in after if name.endswith("saliency_gate.weight")]
    assert len(gates) == 2 and all(torch.equal(after[name], torch.zeros_like(after[name])) for name in gates)
    vision = [name for name in after if "vision_tower." in name and name not in gates]
    assert vision and all(torch.equal(after[name], before[name]) for name in vision)
    assert not torch.equal(after["model.multi_modal_projector.linear_1.weight"],
                           before["model.multi_modal_projector.linear_1.weight"])


@pytest.mark.slow
def test_three_steps_of_the_paper_recipe(family, conversations, saved_conversations, tmp_path):
    """The family's bundled "FT + IASC" recipe on PCCD (Table II / III: SFT, LoRA on the LLM, projector and IAS
    trained, ViT frozen, lr 4e-5, cosine, warmup 3 %), only scaled down: a tiny model converted-style (gates at 0),
    one picture per photo, and one batch of the four critiques, the same batch every step, so that the loss can only
    fall by learning."""
    start = tmp_path / "start"
    family.make_model(gate=0.0).save_pretrained(start)
    family.processor.save_pretrained(start)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"base_recipe: {family.paper_recipe}\neffective_batch_size: 4\nper_device_train_batch_size: 4\n"
                      "max_patches: 1\nlogging_steps: 1\ndataloader_num_workers: 0\ndisable_tqdm: true\n",
                      encoding="utf-8")
    bundled, _ = parse_recipe(recipe=family.paper_recipe, accelerator=False)
    assert (bundled.vision, bundled.projector, bundled.llm, bundled.ias) == ("frozen", "train", "lora", True)

    trainer = train(str(recipe), str(saved_conversations), model=str(start), output_dir=str(tmp_path / "out"),
                    max_steps=3)
    curve = loss_curve(tmp_path / "out")
    print(f"\n{family.paper_recipe} at tiny size, 3 steps: losses {curve}")
    assert len(curve) == 3 and curve[-1] < curve[0]

    # Only the answer and its <|im_end|> carry labels (the chat template's {% generation %} block).
    batch = trainer.data_collator([trainer.train_dataset[index] for index in range(2)])
    for row, example in enumerate(conversations.select(range(2))):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert family.tokenizer.decode(labelled) == answer(example) + "<|im_end|>"

    # What trained: the IAS weights (gates opened) and the projector in full, LoRA on the LLM; the ViT did not.
    before, adapter = saved_weights(start), load_file(tmp_path / "out" / "adapter_model.safetensors")
    gates = [name for name in adapter if name.endswith("saliency_gate.weight")]
    assert len(gates) == 2 and all(adapter[name].abs().max() > 0 for name in gates)
    assert any("multi_modal_projector" in name for name in adapter) and any("lora_" in name for name in adapter)
    first_block = f"model.vision_tower.encoder.{family.vision_layers_attribute}.0"
    assert not any(f"{first_block}.mlp." in name for name in adapter)
    trained_block = family.vision_layers(trainer.model.get_base_model())[0]
    assert torch.equal(before[f"{first_block}.mlp.fc1.weight"], trained_block.mlp.fc1.weight.detach())


# ------------------------------------------------------------------------------------------------ freezing and LoRA


def parameter_names(module: torch.nn.Module, prefix: str) -> set[str]:
    return {f"{prefix}.{name}" for name, _ in module.named_parameters()}


def parts(model) -> dict[str, set[str]]:
    """Parameter names per part, found by module type and attribute (not by the name patterns under test)."""
    ias = set()
    for name, module in model.named_modules():
        if isinstance(module, (AseMllmSaliencyEmbeddings, AseMllmSaliencyCrossAttention, AseMllmSaliencyGate)):
            ias |= parameter_names(module, name)
        if isinstance(module, AseMllmVisionLayer) and module.has_saliency_cross_attention:
            ias |= parameter_names(module.saliency_query_norm, f"{name}.saliency_query_norm")
            ias |= parameter_names(module.saliency_key_value_norm, f"{name}.saliency_key_value_norm")
    return {
        "ias": ias,
        "vision": parameter_names(model.model.vision_tower, "model.vision_tower") - ias,
        "projector": parameter_names(model.model.multi_modal_projector, "model.multi_modal_projector"),
        "llm": parameter_names(model.model.language_model, "model.language_model") | {"lm_head.weight"},
        "eat": parameter_names(model.model.saliency_model, "model.saliency_model"),
    }


def test_parts_cover_the_model_and_ias_has_the_documented_size(make_model):
    model = make_model()
    groups = parts(model)
    everything = {name for name, _ in model.named_parameters()}
    assert set().union(*groups.values()) == everything and sum(map(len, groups.values())) == len(everything)
    # README: per IAS block 4C² + 9C, once 2D + DC + C; tiny C = 32, D = 16, 2 blocks.
    sizes = dict(model.named_parameters())
    assert sum(sizes[name].numel() for name in groups["ias"]) == 2 * (4 * 32**2 + 9 * 32) + (2 * 16 + 16 * 32 + 32)


@pytest.mark.parametrize("vision", ["frozen", "train"])
@pytest.mark.parametrize("llm", ["full", "frozen"])
@pytest.mark.parametrize("ias", [True, False])
@pytest.mark.parametrize("projector", ["train", "frozen"])
def test_freezing_presets_train_exactly_their_parts(make_model, vision, llm, ias, projector):
    model = make_model(gate=0.3)
    trainable = set(apply_freezing(model, FreezingPreset(vision=vision, projector=projector, llm=llm, ias=ias)))
    groups = parts(model)
    expected = (groups["ias"] if ias else set()) | (groups["vision"] if vision == "train" else set())
    expected |= (groups["projector"] if projector == "train" else set()) | (groups["llm"] if llm == "full" else set())
    assert trainable == expected
    assert trainable == {name for name, p in model.named_parameters() if p.requires_grad}
    assert not trainable & groups["eat"]
    gates = [p for name, p in model.named_parameters() if name.endswith("saliency_gate.weight")]
    assert len(gates) == 2 and all(torch.equal(g, torch.full_like(g, 0.3 if ias else 0.0)) for g in gates)


def test_lora_targets_only_the_language_model_projections(make_model):
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    assert re_fullmatch(LLM_LORA_TARGET_MODULES, "model.language_model.layers.3.self_attn.qkv_proj")  # Phi-3
    assert not re_fullmatch(LLM_LORA_TARGET_MODULES, "model.vision_tower.encoder.layer.0.attention.q_proj")
    assert not re_fullmatch(LLM_LORA_TARGET_MODULES, "model.vision_tower.encoder.layer.0.saliency_cross_attention.k_proj")

    model = make_model()
    groups = parts(model)
    peft_model = get_peft_model(model, lora_config_for(model))
    projections = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    lora_layers = {name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}
    assert lora_layers == {f"base_model.model.model.language_model.layers.{i}.{p}" for i in range(2) for p in projections}

    def trained_copy(name: str) -> str:  # PEFT's name for the trained copy of a `modules_to_save` parameter
        for module in ("saliency_embeddings", "saliency_query_norm", "saliency_key_value_norm",
                       "saliency_cross_attention", "saliency_gate", "multi_modal_projector"):
            head, found, tail = name.partition(f"{module}.")
            if found:
                return f"base_model.model.{head}{module}.modules_to_save.default.{tail}"
        raise AssertionError(name)

    expected = {f"{layer}.lora_{ab}.default.weight" for layer in lora_layers for ab in "AB"}
    expected |= {trained_copy(name) for name in groups["ias"] | groups["projector"]}
    trainable_by_peft = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable_by_peft == expected
    # The freezing preset agrees with PEFT and keeps EAT and every `original_module` copy frozen.
    assert set(apply_freezing(peft_model, FreezingPreset(llm="lora"))) == expected


def re_fullmatch(pattern: str, name: str) -> bool:
    return re.fullmatch(pattern, name) is not None


def test_lora_without_ias_trains_no_ias_weight(make_model):
    from peft import get_peft_model

    model = make_model()
    preset = FreezingPreset(llm="lora", ias=False)
    peft_model = get_peft_model(model, lora_config_for(model, preset=preset))
    trainable = apply_freezing(peft_model, preset)
    assert trainable and not [name for name in trainable if "saliency" in name]
    assert {name.split(".modules_to_save")[0].rsplit(".", 1)[-1] for name in trainable if "modules_to_save" in name} == {
        "multi_modal_projector"
    }


# ------------------------------------------------------------------------------------------------ launch configs


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(REPO / "configuration/accelerate" / f"{name}.yaml")).distributed_type
             for name in ("ddp", "fsdp", "deepspeed-zero3")}
    assert {name: str(kind).rsplit(".", 1)[-1] for name, kind in kinds.items()} == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero3": "DEEPSPEED"
    }
