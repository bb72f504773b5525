"""`ase-mllm` command line: one module per command, each an `add_parser(subparsers)` and a `main(args)`.

A new command is a module here named in `COMMANDS`. Building the parser imports nothing heavy: each command's
`main` imports what it uses (torch, transformers, datasets), so `ase-mllm --help` and `ase-mllm COMMAND --help`
answer at once (`train --help` builds TRL's parser of every `SFTConfig` field, which imports transformers). Every
`main` checks its arguments before it loads a model; a wrong one exits with status 2, the command's usage and one
sentence naming the flag and what it accepts. Any other error (a file that cannot be read, a model that does not
load) is one line on stderr and status 1; `--debug` (or `ASE_MLLM_DEBUG=1`) shows the traceback instead. Ctrl-C
exits with 130 and one line saying what was kept.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .arguments import DEBUG_ENV, one_line


# In the order `ase-mllm --help` lists them.
COMMANDS = ("demo", "caption", "score", "saliency", "saliency_report", "convert_eat", "convert", "push", "train", "evaluate", "evaluate_score", "serve",
            "prepare_data")


def kept_nothing(args) -> str:
    return "nothing was written"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ase-mllm", description="ASE-MLLM: aesthetic image captioning with saliency.")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks (also: {DEBUG_ENV}=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(commands)
    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=f"show tracebacks (also: {DEBUG_ENV}=1)")
        command.set_defaults(parser=command, done=0)
        if command.get_default("kept") is None:
            command.set_defaults(kept=kept_nothing)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    # `train` hands its flags to its own parser (every SFTConfig field); anything else must be known here.
    if getattr(args, "takes_arguments", False):
        args.arguments = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    name = f"ase-mllm {args.command}"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        message, status = f"{name}: interrupted; {args.kept(args)}", 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # noqa: BLE001  (one line for the user; --debug for the traceback)
        if debug:
            raise
        expected = isinstance(error, (ValueError, OSError, LookupError, MemoryError))
        kind = "error" if expected else f"internal error ({type(error).__name__}, please report it with --debug)"
        message, status = f"{name}: {kind}: {one_line(error)}", 1
    # Printed once the exception (and the frames it holds) is gone, so that a progress bar closed by their
    # release does not write after the message.
    print(message, file=sys.stderr)
    return status


__all__ = ["COMMANDS", "build_parser", "main"]
