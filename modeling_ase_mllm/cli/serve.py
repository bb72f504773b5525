"""`ase-mllm serve`: critiques over an OpenAI-compatible HTTP API (the server itself: `inference.serving`).

Building this parser imports nothing heavy; `main` imports FastAPI, uvicorn and transformers' server.
"""

import ipaddress
import os
import sys

from ..inference.serving_limits import SERVE_MAX_FILE_MB, ServingLimits
from .arguments import (add_photo_options, check_existing, check_photo_options, photo_limits, positive_float,
                        positive_int)


# The API key can come from the environment, so that it appears in no process list (vLLM reads VLLM_API_KEY).
API_KEY_ENV = "ASE_MLLM_API_KEY"
DEFAULTS = ServingLimits()
# `Host` headers a server on a loopback address answers by default: a page that rebinds its own name to 127.0.0.1
# (DNS rebinding) sends that name, and is refused.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def add_parser(subparsers):
    command = subparsers.add_parser(
        "serve", help="serve critiques over an OpenAI-compatible HTTP API (transformers' own server)",
        description="Load the model and serve POST /v1/chat/completions on transformers' server (transformers "
                    "serve's app, handlers and model manager). Images come as data URLs; local files only under "
                    "--allowed-local-media-path, http(s) only with --allow-remote-images. Extra body fields: "
                    "aspect (e.g. composition) and saliency (true, 'map' or 'picture': each image's saliency as a "
                    "PNG data URL in the message). Needs the serve extra: pip install \"ase-mllm[serve]\". Ctrl-C "
                    "(or SIGTERM) stops it. docs/serving.md has the security notes.",
    )
    add_photo_options(command, dtype=True, images=False, max_file_mb=SERVE_MAX_FILE_MB, quantization=True)
    command.add_argument("--served-model-name", metavar="NAME",
                         help="the model's name in requests and answers (default: the --model value as given)")
    network = command.add_argument_group("listening and access")
    network.add_argument("--host", default="127.0.0.1",
                         help="address to listen on (default: %(default)s); another than loopback needs --api-key "
                              "or --allow-unauthenticated")
    network.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default: %(default)s)")
    network.add_argument("--api-key", metavar="KEY",
                         help=f"require Authorization: Bearer KEY on every route but /health (default: ${API_KEY_ENV}; "
                              "none: no key)")
    network.add_argument("--allow-unauthenticated", action="store_true",
                         help="listen beyond loopback without a key (behind a proxy that authenticates)")
    network.add_argument("--allowed-hosts", nargs="+", metavar="HOST",
                         help="Host headers answered, e.g. critic.example.org or *.example.org (default on a "
                              f"loopback address: {', '.join(LOOPBACK_HOSTS)}; elsewhere: any)")
    network.add_argument("--forwarded-allow-ips", metavar="IPS",
                         help="proxies trusted for X-Forwarded-For, comma-separated (uvicorn's; default: "
                              "$FORWARDED_ALLOW_IPS, else 127.0.0.1)")
    network.add_argument("--no-access-log", action="store_true",
                         help="no line per request on stderr (time, client, status, latency, images, tokens)")
    images = command.add_argument_group("where images may come from")
    images.add_argument("--allowed-local-media-path", action="append", default=[], metavar="DIR",
                        help="clients may name regular files under DIR as local paths or file:// URLs (repeat for "
                             "more folders; default: no local file is read)")
    images.add_argument("--allow-remote-images", action="store_true",
                        help="also fetch http(s) image URLs (each at most --max-file-mb), from public addresses only")
    images.add_argument("--allow-private-image-urls", nargs="*", metavar="NETWORK",
                        help="with --allow-remote-images, also fetch from these networks (e.g. 10.0.0.0/8), or from "
                             "every address when none is given; default: loopback, private, link-local, multicast "
                             "and reserved addresses are refused, redirects included")
    images.add_argument("--image-fetch-timeout", type=positive_float, default=DEFAULTS.image_fetch_timeout_s,
                        metavar="S", help="total time for one remote image, redirects included (default: %(default)g)")
    images.add_argument("--image-fetch-connections", type=positive_int, default=DEFAULTS.image_fetch_connections,
                        metavar="N", help="remote fetches at once, all requests together (default: %(default)s)")
    bounds = command.add_argument_group("bounds on requests")
    bounds.add_argument("--max-images-per-request", type=positive_int, default=DEFAULTS.max_images_per_request,
                        metavar="N", help="images in one request (default: %(default)s)")
    bounds.add_argument("--max-new-tokens", type=positive_int, default=DEFAULTS.max_new_tokens, metavar="N",
                        help="the longest answer; a larger max_tokens is a 400 (default: %(default)s; also capped by "
                             "the model's positions)")
    bounds.add_argument("--max-prompt-tokens", type=positive_int, metavar="N",
                        help="the longest prompt, images' tokens included (default: the model's positions less one)")
    bounds.add_argument("--max-active-requests", type=positive_int, default=DEFAULTS.max_active_requests,
                        metavar="N", help="requests that decode photos or generate at once (default: %(default)s)")
    bounds.add_argument("--max-waiting-requests", type=positive_int, default=DEFAULTS.max_waiting_requests,
                        metavar="N", help="requests waiting for their turn; one more gets 429 (default: %(default)s)")
    bounds.add_argument("--queue-timeout", type=positive_float, default=DEFAULTS.queue_timeout_s, metavar="S",
                        help="a request that waits longer for its turn gets 503 (default: %(default)g)")
    bounds.add_argument("--shutdown-timeout", type=positive_float, default=DEFAULTS.shutdown_timeout_s, metavar="S",
                        help="on SIGTERM or Ctrl-C, how long requests in flight may finish (default: %(default)g)")
    command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                         help="uvicorn's log level (default: %(default)s)")
    command.set_defaults(handler=main)
    return command


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_access(args) -> None:
    """A port beyond loopback needs a key (or the operator's word); the Host headers answered default to loopback's."""
    if args.port > 65535:
        args.parser.error(f"argument --port: must be at most 65535, got {args.port}")
    args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and not args.api_key and not args.allow_unauthenticated:
        args.parser.error(f"argument --host: {args.host!r} listens beyond this machine, and no API key is set; give "
                          f"--api-key (or ${API_KEY_ENV}), or --allow-unauthenticated behind a proxy that "
                          "authenticates")
    if args.allowed_hosts is None and is_loopback(args.host):
        args.allowed_hosts = LOOPBACK_HOSTS + ([args.host] if args.host not in LOOPBACK_HOSTS else [])
    elif args.allowed_hosts is None:
        print(f"[serve] warning: {args.host} answers any Host header; --allowed-hosts names the ones clients use",
              file=sys.stderr)
    for folder in args.allowed_local_media_path:
        check_existing(args.parser, "--allowed-local-media-path", folder, kind="folder")
    if args.allow_private_image_urls is not None:
        if not args.allow_remote_images:
            args.parser.error("argument --allow-private-image-urls: needs --allow-remote-images")
        for network in args.allow_private_image_urls:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                args.parser.error(f"argument --allow-private-image-urls: {network!r} is not a network (e.g. "
                                  "10.0.0.0/8 or 192.168.1.20)")


def serving_limits(args) -> ServingLimits:
    return ServingLimits(
        photos=photo_limits(args), max_images_per_request=args.max_images_per_request,
        max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
        max_active_requests=args.max_active_requests, max_waiting_requests=args.max_waiting_requests,
        queue_timeout_s=args.queue_timeout, image_fetch_timeout_s=args.image_fetch_timeout,
        image_fetch_connections=args.image_fetch_connections, shutdown_timeout_s=args.shutdown_timeout,
    )


def main(args) -> int:
    """Serve the model until Ctrl-C or SIGTERM."""
    check_access(args)
    check_photo_options(args)
    try:
        from ..inference.serving import serve
    except ImportError as error:
        raise ImportError(f"ase-mllm serve needs FastAPI, uvicorn and openai ({error}): "
                          'pip install "ase-mllm[serve]"') from error
    private = args.allow_private_image_urls
    serve(args.model, host=args.host, port=args.port, log_level=args.log_level, device=args.device, dtype=args.dtype,
          max_patches=args.max_tiles, limits=serving_limits(args), api_key=args.api_key,
          allowed_hosts=args.allowed_hosts, allowed_local_media_paths=args.allowed_local_media_path,
          allow_remote_images=args.allow_remote_images,
          private_image_networks="all" if private == [] else private, served_model_name=args.served_model_name,
          access_log=not args.no_access_log, forwarded_allow_ips=args.forwarded_allow_ips,
          quantization=args.quantization)
    return 0
