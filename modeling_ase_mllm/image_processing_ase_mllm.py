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

from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorKwargs,
    GotOcr2ImageProcessorPil,
)

from .configuration_ase_mllm import SALIENCY_SOURCES
from .saliency_ase_mllm import map_saliency_to_tiles, spectral_residual_saliency


# The most 448 px tiles per image (InternVL2's largest dynamic-resolution setting).
MAX_TILES = 40


def has_thumbnail(cols: int, rows: int) -> bool:
    """InternVL adds the whole image as one more tile (the thumbnail) only when it cuts it into 2+ tiles."""
    return cols * rows > 1


def tile_count(cols: int, rows: int) -> int:
    """Tiles a `cols × rows` grid gives, thumbnail included: what `pixel_values` holds for the image."""
    return cols * rows + int(has_thumbnail(cols, rows))


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Every `(cols, rows)` with `min_tiles <= cols*rows <= max_tiles`, ordered as InternVL orders them.

    InternVL collects the grids in a Python `set` and stable-sorts them by tile count, so grids with the same
    count keep the set's iteration order. That order decides exact ties, so we reproduce it rather than
    enumerate in our own order.
    """
    grids = {
        (cols, rows)
        for count in range(min_tiles, max_tiles + 1)
        for cols in range(1, count + 1)
        for rows in range(1, count + 1)
        if min_tiles <= cols * rows <= max_tiles
    }
    return tuple(sorted(grids, key=lambda grid: grid[0] * grid[1]))


@lru_cache(maxsize=1024)
def select_tile_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile_size: int = 448) -> tuple[int, int]:
    """InternVL's aspect-ratio search: the grid whose cols/rows is closest to width/height.

    On an exact tie the later (larger) grid wins only while the image has more than half the pixels of that
    grid's canvas, so small images are not blown up into many tiles.

    Returns:
        `(cols, rows)`.
    """
    aspect_ratio = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
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
        return f"PIL image {image.size[0]}x{image.size[1]} mode {image.mode}"
    if isinstance(image, (bytes, bytearray)):
        return f"{len(image)} bytes"
    return type(image).__name__


def open_image(source) -> PIL.Image.Image:
    """Open a path, `bytes` or PIL image; raise a `ValueError` that names the input if it cannot be decoded."""
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
        image.load()  # decode now: truncated files fail here, not halfway through tiling
    except (OSError, ValueError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"image {name} could not be read: {error}") from error
    return image


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Bring any PIL image to 8-bit RGB the way a photo viewer shows it.

    - EXIF orientation is applied (phones store portraits as rotated landscapes);
    - 16/32-bit grey (`I;16`, `I`) is rescaled to 8 bits, not clipped (clipping turns most of it white);
    - transparency (RGBA, LA, palette with transparency) is composited onto white;
    - CMYK, YCbCr, palette and grey are converted by PIL.
    """
    image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = PIL.Image.fromarray(np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
    """

    saliency_source: str
    saliency_grid_size: int
    saliency_working_size: int
    saliency_blur_sigma: float
    saliency_image_size: int
    image_saliency: list


class AseMllmImageProcessor(GotOcr2ImageProcessorPil):
    r"""
    Tiles each image exactly as InternVL's `dynamic_preprocess` (448 px tiles, `min_patches`..`max_patches`,
    row-major crops, a thumbnail when there are 2+ tiles, BICUBIC, ImageNet mean/std) and returns, aligned tile
    by tile, the saliency maps the IAS-ViT needs.

    Returns a `BatchFeature` with `pixel_values` `(num_tiles, 3, 448, 448)`, `num_patches` (tiles per image,
    thumbnail included) and either `saliency_pixel_values` `(num_images, 3, 224, 224)` + `tile_grids`
    `(num_images, 2)` (`eat_layercam`: the model computes the maps) or `saliency_maps` `(num_tiles, G, G)`.
    """

    valid_kwargs = AseMllmImageProcessorKwargs
    model_input_names = ["pixel_values", "saliency_maps", "saliency_pixel_values", "tile_grids"]
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

    def fetch_images(self, image_url_or_urls):
        """Paths and bytes are opened here, so that a bad file is named in the error."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, Path, bytes, bytearray)):
            return open_image(image_url_or_urls)
        return super().fetch_images(image_url_or_urls)

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs):
        images = self._prepare_images_structure(images, expected_ndims=expected_ndims)
        prepared = []
        for index, image in enumerate(images):
            try:
                if isinstance(image, PIL.Image.Image):
                    image = to_rgb(image)
                array = self.process_image(image, *args, **kwargs)
            except ValueError as error:
                raise ValueError(f"image {index} ({describe_image_input(image)}): {error}") from error
            height, width = array.shape[-2:]
            if height < 1 or width < 1:
                raise ValueError(f"image {index} has no pixels (size {width}x{height}).")
            prepared.append(array)
        return prepared

    def saliency_input(self, image: np.ndarray, side: int) -> np.ndarray:
        """EAT's input: the whole image resized to `side × side` (BICUBIC, aspect not kept, as EAT was trained),
        ImageNet-normalised. `image`: `(3, H, W)` uint8 -> `(3, side, side)` float32."""
        resized = self.resize(image, SizeDict(height=side, width=side), resample=PILImageResampling.BICUBIC)
        return self.normalize(self.rescale(resized, 1 / 255), IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD).astype(np.float32)

    def classical_saliency(self, image: np.ndarray, source: str, working_size: int, blur_sigma: float) -> torch.Tensor:
        """The whole image's saliency map, `(h, w)` in [0, 1]. `image`: `(3, H, W)` uint8."""
        if source == "uniform":
            return torch.ones(1, 1)
        if source == "spectral_residual":
            # Luminance and area-averaging down to the working size in PIL: a full-size float copy of a photo
            # and an antialiased torch resize of it cost more than the whole tiling.
            gray = PIL.Image.fromarray(np.ascontiguousarray(np.moveaxis(image, 0, -1))).convert("L")
            small = gray.resize((working_size, working_size), PIL.Image.BOX)
            saliency = spectral_residual_saliency(np.asarray(small, dtype=np.float64) / 255.0, blur_sigma=blur_sigma)
            return torch.from_numpy(saliency)
        raise ValueError(f"`saliency_source` must be one of {SALIENCY_SOURCES}, got {source!r}.")

    def _preprocess(
        self,
        images: list[np.ndarray],
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
        if not 1 <= min_patches <= max_patches <= MAX_TILES:
            raise ValueError(f"need 1 <= min_patches <= max_patches <= {MAX_TILES}, got {min_patches}..{max_patches}.")
        source = saliency_source or self.saliency_source
        if source not in SALIENCY_SOURCES:
            raise ValueError(f"`saliency_source` must be one of {SALIENCY_SOURCES}, got {source!r}.")
        grid_size = saliency_grid_size or self.saliency_grid_size
        precomputed = None if image_saliency is None else check_image_saliency(image_saliency, len(images))
        model_side = source == "eat_layercam" and precomputed is None
        tile_size = size.height
        pixel_values, saliency_maps, num_patches = [], [], []
        saliency_pixel_values, tile_grids = [], []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            cols, rows = (
                select_tile_grid(width, height, min_patches, max_patches, tile_size)
                if crop_to_patches and max_patches > 1
                else (1, 1)
            )
            tiles = self.crop_to_grid(image, cols, rows, size, resample)
            num_patches.append(len(tiles))
            for tile in tiles:
                if do_rescale:
                    tile = self.rescale(tile, rescale_factor)
                if do_normalize:
                    tile = self.normalize(tile, image_mean, image_std)
                pixel_values.append(tile.astype(np.float32))
            if model_side:
                saliency_pixel_values.append(self.saliency_input(image, saliency_image_size or self.saliency_image_size))
                tile_grids.append((cols, rows))
                continue
            image_map = precomputed[index] if precomputed is not None else self.classical_saliency(
                image,
                source,
                saliency_working_size or self.saliency_working_size,
                saliency_blur_sigma or self.saliency_blur_sigma,
            )
            saliency_maps.append(map_saliency_to_tiles(image_map, (cols, rows), has_thumbnail(cols, rows), grid_size))
        data = {"pixel_values": np.stack(pixel_values), "num_patches": num_patches}
        if model_side:
            data["saliency_pixel_values"] = np.stack(saliency_pixel_values)
            data["tile_grids"] = np.asarray(tile_grids, dtype=np.int64)
        else:
            data["saliency_maps"] = torch.cat(saliency_maps).numpy()
        return BatchFeature(data=data, tensor_type=return_tensors)

    def crop_to_grid(self, image: np.ndarray, cols: int, rows: int, size: SizeDict, resample) -> list[np.ndarray]:
        """Resize onto a `cols × rows` canvas of tiles, cut it row-major, and add the thumbnail for 2+ tiles."""
        tile_h, tile_w = size.height, size.width
        canvas = self.resize(image, SizeDict(height=tile_h * rows, width=tile_w * cols), resample=resample)
        tiles = [
            canvas[:, row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w]
            for row in range(rows)
            for col in range(cols)
        ]
        if has_thumbnail(cols, rows):
            tiles.append(self.resize(image, size, resample=resample))
        return tiles

    def get_tile_grid(self, height: int, width: int, images_kwargs: dict | None = None) -> tuple[int, int]:
        """The `(cols, rows)` this processor tiles a `height × width` image into (`images_kwargs` as in a call)."""
        images_kwargs = images_kwargs or {}
        min_patches = images_kwargs.get("min_patches", self.min_patches)
        max_patches = images_kwargs.get("max_patches", self.max_patches)
        crop = images_kwargs.get("crop_to_patches", self.crop_to_patches)
        if not crop or max_patches <= 1:
            return (1, 1)
        return select_tile_grid(width, height, min_patches, max_patches, self.size.height)

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Tiles (thumbnail included) the processor emits for a `height × width` image."""
        return tile_count(*self.get_tile_grid(height, width, images_kwargs))


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
