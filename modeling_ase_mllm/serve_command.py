"""`ase-mllm serve`: its arguments and checks (the server itself: `modeling_ase_mllm.serving`).

Building this parser imports nothing heavy; the handler imports FastAPI, uvicorn and transformers' server.
"""

from __future__ import annotations


def add_serve_command(subparsers) -> None:
    """Register `ase-mllm serve` (argument types and checks: `modeling_ase_mllm.cli`)."""
    from .cli import add_dtype_option, add_photo_limit_options, positive_int

    command = subparsers.add_parser(
        "serve", help="serve critiques over an OpenAI-compatible HTTP API (transformers' own server)",
        description="Load the model and serve POST /v1/chat/completions on transformers' server (transformers "
                    "serve's app, handlers and model manager). Images come as data URLs or local paths (http(s) "
                    "with --allow-remote-images); extra body fields: aspect (e.g. composition) and saliency (true, "
                    "'map' or 'picture': each image's saliency as a PNG data URL in the message). Needs the serve "
                    'extra: pip install "ase-mllm[serve]". Ctrl-C (or SIGTERM) stops it.',
    )
    command.add_argument("--model", required=True, help="model folder (with config.json) or Hub id (owner/name)")
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    command.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default: %(default)s)")
    command.add_argument("--device", help="a torch device: cpu, cuda, cuda:1 ... (default: cuda when available)")
    add_dtype_option(command)
    command.add_argument("--max-tiles", type=int, metavar="N",
                         help="at most N 448 px tiles per image (default: the model's own setting)")
    add_photo_limit_options(command)
    command.add_argument("--allow-remote-images", action="store_true",
                         help="also fetch http(s) image URLs (each at most --max-file-mb); off by default")
    command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                         help="uvicorn's log level (default: %(default)s)")
    command.set_defaults(handler=run_serve_command)


def run_serve_command(args) -> int:
    from .cli import check_device, check_max_tiles, check_model, photo_limits

    parser = args.parser
    if args.port > 65535:
        parser.error(f"argument --port: must be at most 65535, got {args.port}")
    check_model(parser, args.model)
    check_max_tiles(parser, args.max_tiles)
    check_device(parser, args.device)
    try:
        from .serving import serve
    except ImportError as error:
        raise ImportError(f"ase-mllm serve needs FastAPI, uvicorn and openai ({error}): "
                          'pip install "ase-mllm[serve]"') from error
    serve(args.model, host=args.host, port=args.port, log_level=args.log_level, device=args.device, dtype=args.dtype,
          max_tiles=args.max_tiles, limits=photo_limits(args), allow_remote_images=args.allow_remote_images)
    return 0
