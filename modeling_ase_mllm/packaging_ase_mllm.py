"""What travels with the model without being the model: which part every weight belongs to (training, quantisation,
conversion and the benches ask it), the remote-code files a saved folder carries and the hooks run on it, and the
signature that keeps generate()'s per-step lookup cheap.

Remote code: imports only torch, the standard library and sibling modules.
"""

import inspect
import re
import shutil
from collections.abc import Callable
from pathlib import Path


# Which part of ASE-MLLM every weight belongs to (as timm's `group_matcher`): each group and the module names that
# open it, matched as whole components of a parameter's path, so `model.vision_tower.encoder.layer.0.saliency_gate
# .weight` is `ias`. The first group that matches wins: EAT and the IAS modules before the ViT they sit in.
# Training (freezing, LoRA), conversion, the InternVL twin and the benches ask `parameter_group`.
PARAMETER_GROUPS = (
    ("eat", ("saliency_model",)),
    ("ias", ("saliency_embeddings", "saliency_query_norm", "saliency_key_value_norm", "saliency_cross_attention",
             "saliency_gate")),
    ("vision", ("vision_tower",)),
    ("projector", ("multi_modal_projector",)),
    ("llm", ("language_model", "lm_head")),
)
# The groups ASE-MLLM adds to InternVL; every other weight is InternVL's own, under InternVL's name.
ADDED_GROUPS = ("eat", "ias")
_GROUP_PATTERNS = tuple(
    (group, re.compile(r"(^|\.)(" + "|".join(names) + r")(\.|$)")) for group, names in PARAMETER_GROUPS
)
# The groups a quantised load (bitsandbytes 8/4-bit, torchao, any transformers quantizer) keeps in floating point:
# LayerCAM differentiates through EAT and its score must stay exact; the ViT, its IAS modules and the projector are a
# small part of the weights. Only the language model is quantised (its LM head too, unless transformers' default
# skip list keeps it, as it does when the user names none).
FLOAT_GROUPS = ("eat", "ias", "vision", "projector")
# Those groups as one `_keep_in_fp32_modules` entry, the list every transformers quantizer (5.4 to 5.25) adds to its
# own skip list. Quantizers match an entry as a regex from the start of a module's name, so this one matches any
# module whose path has one of the groups' names as a whole component (`model.vision_tower.encoder.layer.0.mlp.fc1`
# in the generation model, `vision_tower.…` in the base model).
FLOAT_MODULES_PATTERN = r"(?:.*\.)?(?:" + "|".join(
    name for group, names in PARAMETER_GROUPS if group in FLOAT_GROUPS for name in names
) + r")"

# Run after `save_pretrained` has written a folder, as `hook(folder, model)`, and before `push_to_hub` uploads one,
# as `hook(folder, model, repo_id=...)`. Empty where this module is a Hub folder's remote code; the installed
# package adds its model-card writer (`modeling_ase_mllm.register_auto_classes`).
SAVE_HOOKS: list[Callable] = []


def parameter_group(name: str) -> str | None:
    """The group (`PARAMETER_GROUPS`) of a parameter or module name, also behind a prefix such as PEFT's
    `base_model.model.`; None when it belongs to none."""
    for group, pattern in _GROUP_PATTERNS:
        if pattern.search(name):
            return group
    return None


def remote_code_files() -> list[Path]:
    """The modules a Hub folder carries: every module beside this one, without the package's `__init__.py` (from
    the installed package, all of its root; loaded as remote code, those transformers copied with the model)."""
    return sorted(path for path in Path(__file__).parent.glob("*.py") if path.name != "__init__.py")


def copy_remote_code(save_directory) -> list[Path]:
    """Copy every remote-code module (`remote_code_files`) next to a saved config/processor."""
    copied = []
    for source in remote_code_files():
        shutil.copyfile(source, Path(save_directory) / source.name)
        copied.append(Path(save_directory) / source.name)
    return copied


class SaveHooksMixin:
    """For a `PreTrainedModel`: its folder carries the remote code, and the `SAVE_HOOKS` run on it."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus every remote-code module (so the folder loads without this
        package); then the `SAVE_HOOKS` (the installed package's writes the model card)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        copy_remote_code(save_directory)
        if kwargs.get("is_main_process", True):
            for hook in SAVE_HOOKS:
                hook(save_directory, self)

    def _upload_modified_files(self, working_dir, repo_id: str, *args, **kwargs):
        """`push_to_hub` saves the model, then overwrites `README.md` with the Hub's card (or a generic one) just
        before this upload: the `SAVE_HOOKS` run again, with the repo id (the model card merges its sections back)."""
        for hook in SAVE_HOOKS:
            hook(working_dir, self, repo_id=repo_id)
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)


class MethodSignature(inspect.Signature):
    """A function's signature that also keeps the one its bound method has (without `self`), once made.

    `inspect.signature(model.forward)` finds the function's `__signature__` at once, but then derives the bound
    form anew (`Signature.replace`, which validates every parameter) at every call. generate() makes that call at
    every decoding step of a remote-code model (to look for the retired `cache_position` argument), which InternVL,
    not remote code, never does; on the tiny test model the check cost ~40 µs of a ~0.9 ms step, ~15 µs of it the
    derivation. Any other `replace` is done as usual.
    """

    __slots__ = ("_bound",)

    def replace(self, **changes):
        parameters = changes.get("parameters")
        if parameters is None or len(changes) != 1:
            return super().replace(**changes)
        parameters = tuple(parameters)
        bound = getattr(self, "_bound", None)
        if bound is None or bound[0] != parameters:  # the same Parameter objects compare by identity, in C
            bound = self._bound = (parameters, super().replace(parameters=parameters))
        return bound[1]


__all__ = [
    "PARAMETER_GROUPS", "ADDED_GROUPS", "FLOAT_GROUPS", "FLOAT_MODULES_PATTERN", "SAVE_HOOKS", "parameter_group",
    "remote_code_files", "copy_remote_code", "SaveHooksMixin", "MethodSignature",
]
