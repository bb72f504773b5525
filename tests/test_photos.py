"""The bounded photo reader (`inference.photos`): regular files only, no process-wide lock around file I/O, and the
server's rule for local files (resolved first, under the operator's folders only, one refusal message)."""

import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import PIL.Image
import pytest

from conftest import random_image
from modeling_ase_mllm.inference.photos import LocalFiles, PhotoError, PhotoLimits, read_photo


def test_a_fifo_is_refused_at_once_and_never_holds_up_another_photo(tmp_path):
    """Before: opening a FIFO nobody writes to blocked inside a process-wide lock, and every other photo waited."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    random_image(60, 80, seed=1).save(good)
    with ThreadPoolExecutor(2) as pool:
        refused = pool.submit(read_photo, str(fifo))
        time.sleep(0.1)
        other = pool.submit(read_photo, str(good))
        assert other.result(timeout=30).size == (80, 60)
        with pytest.raises(PhotoError) as error:
            refused.result(timeout=30)
    assert str(error.value) == f"image '{fifo}' is not a regular file (a pipe, device or socket is never read)"
    with pytest.raises(PhotoError, match="is not a regular file"):
        read_photo("/dev/zero")


def test_decoding_does_not_hold_a_lock_that_another_photo_waits_for(tmp_path, monkeypatch):
    """A photo whose decoding hangs (here: a stalled `load`) leaves other threads free to read theirs; the only lock
    is held while Pillow parses a header already in memory."""
    from modeling_ase_mllm import image_processing_ase_mllm

    data = io.BytesIO()
    random_image(60, 80, seed=2).save(data, format="PNG")
    release, real_decode = threading.Event(), image_processing_ase_mllm.decode_image

    def decode(image, name=None, draft_size=None):
        if image.size == (80, 60):
            release.wait(30)
        return real_decode(image, name, draft_size)

    monkeypatch.setattr(image_processing_ase_mllm, "decode_image", decode)
    other = io.BytesIO()
    random_image(30, 40, seed=3).save(other, format="PNG")
    with ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(read_photo, data.getvalue())
        time.sleep(0.1)
        assert pool.submit(read_photo, other.getvalue()).result(timeout=10).size == (40, 30)
        release.set()
        assert stalled.result(timeout=30).size == (80, 60)


def test_the_pixel_bound_is_ours_whatever_pillows_threshold(tmp_path):
    """A photo over Pillow's own threshold is measured and refused by `read_photo` with its size; a bound raised
    above Pillow's lets it through; Pillow's threshold is as it was."""
    path = tmp_path / "wide.png"
    PIL.Image.new("RGB", (3000, 1000)).save(path)
    saved = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = 1_000_000  # Pillow would refuse it before we could look (over twice that)
    try:
        with pytest.raises(PhotoError) as error:
            read_photo(path, PhotoLimits(max_megapixels=2))
        assert str(error.value) == (f"image '{path}' has 3 megapixels (3000x1000), over the limit of 2 "
                                    "(--max-megapixels raises it)")
        assert read_photo(path, PhotoLimits(max_megapixels=3)).size == (3000, 1000)
        assert PIL.Image.MAX_IMAGE_PIXELS == 1_000_000
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = saved


def test_local_files_resolve_links_and_dots_and_refuse_alike(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    random_image(20, 30, seed=4).save(allowed / "p.png")
    random_image(20, 30, seed=5).save(outside / "secret.png")
    (allowed / "link.png").symlink_to(outside / "secret.png")
    (allowed / "inner.png").symlink_to(allowed / "p.png")  # a link that stays inside
    os.mkfifo(allowed / "pipe.png")
    files = LocalFiles([allowed])
    limits = PhotoLimits()
    assert files.read(str(allowed / "p.png"), limits) == (allowed / "p.png").read_bytes()
    assert files.read(f"{allowed}/../allowed/p.png", limits) == (allowed / "p.png").read_bytes()
    assert files.read(str(allowed / "inner.png"), limits) == (allowed / "p.png").read_bytes()
    messages = set()
    for path in (allowed / "link.png", f"{allowed}/../outside/secret.png", allowed / "pipe.png", allowed,
                 allowed / "missing.png", outside / "secret.png", outside / "missing.png", "/etc/passwd", "/dev/zero"):
        with pytest.raises(PhotoError) as error:
            files.read(str(path), limits)
        messages.add(str(error.value).replace(repr(str(path)), "PATH"))
    assert messages == {"local file PATH refused: only regular files under the server's --allowed-local-media-path "
                        "folders are read"}
    with pytest.raises(PhotoError, match="this server reads no local files"):
        LocalFiles().read(str(allowed / "p.png"), limits)
