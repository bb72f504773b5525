"""Reading one photo within bounds, and which files on its disk a server may read.

`read_photo` is the one reader every entry point uses (`ase-mllm caption` and `saliency`, the server, the web
demo): a path or bytes become an 8-bit RGB image only after the file-size and pixel bounds have been checked, and a
path is read only when it names a regular file (a FIFO nobody writes to, a device or a directory is refused before
anything reads it). `LocalFiles` is the server's rule for `image_url`s that name a file: none by default, and
under the operator's folders only regular files, with one refusal message whatever the reason, so that a client
learns nothing about the server's disk.

PIL is imported by the functions that use it: the CLI imports this module to build its parser, and `ase-mllm
--help` must not wait for it.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path


# What one photo may cost before it is decoded. The pixel bound defaults to Pillow's own decompression-bomb
# threshold (`PIL.Image.MAX_IMAGE_PIXELS`, about 89.5 megapixels: some 270 MB once decoded to RGB).
DEFAULT_MAX_FILE_MB = 200.0
# Pillow checks pixels against its process-wide threshold when it parses a header, before `read_photo` can check
# its own bound (which may be higher). `read_photo` lifts it under this lock while Pillow parses a header that is
# already in memory, so no file or network I/O ever waits for the lock.
_PILLOW_THRESHOLD_LOCK = threading.Lock()
# A FIFO opened for reading waits for a writer unless opened non-blocking (the flag does nothing to regular files).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


# Errors that belong to one photo (or one batch): the photo is reported and the run goes on. Anything else is a
# bug and stops the run.
PER_FILE_ERRORS = (ValueError, RuntimeError, OSError, MemoryError)


class PhotoError(ValueError):
    """A photo that cannot be used; the message names it and says why."""


@functools.cache
def pillow_max_pixels() -> int | None:
    """Pillow's decompression-bomb threshold as it stood when first asked (`read_photo` lifts it only briefly)."""
    import PIL.Image

    return PIL.Image.MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class PhotoLimits:
    """Bounds checked before a photo is decoded (the CLI's `--max-megapixels` / `--max-file-mb`, the web demo's)."""

    max_megapixels: float | None = None  # None: Pillow's decompression-bomb threshold
    max_file_mb: float = DEFAULT_MAX_FILE_MB

    @property
    def max_pixels(self) -> int | None:
        return int(self.max_megapixels * 1e6) if self.max_megapixels is not None else pillow_max_pixels()

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1e6)

    def too_large(self, name: str, size_bytes: float) -> PhotoError:
        return PhotoError(f"image {name} is {size_bytes / 1e6:.1f} MB, over the limit of {self.max_file_mb:g} MB "
                          "(--max-file-mb raises it)")


def open_regular_file(path, name: str | None = None, follow_symlinks: bool = True):
    """`path` opened for binary reading, if it is a regular file; a binary file object.

    The type is checked on the open descriptor (`fstat`), so nothing can swap the file between the check and the
    read; a FIFO is opened without waiting for a writer, and a directory, FIFO, device or socket is refused
    before a byte is read. `follow_symlinks=False` refuses a symbolic link as the last component.
    Raises:
        PhotoError: naming the file (`name`, default its path) and why it is not read.
    """
    name = name or repr(str(path))
    flags = _OPEN_FLAGS | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise PhotoError(f"image {name} could not be read: no such file") from None
    except IsADirectoryError:
        raise PhotoError(f"image {name} is a directory, not an image file") from None
    except OSError as error:
        raise PhotoError(f"image {name} could not be read: {error.strerror or error}") from None
    kind = stat.S_IFMT(os.fstat(descriptor).st_mode)
    if kind != stat.S_IFREG:
        os.close(descriptor)
        if kind == stat.S_IFDIR:
            raise PhotoError(f"image {name} is a directory, not an image file (give the files in it, e.g. "
                             f"{path}/*.jpg)")
        raise PhotoError(f"image {name} is not a regular file (a pipe, device or socket is never read)")
    return os.fdopen(descriptor, "rb")


def read_bounded(stream, name: str, limits: PhotoLimits) -> bytes:
    """All of an open regular file, refused when it is empty or over `limits.max_file_mb` (checked before reading,
    and again on what was read, in case the file grew meanwhile)."""
    size = os.fstat(stream.fileno()).st_size
    if size == 0:
        raise PhotoError(f"image {name} could not be read: the file is empty")
    if size > limits.max_bytes:
        raise limits.too_large(name, size)
    data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise limits.too_large(name, len(data))
    return data


def read_photo(source, limits: PhotoLimits = PhotoLimits()):
    """Decode a path or `bytes` to 8-bit RGB (`to_rgb`), within `limits`; a PIL image is only converted.

    A path is read (whole, at most `limits.max_file_mb`) only if it is a regular file; the pixel bound is checked
    on the header, so an oversized photo costs nothing to refuse.
    Raises:
        PhotoError: naming the photo (a directory, not a regular file, missing, empty, corrupt, too many bytes or
            pixels).
    """
    import PIL.Image

    from ..image_processing_ase_mllm import decode_image, describe_image_input, open_image, to_rgb

    if isinstance(source, PIL.Image.Image):
        return to_rgb(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return to_rgb(open_image(source))  # the library's convenience; the server fetches through `image_urls`
    name = describe_image_input(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) > limits.max_bytes:
            raise limits.too_large(name, len(source))
        data = source
    else:
        with open_regular_file(source, name) as stream:
            data = read_bounded(stream, name, limits)
    image = _open_header(data, name)
    max_pixels = limits.max_pixels
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise PhotoError(
            f"image {name} has {width * height / 1e6:.3g} megapixels ({width}x{height}), over the limit of "
            f"{max_pixels / 1e6:.3g} (--max-megapixels raises it)"
        )
    try:
        return to_rgb(decode_image(image, name))
    except (ValueError, OSError) as error:
        raise PhotoError(str(error) if name in str(error) else f"image {name}: {error}") from error


def _open_header(data: bytes, name: str):
    """Pillow's lazy image of `data` (header parsed, pixels not decoded), whatever Pillow's own threshold."""
    import PIL.Image

    with _PILLOW_THRESHOLD_LOCK:
        saved, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
        try:
            return PIL.Image.open(io.BytesIO(data))
        except PIL.UnidentifiedImageError:  # its message names the buffer object, not the photo
            raise PhotoError(f"image {name} could not be read: not an image file Pillow can identify") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise PhotoError(f"image {name} could not be read: {error}") from None
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = saved


class LocalFiles:
    """Which files on the server's disk a client may name as an image: only regular files under `roots`.

    A client's path is resolved first (symbolic links, `..`), then must lie under one of the roots (resolved the
    same way); the last component may not be a symbolic link at open time, and only a regular file is read. Every
    refusal, whether the path exists or not, gets the same message. With no roots, no local file is read.

    Args:
        roots: the operator's folders (`--allowed-local-media-path`).
    """

    def __init__(self, roots=()):
        self.roots = tuple(Path(os.path.realpath(root)) for root in roots)

    def refusal(self, path: str) -> PhotoError:
        if not self.roots:
            return PhotoError(f"local file {path!r} refused: this server reads no local files (its operator can allow "
                              "a folder with --allowed-local-media-path); send the image as a data URL")
        return PhotoError(f"local file {path!r} refused: only regular files under the server's "
                          "--allowed-local-media-path folders are read")

    def read(self, path: str, limits: PhotoLimits) -> bytes:
        """The bytes of the file `path` names (at most `limits.max_file_mb`), or `PhotoError` (the refusal)."""
        if not self.roots:
            raise self.refusal(path)
        resolved = Path(os.path.realpath(path))
        if not any(resolved == root or root in resolved.parents for root in self.roots):
            raise self.refusal(path)
        try:
            stream = open_regular_file(resolved, follow_symlinks=False)
        except PhotoError:
            raise self.refusal(path) from None
        with stream:
            return read_bounded(stream, repr(path), limits)


def image_names(images: list) -> list[str]:
    """How results name each input: its path, or `image[i]` for an in-memory image."""
    return [str(item) if isinstance(item, (str, Path)) else f"image[{index}]" for index, item in enumerate(images)]


def read_photos(items: list, results: list, limits: PhotoLimits) -> dict:
    """One batch's photos decoded (`photos.read_photo`), by offset in the batch; a photo that cannot be read is left
    out and its error set on `results[offset]`."""
    photos = {}
    for offset, item in enumerate(items):
        try:
            photos[offset] = read_photo(item, limits)
        except PER_FILE_ERRORS as error:
            results[offset].error = str(error)
    return photos


__all__ = ["DEFAULT_MAX_FILE_MB", "PER_FILE_ERRORS", "LocalFiles", "PhotoError", "PhotoLimits", "image_names",
           "open_regular_file", "read_photo", "read_photos"]
