"""Content fingerprints of weights and settings: what decides whether a cached result is still valid.

Evaluation runs (`evaluation.py`) and precomputed saliency caches (`precompute.py`) record one, so that a
result produced by other weights or other settings is never reused as if it were this one's.
"""

import hashlib
import json

import torch


def update_with_tensors(digest, module: torch.nn.Module) -> None:
    """Feed every parameter and buffer of `module` (name, dtype, shape, raw bytes) into `digest`.

    Raw bytes, not a float32 copy: the same values in bf16 and fp32 give different outputs, so they are
    different weights here. Tensors are moved to the CPU one at a time, so memory stays at one tensor.
    """
    for name, tensor in sorted(module.state_dict().items()):
        for part, plain in plain_tensors(name, tensor):
            digest.update(f"{part}|{plain.dtype}|{tuple(plain.shape)}".encode())
            flat = plain.detach().to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def plain_tensors(name: str, tensor: torch.Tensor):
    """`(name, tensor)` pairs of plain tensors that hold `tensor`'s data: itself, or the inner tensors of a tensor
    subclass (torchao's quantised weights: `__tensor_flatten__`, PyTorch's protocol for them)."""
    if type(tensor) in (torch.Tensor, torch.nn.Parameter) or not hasattr(tensor, "__tensor_flatten__"):
        yield name, tensor
        return
    for inner in tensor.__tensor_flatten__()[0]:
        yield from plain_tensors(f"{name}.{inner}", getattr(tensor, inner))


def weights_fingerprint(module: torch.nn.Module, length: int = 32) -> str:
    """A hex digest of all of `module`'s weights and buffers."""
    digest = hashlib.sha256()
    update_with_tensors(digest, module)
    return digest.hexdigest()[:length]


def settings_fingerprint(settings, length: int = 32) -> str:
    """A hex digest of a JSON-able value (keys sorted; anything else by its `str`)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


__all__ = ["update_with_tensors", "weights_fingerprint", "settings_fingerprint"]
