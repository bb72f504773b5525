"""`ase-mllm serve`: OpenAI-compatible critiques on transformers' own server (`transformers serve`), safe to expose.

transformers' server (its FastAPI app, `/v1/chat/completions` handler, model manager and generation managers)
cannot load ASE-MLLM by itself: the model manager resolves a class with `getattr(transformers,
config.architectures[0])` and the modality from transformers' own mapping names. This module reuses that machinery
and adds what ASE-MLLM and a server facing hostile clients need:

- `AseMllmModelManager` loads a model registered with `AutoModelForImageTextToText` (importing this package
  registers ours) and reports it as a vision-language model;
- `AseMllmChatCompletionHandler` checks every field of a request before any image is read
  (`chat_requests.check_chat_request`: a 400 with OpenAI's error object naming the field), fetches remote images
  while the request waits (`image_urls`), and once admitted to run decodes its photos and builds its tensors on
  one preparing thread (never on the event loop), caps the answer by the operator's `--max-new-tokens` and the
  model's positions, and generates with transformers' own streaming and non-streaming paths; a client that hangs
  up stops its generation; with `saliency` it returns each image's saliency as a PNG data URL; every non-streamed
  answer about images carries their aesthetic scores (`scores.SCORE_FIELD`);
- `build_app` puts `gate`'s middlewares around transformers' app: the access log, the `Host` check, the API key
  and the bounded queue (429/503 with `Retry-After`), and keeps only the routes a critique server needs.

The extra fields ride in the body next to OpenAI's, and come back as extra fields of the message, which the
`openai` client keeps (its models allow extra fields)::

    client.chat.completions.create(model=MODEL, max_tokens=128, temperature=0, messages=[{"role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}]}],
        extra_body={"aspect": "composition", "saliency": "map"})
    # .choices[0].message.content: the critique; .choices[0].message.saliency: ["data:image/png;base64,..."]

Continuous batching is not used: transformers' `ContinuousBatchingManager.add_request` takes token ids only (no
`pixel_values`), and its server enables it for text-only models (`Modality.LLM`) alone, so image requests run
through `generate()` one at a time on the model's inference thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import transformers
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from transformers import AutoConfig, AutoModelForImageTextToText, StoppingCriteria, StoppingCriteriaList
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.server import build_server
from transformers.cli.serving.utils import GenerationState, Modality
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

from ..utils.quantization import describe_precision, quantization_config
from .chat_requests import SALIENCY_FIELD, CritiqueRequest, RequestError, check_chat_request
from .scores import SCORE_FIELD, score_field
from .gate import (ACCESS_LOGGER, AccessLogMiddleware, Admission, AdmissionMiddleware, ApiKeyMiddleware,
                   error_response, read_json_body)
from .image_urls import ImageSources, RemoteImages
from .photos import LocalFiles, PhotoError, read_photo
from .serving_limits import ServingLimits


CHAT_ROUTE = "/v1/chat/completions"
logger = logging.getLogger(__name__)

# --- transformers compatibility ------------------------------------------------------------------------------------
# The variables a chat template reads: transformers' own helper, with which `apply_chat_template` tells template
# variables from processor options (5.x); without it, no `chat_template_kwargs` are accepted.
try:
    from transformers.utils.chat_template_utils import _get_template_variables as template_variables
except ImportError:
    def template_variables(chat_template) -> frozenset[str]:
        return frozenset()
# -------------------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------- saliency
def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def saliency_data_urls(model, processor, photos: list, kind: str) -> list[str]:
    """Per photo, its saliency as a PNG data URL: the stitched tile maps (`map`) or the CLI's picture (`picture`)."""
    import numpy as np
    from PIL import Image

    from .visualize import render_saliency, stitch_tiles, tile_saliency_maps

    urls = []
    for photo in photos:
        maps = tile_saliency_maps(photo, processor, model)
        grid = processor.image_processor.get_tile_grid(photo.height, photo.width)
        if kind == "map":
            picture = Image.fromarray((np.clip(stitch_tiles(maps, grid), 0, 1) * 255).round().astype(np.uint8), "L")
        else:
            picture = render_saliency(photo, maps, grid)
        urls.append(png_data_url(picture))
    return urls


# ------------------------------------------------------------------------------------------------ model manager
def is_registered_vlm_config(config) -> bool:
    """A config that transformers' own names do not cover but `AutoModelForImageTextToText` knows (registered)."""
    architecture = (getattr(config, "architectures", None) or [""])[0]
    return not hasattr(transformers, architecture) and type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING


class AseMllmModelManager(ModelManager):
    """transformers' model manager, which also loads image-text-to-text models registered with the Auto classes.

    Args:
        max_patches: tiles per image of the loaded processors (default: each model's own `max_patches`).
        quantization_scheme: a `utils.quantization.QUANTIZATION_SCHEMES` scheme for our models (transformers'
            own `quantization` knows bitsandbytes only, under other names).
        Everything else: `ModelManager`'s.
    """

    def __init__(self, *args, max_patches: int | None = None, quantization_scheme: str | None = None, **kwargs):
        self.max_patches = max_patches  # before `super().__init__`, which loads `force_model`
        self.quantization_scheme = quantization_scheme
        super().__init__(*args, **kwargs)

    def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
        processor = super()._load_processor(model_id_and_revision, gguf_file=gguf_file)
        if self.max_patches and hasattr(getattr(processor, "image_processor", None), "max_patches"):
            processor.image_processor.max_patches = self.max_patches
        return processor

    def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None, gguf_file=None):
        model_id, revision = model_id_and_revision.split("@", 1)
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=self.trust_remote_code)
        if gguf_file is not None or not is_registered_vlm_config(config):
            return super()._load_model(model_id_and_revision, tqdm_class, progress_callback, gguf_file)
        quantized = {}
        if self.quantization_scheme is not None:
            quantized["quantization_config"] = quantization_config(self.quantization_scheme, self.dtype)
        model = AutoModelForImageTextToText.from_pretrained(
            model_id, revision=revision, dtype=self.dtype, device_map=self.device, tqdm_class=tqdm_class,
            attn_implementation=self.attn_implementation, trust_remote_code=self.trust_remote_code, **quantized,
        )
        if self.quantization_scheme is not None:
            print(f"[serve] {describe_precision(model, self.quantization_scheme)}", file=sys.stderr, flush=True)
        return model

    @staticmethod
    def get_model_modality(model, processor=None) -> Modality:
        if is_registered_vlm_config(model.config):
            return Modality.VLM
        return ModelManager.get_model_modality(model, processor=processor)


# ------------------------------------------------------------------------------------------------ chat handler
class ClientGone(StoppingCriteria):
    """Stops `generate()` once `gone` is set: the client hung up, or the server stopped waiting for the request."""

    def __init__(self, gone: threading.Event):
        self.gone = gone

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.gone.is_set(), dtype=torch.bool, device=input_ids.device)


class AseMllmChatCompletionHandler(ChatCompletionHandler):
    """`/v1/chat/completions` for critiques: transformers' handler, with ASE-MLLM's images, prompt and saliency,
    within the operator's bounds.

    Args:
        sources: where images may come from (`image_urls.ImageSources`: data URLs, allowed local files, remote).
        limits: the operator's bounds (`serving_limits.ServingLimits`).
        served_model_name: the name requests give the model (default: the model manager's `force_model`).
        Everything else: `ChatCompletionHandler`'s.
    """

    def __init__(self, *args, sources: ImageSources, limits: ServingLimits = ServingLimits(),
                 served_model_name: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources, self.limits = sources, limits
        self.served_model_name = served_model_name or self.model_manager.force_model
        # Photos are decoded and tensors built here, one request at a time: never on the event loop (a large photo
        # would stall every client), with at most one request's decoded photos in memory, and no tokenizer call
        # from two preparing threads at once.
        self.preparing = ThreadPoolExecutor(1, thread_name_prefix="ase-mllm-prepare")

    def _resolve_model(self, body: dict):
        """The served model, whatever the body holds (`check` has compared its `model` with the served name)."""
        return super()._resolve_model({"model": None})

    async def handle_request(self, body: dict, request_id: str, activate=None, gone: threading.Event | None = None,
                             access: dict | None = None):
        """Check `body`, fetch its remote images, wait for a place to run, then prepare and generate.

        Args:
            activate: awaited once the request is checked and its images fetched, before any photo is decoded
                (`gate.Ticket.activate`: the admission queue); None runs at once.
            gone: set when the client has hung up: generation stops at its next token.
            access: receives `images`, `prompt_tokens` and `completion_tokens` for the access log.
        Raises:
            RequestError: what the client sent wrong (400), before any photo is decoded when a field is at fault.
        """
        request = self.check(body)
        fetched = await self.fetch_images(request)
        access = {} if access is None else access
        access["images"] = len(request.images)
        gone = gone or threading.Event()
        if activate is not None:
            await activate()
        if gone.is_set():
            return Response(status_code=499)  # the client left while waiting: nothing to decode or generate
        model_id, model, processor = self._resolve_model(body)
        modality = self.model_manager.get_model_modality(model, processor=processor)
        # Logs transformers' fallback when continuous batching was asked for: it serves text-only models alone.
        self.generation_state.use_continuous_batching(model, modality)
        manager = self.generation_state.get_manager(model_id)
        inputs, photos = await asyncio.get_running_loop().run_in_executor(
            self.preparing, self.prepare, body, request, fetched, model, processor, modality)
        del fetched
        if gone.is_set():
            return Response(status_code=499)
        prompt_tokens = access["prompt_tokens"] = inputs["input_ids"].shape[-1]
        gen_config = self._build_generation_config(body, model.generation_config)
        positions = model_positions(model)
        gen_config.max_new_tokens = min(request.max_new_tokens, positions - prompt_tokens if positions else
                                        request.max_new_tokens)
        # transformers' generate managers pass the inputs on to `generate()`, so the criterion rides with them.
        inputs["stopping_criteria"] = StoppingCriteriaList([ClientGone(gone)])
        if request.stream:
            return self._streaming(request_id, model, processor, self.served_model_name, inputs, gen_config,
                                   gen_manager=manager)
        # Shielded, as the saliency below: a request cancelled when the server stops stops its generation through
        # `gone`, and the result still finds a live future (transformers' inference thread would meet a cancelled
        # one).
        response = await asyncio.shield(asyncio.ensure_future(self._non_streaming(
            request_id, model, processor, self.served_model_name, inputs, gen_config, gen_manager=manager)))
        payload = json.loads(response.body)
        access["completion_tokens"] = payload["usage"]["completion_tokens"]
        message = payload["choices"][0]["message"]
        # On the model's inference thread, as the saliency below: one EAT forward on the prompt's own EAT inputs.
        scores = await asyncio.shield(manager.async_submit(score_field, model, inputs))
        if scores is not None:
            message[SCORE_FIELD] = scores
        if request.saliency is not None:
            # On the model's inference thread: LayerCAM hooks the model, which a generation running beside would meet.
            message[SALIENCY_FIELD] = await asyncio.shield(manager.async_submit(saliency_data_urls, model, processor,
                                                                                photos, request.saliency))
        return JSONResponse(payload, media_type="application/json")

    async def finish_generating(self, timeout_s: float = 10.0) -> None:
        """Wait (at most `timeout_s`) until the inference thread has finished what it was given."""
        model_id, _, _ = self._resolve_model({})
        try:
            async with asyncio.timeout(timeout_s):
                await self.generation_state.get_manager(model_id).async_submit(lambda: None)
        except TimeoutError:
            logger.warning("a generation was still running %s s after the server stopped", timeout_s)

    def check(self, body) -> CritiqueRequest:
        """Every field of `body` (`chat_requests.check_chat_request`), against the served model and the bounds."""
        _, _, processor = self._resolve_model({})
        tokenizer = getattr(processor, "tokenizer", processor)
        template = getattr(processor, "chat_template", None)
        request = check_chat_request(
            body, known_fields=frozenset(self._valid_params_class.__mutable_keys__),
            max_new_tokens=self.limits.max_new_tokens, max_images=self.limits.max_images_per_request,
            check_image_url=self.sources.check, vocab_size=len(tokenizer),
            template_variables=client_template_variables(template),
        )
        if body.get("model") not in (None, self.served_model_name):
            raise RequestError(f"model {body['model']!r} is not served here; this server serves "
                               f"{self.served_model_name!r} (GET /v1/models)", "model")
        return request

    async def fetch_images(self, request: CritiqueRequest) -> list[bytes | None]:
        """The bytes of each remote image (None for the others), fetched while the request waits for its turn."""
        fetched = []
        for image in request.images:
            try:
                fetched.append(await self.sources.fetch(image.url))
            except PhotoError as error:
                raise RequestError(f"{image.where}: {error}", image.where) from None
        return fetched

    def prepare(self, body: dict, request: CritiqueRequest, fetched: list, model, processor, modality):
        """On the preparing thread: the prompt bound on the text, the photos decoded within their bounds, and the
        prompt's tensors (the photos too when saliency is asked for). Raises `RequestError`."""
        max_prompt = self.max_prompt_tokens(model)
        tokenizer = getattr(processor, "tokenizer", processor)
        text_tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in request.texts)
        if text_tokens > max_prompt:
            raise RequestError(f"the messages' text alone is {text_tokens} tokens, over this server's limit of "
                               f"{max_prompt} prompt tokens", "messages")
        photos = []
        for image, data in zip(request.images, fetched):
            try:
                photos.append(read_photo(self.sources.read(image.url, data), self.limits.photos))
            except PhotoError as error:
                raise RequestError(f"{image.where}: {error}", image.where) from None
        processor_inputs = self.get_processor_inputs_from_messages(with_photos(body["messages"], photos), modality)
        try:
            inputs = processor.apply_chat_template(
                processor_inputs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                **{**self.chat_template_kwargs, **(body.get("chat_template_kwargs") or {})},
            )
        except ValueError as error:  # e.g. a text that holds the processor's own image tokens
            raise RequestError(f"the messages cannot be prepared: {error}", "messages") from None
        prompt_tokens = inputs["input_ids"].shape[-1]
        if prompt_tokens > max_prompt:
            raise RequestError(f"the prompt is {prompt_tokens} tokens (its images' tiles included), over this "
                               f"server's limit of {max_prompt} prompt tokens", "messages")
        return inputs.to(model.device), photos if request.saliency else []

    def max_prompt_tokens(self, model) -> int:
        """`--max-prompt-tokens`, and at most the model's positions less one (the answer needs one)."""
        positions = model_positions(model)
        bounds = [bound for bound in (self.limits.max_prompt_tokens, positions - 1 if positions else None) if bound]
        return min(bounds) if bounds else sys.maxsize

    def get_processor_inputs_from_messages(self, messages: list[dict], modality: Modality) -> list[dict]:
        converted = super().get_processor_inputs_from_messages(messages, modality)
        for message in converted:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "image":  # `with_photos` put the photo where transformers keeps the url
                    part["image"] = part.pop("url")
        return converted


def client_template_variables(template) -> frozenset[str]:
    """The variables a chat template reads that a request may set: those it does not assign itself (`{% set %}`)."""
    if not isinstance(template, str):
        return frozenset()
    return template_variables(template) - set(re.findall(r"\{%-?\s*set\s+(\w+)", template))


def model_positions(model) -> int | None:
    """The language model's positions (`max_position_embeddings`), None when its config does not say."""
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def with_photos(messages: list[dict], photos: list) -> list[dict]:
    """A copy of `messages` whose image parts hold the decoded photos, in order (the body keeps its urls)."""
    remaining = iter(photos)

    def part_with_photo(part: dict) -> dict:
        return {**part, "image_url": {"url": next(remaining)}} if part["type"] == "image_url" else part

    return [{**message, "content": [part_with_photo(part) for part in message["content"]]}
            if isinstance(message["content"], list) else message for message in messages]


# ------------------------------------------------------------------------------------------------------- server
async def http_error(request, error) -> JSONResponse:
    """Starlette's HTTP errors (404, 405, transformers' own 400s) as OpenAI's error object."""
    return error_response(RequestError(str(error.detail), status_code=error.status_code,
                                       headers=getattr(error, "headers", None)))


async def request_error(request, error: RequestError) -> JSONResponse:
    return error_response(error)


async def internal_error(request, error: Exception) -> JSONResponse:
    """A bug, not the client's doing: OpenAI's error object with a 500, and nothing of the server's internals."""
    return error_response(RequestError("the server failed on this request (its log has the details)",
                                       status_code=500))


def build_app(
    model: str,
    device: str | None = None,
    dtype: str = "auto",
    max_patches: int | None = None,
    limits: ServingLimits = ServingLimits(),
    api_key: str | None = None,
    allowed_hosts: list[str] | None = None,
    allowed_local_media_paths=(),
    allow_remote_images: bool = False,
    private_image_networks=None,
    served_model_name: str | None = None,
    access_log: bool = True,
    continuous_batching: bool = False,
    quantization: str | None = None,
):
    """transformers' FastAPI app serving `model` (loaded now, with `quantization` its language model quantised)
    through our manager and chat handler, behind the gate.

    `dtype="auto"`: bfloat16 on an accelerator, float32 on the CPU (as `ase-mllm caption`). `api_key`: required as
    `Authorization: Bearer` on every route but `/health`. `allowed_hosts`: the `Host` headers answered (None: any).
    `allowed_local_media_paths`: folders whose regular files clients may name. `allow_remote_images`: fetch
    http(s) images, from public addresses only unless `private_image_networks` (a list of networks, or "all").
    `continuous_batching` is handed to transformers, which falls back to `generate()` for an image model (see the
    module docstring). Returns `(app, model_manager, generation_state)`.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    manager = AseMllmModelManager(device=device, dtype=dtype, force_model=model, max_patches=max_patches,
                                  continuous_batching=continuous_batching, quantization_scheme=quantization)
    state = GenerationState(continuous_batching=continuous_batching)
    remote = RemoteImages(limits.photos.max_bytes, limits.image_fetch_timeout_s, limits.image_fetch_connections,
                          private_image_networks) if allow_remote_images else None
    sources = ImageSources(limits.photos, LocalFiles(allowed_local_media_paths), remote)
    chat = AseMllmChatCompletionHandler(model_manager=manager, generation_state=state, sources=sources,
                                        limits=limits, served_model_name=served_model_name)
    # Of transformers' routes, only health stays (with FastAPI's docs); chat completions is ours below (admitted,
    # read and checked before transformers' handler runs). The others (responses, legacy completions, audio,
    # decisions, loading other models, unloading) would bypass the bounds or do not apply to a critique model.
    app = build_server(manager, chat, completion_handler=None, response_handler=None, transcription_handler=None,
                       systemone_handler=None, generation_state=state)
    kept = {"/health", app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) in kept]
    app.state.chat = chat
    serving_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with serving_lifespan(app) as lifespan_state:
            yield lifespan_state
            # Before transformers unloads the model: let a generation that was told to stop (its request
            # cancelled at the shutdown timeout) hand back its result while the event loop still runs.
            await chat.finish_generating()

    app.router.lifespan_context = lifespan

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(Exception, internal_error)

    @app.post(CHAT_ROUTE)
    async def chat_completions(request: Request):
        access = request.state.access = {}
        try:
            body = await read_json_body(request, limits.max_body_bytes, limits.body_timeout_s)
        except ClientDisconnect:
            return Response(status_code=499)
        return await chat.handle_request(body, request.state.request_id, activate=request.state.admission.activate,
                                         gone=request.state.gone, access=access)

    @app.get("/v1/models")
    def list_models():
        # transformers lists the Hub cache; this server answers for its one model.
        return JSONResponse({"object": "list", "data": [{"id": chat.served_model_name, "object": "model",
                                                         "owned_by": "ase-mllm"}]})

    # Outermost last: the access log sees every answer, the Host check comes before the key, and the key before a
    # request takes a place in the queue.
    app.add_middleware(AdmissionMiddleware, admission=Admission(limits.max_active_requests,
                                                                limits.max_waiting_requests, limits.queue_timeout_s),
                       paths=(CHAT_ROUTE,))
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts, www_redirect=False)
    if access_log:
        app.add_middleware(AccessLogMiddleware)
    return app, manager, state


class _Stop(Exception):
    """SIGTERM, once uvicorn has shut down gracefully and re-raised it."""


def _raise_stop(signum, frame):
    raise _Stop


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
          forwarded_allow_ips: str | None = None, **options) -> None:
    """Load `model` and serve it until SIGINT or SIGTERM, then return (`build_app` options).

    uvicorn answers either signal by refusing new connections and letting the requests in flight finish, for at
    most `limits.shutdown_timeout_s`; then it cancels what still runs (a cancelled request stops its generation),
    closes, and raises the signal again; here that ends the function normally, so Ctrl-C or a service manager's
    SIGTERM is a clean stop (status 0). The access log (on unless `access_log=False`) goes to stderr.
    `forwarded_allow_ips`: the proxies whose `X-Forwarded-For` gives the client's address (uvicorn's setting;
    default: `$FORWARDED_ALLOW_IPS`, else 127.0.0.1).
    """
    import signal

    import uvicorn

    if options.get("access_log", True):
        access = logging.getLogger(ACCESS_LOGGER)
        access.setLevel(logging.INFO)
        access.propagate = False
        if not access.handlers:
            access.addHandler(logging.StreamHandler(sys.stderr))
    app, manager, state = build_app(model, **options)
    limits = options.get("limits", ServingLimits())
    name = app.state.chat.served_model_name
    print(f"[serve] {name} on http://{host}:{port}/v1 (requests name the model {name!r}); Ctrl-C stops", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                      timeout_graceful_shutdown=limits.shutdown_timeout_s,
                                      forwarded_allow_ips=forwarded_allow_ips)).run()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        app.state.chat.preparing.shutdown(wait=False, cancel_futures=True)
        state.shutdown()
        manager.shutdown()
    print("[serve] stopped", flush=True)


__all__ = ["AseMllmChatCompletionHandler", "AseMllmModelManager", "build_app", "serve"]
