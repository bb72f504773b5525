"""`ase-mllm serve`: OpenAI-compatible critiques on transformers' own server (`transformers serve`).

transformers' server (its FastAPI app, `/v1/chat/completions` handler, model manager and generation managers)
cannot load ASE-MLLM by itself: the model manager resolves a class with `getattr(transformers,
config.architectures[0])` and the modality from transformers' own mapping names. This module reuses all of that
machinery and adds only what ASE-MLLM needs:

- `AseMllmModelManager` loads a model registered with `AutoModelForImageTextToText` (importing this package
  registers ours) and reports it as a vision-language model;
- `AseMllmChatCompletionHandler` decodes every `image_url` itself, within the CLI's bounds (data URLs and local
  paths; http(s) only when the server allows it), so that a bad image is a 400 naming the content part before any
  model work; adds the critique prompt (the paper's, or the one of the `aspect` field) to a user turn that has
  only images; and, when the request sets `saliency`, returns each image's saliency as a PNG data URL.

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
import binascii
import io
import json
import sys
from urllib.parse import unquote, urlparse

import transformers
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.server import build_server
from transformers.cli.serving.utils import GenerationState, Modality
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

from ..utils.quantization import describe_precision, quantization_config
from .captioning import PhotoError, PhotoLimits, critique_prompt, read_photo


# The request fields ASE-MLLM adds to OpenAI's chat completion body.
ASPECT_FIELD = "aspect"
SALIENCY_FIELD = "saliency"
# `saliency`: "map" is the grey map the IAS-ViT received, stitched over the image's tiles (one pixel per map cell);
# "picture" is what `ase-mllm caption --saliency-out` draws (photo with overlay, every tile's map). `true` = "map".
SALIENCY_KINDS = ("map", "picture")
REMOTE_FETCH_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------------------------------- images
def read_image_url(url, limits: PhotoLimits = PhotoLimits(), allow_remote: bool = False):
    """The photo an OpenAI `image_url` names, decoded to RGB within `limits`.

    Accepts a base64 `data:` URL, a local path or `file://` URL, and, with `allow_remote`, an http(s) URL (read
    at most `limits.max_file_mb`). Raises `PhotoError` saying what is wrong with it.
    """
    if not isinstance(url, str) or not url.strip():
        raise PhotoError("the image_url has no url")
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise PhotoError("a data URL must hold base64: data:image/jpeg;base64,...")
        if len(payload) * 3 / 4 > limits.max_file_mb * 1e6 + 3:  # refused before it is decoded
            raise PhotoError(f"the data URL holds about {len(payload) * 3 / 4e6:.1f} MB, over the limit of "
                             f"{limits.max_file_mb:g} MB (--max-file-mb raises it)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise PhotoError(f"the data URL's base64 is corrupt: {error}") from None
        return read_photo(data, limits)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        if not allow_remote:
            raise PhotoError("this server does not fetch remote images (start it with --allow-remote-images); "
                             "send the image as a data URL")
        return read_photo(fetch_bounded(url, limits.max_file_mb), limits)
    if scheme == "file":
        return read_photo(unquote(urlparse(url).path), limits)
    if len(scheme) > 1:  # one letter is a Windows drive
        raise PhotoError(f"unsupported URL scheme {scheme!r}: use a data URL or a local path")
    return read_photo(url, limits)


def fetch_bounded(url: str, max_mb: float) -> bytes:
    """The body of `url`, refused as soon as it passes `max_mb` (also when the server sends no length)."""
    import httpx

    limit = int(max_mb * 1e6)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=REMOTE_FETCH_TIMEOUT_S) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise PhotoError(f"image {url!r} is over the limit of {max_mb:g} MB (--max-file-mb raises it)")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise PhotoError(f"image {url!r} could not be fetched: {error}") from None
    return b"".join(chunks)


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
        max_tiles: tiles per image of the loaded processors (default: each model's own `max_patches`).
        quantization_scheme: a `utils.quantization.QUANTIZATION_SCHEMES` scheme for our models (transformers'
            own `quantization` knows bitsandbytes only, under other names).
        Everything else: `ModelManager`'s.
    """

    def __init__(self, *args, max_tiles: int | None = None, quantization_scheme: str | None = None, **kwargs):
        self.max_tiles = max_tiles  # before `super().__init__`, which loads `force_model`
        self.quantization_scheme = quantization_scheme
        super().__init__(*args, **kwargs)

    def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
        processor = super()._load_processor(model_id_and_revision, gguf_file=gguf_file)
        if self.max_tiles and hasattr(getattr(processor, "image_processor", None), "max_patches"):
            processor.image_processor.max_patches = self.max_tiles
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
class RequestError(HTTPException):
    """A 400 whose message says what is wrong; `param` names the request field at fault, as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(status_code=400, detail=message)
        self.param = param


def bad_request(message: str, param: str | None = None) -> RequestError:
    return RequestError(message, param)


async def openai_error(request, error) -> JSONResponse:
    """Any HTTP error as OpenAI's error object, whose `message` the `openai` client puts in its exception."""
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    return JSONResponse({"error": {"message": str(error.detail), "type": kind, "param": getattr(error, "param", None),
                                   "code": None}}, status_code=error.status_code, headers=getattr(error, "headers", None))


class AseMllmChatCompletionHandler(ChatCompletionHandler):
    """`/v1/chat/completions` for critiques: transformers' handler, with ASE-MLLM's images, prompt and saliency.

    Args:
        limits: bounds on each image (`--max-megapixels`, `--max-file-mb`), checked before it is decoded.
        allow_remote_images: fetch http(s) image URLs (off: data URLs and local paths only).
        Everything else: `ChatCompletionHandler`'s.
    """

    def __init__(self, *args, limits: PhotoLimits = PhotoLimits(), allow_remote_images: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.allow_remote_images = allow_remote_images

    async def handle_request(self, body: dict, request_id: str):
        aspect, saliency = body.pop(ASPECT_FIELD, None), body.pop(SALIENCY_FIELD, None)
        prompt = self.prompt_for(aspect)
        saliency = self.saliency_kind(saliency, streaming=bool(body.get("stream")))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("`messages` must be a non-empty list")
        photos = await asyncio.to_thread(self.decode_images, messages)
        add_prompt(messages, prompt, aspect)
        response = await super().handle_request(body, request_id)
        if saliency is None:
            return response
        model_id, model, processor = self._resolve_model(body)
        manager = self.generation_state.get_manager(model_id)
        # On the model's inference thread: LayerCAM hooks the model, which a generation running beside would meet.
        urls = await manager.async_submit(saliency_data_urls, model, processor, photos, saliency)
        payload = json.loads(response.body)
        payload["choices"][0]["message"][SALIENCY_FIELD] = urls
        return JSONResponse(payload, media_type="application/json")

    @staticmethod
    def prompt_for(aspect) -> str | None:
        """The critique prompt of `aspect` (None: the paper's prompt, used when the user turn has no text)."""
        if aspect is None:
            return None
        from ..cli.arguments import did_you_mean
        from ..data.prompts import ASPECT_PHRASES

        if not isinstance(aspect, str) or aspect not in ASPECT_PHRASES:
            raise bad_request(f"`{ASPECT_FIELD}`: {aspect!r} is not a known aspect"
                              f"{did_you_mean(str(aspect), ASPECT_PHRASES)}; choose one of {', '.join(ASPECT_PHRASES)}",
                              ASPECT_FIELD)
        return critique_prompt(aspect=aspect)

    @staticmethod
    def saliency_kind(value, streaming: bool) -> str | None:
        if value in (None, False):
            return None
        kind = "map" if value is True else value
        if kind not in SALIENCY_KINDS:
            raise bad_request(f"`{SALIENCY_FIELD}`: {value!r} is not one of true, {', '.join(map(repr, SALIENCY_KINDS))}",
                              SALIENCY_FIELD)
        if streaming:
            raise bad_request(f"`{SALIENCY_FIELD}` comes with the whole answer: ask for it without `stream`",
                              SALIENCY_FIELD)
        return kind

    def decode_images(self, messages: list) -> list:
        """Replace each `image_url` part's url by its decoded photo (in place); return the photos in order.

        Raises a 400 naming the part for a photo that cannot be used, and for a request without any image.
        """
        photos = []
        for m, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise bad_request(f"messages[{m}] must be an object with a `role`")
            content = message.get("content")
            for c, part in enumerate(content if isinstance(content, list) else []):
                where = f"messages[{m}].content[{c}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    continue
                if kind != "image_url":
                    raise bad_request(f"{where}: a critique request holds `text` and `image_url` parts, not {kind!r}",
                                      where)
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else image_url
                try:
                    photo = read_image_url(url, self.limits, self.allow_remote_images)
                except PhotoError as error:
                    raise bad_request(f"{where}.image_url: {error}", f"{where}.image_url") from None
                part["image_url"] = {"url": photo}
                photos.append(photo)
        if not photos:
            raise bad_request("the request has no image: ASE-MLLM critiques photos; add a user content part "
                              '{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}')
        return photos

    def get_processor_inputs_from_messages(self, messages: list[dict], modality: Modality) -> list[dict]:
        converted = super().get_processor_inputs_from_messages(messages, modality)
        for message in converted:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "image":  # `decode_images` put the photo where transformers keeps the url
                    part["image"] = part.pop("url")
        return converted


def add_prompt(messages: list, prompt: str | None, aspect: str | None) -> None:
    """Give the last user turn its question: the aspect's prompt, or the paper's when the turn has no text."""
    users = [message for message in messages if message.get("role") == "user"]
    if not users:
        raise bad_request("the request has no user message")
    turn = users[-1]
    content = turn.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    has_text = any(part.get("type") == "text" and str(part.get("text", "")).strip() for part in parts)
    if has_text and aspect is not None:
        raise bad_request(f"give either a text question or `{ASPECT_FIELD}`, not both")
    if not has_text:
        parts.append({"type": "text", "text": prompt or critique_prompt()})
    turn["content"] = parts


# ------------------------------------------------------------------------------------------------------- server
def build_app(
    model: str,
    device: str | None = None,
    dtype: str = "auto",
    max_tiles: int | None = None,
    limits: PhotoLimits = PhotoLimits(),
    allow_remote_images: bool = False,
    continuous_batching: bool = False,
    quantization: str | None = None,
):
    """transformers' FastAPI app serving `model` (loaded now, with `quantization` its language model quantised)
    through our manager and chat handler.

    `dtype="auto"`: bfloat16 on an accelerator, float32 on the CPU (as `ase-mllm caption`). `continuous_batching`
    is handed to transformers, which falls back to `generate()` for an image model (see the module docstring).
    Returns `(app, model_manager, generation_state)`.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    manager = AseMllmModelManager(device=device, dtype=dtype, force_model=model, max_tiles=max_tiles,
                                  continuous_batching=continuous_batching, quantization_scheme=quantization)
    state = GenerationState(continuous_batching=continuous_batching)
    chat = AseMllmChatCompletionHandler(model_manager=manager, generation_state=state, limits=limits,
                                        allow_remote_images=allow_remote_images)
    # Of transformers' routes, only chat completions and health stay (with FastAPI's docs): the others (responses,
    # legacy completions, audio, decisions, loading other models, unloading) would bypass the image bounds or do
    # not apply to a critique model, so their handlers are never called. /v1/models names the one model served.
    app = build_server(manager, chat, completion_handler=None, response_handler=None, transcription_handler=None,
                       systemone_handler=None, generation_state=state)
    kept = {"/v1/chat/completions", "/health", app.openapi_url, app.docs_url, app.redoc_url,
            app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) in kept]

    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(StarletteHTTPException, openai_error)

    @app.get("/v1/models")
    def list_models():
        # transformers lists the Hub cache; this server answers for its one model.
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "ase-mllm"}]})

    return app, manager, state


class _Stop(Exception):
    """SIGTERM, once uvicorn has shut down gracefully and re-raised it."""


def _raise_stop(signum, frame):
    raise _Stop


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning", **options) -> None:
    """Load `model` and serve it until SIGINT or SIGTERM, then return (`build_app` options).

    uvicorn answers either signal by finishing the requests in flight and closing, then raises the signal again;
    here that ends the function normally, so Ctrl-C or a service manager's SIGTERM is a clean stop (status 0).
    """
    import signal

    import uvicorn

    app, manager, state = build_app(model, **options)
    print(f"[serve] {model} on http://{host}:{port}/v1 (requests name the model {model!r}); Ctrl-C stops",
          flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        state.shutdown()
        manager.shutdown()
    print("[serve] stopped", flush=True)


__all__ = ["AseMllmChatCompletionHandler", "AseMllmModelManager", "build_app", "read_image_url", "serve"]
