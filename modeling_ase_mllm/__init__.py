"""ase-mllm: ASE-MLLM (arXiv 2509.04378) on Hugging Face Transformers.

Importing this package registers the ASE-MLLM classes with transformers' Auto classes, so that
`AutoConfig`, `AutoModel`, `AutoModelForImageTextToText`, `AutoProcessor` and `AutoImageProcessor` resolve
`model_type="ase_mllm"` without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration_ase_mllm import (
    AUTO_MAP,
    AseMllmConfig,
    AseMllmEatConfig,
    AseMllmSaliencyConfig,
    AseMllmVisionConfig,
)
from .eat_ase_mllm import EatModel, layer_cam
from .image_processing_ase_mllm import AseMllmImageProcessor
from .modeling_ase_mllm import (
    AseMllmForConditionalGeneration,
    AseMllmModel,
    AseMllmPreTrainedModel,
    AseMllmVisionModel,
)
from .processing_ase_mllm import AseMllmProcessor, add_image_tokens


__version__ = "0.1.0"


def _register_auto_classes() -> None:
    AutoConfig.register("ase_mllm", AseMllmConfig, exist_ok=True)
    AutoConfig.register("ase_mllm_vision", AseMllmVisionConfig, exist_ok=True)
    AutoConfig.register("ase_mllm_saliency", AseMllmSaliencyConfig, exist_ok=True)
    AutoConfig.register("ase_mllm_eat", AseMllmEatConfig, exist_ok=True)
    AutoModel.register(AseMllmConfig, AseMllmModel, exist_ok=True)
    AutoModel.register(AseMllmVisionConfig, AseMllmVisionModel, exist_ok=True)
    AutoModelForImageTextToText.register(AseMllmConfig, AseMllmForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(AseMllmConfig, slow_image_processor_class=AseMllmImageProcessor, exist_ok=True)
    AutoProcessor.register(AseMllmConfig, AseMllmProcessor, exist_ok=True)
    # `save_pretrained` copies the remote-code files of classes registered for an auto class.
    AseMllmConfig.register_for_auto_class("AutoConfig")
    AseMllmForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    AseMllmModel.register_for_auto_class("AutoModel")
    AseMllmProcessor.register_for_auto_class("AutoProcessor")
    AseMllmImageProcessor.register_for_auto_class("AutoImageProcessor")


_register_auto_classes()

__all__ = [
    "AUTO_MAP",
    "AseMllmConfig",
    "AseMllmVisionConfig",
    "AseMllmSaliencyConfig",
    "AseMllmEatConfig",
    "EatModel",
    "layer_cam",
    "AseMllmImageProcessor",
    "AseMllmProcessor",
    "AseMllmModel",
    "AseMllmVisionModel",
    "AseMllmPreTrainedModel",
    "AseMllmForConditionalGeneration",
    "add_image_tokens",
]
