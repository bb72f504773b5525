"""ASE-MLLM on Qwen-VL-Chat: the image processor.

Qwen-VL-Chat sees one 448 × 448 picture per image: the whole image resized (BICUBIC, aspect not kept), scaled to
[0, 1] and normalised with OpenAI CLIP's mean and std. That is `AseMllmImageProcessor` with one tile per image and
CLIP's statistics; everything else (robust loading, errors naming the input, the saliency inputs) is the same, so a
saliency map is computed once per image and lands on it whole: `tile_grids` is `(1, 1)` for every image.

Remote code: imports only transformers and sibling modules.
"""

from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# transformers 5.8-5.9 copy only the direct relative imports of an `auto_map` module into their module cache, so every
# sibling that the modules below import is imported here too.
from .configuration_ase_mllm import SALIENCY_SOURCES  # noqa: F401
from .image_processing_ase_mllm import AseMllmImageProcessor
from .saliency_ase_mllm import map_saliency_to_tiles  # noqa: F401


class AseMllmQwenVLImageProcessor(AseMllmImageProcessor):
    r"""
    Qwen-VL-Chat's preprocessing plus ASE-MLLM's saliency inputs.

    Returns a `BatchFeature` with `pixel_values` `(num_images, 3, 448, 448)` and either `saliency_pixel_values`
    `(num_images, 3, 224, 224)` + `tile_grids` `(num_images, 2)` (`eat_layercam`) or `saliency_maps`
    `(num_images, G, G)`. Tiling options (`max_patches`, `crop_to_patches`) are ignored: Qwen-VL does not tile.
    """

    image_mean = list(OPENAI_CLIP_MEAN)
    image_std = list(OPENAI_CLIP_STD)
    crop_to_patches = False
    min_patches = 1
    max_patches = 1

    def _preprocess(self, images, *args, **kwargs):
        kwargs.update(crop_to_patches=False, min_patches=1, max_patches=1)
        return super()._preprocess(images, *args, **kwargs)

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """One 448 px picture per image, whatever its size."""
        return 1


__all__ = ["AseMllmQwenVLImageProcessor"]
