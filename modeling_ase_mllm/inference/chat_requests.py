"""What `ase-mllm serve` accepts in a `/v1/chat/completions` body, checked before any image is read.

`check_chat_request` goes through every field of OpenAI's chat completion body (and ASE-MLLM's `aspect` and
`saliency`) and raises a `RequestError` (a 400 with OpenAI's error object) naming the first field at fault, so that
nothing a client sends reaches transformers' handler in a shape it would answer with a 500, and nothing overrides
the operator's bounds: `max_tokens` within `--max-new-tokens`, images within `--max-images-per-request`, no chat
template or processor option from the body (`chat_template_kwargs` holds only variables of the served template),
one choice. Fields that would change the answer and that the server does not implement (tools, log
probabilities, response formats, ...) are refused rather than ignored; bookkeeping fields (`user`, `metadata`, ...)
are accepted and have no effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..data.prompts import ASPECT_PHRASES
from ..utils.suggestions import did_you_mean


# The request fields ASE-MLLM adds to OpenAI's chat completion body.
ASPECT_FIELD = "aspect"
SALIENCY_FIELD = "saliency"
# `saliency`: "map" is the grey map the IAS-ViT received, stitched over the image's tiles (one pixel per map cell);
# "picture" is what `ase-mllm caption --saliency-out` draws (photo with overlay, every tile's map). `true` = "map".
SALIENCY_KINDS = ("map", "picture")
# OpenAI fields that change nothing in a critique: accepted, without effect.
BOOKKEEPING_FIELDS = frozenset({"metadata", "user", "store", "service_tier", "stream_options", "prompt_cache_key",
                                "prompt_cache_options", "prompt_cache_retention", "safety_identifier"})
# OpenAI fields this server does not implement, with the values that mean "not used" (anything else is a 400).
UNSUPPORTED_FIELDS = {
    "audio": (None,), "function_call": (None, "none"), "functions": (None, []), "logprobs": (None, False),
    "modalities": (None, ["text"]), "moderation": (None,), "parallel_tool_calls": (None, True, False),
    "prediction": (None,), "presence_penalty": (None, 0), "reasoning_effort": (None,),
    "response_format": (None, {"type": "text"}), "tool_choice": (None, "none", "auto"), "tools": (None, []),
    "top_logprobs": (None, 0), "verbosity": (None,), "web_search_options": (None,),
    # transformers' own extension: a whole GenerationConfig, which would bypass every bound below
    "generation_config": (None,),
}
# OpenAI's bounds on the sampling fields.
NUMBER_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "frequency_penalty": (-2.0, 2.0)}
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
LOGIT_BIAS_RANGE = 100
ROLES = ("system", "user", "assistant")
# Variables that transformers' renderer fills itself; a client's `chat_template_kwargs` may not replace them.
RENDERER_VARIABLES = frozenset({"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})


class RequestError(Exception):
    """What a client sent wrong: `status_code` (400 unless said), the message, and `param`, the field at fault."""

    def __init__(self, message: str, param: str | None = None, status_code: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.status_code, self.headers = message, param, status_code, headers


@dataclass
class ImagePart:
    """An `image_url` content part: where it is in the body (`messages[0].content[1].image_url`) and its url."""

    where: str
    url: str


@dataclass
class CritiqueRequest:
    """What `check_chat_request` found in a body it accepted.

    `images`: every image part, in order; `texts`: every text of the conversation (for the prompt bound);
    `max_new_tokens`: the answer's length asked for (the operator's `--max-new-tokens` when the body names none);
    `saliency`: "map", "picture" or None; `stream`: whether the answer streams.
    """

    images: list[ImagePart] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    max_new_tokens: int = 0
    saliency: str | None = None
    stream: bool = False


def check_chat_request(
    body,
    known_fields: frozenset[str],
    max_new_tokens: int,
    max_images: int,
    check_image_url: Callable[[str], None],
    template_variables: frozenset[str] = frozenset(),
    vocab_size: int | None = None,
) -> CritiqueRequest:
    """Check a chat completion body and prepare it for transformers' handler (in place); return what it asks for.

    Args:
        body: the parsed JSON body.
        known_fields: OpenAI's chat completion fields, as transformers' handler knows them.
        max_new_tokens: the operator's bound on `max_tokens` (and its default).
        max_images: the operator's bound on images per request.
        check_image_url: raises `PhotoError`/`ValueError` for a url this server will not read, without reading it.
        template_variables: what the served chat template reads; `chat_template_kwargs` may set only these.
        vocab_size: the tokenizer's size, the bound on `logit_bias` token ids.
    Raises:
        RequestError: the first field at fault, named in `param`.
    In place: `aspect` and `saliency` are removed; the last user turn gets the critique question when it has no
    text; `logit_bias` values become floats; each image part becomes `{"image_url": {"url": ...}}`.
    """
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object (OpenAI's chat completion request)")
    unknown = sorted(set(body) - known_fields - {ASPECT_FIELD, SALIENCY_FIELD})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}{did_you_mean(unknown[0], known_fields)}", unknown[0])
    for name, unused in UNSUPPORTED_FIELDS.items():
        if body.get(name) not in unused:
            raise RequestError(f"`{name}` is not supported by this server (it writes one critique per request)", name)
    aspect, saliency = body.pop(ASPECT_FIELD, None), body.pop(SALIENCY_FIELD, None)
    request = CritiqueRequest(saliency=saliency_kind(saliency), stream=_flag(body, "stream"))
    if request.saliency is not None and request.stream:
        raise RequestError(f"`{SALIENCY_FIELD}` comes with the whole answer: ask for it without `stream`",
                           SALIENCY_FIELD)
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise RequestError("`model` must be a string (GET /v1/models names the served model)", "model")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise RequestError(f"`n`: this server returns one choice per request; n must be 1, got {n!r}", "n")
    request.max_new_tokens = _max_tokens(body, max_new_tokens)
    for name, (low, high) in NUMBER_RANGES.items():
        _number(body, name, low, high)
    if body.get("seed") is not None and not _is_int(body["seed"]):
        raise RequestError(f"`seed` must be an integer, got {body['seed']!r}", "seed")
    _check_stop(body.get("stop"))
    _check_logit_bias(body, vocab_size)
    _check_template_kwargs(body.get("chat_template_kwargs"), template_variables)
    _check_messages(body.get("messages"), request, max_images, check_image_url)
    add_prompt(body["messages"], aspect_prompt_for(aspect), aspect is not None)
    return request


def aspect_prompt_for(aspect) -> str | None:
    """The critique prompt of `aspect` (None: the paper's prompt, used when the user turn has no text)."""
    from .captioning import critique_prompt

    if aspect is None:
        return None
    if not isinstance(aspect, str) or aspect not in ASPECT_PHRASES:
        raise RequestError(f"`{ASPECT_FIELD}`: {aspect!r} is not a known aspect"
                           f"{did_you_mean(str(aspect), ASPECT_PHRASES)}; choose one of {', '.join(ASPECT_PHRASES)}",
                           ASPECT_FIELD)
    return critique_prompt(aspect=aspect)


def saliency_kind(value) -> str | None:
    if value is None or value is False:
        return None
    kind = "map" if value is True else value
    if kind not in SALIENCY_KINDS:
        raise RequestError(f"`{SALIENCY_FIELD}`: {value!r} is not one of true, {', '.join(map(repr, SALIENCY_KINDS))}",
                           SALIENCY_FIELD)
    return kind


def add_prompt(messages: list, prompt: str | None, has_aspect: bool) -> None:
    """Give the last user turn its question: the aspect's prompt, or the paper's when the turn has no text."""
    from .captioning import critique_prompt

    users = [message for message in messages if message["role"] == "user"]
    if not users:
        raise RequestError("the request has no user message", "messages")
    turn = users[-1]
    content = turn.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    has_text = any(part["type"] == "text" and part["text"].strip() for part in parts)
    if has_text and has_aspect:
        raise RequestError(f"give either a text question or `{ASPECT_FIELD}`, not both", ASPECT_FIELD)
    if not has_text:
        parts.append({"type": "text", "text": prompt or critique_prompt()})
    turn["content"] = parts


# ---------------------------------------------------------------------------------------------------------- fields
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"`{name}` must be true or false, got {value!r}", name)
    return bool(value)


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is not None and not (_is_number(value) and low <= value <= high):
        raise RequestError(f"`{name}` must be a number from {low:g} to {high:g}, got {value!r}", name)


def _max_tokens(body: dict, bound: int) -> int:
    """The answer's length asked for (`max_completion_tokens`, else `max_tokens`, else the operator's bound)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise RequestError(f"`{name}` must be a whole number >= 1, got {value!r}", name)
        if value > bound:
            raise RequestError(f"`{name}`: {value} is over this server's limit of {bound} new tokens "
                               "(its operator sets --max-new-tokens)", name)
        return value
    return bound


def _check_stop(stop) -> None:
    sequences = [stop] if isinstance(stop, str) else stop
    if stop is None:
        return
    if not isinstance(sequences, list) or not 1 <= len(sequences) <= MAX_STOP_SEQUENCES or not all(
            isinstance(text, str) and 0 < len(text) <= MAX_STOP_CHARS for text in sequences):
        raise RequestError(f"`stop` must be a string or a list of 1 to {MAX_STOP_SEQUENCES} strings of 1 to "
                           f"{MAX_STOP_CHARS} characters", "stop")


def _check_logit_bias(body: dict, vocab_size: int | None) -> None:
    """OpenAI's form: token ids (as strings) to numbers from -100 to 100; the values become floats for
    transformers' `sequence_bias`, which refuses integers."""
    bias = body.get("logit_bias")
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise RequestError("`logit_bias` must map token ids to numbers from -100 to 100", "logit_bias")
    for token, value in bias.items():
        where = f"logit_bias[{token!r}]"
        if not (token.isascii() and token.isdigit() and (vocab_size is None or int(token) < vocab_size)):
            raise RequestError(f"`{where}`: {token!r} is not a token id of this model (0 to {vocab_size - 1})"
                               if vocab_size else f"`{where}`: {token!r} is not a token id", "logit_bias")
        if not (_is_number(value) and -LOGIT_BIAS_RANGE <= value <= LOGIT_BIAS_RANGE):
            raise RequestError(f"`{where}` must be a number from -{LOGIT_BIAS_RANGE} to {LOGIT_BIAS_RANGE}, got "
                               f"{value!r}", "logit_bias")
    body["logit_bias"] = {token: float(value) for token, value in bias.items()}


def _check_template_kwargs(kwargs, template_variables: frozenset[str]) -> None:
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise RequestError("`chat_template_kwargs` must be an object", "chat_template_kwargs")
    allowed = sorted(template_variables - RENDERER_VARIABLES)
    for name, value in kwargs.items():
        where = f"chat_template_kwargs.{name}"
        if name not in allowed:
            raise RequestError(f"`{where}` is not accepted: the server's operator sets the chat template, tiling and "
                               f"limits; the served template reads {', '.join(allowed) or 'no variable'}", where)
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise RequestError(f"`{where}` must be a string, number, boolean or null", where)


def _check_messages(messages, request: CritiqueRequest, max_images: int, check_image_url) -> None:
    """Every message and content part; fills `request.images` and `request.texts`."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list", "messages")
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        if not isinstance(message, dict):
            raise RequestError(f"`{where}` must be an object with a `role` and a `content`", where)
        if message.get("role") not in ROLES:
            raise RequestError(f"`{where}.role` must be one of {', '.join(ROLES)}, got {message.get('role')!r} (a "
                               "critique request calls no tools)", f"{where}.role")
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise RequestError(f"`{where}.{extra[0]}` is not accepted in a critique request", f"{where}.{extra[0]}")
        content = message.get("content")
        if isinstance(content, str):
            request.texts.append(content)
            continue
        if not isinstance(content, list):
            raise RequestError(f"`{where}.content` must be a string or a list of content parts", f"{where}.content")
        for c, part in enumerate(content):
            _check_part(part, f"{where}.content[{c}]", message["role"], request, max_images, check_image_url)
    if not request.images:
        raise RequestError("the request has no image: ASE-MLLM critiques photos; add a user content part "
                           '{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}', "messages")


def _check_part(part, where: str, role: str, request: CritiqueRequest, max_images: int, check_image_url) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise RequestError(f"`{where}.text` must be a string (a text part holds its text)", f"{where}.text")
        request.texts.append(part["text"])
        return
    if kind != "image_url":
        raise RequestError(f"`{where}`: a critique request holds `text` and `image_url` parts, not {kind!r}", where)
    if role != "user":
        raise RequestError(f"`{where}`: images belong in user messages, not {role!r}", where)
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url.strip():
        raise RequestError(f"`{where}.image_url` must hold a url: {{\"url\": \"data:image/jpeg;base64,...\"}}",
                           f"{where}.image_url")
    if len(request.images) == max_images:
        raise RequestError(f"`{where}`: more than {max_images} image(s) in one request (its operator sets "
                           "--max-images-per-request)", where)
    try:
        check_image_url(url)
    except ValueError as error:
        raise RequestError(f"{where}.image_url: {error}", f"{where}.image_url") from None
    part["image_url"] = {"url": url}
    request.images.append(ImagePart(f"{where}.image_url", url))


__all__ = ["ASPECT_FIELD", "SALIENCY_FIELD", "SALIENCY_KINDS", "CritiqueRequest", "ImagePart", "RequestError",
           "check_chat_request"]
