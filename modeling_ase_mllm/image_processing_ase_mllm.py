"""ASE-MLLM image processor: InternVL's dynamic 448 px tiling plus per-tile aesthetic-saliency maps.

Builds on transformers' `GotOcr2ImageProcessorPil` (the PIL backend InternVL uses; torchvision is not needed).
What it adds:
- the aspect-ratio search of InternVL's own `dynamic_preprocess`, including its candidate order, which
  decides exact ties differently from GotOcr2's `get_optimal_tiled_canvas` (e.g. 15×6 px at 4 tiles:
  InternVL picks 4×1, GotOcr2 2×2);
- robust loading: EXIF rotation, alpha, palette, 16-bit and CMYK images, and errors that name the input;
- saliency, computed once per image on the whole image: for the default `eat_layercam` source the model runs
  EAT + LayerCAM, so this emits each whole image at EAT's 224 px (`saliency_pixel_values`) and its tile grid
  (`tile_grids`); for the classical sources, or for precomputed maps (`image_saliency`), it emits
  `saliency_maps`, one `(G, G)` map per tile, resampled onto every tile and the thumbnail.

Remote code: imports only transformers, torch, numpy, PIL and sibling modules.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from io import BytesIO
from pathlib import Path

import numpy as np
import PIL.ExifTags
import PIL.Image
import PIL.ImageOps
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    SizeDict,
    make_flat_list_of_images,
)
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorKwargs,
    GotOcr2ImageProcessorPil,
)

from .configuration_ase_mllm import SALIENCY_SOURCES
from .saliency_ase_mllm import map_saliency_to_tiles, saliency_processor_kwargs, spectral_residual_saliency, uniform_saliency_maps


# The most 448 px tiles per image (InternVL2's largest dynamic-resolution setting).
MAX_TILES = 40


def has_thumbnail(cols: int, rows: int) -> bool:
    """InternVL adds the whole image as one more tile (the thumbnail) only when it cuts it into 2+ tiles."""
    return cols * rows > 1


def tile_count(cols: int, rows: int) -> int:
    """Tiles a `cols × rows` grid gives, thumbnail included: what `pixel_values` holds for the image."""
    return cols * rows + int(has_thumbnail(cols, rows))

@lru_cache(maxsize=64)
def candidate_grids(min_patches: int, max_patches: int) -> tuple[tuple[int, int], ...]:
    """Every `(cols, rows)` with `min_patches <= cols*rows <= max_patches`, ordered as InternVL orders them.

    InternVL collects the grids in a Python `set` and stable-sorts them by tile count, so grids with the same
    count keep the set's iteration order. That order decides exact ties, so we reproduce it rather than
    enumerate in our own order.
    """
    grids = {
        (cols, rows)
        for count in range(min_patches, max_patches + 1)
        for cols in range(1, count + 1)
        for rows in range(1, count + 1)
        if min_patches <= cols * rows <= max_patches
    }
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


@lru_cache(maxsize=1024)
def select_tile_grid(width: int, height: int, min_patches: int, max_patches: int,
                     tile_size: int = 448) -> tuple[int, int]:
    """InternVL's aspect-ratio search: the grid whose cols/rows is closest to width/height.

    On an exact tie the later (larger) grid wins only while the image has more than half the pixels of that
    grid's canvas, so small images are not blown up into many tiles.

    Returns:
        `(cols, rows)`.
    """
    aspect_ratio = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_patches, max_patches):
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def describe_image_input(image) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(image, (str, Path)):
        return repr(str(image))
    if isinstance(image, PIL.Image.Image):
        if getattr(image, "filename", ""):  # opened from a file: its path is the name the user knows
            return repr(str(image.filename))
        return f"PIL image {image.size[0]}x{image.size[1]} mode {image.mode}"
    if isinstance(image, (bytes, bytearray)):
        return f"{len(image)} bytes"
    return type(image).__name__


def open_image(source, decode: bool = True) -> PIL.Image.Image:
    """Open a path, `bytes` or PIL image; raise a `ValueError` that names the input if it cannot be decoded.

    `decode=False` reads the header only; `decode_image` decodes later (then a truncated file fails there).
    """
    if isinstance(source, PIL.Image.Image):
        return source
    if isinstance(source, (str, Path)) and str(source).startswith(("http://", "https://")):
        from transformers.image_utils import load_image

        return load_image(str(source))
    name = describe_image_input(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            image = PIL.Image.open(BytesIO(source))
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError("no such file")
            if path.stat().st_size == 0:
                raise ValueError("the file is empty")
            image = PIL.Image.open(path)
    except (OSError, ValueError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"image {name} could not be read: {error}") from error
    return decode_image(image, name) if decode else image


def decode_image(image: PIL.Image.Image, name: str | None = None, draft_size: tuple[int, int] | None = None):
    """Decode an opened image now, so that a truncated file fails here, not halfway through tiling.

    `draft_size` `(width, height)`: let a JPEG decode at the smallest of 1/2, 1/4, 1/8 scale that keeps both sides
    at least this large (Pillow's `draft`; the pixels then differ from a full decode resized).
    """
    try:
        if draft_size is not None:
            image.draft(None, draft_size)
        image.load()
    except (OSError, ValueError) as error:
        raise ValueError(f"image {name or describe_image_input(image)} could not be read: {error}") from error
    return image


# EXIF orientations that swap width and height (transpose, rotate 90 / 270, transverse).
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)


def exif_orientation(image: PIL.Image.Image) -> int:
    """The EXIF orientation tag, 1 (as stored) when absent; read from the header, without decoding."""
    return image.getexif().get(PIL.ExifTags.Base.Orientation, 1)


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Bring any PIL image to 8-bit RGB the way a photo viewer shows it.

    - EXIF orientation is applied (phones store portraits as rotated landscapes);
    - 16/32-bit grey (`I;16`, `I`) is rescaled to 8 bits, not clipped (clipping turns most of it white);
    - transparency (RGBA, LA, palette with transparency) is composited onto white;
    - CMYK, YCbCr, palette and grey are converted by PIL.
    An RGB image that needs none of this is returned as is, not copied (a 12-megapixel copy costs ~15 ms).
    """
    if exif_orientation(image) != 1:
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = PIL.Image.fromarray(np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# PIL filters that torch's antialiased uint8 interpolation also implements (`fast_resize`).
TORCH_FILTERS = {PILImageResampling.BICUBIC: "bicubic", PILImageResampling.BILINEAR: "bilinear"}


@dataclass
class DecodedImage:
    """One input image, decoded: a PIL image (8-bit RGB) or, for array and tensor inputs, the `(C, H, W)` array
    transformers' backend makes of them. `width`, `height`: the full-resolution size, which decides the tile grid
    (a JPEG decoded at reduced scale with `fast_decode` is smaller). `pixels` (`fast_resize` only): the same RGB
    pixels as a uint8 `(1, 3, H, W)` channels-last tensor, for torch's interpolation."""

    image: "PIL.Image.Image | np.ndarray"
    width: int
    height: int
    pixels: torch.Tensor | None = None


def pil_image_ids(images) -> set[int]:
    """`id()` of every PIL image in a (nested) list of inputs."""
    if isinstance(images, (list, tuple)):
        return set().union(*(pil_image_ids(item) for item in images))
    return {id(images)} if isinstance(images, PIL.Image.Image) else set()


def run_in_threads(tasks: list, threads: int, costs: list | None = None) -> list:
    """Call every task on up to `threads` threads (PIL's decoding and resizing and NumPy's `take` release the GIL)
    and return the results in task order. With `costs`, the costliest start first, so that the threads finish
    together. An exception is raised as the task raised it."""
    order = sorted(range(len(tasks)), key=lambda index: -costs[index]) if costs else list(range(len(tasks)))
    if threads <= 1 or len(tasks) <= 1:
        results = [tasks[index]() for index in order]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            results = list(pool.map(lambda index: tasks[index](), order))
    in_task_order = [None] * len(tasks)
    for index, result in zip(order, results):
        in_task_order[index] = result
    return in_task_order


class AseMllmImageProcessorKwargs(GotOcr2ImageProcessorKwargs, total=False):
    r"""
    saliency_source (`str`, *optional*, defaults to `self.saliency_source`):
        `"eat_layercam"`, `"spectral_residual"` or `"uniform"`; must match the model's `saliency_config.source`.
    saliency_grid_size (`int`, *optional*, defaults to `self.saliency_grid_size`):
        Side of each tile's saliency map.
    saliency_image_size (`int`, *optional*, defaults to `self.saliency_image_size`):
        `eat_layercam`: side of the whole-image input of EAT (224).
    image_saliency (`list`, *optional*):
        Precomputed whole-image saliency maps, one `(h, w)` array per image in order (e.g. a `datasets` column
        from `modeling_ase_mllm.precompute_saliency`); they are mapped onto the tiles here and EAT is not run.
    fast_decode (`bool`, *optional*, defaults to `self.fast_decode`):
        Decode JPEG files given as paths or bytes at 1/2, 1/4 or 1/8 scale when the tile canvas is at least that
        much smaller (Pillow's `draft`): faster on large photos, but the pixels are then no longer exactly
        InternVL's (`bench/processor_throughput.py` measures by how much). PIL images and arrays are unaffected.
    fast_resize (`bool`, *optional*, defaults to `self.fast_resize`):
        Resize with torch's antialiased uint8 bicubic (or bilinear) interpolation instead of PIL's: the same
        filter, several times faster, but rounded differently, so a few pixels differ from InternVL's by a level
        or two (`bench/processor_throughput.py` measures it). Other filters stay with PIL.
    """

    saliency_source: str
    saliency_grid_size: int
    saliency_working_size: int
    saliency_blur_sigma: float
    saliency_image_size: int
    image_saliency: list
    fast_decode: bool
    fast_resize: bool


class AseMllmImageProcessor(GotOcr2ImageProcessorPil):
    r"""
    Tiles each image exactly as InternVL's `dynamic_preprocess` (448 px tiles, `min_patches`..`max_patches`,
    row-major crops, a thumbnail when there are 2+ tiles, BICUBIC, ImageNet mean/std) and returns, aligned tile
    by tile, the saliency maps the IAS-ViT needs.

    Returns a `BatchFeature` with `pixel_values` `(num_tiles, 3, 448, 448)`, `num_patches` (tiles per image,
    thumbnail included) and either `saliency_pixel_values` `(num_images, 3, 224, 224)` + `tile_grids`
    `(num_images, 2)` (`eat_layercam`: the model computes the maps) or `saliency_maps` `(num_tiles, G, G)`, and
    `saliency_source`, the source they were made for, which the model checks against its own. The saliency settings
    are the model's: `from_saliency_config(model.config.saliency_config)` builds the processor from them.

    Files are decoded, and the canvas, thumbnail and EAT input resized, on `torch.get_num_threads()` threads
    (1 in a `DataLoader` worker, which sets it so); each image stays in PIL until its resized pixels are normalised
    by table lookup straight into the output. `fast_decode` and `fast_resize` trade InternVL's exact pixels for
    more speed; both are off by default.
    """

    valid_kwargs = AseMllmImageProcessorKwargs
    model_input_names = ["pixel_values", "saliency_maps", "saliency_pixel_values", "tile_grids", "saliency_source"]
    resample = PILImageResampling.BICUBIC
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"height": 448, "width": 448}
    crop_to_patches = True
    min_patches = 1
    max_patches = 12
    saliency_source = "eat_layercam"
    saliency_grid_size = 32
    saliency_image_size = 224
    saliency_working_size = 64
    saliency_blur_sigma = 2.5
    fast_decode = False
    fast_resize = False

    @classmethod
    def from_saliency_config(cls, saliency_config, **kwargs):
        """The processor for a model whose `config.saliency_config` is given: its saliency settings are the model's."""
        return cls(**{**kwargs, **saliency_processor_kwargs(saliency_config)})

    def fetch_images(self, image_url_or_urls, decode: bool = True):
        """Paths and bytes are opened here, so that a bad file is named in the error (`decode=False`: header only)."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item, decode) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, Path, bytes, bytearray)):
            return open_image(image_url_or_urls, decode=decode)
        return super().fetch_images(image_url_or_urls)

    def tile_grid(self, width: int, height: int, crop_to_patches: bool, min_patches: int, max_patches: int,
                  tile_size: int) -> tuple[int, int]:
        """`(cols, rows)` of the tiles of a `width × height` image; `(1, 1)` when it is not cropped to tiles."""
        if not crop_to_patches or max_patches <= 1:
            return 1, 1
        return select_tile_grid(width, height, min_patches, max_patches, tile_size)

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs) -> list[DecodedImage]:
        """Every input image decoded, in order (`_decode`), on `torch.get_num_threads()` threads."""
        min_patches, max_patches = kwargs.get("min_patches", self.min_patches), kwargs.get("max_patches", self.max_patches)
        if not 1 <= min_patches <= max_patches <= MAX_TILES:
            raise ValueError(f"need 1 <= min_patches <= max_patches <= {MAX_TILES}, got {min_patches}..{max_patches}.")
        # Files are only opened here (header read, so a missing or unknown file is named at once) and decoded in
        # parallel below; only those may be decoded at reduced scale, never a PIL image the caller holds.
        given = pil_image_ids(images)
        images = make_flat_list_of_images(self.fetch_images(images, decode=False), expected_ndims=expected_ndims)
        tasks = [
            partial(self._decode, index, image, id(image) not in given, *args, **kwargs)
            for index, image in enumerate(images)
        ]
        return run_in_threads(tasks, torch.get_num_threads())

    def _decode(self, index: int, image, opened_here: bool, *args, size: SizeDict, crop_to_patches: bool,
                min_patches: int, max_patches: int, fast_decode: bool = False, fast_resize: bool = False,
                **kwargs) -> DecodedImage:
        """One input as a `DecodedImage`: files decoded (with `fast_decode`, JPEGs at reduced scale), PIL images
        brought to 8-bit RGB (`to_rgb`), arrays and tensors to `(C, H, W)` by transformers' backend."""
        if isinstance(image, PIL.Image.Image):
            width, height = image.size
            swapped = exif_orientation(image) in SWAPPED_ORIENTATIONS
            if swapped:
                width, height = height, width
            draft = None
            if opened_here and fast_decode:
                cols, rows = self.tile_grid(width, height, crop_to_patches, min_patches, max_patches, size.height)
                draft = (rows * size.height, cols * size.width) if swapped else (cols * size.width, rows * size.height)
            image = decode_image(image, draft_size=draft)
        try:
            if isinstance(image, PIL.Image.Image):
                image = to_rgb(image)
            else:
                image = self.process_image(image, *args, **kwargs)
                height, width = image.shape[-2:]
        except ValueError as error:
            raise ValueError(f"image {index} ({describe_image_input(image)}): {error}") from error
        if height < 1 or width < 1:
            raise ValueError(f"image {index} has no pixels (size {width}x{height}).")
        pixels = None
        if fast_resize and isinstance(image, PIL.Image.Image):
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # writable copy, channels-last
        return DecodedImage(image, width, height, pixels)

    def pixel_writer(self, channels: int, do_rescale: bool, rescale_factor: float, do_normalize: bool, mean, std):
        """A function `write(pixels, out)` that rescales and normalises `(h, w, C)` pixels into `out`, `(C, h, w)`
        float32, exactly as `rescale` then `normalize` do.

        8-bit pixels are looked up in a table made by those same two steps from the 256 possible values: both are
        elementwise, so the result is equal bit for bit, without their float64 passes over every pixel.
        """

        def transform(values: np.ndarray) -> np.ndarray:
            if do_rescale:
                values = self.rescale(values, rescale_factor)
            if do_normalize:
                values = self.normalize(values, mean, std)
            return values.astype(np.float32)

        table = transform(np.broadcast_to(np.arange(256, dtype=np.uint8), (channels, 1, 256)))[:, 0]

        def write(pixels: np.ndarray, out: np.ndarray) -> None:
            if pixels.dtype != np.uint8:
                out[...] = transform(np.moveaxis(pixels, -1, 0))
                return
            for channel in range(channels):
                np.take(table[channel], pixels[..., channel], out=out[channel], mode="clip")

        return write

    def resize_into(self, image: DecodedImage, cols: int, rows: int, out: np.ndarray, resample, write) -> None:
        """Resize the whole image onto a `cols × rows` canvas of `out`'s tile size (by PIL, as InternVL; by torch
        with `fast_resize`; arrays by transformers' `resize`), then `write` its tiles, row-major, into `out`
        `(cols * rows, C, h, w)`."""
        tile_h, tile_w = out.shape[-2:]
        width, height = cols * tile_w, rows * tile_h
        resample = PILImageResampling.BILINEAR if resample is None else resample  # transformers' default
        if image.pixels is not None and resample in TORCH_FILTERS:
            canvas = torch.nn.functional.interpolate(
                image.pixels, size=(height, width), mode=TORCH_FILTERS[resample], antialias=True
            )[0].permute(1, 2, 0).numpy()
        elif isinstance(image.image, PIL.Image.Image):
            canvas = np.atleast_3d(np.asarray(image.image.resize((width, height), resample)))
        else:
            canvas = np.moveaxis(self.resize(image.image, SizeDict(height=height, width=width), resample), 0, -1)
        for index in range(cols * rows):
            row, col = divmod(index, cols)
            write(canvas[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w], out[index])

    def classical_saliency(self, image, source: str, working_size: int, blur_sigma: float) -> torch.Tensor:
        """The whole image's spectral-residual saliency map, `(h, w)` in [0, 1]. `image`: PIL, or `(3, H, W)` uint8."""
        if source == "spectral_residual":
            # Luminance and area-averaging down to the working size in PIL: a full-size float copy of a photo
            # and an antialiased torch resize of it cost more than the whole tiling.
            if not isinstance(image, PIL.Image.Image):
                image = PIL.Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1)))
            small = image.convert("L").resize((working_size, working_size), PIL.Image.BOX)
            saliency = spectral_residual_saliency(np.asarray(small, dtype=np.float64) / 255.0, blur_sigma=blur_sigma)
            return torch.from_numpy(saliency)
        raise ValueError(f"`saliency_source` must be one of {SALIENCY_SOURCES}, got {source!r}.")

    def _preprocess(
        self,
        images: list[DecodedImage],
        size: SizeDict,
        resample: "PILImageResampling | None",
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_tensors=None,
        crop_to_patches: bool = True,
        min_patches: int = 1,
        max_patches: int = 12,
        saliency_source: str | None = None,
        saliency_grid_size: int | None = None,
        saliency_working_size: int | None = None,
        saliency_blur_sigma: float | None = None,
        saliency_image_size: int | None = None,
        image_saliency: list | None = None,
        **kwargs,
    ) -> BatchFeature:
        source = saliency_source or self.saliency_source
        if source not in SALIENCY_SOURCES:
            raise ValueError(f"`saliency_source` must be one of {SALIENCY_SOURCES}, got {source!r}.")
        grid_size = saliency_grid_size or self.saliency_grid_size
        precomputed = None if image_saliency is None else check_image_saliency(image_saliency, len(images))
        model_side = source == "eat_layercam" and precomputed is None
        grids = [
            self.tile_grid(image.width, image.height, crop_to_patches, min_patches, max_patches, size.height)
            for image in images
        ]
        num_patches = [tile_count(cols, rows) for cols, rows in grids]
        first = images[0].image
        channels = len(first.getbands()) if isinstance(first, PIL.Image.Image) else first.shape[0]
        pixel_values = np.empty((sum(num_patches), channels, size.height, size.width), dtype=np.float32)
        write = self.pixel_writer(channels, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        # Each task resizes one image once and writes its own slice of the outputs: the canvas, the thumbnail.
        tasks, costs = [], []
        offset = 0
        for image, (cols, rows), count in zip(images, grids, num_patches):
            tiles = pixel_values[offset : offset + count]
            tasks.append(partial(self.resize_into, image, cols, rows, tiles, resample, write))
            costs.append(resize_cost(image, cols * size.width, rows * size.height))
            if has_thumbnail(cols, rows):
                tasks.append(partial(self.resize_into, image, 1, 1, tiles[-1:], resample, write))
                costs.append(resize_cost(image, size.width, size.height))
            offset += count
        data = {"pixel_values": pixel_values, "num_patches": num_patches}
        if model_side:
            # EAT's own input: the whole image at side × side (BICUBIC, aspect not kept, as EAT was trained).
            side = saliency_image_size or self.saliency_image_size
            eat_inputs = np.empty((len(images), 3, side, side), dtype=np.float32)
            eat_write = self.pixel_writer(3, True, 1 / 255, True, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
            for index, image in enumerate(images):
                eat_input = eat_inputs[index : index + 1]
                tasks.append(partial(self.resize_into, image, 1, 1, eat_input, PILImageResampling.BICUBIC, eat_write))
                costs.append(resize_cost(image, side, side))
            data["saliency_pixel_values"] = eat_inputs
            data["tile_grids"] = np.asarray(grids, dtype=np.int64)
        first_map = len(tasks)
        if source == "spectral_residual" and precomputed is None:
            working_size = saliency_working_size or self.saliency_working_size
            blur_sigma = saliency_blur_sigma or self.saliency_blur_sigma
            for image in images:
                tasks.append(partial(self.classical_saliency, image.image, source, working_size, blur_sigma))
                costs.append(image.width * image.height)
        results = run_in_threads(tasks, torch.get_num_threads(), costs)
        # Which source made the saliency inputs: the model checks it against its own (`check_saliency_source`).
        data["saliency_source"] = source
        if source == "uniform" and precomputed is None:
            data["saliency_maps"] = uniform_saliency_maps(sum(num_patches), grid_size).numpy()
        elif not model_side:
            image_maps = precomputed if precomputed is not None else results[first_map:]
            data["saliency_maps"] = torch.cat([
                map_saliency_to_tiles(image_map, grid, has_thumbnail(*grid), grid_size) for image_map, grid in zip(image_maps, grids)
            ]).numpy()
        return BatchFeature(data=data, tensor_type=return_tensors)

    def get_tile_grid(self, height: int, width: int, images_kwargs: dict | None = None) -> tuple[int, int]:
        """The `(cols, rows)` this processor tiles a `height × width` image into (`images_kwargs` as in a call)."""
        images_kwargs = images_kwargs or {}
        min_patches = images_kwargs.get("min_patches", self.min_patches)
        max_patches = images_kwargs.get("max_patches", self.max_patches)
        crop = images_kwargs.get("crop_to_patches", self.crop_to_patches)
        return self.tile_grid(width, height, crop, min_patches, max_patches, self.size.height)

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Tiles (thumbnail included) the processor emits for a `height × width` image."""
        return tile_count(*self.get_tile_grid(height, width, images_kwargs))


def resize_cost(image: DecodedImage, width: int, height: int) -> int:
    """Relative cost of resizing `image` (as decoded) to `width × height`: PIL's two separable passes, in which
    each output sample reads as many inputs as the scale factor, at least one."""
    if isinstance(image.image, PIL.Image.Image):
        in_width, in_height = image.image.size
    else:
        in_height, in_width = image.image.shape[-2:]
    return in_height * max(in_width, width) + width * max(in_height, height)


def check_image_saliency(image_saliency, num_images: int) -> list[torch.Tensor]:
    """Precomputed whole-image maps: one finite 2-D map per image, in image order."""
    maps = list(image_saliency)
    if len(maps) != num_images:
        raise ValueError(f"`image_saliency` holds {len(maps)} maps for {num_images} images; give one map per image.")
    checked = []
    for index, saliency in enumerate(maps):
        saliency = torch.as_tensor(np.asarray(saliency, dtype=np.float32))
        if saliency.ndim != 2 or min(saliency.shape) < 1:
            raise ValueError(f"`image_saliency`[{index}] has shape {tuple(saliency.shape)}; expected a 2-D (h, w) map.")
        if not torch.isfinite(saliency).all():
            raise ValueError(f"`image_saliency`[{index}] contains NaN or infinite values.")
        checked.append(saliency)
    return checked


__all__ = ["AseMllmImageProcessor", "select_tile_grid", "candidate_grids", "tile_count", "has_thumbnail", "to_rgb", "open_image"]
