"""`ase-mllm convert`: an ASE-MLLM folder from an InternVL2/2.5/3 or Qwen-VL-Chat checkpoint (and the EAT weights)."""

from pathlib import Path

from .arguments import check_existing, non_negative_int, positive_int


def add_parser(subparsers):
    command = subparsers.add_parser(
        "convert", help="build an ASE-MLLM folder from an InternVL2/2.5/3 or Qwen-VL-Chat checkpoint (+ EAT)",
        description="Convert an InternVL checkpoint folder (OpenGVLab remote-code or transformers format) or a "
                    "Qwen-VL-Chat folder (its remote-code format) into an ASE-MLLM folder, streaming shard by shard; "
                    "the new IAS weights start at a zero gate. A source tokenizer.model (InternLM2's, "
                    "InternVL2-2B/8B/26B) is read with sentencepiece and protobuf, Qwen's qwen.tiktoken with tiktoken: "
                    'pip install "ase-mllm[convert]". The output needs none of them, nor any tokenizer remote code.')
    command.add_argument("source", help="InternVL checkpoint folder (OpenGVLab remote-code or transformers format) "
                                        "or Qwen-VL-Chat folder")
    command.add_argument("output", help="folder to write")
    command.add_argument("--eat", help="EAT AVA checkpoint (.pth or .safetensors); without it: spectral residual")
    command.add_argument("--max-shard-size", type=positive_int, metavar="BYTES",
                         help="bytes per output shard (default: convert.internvl.DEFAULT_MAX_SHARD_SIZE, 5 GiB)")
    command.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                         help="dtype of every floating tensor written (default: the one the source's weights are "
                              "stored in, whatever its config's torch_dtype says)")
    command.add_argument("--seed", type=non_negative_int, default=0,
                         help="seed of the new IAS weights' initialisation (default 0): the same source, EAT file, "
                              "dtype and seed give the same bytes; recorded in conversion.json")
    command.add_argument("--overwrite", action="store_true",
                         help="replace an output folder that is not empty (whole, once the new one is complete)")
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """Build an ASE-MLLM folder from an InternVL checkpoint (`convert.internvl.convert_internvl_checkpoint`) or a
    Qwen-VL-Chat one (`convert.qwen_vl.convert_qwen_vl_checkpoint`)."""
    parser = args.parser
    check_existing(parser, "source", args.source, "folder")
    if not (Path(args.source) / "config.json").is_file():
        parser.error(f"argument source: folder {args.source!r} has no config.json, so it holds no checkpoint")
    check_existing(parser, "--eat", args.eat)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        parser.error(f"argument output: {args.output!r} is an existing file; give a folder")
    if output.is_dir() and any(output.iterdir()) and not args.overwrite:
        parser.error(f"argument output: folder {args.output!r} is not empty; pass --overwrite to replace it (whole, "
                     "once the new checkpoint is complete), or give another folder")
    import torch

    from ..convert.internvl import DEFAULT_MAX_SHARD_SIZE, convert_internvl_checkpoint
    from ..convert.qwen_vl import convert_qwen_vl_checkpoint, is_qwen_vl_folder

    dtype = getattr(torch, args.dtype) if args.dtype else None
    convert = convert_qwen_vl_checkpoint if is_qwen_vl_folder(args.source) else convert_internvl_checkpoint
    summary = convert(args.source, args.output, args.eat, args.max_shard_size or DEFAULT_MAX_SHARD_SIZE, dtype,
                      seed=args.seed, overwrite=args.overwrite)
    print(f"{summary['format']} checkpoint -> {args.output}: {summary['converted_tensors']} tensors converted, "
          f"{len(summary['new_weights'])} new (IAS, zero gate{', EAT' if args.eat else ''}); saliency source "
          f"{summary['saliency_source']!r}. New weights listed in {Path(args.output) / 'conversion.json'}.")
    return 0


def kept(args) -> str:
    return f"{args.output} is as it was (a conversion goes there only once it is complete)"
