"""ASE-MLLM on vLLM: an out-of-tree model plugin (entry point `vllm.general_plugins`).

    vllm serve PATH_TO_ASE_MLLM_FOLDER --trust-remote-code

vLLM calls `register` in each of its processes. It adds our architecture (the name `config.json` carries) to vLLM's
`ModelRegistry` in the lazy `module:Class` form, so nothing of the model is imported until vLLM builds it, and it
never replaces an entry that is already there (vLLM's own, or ours from an earlier call). The model
(`model.AseMllmForVllm`) is vLLM's HF-layout InternVL (`InternS1ForConditionalGeneration`) with our IAS-ViT as its
vision tower and, for the `eat_layercam` source, EAT + LayerCAM in the engine, on every image of an encoder batch at
once. The package must not import vLLM here: this module is read by every vLLM process before any model is chosen.
"""


def architectures() -> dict[str, str]:
    """Our architecture name (`config.architectures[0]` of a saved ASE-MLLM folder of the InternVL family: the class
    its `auto_map` names for `AutoModelForImageTextToText`) -> the vLLM class that serves it, as `module:Class`."""
    from ...configuration_ase_mllm import AUTO_MAP

    return {AUTO_MAP["AutoModelForImageTextToText"].rpartition(".")[2]: f"{__name__}.model:AseMllmForVllm"}


def register() -> None:
    """The `vllm.general_plugins` entry point: register our architectures with vLLM, once (idempotent)."""
    from vllm import ModelRegistry

    for architecture, target in architectures().items():
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, target)
