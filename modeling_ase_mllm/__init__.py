"""ase-mllm: ASE-MLLM (arXiv 2509.04378) on Hugging Face Transformers.

The modules at this package's root are exactly the remote code a Hub folder carries (configuration, EAT, saliency,
image processing, processing, modeling); the tools live in subpackages named after their job: `data`, `training`,
`evaluation`, `inference`, `convert`, `hub`, `cli`, `presets`, `testing`, and `utils` (the cache folder).

Importing this package registers the ASE-MLLM classes with transformers' Auto classes, so that
`AutoConfig`, `AutoModel`, `AutoModelForImageTextToText`, `AutoProcessor` and `AutoImageProcessor` resolve
`model_type="ase_mllm"` without `trust_remote_code`, and adds the model-card writer (`hub.model_card`) to the
model's save hooks, so that `save_pretrained` writes `README.md`.

The import itself is light (no torch, no transformers), so that `ase-mllm --help` starts at once: the classes
below load on first access, and the registration runs as soon as transformers' Auto classes are imported (at
once if they already are), after the import that brought them in has finished.
"""

import importlib
import importlib.abc
import sys
import threading
import warnings


__version__ = "0.1.0"

# Public name -> the submodule that defines it (loaded on first access, PEP 562).
_EXPORTS = {
    "AUTO_MAP": "configuration_ase_mllm",
    "AseMllmConfig": "configuration_ase_mllm",
    "AseMllmVisionConfig": "configuration_ase_mllm",
    "AseMllmSaliencyConfig": "configuration_ase_mllm",
    "AseMllmEatConfig": "configuration_ase_mllm",
    "EatModel": "eat_ase_mllm",
    "layer_cam": "eat_ase_mllm",
    "AseMllmImageProcessor": "image_processing_ase_mllm",
    "AseMllmProcessor": "processing_ase_mllm",
    "add_image_tokens": "processing_ase_mllm",
    "AseMllmModel": "modeling_ase_mllm",
    "AseMllmVisionModel": "modeling_ase_mllm",
    "AseMllmPreTrainedModel": "modeling_ase_mllm",
    "AseMllmForConditionalGeneration": "modeling_ase_mllm",
    # The Qwen-VL-Chat family (paper Table III).
    "QWEN_VL_AUTO_MAP": "configuration_ase_mllm_qwen_vl",
    "AseMllmQwenVLConfig": "configuration_ase_mllm_qwen_vl",
    "AseMllmQwenVLVisionConfig": "configuration_ase_mllm_qwen_vl",
    "AseMllmQwenVLResamplerConfig": "configuration_ase_mllm_qwen_vl",
    "AseMllmQwenVLImageProcessor": "image_processing_ase_mllm_qwen_vl",
    "AseMllmQwenVLProcessor": "processing_ase_mllm_qwen_vl",
    "AseMllmQwenVLModel": "modeling_ase_mllm_qwen_vl",
    "AseMllmQwenVLVisionModel": "modeling_ase_mllm_qwen_vl",
    "AseMllmQwenVLForConditionalGeneration": "modeling_ase_mllm_qwen_vl",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def register_auto_classes() -> None:
    """Register the ASE-MLLM classes, of both families, with transformers' Auto classes and the model-card writer
    with the model's `SAVE_HOOKS` (idempotent; importing the package does it)."""
    from .configuration_ase_mllm import AseMllmConfig, AseMllmEatConfig, AseMllmSaliencyConfig, AseMllmVisionConfig
    from .configuration_ase_mllm_qwen_vl import AseMllmQwenVLConfig, AseMllmQwenVLResamplerConfig, AseMllmQwenVLVisionConfig
    from .hub.model_card import card_save_hook
    from .image_processing_ase_mllm import AseMllmImageProcessor
    from .image_processing_ase_mllm_qwen_vl import AseMllmQwenVLImageProcessor
    from .modeling_ase_mllm import SAVE_HOOKS, AseMllmForConditionalGeneration, AseMllmModel, AseMllmVisionModel
    from .modeling_ase_mllm_qwen_vl import (
        AseMllmQwenVLForConditionalGeneration,
        AseMllmQwenVLModel,
        AseMllmQwenVLVisionModel,
    )
    from .processing_ase_mllm import AseMllmProcessor
    from .processing_ase_mllm_qwen_vl import AseMllmQwenVLProcessor

    for config_class in (AseMllmSaliencyConfig, AseMllmEatConfig):
        _register_config(config_class)
    _register_family(AseMllmConfig, AseMllmVisionConfig, AseMllmModel, AseMllmVisionModel,
                     AseMllmForConditionalGeneration, AseMllmImageProcessor, AseMllmProcessor)
    _register_config(AseMllmQwenVLResamplerConfig)
    _register_family(AseMllmQwenVLConfig, AseMllmQwenVLVisionConfig, AseMllmQwenVLModel, AseMllmQwenVLVisionModel,
                     AseMllmQwenVLForConditionalGeneration, AseMllmQwenVLImageProcessor, AseMllmQwenVLProcessor)
    if card_save_hook not in SAVE_HOOKS:
        SAVE_HOOKS.append(card_save_hook)


def _register_config(config_class) -> None:
    from transformers import AutoConfig

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)


def _register_family(config, vision_config, model, vision_model, generation_model, image_processor, processor) -> None:
    """One model family's classes with the Auto classes, and as the auto classes `save_pretrained` records."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

    _register_config(config)
    _register_config(vision_config)
    AutoModel.register(config, model, exist_ok=True)
    AutoModel.register(vision_config, vision_model, exist_ok=True)
    AutoModelForImageTextToText.register(config, generation_model, exist_ok=True)
    AutoImageProcessor.register(config, slow_image_processor_class=image_processor, exist_ok=True)
    AutoProcessor.register(config, processor, exist_ok=True)
    # `save_pretrained` copies the remote-code files of classes registered for an auto class.
    config.register_for_auto_class("AutoConfig")
    generation_model.register_for_auto_class("AutoModelForImageTextToText")
    model.register_for_auto_class("AutoModel")
    processor.register_for_auto_class("AutoProcessor")
    image_processor.register_for_auto_class("AutoImageProcessor")


# Every path to an Auto class imports this module first.
_AUTO_TRIGGER = "transformers.models.auto.configuration_auto"


class _RegisterWhenTransformersLoads(importlib.abc.MetaPathFinder):
    """Calls `register_auto_classes` once transformers' Auto classes are imported and no import is half done.

    It watches the imports of `transformers.*` and of this package. Registering imports our model code, which
    imports much of transformers; doing that while one of those modules is still executing (transformers imports
    its Auto classes from inside other modules) would meet a partially initialised module. So it counts the
    watched imports in progress and registers when the count is back at zero, then removes itself.
    """

    def __init__(self) -> None:
        self.in_progress = 0
        self.lock = threading.Lock()

    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] not in ("transformers", __name__):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader, self)
                return spec
        return None

    def finished_one(self) -> None:
        with self.lock:
            self.in_progress -= 1
            ready = self.in_progress == 0 and _AUTO_TRIGGER in sys.modules and self in sys.meta_path
            if ready:
                sys.meta_path.remove(self)
        if ready:
            _register_or_warn()


class _CountingLoader:
    """The real loader, with `exec_module` counted by the hook (every other attribute passes through)."""

    def __init__(self, loader, hook: _RegisterWhenTransformersLoads) -> None:
        self._loader, self._hook = loader, hook

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with self._hook.lock:
            self._hook.in_progress += 1
        try:
            self._loader.exec_module(module)
        finally:
            self._hook.finished_one()


def _register_or_warn() -> None:
    # Runs at the end of somebody else's import: a failure here must not break that import.
    try:
        register_auto_classes()
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"ase-mllm could not register its classes with transformers' Auto classes: {error!r}")


if _AUTO_TRIGGER in sys.modules:
    register_auto_classes()
else:
    sys.meta_path.insert(0, _RegisterWhenTransformersLoads())
