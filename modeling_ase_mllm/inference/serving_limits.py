"""The operator's bounds on `ase-mllm serve`: what one request, and all requests together, may cost.

Light on purpose (standard library only): the command line reads the defaults to build `ase-mllm serve --help`.

Memory: a request waiting for its turn holds its body (at most `max_body_bytes`) and the images fetched for it
(at most `max_images_per_request × photos.max_file_mb`); photos are decoded, and their tensors built, only once a
request is admitted to run, one request at a time on the server's preparing thread. So beyond the model, the
server holds at most `max_waiting_requests + max_active_requests` bodies, the decoded photos of one request
(`max_images_per_request × photos.max_megapixels`, about 3 bytes a pixel, plus Pillow's working copies) and the
tensors of `max_active_requests` requests, however many clients connect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .photos import PhotoLimits


# A critique is short; the caption command's default length.
DEFAULT_MAX_NEW_TOKENS = 128
# A served photo: a JPEG of Pillow's 89.5 megapixels is well under this; `ase-mllm caption`'s bound is 200 MB.
SERVE_MAX_FILE_MB = 20.0
# What a body may hold besides its images (the messages' text, the fields); the prompt-token bound refuses long
# text, this only bounds what is read.
TEXT_ALLOWANCE_BYTES = 1_000_000


@dataclass(frozen=True)
class ServingLimits:
    """The bounds of `ase-mllm serve`, one field per flag.

    Args:
        photos: each image's file size and pixels (`--max-file-mb`, `--max-megapixels`), checked before decoding.
        max_images_per_request: images in one request (`--max-images-per-request`).
        max_new_tokens: the longest answer, and the length when a request names none (`--max-new-tokens`); also
            capped by the model's positions left after the prompt.
        max_prompt_tokens: the longest prompt, images' tokens included (`--max-prompt-tokens`; None: the model's
            positions less one).
        max_active_requests: requests that decode, build tensors or generate at once (`--max-active-requests`).
        max_waiting_requests: requests admitted to wait for an active place (`--max-waiting-requests`); one more
            gets 429 with `Retry-After`.
        queue_timeout_s: how long a request waits for an active place before a 503 (`--queue-timeout`).
        body_timeout_s: how long a client may take to send its body (408 after).
        image_fetch_timeout_s: total time for one remote image, redirects included (`--image-fetch-timeout`).
        image_fetch_connections: remote fetches at once, all requests together (`--image-fetch-connections`).
        shutdown_timeout_s: on SIGTERM or Ctrl-C, how long requests in flight may finish (`--shutdown-timeout`);
            what is still running then is cancelled.
    """

    photos: PhotoLimits = field(default_factory=lambda: PhotoLimits(max_file_mb=SERVE_MAX_FILE_MB))
    max_images_per_request: int = 1
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    max_prompt_tokens: int | None = None
    max_active_requests: int = 2
    max_waiting_requests: int = 8
    queue_timeout_s: float = 60.0
    body_timeout_s: float = 30.0
    image_fetch_timeout_s: float = 10.0
    image_fetch_connections: int = 4
    shutdown_timeout_s: float = 20.0

    @property
    def max_body_bytes(self) -> int:
        """A request body's bound: its images as base64 data URLs (4/3 of their bytes) plus the text allowance."""
        return self.max_images_per_request * -(-self.photos.max_bytes * 4 // 3) + TEXT_ALLOWANCE_BYTES


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "SERVE_MAX_FILE_MB", "ServingLimits"]
