"""Quantised loading: the schemes the commands offer (`--quantization`), the transformers config of each, and what a
loaded model kept in floating point.

The model itself declares what no quantizer may touch (`modeling_ase_mllm.FLOAT_GROUPS`, through transformers'
`_keep_in_fp32_modules`), so any `quantization_config` a user passes to `from_pretrained` quantises the language
model alone; the schemes here are the ones tested on this project's models. bitsandbytes and torchao are the
`quant` extra. This module imports neither torch nor transformers at its top: the command-line parsers read
`QUANTIZATION_SCHEMES`.
"""

from __future__ import annotations

# `--quantization` choices: bitsandbytes LLM.int8() (8-bit weights, outliers in float), bitsandbytes 4-bit NF4 with
# double quantisation (QLoRA's) and torchao's int8 weight-only (per-channel int8 weights, activations in float).
QUANTIZATION_SCHEMES = ("8bit", "4bit", "int8-weight-only")
QUANTIZATION_HELP = ("load the language model's linear layers quantised: 8bit (bitsandbytes LLM.int8()), 4bit "
                     "(bitsandbytes NF4) or int8-weight-only (torchao); EAT, the vision tower with its IAS "
                     'cross-attentions and the projector stay in floating point. Needs pip install "ase-mllm[quant]"')


def quantization_config(scheme: str, compute_dtype=None):
    """The transformers `quantization_config` of a `QUANTIZATION_SCHEMES` scheme.

    Args:
        compute_dtype: the dtype 4-bit matmuls run in (`bnb_4bit_compute_dtype`): the load's dtype, so that the float
            parts and the quantised ones meet in one dtype (bitsandbytes' default is float32).
    Raises:
        ValueError: an unknown scheme. ImportError: its library is missing, naming the extra that brings it.
    """
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if scheme not in QUANTIZATION_SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(QUANTIZATION_SCHEMES)}")
    library = "torchao" if scheme == "int8-weight-only" else "bitsandbytes"
    try:
        __import__(library)
    except ImportError as error:
        raise ImportError(f"--quantization {scheme} needs {library} ({error}): pip install \"ase-mllm[quant]\"") from error
    if scheme == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if scheme == "4bit":
        # QLoRA's data type and double quantisation, as `transformers serve --quantization bnb-4bit` loads.
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def is_quantized_weight(weight) -> bool:
    """A weight a quantizer replaced: bitsandbytes stores integers (`Int8Params`, `Params4bit`), torchao a tensor
    subclass that still reports its float dtype."""
    import torch

    return not weight.is_floating_point() or not (type(weight) is torch.nn.Parameter or type(weight) is torch.Tensor)


def precision_summary(model) -> dict:
    """Per parameter group (`modeling_ase_mllm.PARAMETER_GROUPS`), what a loaded model holds.

    Returns:
        `{group: {"quantized_linears": int, "float_linears": int, "float_parameters": int, "float_dtypes": [str]}}`:
        `nn.Linear` modules (bitsandbytes' layers are subclasses) by their weight (`is_quantized_weight`), and the
        elements and dtypes of every parameter left in floating point.
    """
    import torch

    from ..modeling_ase_mllm import parameter_group

    summary: dict[str, dict] = {}

    def entry(name: str) -> dict:
        return summary.setdefault(parameter_group(name) or "other", {
            "quantized_linears": 0, "float_linears": 0, "float_parameters": 0, "float_dtypes": set()})

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            entry(name)["quantized_linears" if is_quantized_weight(module.weight) else "float_linears"] += 1
    for name, parameter in model.named_parameters():
        if not is_quantized_weight(parameter):
            entry(name)["float_parameters"] += parameter.numel()
            entry(name)["float_dtypes"].add(str(parameter.dtype).removeprefix("torch."))
    for value in summary.values():
        value["float_dtypes"] = sorted(value["float_dtypes"])
    return summary


def describe_precision(model, scheme: str | None) -> str:
    """One line for the commands to print: what was quantised, and what stayed in floating point (in which dtype)."""
    if scheme is None:
        return ""
    summary = precision_summary(model)
    quantized = [f"{group} ({entry['quantized_linears']} linear layers)" for group, entry in summary.items()
                 if entry["quantized_linears"]]
    kept = [f"{'the rest of the ' if entry['quantized_linears'] else ''}{group} ({entry['float_parameters']:,} "
            f"parameters, {'/'.join(entry['float_dtypes'])})" for group, entry in summary.items()
            if entry["float_parameters"]]
    return (f"--quantization {scheme}: quantised {', '.join(quantized) or 'nothing'}; "
            f"kept in floating point: {', '.join(kept)}")


__all__ = ["QUANTIZATION_HELP", "QUANTIZATION_SCHEMES", "describe_precision", "is_quantized_weight",
           "precision_summary", "quantization_config"]
