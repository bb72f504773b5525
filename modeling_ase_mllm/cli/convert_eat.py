"""`ase-mllm convert-eat`: check the released EAT AVA `.pth` strictly and write it once as safetensors."""

from .arguments import check_existing, check_output_file


def add_parser(subparsers):
    command = subparsers.add_parser(
        "convert-eat", help="check the released EAT AVA .pth (weights only, strict) and write safetensors",
        description="Read the EAT authors' AVA checkpoint with weights_only=True, check it strictly against "
                    "EAT's parameter names and shapes, and write it once as .safetensors.")
    command.add_argument("checkpoint", help="e.g. AVA_AOT_vacc_0.8259_srcc_0.7596_vlcc_0.7710.pth")
    command.add_argument("--output", "--out", help="the .safetensors to write (default: next to the checkpoint)")
    command.add_argument("--eat-config", metavar="JSON",
                         help="a JSON file of AseMllmEatConfig fields, for an EAT of another size (default: the "
                              "released AVA DAT-Base)")
    command.set_defaults(handler=main)
    return command


def main(args) -> int:
    """Check the released EAT `.pth` strictly and write it once as safetensors."""
    check_existing(args.parser, "checkpoint", args.checkpoint)
    check_output_file(args.parser, "--output", args.output)
    check_existing(args.parser, "--eat-config", args.eat_config)
    from ..configuration_ase_mllm import AseMllmEatConfig
    from ..convert.eat import convert_eat_checkpoint

    config = AseMllmEatConfig.from_json_file(args.eat_config) if args.eat_config else None
    print(convert_eat_checkpoint(args.checkpoint, args.output, config))
    return 0
