"""`ase-mllm convert`: an ASE-MLLM folder from an InternVL2/2.5/3 checkpoint (and the EAT weights)."""

from pathlib import Path

from .arguments import check_existing, positive_int


def add_parser(subparsers):
    command = subparsers.add_parser(
        "convert", help="build an ASE-MLLM folder from an InternVL2/2.5/3 checkpoint (+ EAT)",
        description="Convert an InternVL checkpoint folder (OpenGVLab remote-code or transformers format) into an "
                    "ASE-MLLM folder, streaming shard by shard; the new IAS weights start at a zero gate. A source "
                    "tokenizer.model (InternLM2's, InternVL2-2B/8B/26B) is read with sentencepiece and protobuf: "
                    'pip install "ase-mllm[convert]". The output needs neither, nor any tokenizer remote code.')
    command.add_argument("source", help="InternVL checkpoint folder (OpenGVLab remote-code or transformers format)")
    command.add_argument("output", help="folder to write")
    command.add_argument("--eat", help="EAT AVA checkpoint (.pth or .safetensors); without it: spectral residual")
    command.add_argument("--max-shard-size", type=positive_int, metavar="BYTES",
                         help="bytes per output shard (default: convert.internvl.DEFAULT_MAX_SHARD_SIZE, 5 GiB)")
    command.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                         help="dtype of every floating tensor written (default: the source's)")
    command.set_defaults(handler=main, kept=kept)
    return command


def main(args) -> int:
    """Build an ASE-MLLM folder from an InternVL checkpoint (`convert.internvl.convert_internvl_checkpoint`)."""
    parser = args.parser
    check_existing(parser, "source", args.source, "folder")
    if not (Path(args.source) / "config.json").is_file():
        parser.error(f"argument source: folder {args.source!r} has no config.json, so it holds no checkpoint")
    check_existing(parser, "--eat", args.eat)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        parser.error(f"argument output: {args.output!r} is an existing file; give a folder")
    import torch

    from ..convert.internvl import DEFAULT_MAX_SHARD_SIZE, convert_internvl_checkpoint

    dtype = getattr(torch, args.dtype) if args.dtype else None
    summary = convert_internvl_checkpoint(args.source, args.output, args.eat, args.max_shard_size or DEFAULT_MAX_SHARD_SIZE,
                                          dtype)
    print(f"{summary['format']} checkpoint -> {args.output}: {summary['converted_tensors']} tensors converted, "
          f"{len(summary['new_weights'])} new (IAS, zero gate{', EAT' if args.eat else ''}); saliency source "
          f"{summary['saliency_source']!r}. New weights listed in {Path(args.output) / 'conversion.json'}.")
    return 0


def kept(args) -> str:
    return f"{args.output} is incomplete: delete it and convert again"
