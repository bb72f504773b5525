"""`ase-mllm serve`: critiques over an OpenAI-compatible HTTP API (the server itself: `inference.serving`).

Building this parser imports nothing heavy; `main` imports FastAPI, uvicorn and transformers' server.
"""

from .arguments import add_photo_options, check_photo_options, photo_limits, positive_int


def add_parser(subparsers):
    command = subparsers.add_parser(
        "serve", help="serve critiques over an OpenAI-compatible HTTP API (transformers' own server)",
        description="Load the model and serve POST /v1/chat/completions on transformers' server (transformers "
                    "serve's app, handlers and model manager). Images come as data URLs or local paths (http(s) "
                    "with --allow-remote-images); extra body fields: aspect (e.g. composition) and saliency (true, "
                    "'map' or 'picture': each image's saliency as a PNG data URL in the message). Needs the serve "
                    'extra: pip install "ase-mllm[serve]". Ctrl-C (or SIGTERM) stops it.',
    )
    add_photo_options(command, dtype=True, quantization=True, images=False)
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    command.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default: %(default)s)")
    command.add_argument("--allow-remote-images", action="store_true",
                         help="also fetch http(s) image URLs (each at most --max-file-mb); off by default")
    command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                         help="uvicorn's log level (default: %(default)s)")
    command.set_defaults(handler=main)
    return command


def main(args) -> int:
    """Serve the model until Ctrl-C or SIGTERM."""
    if args.port > 65535:
        args.parser.error(f"argument --port: must be at most 65535, got {args.port}")
    check_photo_options(args)
    try:
        from ..inference.serving import serve
    except ImportError as error:
        raise ImportError(f"ase-mllm serve needs FastAPI, uvicorn and openai ({error}): "
                          'pip install "ase-mllm[serve]"') from error
    serve(args.model, host=args.host, port=args.port, log_level=args.log_level, device=args.device, dtype=args.dtype,
          max_tiles=args.max_tiles, limits=photo_limits(args), allow_remote_images=args.allow_remote_images,
          quantization=args.quantization)
    return 0
