"""Fine-tuning ASE-MLLM from a recipe: `main(script_args, training_args)` as TRL's `scripts/sft.py`, and `train()`.

TRL's `SFTTrainer` in vision mode (its own collator; `assistant_only_loss`) or `transformers.Trainer` with
`AseMllmDataCollator` (`trainer: hf`), fully or with PEFT LoRA, the freezing preset applied to the model the trainer
trains. Heavy optional dependencies (trl, peft, datasets) are imported where they are used.

Before step 0 the run checks its output folder (an earlier run's checkpoints are continued with `--resume`, from
the newest complete one, or deleted with `--overwrite`; `checkpoints`) and its data (images that do not decode,
examples over the length limit; `screening`). A full disk or an out-of-memory error ends it with one line that says
what to do (`run_error`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from .arguments import TINY_MODEL
from .checkpoints import DiskFullReporter, check_fresh_output, disk_full_error, is_disk_full, resume_checkpoint
from .freezing import apply_freezing, count_trainable, lora_config_for
from .recipes import parse_recipe, recipe_name
from .screening import screen_dataset


def load_training_conversations(script_args):
    """Training conversations from a dataset name (`pccd`, `mini_aic`, ... with `data_root`) or a saved dataset.

    A folder written by `save_to_disk` may hold a `DatasetDict` (the `train_split` is used) or a `Dataset`, in the
    AIC schema (turned into conversations as the script arguments say) or already as conversations (`images` +
    `messages`).
    """
    from ..data.conversations import to_conversations
    from ..data.prepared import load_split

    data = script_args.dataset
    if Path(data).is_dir():
        check_prepared_protocol(data, script_args.protocol)
    dataset = load_split(data, script_args.train_split, script_args.data_root, script_args.protocol)
    if "messages" in dataset.column_names:
        return dataset
    return to_conversations(dataset, script_args.conversations, script_args.aspect_conditioned,
                            seed=script_args.conversation_seed, prompt=script_args.prompt)


def check_prepared_protocol(folder: str, protocol: str | None) -> None:
    """A recipe that names a protocol trains only on a folder prepared under it (DPC2022's protocols differ in what
    `train` holds); a folder that records no protocol is taken as it is."""
    from ..data.prepared import prepared_info

    recorded = ((prepared_info(folder) or {}).get("protocol") or {}).get("name")
    if protocol is not None and recorded is not None and recorded != protocol:
        raise ValueError(f"{folder} was prepared under protocol {recorded!r}, the recipe names {protocol!r}: prepare it "
                         f"again with --protocol {protocol}, or pass --protocol {recorded}")


def assistant_texts(conversations) -> list[str]:
    return [
        item["text"]
        for messages in conversations["messages"]
        for message in messages
        if message["role"] == "assistant"
        for item in message["content"]
        if item.get("text")
    ]


def load_model_for_training(script_args, conversations=None):
    """The checkpoint and its processor, tiling at most `max_patches` tiles per image.

    The model is loaded in `dtype` (float32 on CPU). `model == "tiny"` builds a random tiny ASE-MLLM whose tokenizer
    is trained on the training critiques (CPU demos and tests); the same data gives the same tokenizer and model in
    every process and on resume.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..saliency_ase_mllm import check_processor_saliency

    if script_args.model == TINY_MODEL:
        if script_args.quantization is not None:
            raise ValueError(f"`quantization` quantises a checkpoint as it loads; the random `model: {TINY_MODEL}` is "
                             "built, not loaded: save it and give its folder")
        from ..testing.tiny import build_processor, build_tiny_model, build_tokenizer

        corpus = assistant_texts(conversations) if conversations is not None else []
        model = build_tiny_model(seed=0)
        processor = build_processor(build_tokenizer(corpus), saliency_config=model.config.saliency_config)
    else:
        from ..convert.tokenizer import check_tokenizer_is_ours

        check_tokenizer_is_ours(script_args.model)
        processor = AutoProcessor.from_pretrained(script_args.model)
        # CPU runs train in float32 (bf16 is forced off there, see `recipes.CPU_OVERRIDES`).
        dtype = getattr(torch, script_args.dtype) if torch.accelerator.is_available() else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(script_args.model, dtype=dtype,
                                                            **quantized_loading(script_args.quantization, dtype))
    processor.image_processor.max_patches = script_args.max_patches
    check_processor_saliency(processor.image_processor, model.config.saliency_config, script_args.model)
    return model.train(), processor


def quantized_loading(scheme: str | None, dtype: torch.dtype) -> dict:
    """`from_pretrained` arguments for a quantised base: its config, and this process's device (a bitsandbytes model
    cannot be moved after loading, so the Trainer leaves it where it loaded)."""
    if scheme is None:
        return {}
    from accelerate import PartialState

    from ..utils.quantization import quantization_config

    return {"quantization_config": quantization_config(scheme, dtype), "device_map": {"": PartialState().device}}


def keep_peft_dtypes(model) -> None:
    """Give the trainable weights of a QLoRA model back the dtypes PEFT makes them in: LoRA adapters in float32
    (PEFT's `autocast_adapter_dtype`), the trained copies of `modules_to_save` modules (IAS, projector) in the dtype of
    the modules they copy.

    TRL's SFTTrainer turns every trainable parameter of a bitsandbytes model into bfloat16 (the QLoRA paper's choice
    for adapters). Then the copies would meet the frozen float modules' activations in another dtype, and a saved
    adapter would not give back the trained model's logits: `PeftModel.from_pretrained` loads it in float32.
    """
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        if not parameter.requires_grad:
            continue
        original = parameters.get(name.replace(".modules_to_save.default.", ".original_module."))
        if ".modules_to_save." in name and original is not None:
            parameter.data = parameter.data.to(original.dtype)
        elif ".lora_" in name:
            parameter.data = parameter.data.to(torch.float32)


def build_trainer(script_args, training_args, model, processor, train_dataset):
    """The recipe's trainer around `model`, with LoRA (`llm: lora`) and the freezing preset applied; on a quantised
    model (QLoRA), after PEFT's `prepare_model_for_kbit_training`."""
    preset = script_args.freezing
    quantized = getattr(model, "hf_quantizer", None) is not None  # what transformers itself asks
    if quantized:
        from peft import prepare_model_for_kbit_training

        # Activation checkpointing stays the recipe's (`activation_checkpointing`), as without quantisation.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = None
    if preset.llm == "lora":
        peft_config = lora_config_for(model, r=script_args.lora_r, lora_alpha=script_args.lora_alpha,
                                      lora_dropout=script_args.lora_dropout, preset=preset)
    if script_args.trainer == "sft":
        from trl import SFTTrainer

        trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_dataset, processing_class=processor,
                             peft_config=peft_config)
    else:
        from transformers import Trainer

        from .collator import AseMllmDataCollator

        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        # The collator reads the raw `images`/`messages` columns, which Trainer would otherwise drop.
        training_args.remove_unused_columns = False
        trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset,
                          data_collator=AseMllmDataCollator(processor), processing_class=processor)
    apply_freezing(trainer.model, preset)
    if quantized:
        keep_peft_dtypes(trainer.model)
    return trainer


@contextmanager
def whole_random_model(script_args):
    """Build the random tiny model whole in every process, also under DeepSpeed ZeRO-3 (the same seed gives the
    same weights; DeepSpeed partitions them when training starts).

    Under ZeRO-3 transformers builds every model made through `from_config` inside `deepspeed.zero.Init`: the
    language model inside ours would come out partitioned, and our own `post_init` would then meet its empty
    shards. transformers' `set_zero3_state` is how it marks a construction that is already handled (its nested
    `from_config` calls skip `zero.Init`). A checkpoint (`from_pretrained`) loads partitioned as usual.
    """
    if script_args.model != TINY_MODEL:
        yield
        return
    from transformers.modeling_utils import set_zero3_state

    with set_zero3_state():
        yield


def check_sharding_engine(trainer) -> None:
    """Refuse a launch that asked for FSDP or DeepSpeed and would silently get plain DDP.

    accelerate turns an FSDP launch into FSDP only from a multi-accelerator state (CUDA, XPU, NPU, HPU, ...): on
    the CPU, `accelerate launch --config_file fsdp.yaml` trains with DDP, every process holding the whole model.
    """
    for engine, flag, enabled in (("FSDP", "ACCELERATE_USE_FSDP", trainer.is_fsdp_enabled),
                                  ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", trainer.is_deepspeed_enabled)):
        if os.environ.get(flag, "false").lower() == "true" and not enabled:
            kind = str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1]
            raise ValueError(
                f"the launch asks for {engine}, but accelerate runs it only on accelerators (GPUs, XPUs, NPUs, HPUs "
                f"...); here it would train as {kind}, each process holding the whole model. On the CPU, launch "
                "with configuration/accelerate/ddp.yaml"
            )


def resume_request(script_args, training_args) -> str | None:
    """What the run resumes from: "last" (`--resume` alone), a checkpoint folder, or None (a new run)."""
    return script_args.resume or training_args.resume_from_checkpoint or None


def run_error(error: BaseException, trainer, reporter: DiskFullReporter, writing: Path | None, longest: int):
    """The one-line error for a run that stopped: a full disk (what was being written, the last complete
    checkpoint) or no memory left (the longest example, what to lower); None for any other error."""
    output_dir = Path(trainer.args.output_dir)
    writing = reporter.writing or writing
    if writing is not None and is_disk_full(error, writing):
        return disk_full_error(writing, output_dir, optimizer=not trainer.args.save_only_model)
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error):  # CPU
        return MemoryError(
            f"out of memory at step {trainer.state.global_step + 1} (the longest example has {longest:,} tokens, "
            f"{trainer.args.per_device_train_batch_size} per device): lower per_device_train_batch_size, "
            "max_patches or max_length"
        )
    return None


def main(script_args, training_args):
    """Fine-tune as the parsed recipe says and save the result (model or adapter, and processor) in `output_dir`.

    Returns:
        The trainer, after training and saving.
    """
    name = recipe_name(script_args.recipe) if script_args.recipe else "(no recipe)"
    for value, what, flag in ((script_args.dataset, "dataset", "--dataset"), (script_args.model, "model", "--model")):
        if value is None:
            raise ValueError(f"recipe {name!r} names no {what}: pass {flag}")
    output_dir = Path(training_args.output_dir)
    main_process = training_args.process_index == 0
    requested = resume_request(script_args, training_args)
    checkpoint, skipped, removed = None, {}, []
    if requested is None:
        removed = check_fresh_output(output_dir, script_args.overwrite, main_process)
    else:
        checkpoint, skipped = resume_checkpoint(output_dir, requested, optimizer=not training_args.save_only_model)
    conversations = load_training_conversations(script_args)
    with whole_random_model(script_args):
        model, processor = load_model_for_training(script_args, conversations)
    limit = training_args.max_length or model.config.get_text_config().max_position_embeddings
    conversations, screening = screen_dataset(conversations, processor, limit, script_args.bad_images,
                                              script_args.long_critiques)
    trainer = build_trainer(script_args, training_args, model, processor, conversations)
    check_sharding_engine(trainer)
    reporter = DiskFullReporter(output_dir)
    trainer.add_callback(reporter)
    if trainer.is_world_process_zero():
        counts = ", ".join(f"{part} {count:,}" for part, count in sorted(count_trainable(trainer.model).items()))
        print(
            f"[train] recipe {name}: {len(conversations)} conversations, {training_args.world_size} process(es), "
            f"gradient accumulation {training_args.gradient_accumulation_steps}; trainable parameters: {counts}"
        )
        print(f"[train] data: {screening.summary()}")
        if removed:
            print(f"[train] --overwrite: deleted {', '.join(removed)} of the earlier run in {output_dir}")
        if checkpoint is not None:
            passed = "; ".join(f"{folder.name}: {problem}" for folder, problem in skipped.items())
            print(f"[train] resuming from {checkpoint}" + (f"; skipped the incomplete {passed}" if passed else ""))
    writing = None
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        writing = output_dir
        trainer.save_model(output_dir)
        trainer.save_state()  # trainer_state.json: the loss curve (log_history) next to the model
    except Exception as error:
        if (reported := run_error(error, trainer, reporter, writing, screening.longest_kept)) is not None:
            raise reported from error
        raise
    if trainer.is_world_process_zero():
        print(f"[train] saved to {output_dir}")
    return trainer


def train(
    recipe: str | Path,
    data: str | None = None,
    model: str | None = None,
    data_root: str | None = None,
    output_dir: str | None = None,
    max_steps: int | None = None,
    resume: bool | str | None = None,
    **fields,
):
    """Fine-tune from Python: `train("pccd", "/data/pccd_hf", model=..., max_steps=100)`.

    Args:
        recipe: a recipe name (`configuration/recipes/<name>.yaml`) or path.
        data: dataset name or `save_to_disk` folder (default: the recipe's `dataset`).
        model: checkpoint path or Hub id (default: the recipe's `model`).
        data_root: the dataset's folder, for a dataset name.
        output_dir: default `outputs/train/<recipe name>`.
        max_steps: stop after this many optimizer steps (overrides the recipe's epochs).
        resume: `True` continues from the newest complete checkpoint in `output_dir`, a path from that checkpoint.
        fields: any other recipe field (`AseMllmScriptArguments` or `SFTConfig`), e.g. `learning_rate=1e-4`.

    Returns:
        The trainer, after training and saving.
    """
    given = {"dataset": data, "model": model, "data_root": data_root, "output_dir": output_dir, "max_steps": max_steps,
             "resume": "last" if resume is True else resume or None}
    overrides = {key: value for key, value in given.items() if value is not None} | fields
    return main(*parse_recipe(recipe=recipe, overrides=overrides))


__all__ = [
    "assistant_texts",
    "build_trainer",
    "check_sharding_engine",
    "keep_peft_dtypes",
    "load_model_for_training",
    "load_training_conversations",
    "main",
    "quantized_loading",
    "train",
]
