"""The AIC dataset readers by name: `load_aic_dataset("pccd", root)`.

Light on purpose: the command line formats its help and checks `--dataset` from `DATASET_NAMES` without importing
`datasets`; a reader's module is imported when it is used. Each name is a module of this package holding
`load_<name>`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


DATASET_NAMES: tuple[str, ...] = ("pccd", "rpcd", "dpc2022", "ava_captions", "mini_aic")


def canonical_dataset_name(name: str) -> str:
    """``"AVA-Captions"`` -> ``"ava_captions"``; raise ``ValueError`` for unknown names."""
    key = name.strip().lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown AIC dataset {name!r}; known: {sorted(DATASET_NAMES)}")
    return key


def dataset_reader(name: str):
    """The reader function of dataset `name` (`modeling_ase_mllm.data.pccd.load_pccd`, ...)."""
    key = canonical_dataset_name(name)
    return getattr(importlib.import_module(f".{key}", __package__), f"load_{key}")


def load_aic_dataset(name: str, root: str | os.PathLike | None = None, protocol: str | None = None, **kwargs: Any):
    """Load the AIC dataset ``name`` from ``root``.

    Args:
        name: ``pccd``, ``rpcd``, ``dpc2022``, ``ava_captions`` or ``mini_aic`` (case and ``-``/``_``
            insensitive).
        root: the dataset folder (``None`` for ``mini_aic``, which is bundled with the package).
        protocol: one of the dataset's protocols (`data.protocols`; its default if None); it reaches the reader
            where the protocols differ in what a split holds (DPC2022).
        **kwargs: passed to the dataset's reader.

    Returns:
        DatasetDict: the dataset's splits with :data:`~modeling_ase_mllm.data.schema.AIC_FEATURES`.
    """
    from .protocols import get_protocol, protocol_names

    key = canonical_dataset_name(name)
    chosen = get_protocol(key, protocol)
    if len(protocol_names(key)) > 1:
        kwargs["protocol"] = chosen.name
    if key == "mini_aic":
        if root is not None:
            raise ValueError("mini_aic is bundled with the package and takes no root")
        return dataset_reader(key)(**kwargs)
    if root is None:
        raise ValueError(f"{key}: root (the dataset folder) is required")
    return dataset_reader(key)(root, **kwargs)
