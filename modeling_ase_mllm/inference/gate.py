"""What stands between a client and `ase-mllm serve`'s model: the API key, admission, the body reader, the access log.

ASGI middlewares around the FastAPI app (outermost first): `AccessLogMiddleware` (one line per request: time, client,
route, status, latency, images, tokens; never a prompt or an image), starlette's `TrustedHostMiddleware` (the
`Host` header), `ApiKeyMiddleware` (`Authorization: Bearer`, on every route but `/health`), `AdmissionMiddleware`
(a chat request gets a place in a bounded queue, or a 429 with `Retry-After`, before its body is read). The chat
route then reads the body (`read_json_body`: bounded in bytes and time), checks it and fetches its remote images
while it waits, and takes one of the `max_active_requests` places (`Ticket.activate`, a 503 after the queue
timeout) before any photo is decoded. The place is given back when the response has been sent, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import threading
import time
from datetime import datetime, timezone

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from .chat_requests import RequestError


ACCESS_LOGGER = "ase_mllm.access"
# Bodies above this are parsed on a worker thread, not on the event loop (json.loads of 20 MB takes ~50 ms).
PARSE_ON_THREAD_BYTES = 1_000_000


def error_response(error: RequestError) -> JSONResponse:
    """`error` as OpenAI's error object (its `message` is what the `openai` client puts in its exception)."""
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    code = "invalid_api_key" if error.status_code == 401 else None
    return JSONResponse({"error": {"message": error.message, "type": kind, "param": error.param, "code": code}},
                        status_code=error.status_code, headers=error.headers)


async def send_error(error: RequestError, scope, receive, send) -> None:
    await error_response(error)(scope, receive, send)


# How long a refusal made before the body is read (401, 429) keeps reading it, to drop it.
DISCARD_BODY_S = 5.0


async def refuse_unread(error: RequestError, scope, receive, send) -> None:
    """Answer `error` to a request whose body was not read: the body is read and dropped first (for at most
    `DISCARD_BODY_S`, nothing kept), because the connection closes after an answer, and a client still sending its
    body then gets a broken pipe instead of the answer (as 40 concurrent 1 MB photos did against a full queue)."""
    async def discard() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(discard(), DISCARD_BODY_S)
    except asyncio.TimeoutError:
        pass
    await send_error(error, scope, receive, send)


class ApiKeyMiddleware:
    """Every HTTP route but `open_paths` needs `Authorization: Bearer <api_key>` (compared in constant time)."""

    def __init__(self, app, api_key: str, open_paths=("/health",)):
        self.app, self.key, self.open_paths = app, api_key.encode(), frozenset(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), self.key):
            return await self.app(scope, receive, send)
        await refuse_unread(RequestError("a valid API key is required: send Authorization: Bearer <key> (the key the "
                                         "server was started with)", status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"}), scope, receive, send)


class Admission:
    """A bounded queue: at most `max_active` requests run, at most `max_waiting` more wait for their turn.

    `ticket()` admits a request (None when the queue is full); the ticket's `activate()` waits for a place to run
    (a 503 after `queue_timeout_s`); `release()` gives back whatever it holds. `Retry-After` estimates when a place
    frees: the running mean of how long a request keeps its place, times the queue ahead, over the places.
    """

    def __init__(self, max_active: int, max_waiting: int, queue_timeout_s: float):
        self.max_active, self.max_waiting, self.queue_timeout_s = max_active, max_waiting, queue_timeout_s
        self.places = asyncio.Semaphore(max_active)
        self.admitted = 0
        self.mean_run_s = 1.0

    def ticket(self) -> Ticket | None:
        if self.admitted >= self.max_active + self.max_waiting:
            return None
        self.admitted += 1
        return Ticket(self)

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.mean_run_s * self.admitted / self.max_active)))

    def busy(self, status: int, reason: str) -> RequestError:
        return RequestError(f"the server is busy: {reason}; retry after the Retry-After seconds", status_code=status,
                            headers={"Retry-After": self.retry_after()})


class Ticket:
    """One admitted request's place in `Admission`: waiting, then (after `activate`) running."""

    def __init__(self, admission: Admission):
        self.admission, self.started, self.released = admission, None, False

    async def activate(self) -> None:
        admission = self.admission
        try:
            async with asyncio.timeout(admission.queue_timeout_s):
                await admission.places.acquire()
        except TimeoutError:
            raise admission.busy(503, f"no request finished within the queue timeout of "
                                      f"{admission.queue_timeout_s:g} s") from None
        self.started = time.perf_counter()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        admission = self.admission
        admission.admitted -= 1
        if self.started is not None:
            admission.places.release()
            admission.mean_run_s = 0.8 * admission.mean_run_s + 0.2 * (time.perf_counter() - self.started)


class AdmissionMiddleware:
    """Admits each request to `paths` through `admission` before its body is read (a full queue answers 429), and
    notices when its client hangs up.

    The request's state carries its ticket (`request.state.admission`, released once the response has been sent,
    streamed or not, or the request failed or was cancelled) and `request.state.gone`, a `threading.Event` set
    when the client has closed its connection, or the request ended: a generation checks it at every token. Once
    the body is read, this middleware alone listens to the connection (one listener, whatever the app awaits) and
    tells the app of the hang-up.
    """

    def __init__(self, app, admission: Admission, paths=("/v1/chat/completions",)):
        self.app, self.admission, self.paths = app, admission, frozenset(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        ticket = self.admission.ticket()
        if ticket is None:
            return await refuse_unread(self.admission.busy(429, f"{self.admission.max_active} requests run and "
                                                                f"{self.admission.max_waiting} wait"),
                                       scope, receive, send)
        gone, hung_up, listener = threading.Event(), asyncio.Event(), []

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            hung_up.set()

        async def receive_for_app():
            if listener:  # the body is in: only a hang-up can come, and `listen` hears it
                await hung_up.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                hung_up.set()
            elif not message.get("more_body", False):
                listener.append(asyncio.create_task(listen()))
            return message

        started = []

        async def send_and_note(message):
            started.append(message["type"] == "http.response.start")
            await send(message)

        state = scope.setdefault("state", {})
        state["admission"], state["gone"] = ticket, gone
        try:
            await self.app(scope, receive_for_app, send_and_note)
        except asyncio.CancelledError:
            # The server is stopping and its shutdown timeout has passed: say so, rather than the 500 uvicorn sends
            # for a cancelled request (a stream already under way just ends).
            if started:
                raise
            await send_error(RequestError("the server is shutting down; retry after the Retry-After seconds",
                                          status_code=503, headers={"Retry-After": self.admission.retry_after()}),
                             scope, receive, send)
        finally:
            gone.set()  # ended or cancelled: a generation still running for it stops
            for task in listener:
                task.cancel()
            ticket.release()


async def read_json_body(request: Request, max_bytes: int, timeout_s: float):
    """The request's JSON body, read within `max_bytes` (413) and `timeout_s` (408); not JSON is a 400.

    Raises `ClientDisconnect` when the client left before sending it all.
    """
    length = request.headers.get("content-length")
    too_large = RequestError(f"the body is over this server's limit of {max_bytes / 1e6:g} MB (images count 4/3 of "
                             "their bytes as base64)", status_code=413)
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(f"the body did not arrive within {timeout_s:g} s", status_code=408) from None
    data = b"".join(chunks)
    del chunks
    try:
        return await asyncio.to_thread(json.loads, data) if size > PARSE_ON_THREAD_BYTES else json.loads(data)
    except ValueError as error:
        raise RequestError(f"the body is not valid JSON: {error}") from None


class AccessLogMiddleware:
    """One line per HTTP request on the `ase_mllm.access` logger (INFO):

        2026-01-05T10:00:00.123+00:00 127.0.0.1:50412 "POST /v1/chat/completions" 200 0.412s images=1
        prompt_tokens=796 completion_tokens=10

    The client is the ASGI client address (behind a proxy: the forwarded one, when uvicorn trusts the proxy).
    Images and tokens are what the chat route put in `request.state.access`; "-" where unknown.
    """

    def __init__(self, app, logger: logging.Logger | None = None):
        self.app, self.logger = app, logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), []

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            access = scope.get("state", {}).get("access", {})
            client = scope.get("client")
            self.logger.info(
                '%s %s "%s %s" %s %.3fs images=%s prompt_tokens=%s completion_tokens=%s',
                datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                f"{client[0]}:{client[1]}" if client else "-", scope["method"], scope["path"],
                status[0] if status else 500, time.perf_counter() - started,
                *(access.get(key, "-") for key in ("images", "prompt_tokens", "completion_tokens")),
            )


__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware", "Admission", "AdmissionMiddleware", "ApiKeyMiddleware",
           "error_response", "read_json_body"]
