"""Three steps of the Table III "FT + IASC" recipe at tiny size: the loss goes down and only the answer is labelled."""

import json

import pytest

import torch
from safetensors.torch import load_file

from modeling_ase_mllm.data.conversations import to_conversations
from modeling_ase_mllm.data.mini_aic import load_mini_aic
from modeling_ase_mllm.training.recipes import parse_recipe
from modeling_ase_mllm.training.train import train


@pytest.mark.slow
def test_three_steps_of_the_ft_iasc_recipe(tmp_path, make_qwen_vl_model, qwen_vl_processor):
    """`qwen-vl-pccd` as bundled (SFT, LoRA r 64 on the LLM, Resampler and IAS trained, ViT frozen, lr 4e-5, cosine,
    warmup 3 %), only scaled down: a tiny model converted-style (gates at 0) and one batch of four critiques, the
    same batch every step, so that the loss can only fall by learning."""
    conversations = to_conversations(load_mini_aic(["train"])["train"], mode="sample").select(range(4))
    data = tmp_path / "data"
    conversations.save_to_disk(str(data))
    start = tmp_path / "start"
    make_qwen_vl_model(gate=0.0).save_pretrained(start)
    qwen_vl_processor.save_pretrained(start)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("base_recipe: qwen-vl-pccd\neffective_batch_size: 4\nper_device_train_batch_size: 4\n"
                      "logging_steps: 1\ndataloader_num_workers: 0\ndisable_tqdm: true\n", encoding="utf-8")
    bundled, _ = parse_recipe(recipe="qwen-vl-pccd", accelerator=False)
    assert (bundled.vision, bundled.projector, bundled.llm, bundled.ias) == ("frozen", "train", "lora", True)

    trainer = train(str(recipe), str(data), model=str(start), output_dir=str(tmp_path / "out"), max_steps=3)
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    print(f"\nqwen-vl-pccd at tiny size, 3 steps: losses {losses}")
    assert len(losses) == 3 and losses[-1] < losses[0]

    # Only the answer and its <|im_end|> carry labels (the chat template's {% generation %} block).
    batch = trainer.data_collator([trainer.train_dataset[index] for index in range(2)])
    tokenizer = qwen_vl_processor.tokenizer
    for row, example in enumerate(conversations.select(range(2))):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert tokenizer.decode(labelled) == example["messages"][1]["content"][0]["text"] + "<|im_end|>"

    # What trained: the IAS weights (gates opened) and the Resampler in full, LoRA on the LLM; the ViT did not.
    before, adapter = load_file(start / "model.safetensors"), load_file(tmp_path / "out" / "adapter_model.safetensors")
    gates = [name for name in adapter if name.endswith("saliency_gate.weight")]
    assert len(gates) == 2 and all(adapter[name].abs().max() > 0 for name in gates)
    assert any("multi_modal_projector" in name for name in adapter) and any("lora_" in name for name in adapter)
    assert not any(".vision_tower.encoder.layers.0.mlp." in name for name in adapter)
    assert torch.equal(before["model.vision_tower.encoder.layers.0.mlp.fc1.weight"],
                       trainer.model.get_base_model().model.vision_tower.encoder.layers[0].mlp.fc1.weight.detach())
