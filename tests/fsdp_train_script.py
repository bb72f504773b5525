"""Five steps of the paper's full fine-tuning recipe (`pccd-full`) at tiny scale, on 1 process or under torch's FSDP2.

    python fsdp_train_script.py DATA OUT STEPS [--save-at N] [--resume CHECKPOINT]
    torchrun --nproc_per_node 2 fsdp_train_script.py ...        (gloo: FSDP2 on the CPU)

The model is sharded as accelerate's `fsdp.yaml` shards it (`fully_shard` on every `_no_split_modules` block: ViT
blocks, decoder layers, EAT; then the whole model); EAT is frozen and the maps are the dataset's precomputed
`saliency` column. Each step takes the next two conversations: the single process both, each of the two FSDP
processes one. The loss is the sum over the step's answer tokens divided by their number over all processes
(as `Trainer` computes it with `num_items_in_batch`), so both layouts compute the same number. Rank 0 writes
the per-step losses to OUT/losses.json; `--save-at` writes a sharded checkpoint (torch.distributed.checkpoint:
model, AdamW and scheduler state), `--resume` continues from one.
"""

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from transformers import get_cosine_schedule_with_warmup

from modeling_ase_mllm.training.collator import AseMllmDataCollator
from modeling_ase_mllm.training.freezing import apply_freezing
from modeling_ase_mllm.training.recipes import parse_recipe
from modeling_ase_mllm.training.train import load_model_for_training, load_training_conversations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("steps", type=int)
    parser.add_argument("--save-at", type=int)
    parser.add_argument("--resume")
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0

    overrides = {"model": "tiny", "dataset": args.data, "max_patches": 1, "output_dir": args.out}
    script_args, training_args = parse_recipe(recipe="pccd-full", overrides=overrides)
    conversations = load_training_conversations(script_args)
    model, processor = load_model_for_training(script_args, conversations)  # float32 on the CPU
    apply_freezing(model, script_args.freezing)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        blocks = model._no_split_modules
        for module in list(model.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=training_args.learning_rate,
                                  weight_decay=training_args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, training_args.get_warmup_steps(args.steps), args.steps)
    collate = AseMllmDataCollator(processor)
    start = 0
    if args.resume:
        state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=args.resume)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        extra = json.loads((Path(args.resume) / "trainer.json").read_text())
        scheduler.load_state_dict(extra["scheduler"])
        start = extra["step"]

    losses = {}
    model.train()
    for step in range(start, args.steps):
        indices = [(2 * step) % len(conversations), (2 * step + 1) % len(conversations)]
        batch = collate([conversations[i] for i in (indices if world == 1 else indices[rank : rank + 1])])
        answer_tokens = batch["labels"].ne(-100).sum()
        if world > 1:
            dist.all_reduce(answer_tokens)
        loss = model(**batch, num_items_in_batch=answer_tokens).loss
        (loss * world).backward()  # FSDP averages the gradients over the processes
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], training_args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        reported = loss.detach().clone()
        if world > 1:
            dist.all_reduce(reported)
        losses[step + 1] = float(reported)
        if args.save_at == step + 1:
            state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
            checkpoint = Path(args.out) / f"checkpoint-{step + 1}"
            dcp.save(state, checkpoint_id=str(checkpoint))
            if rank == 0:
                (checkpoint / "trainer.json").write_text(json.dumps({"step": step + 1,
                                                                     "scheduler": scheduler.state_dict()}))
    if rank == 0:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "losses.json").write_text(json.dumps(losses))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
