"""Turn AIC datasets (schema of :mod:`modeling_ase_mllm.data.schema`) into training conversations.

The output follows TRL's vision format, which both ``trl.SFTTrainer`` and a processor's
``apply_chat_template`` consume::

    {"images": [image],
     "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": AESTHETIC_PROMPT}]},
                  {"role": "assistant", "content": [{"type": "text", "text": critique}]}]}

In a ``datasets.Dataset`` the image entry of ``content`` reads back as ``{"type": "image", "text": None}``
(Arrow stores one struct type per column); chat templates ignore the ``None``.

Per-epoch resampling (``mode="sample"``): the critique chosen for an image is a pure function of
``(seed, epoch, image_id)``, so call ``to_conversations(ds, mode="sample", seed=s, epoch=e)`` once per
epoch, or build all epochs at once with :func:`to_resampled_epochs` and train for one pass over it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

from datasets import Dataset, Features, Image, List, Value, concatenate_datasets

from .prompts import AESTHETIC_PROMPT, aspect_prompt
from .schema import dataset_from_rows

MODES: tuple[str, ...] = ("all", "sample")
_ROWS_PER_CHUNK = 10_000  # bounds the Python objects held while building a large output


def user_message(prompt: str = AESTHETIC_PROMPT) -> dict[str, Any]:
    """The user turn: one image placeholder followed by the prompt."""
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}


def conversation(critique: str, prompt: str = AESTHETIC_PROMPT) -> list[dict[str, Any]]:
    """The two-turn conversation (user prompt with image, assistant critique)."""
    return [user_message(prompt), {"role": "assistant", "content": [{"type": "text", "text": critique}]}]


def conversation_features(image_feature: Image | None = None) -> Features:
    """Features of :func:`to_conversations`' output (``images`` keeps the source image feature)."""
    content = List({"type": Value("string"), "text": Value("string")})
    return Features(
        {
            "images": List(image_feature or Image()),
            "messages": List({"role": Value("string"), "content": content}),
        }
    )


def sample_reference_index(image_id: str, n_references: int, seed: int, epoch: int = 0) -> int:
    """Index of the critique used for ``image_id`` in ``mode="sample"``.

    A hash of ``(seed, epoch, image_id)``: stable across processes and machines (unlike ``hash()``), and
    independent of the dataset's order, so any subset or shuffle of the data makes the same choices.
    """
    if n_references < 1:
        raise ValueError(f"image {image_id!r} has no reference to sample")
    digest = hashlib.sha256(f"{seed}:{epoch}:{image_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_references


def _prompt(aspects: Sequence[str] | None, index: int, aspect_conditioned: bool, prompt: str) -> str:
    # Datasets without aspect labels have an empty `reference_aspects` list: they keep the general prompt.
    if aspect_conditioned and aspects and aspects[index]:
        return aspect_prompt(aspects[index])
    return prompt


def _chosen_indices(image_id: str, n_references: int, mode: str, seed: int, epoch: int) -> range | list[int]:
    if mode == "all":
        return range(n_references)
    return [sample_reference_index(image_id, n_references, seed, epoch)] if n_references else []


def iter_conversation_rows(
    dataset: Dataset,
    mode: str = "all",
    aspect_conditioned: bool = False,
    seed: int = 0,
    epoch: int = 0,
    prompt: str = AESTHETIC_PROMPT,
) -> Iterator[dict[str, Any]]:
    """Yield the rows of :func:`to_conversations` as plain dicts, images left undecoded.

    Images come out as ``{"bytes": ..., "path": ...}`` dicts (what ``datasets.Image`` stores), so no
    image is decoded or re-encoded; images without critiques give no row.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    missing = [name for name in ("image", "references") if name not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; expected the AIC schema")
    image_feature = dataset.features["image"]
    raw = dataset.cast_column("image", Image(mode=getattr(image_feature, "mode", None), decode=False))
    columns = [name for name in ("image", "image_id", "references", "reference_aspects") if name in raw.column_names]
    for row_index, row in enumerate(raw.select_columns(columns)):
        references = row["references"] or []
        image_id = str(row.get("image_id", row_index))
        for index in _chosen_indices(image_id, len(references), mode, seed, epoch):
            text = _prompt(row.get("reference_aspects"), index, aspect_conditioned, prompt)
            yield {"images": [row["image"]], "messages": conversation(references[index], text)}


def to_conversations(
    dataset: Dataset,
    mode: str = "all",
    aspect_conditioned: bool = False,
    seed: int = 0,
    epoch: int = 0,
    prompt: str = AESTHETIC_PROMPT,
) -> Dataset:
    """Convert an AIC dataset split into TRL vision-format training conversations.

    Args:
        dataset: one split with the AIC schema (``image``, ``image_id``, ``references`` and, for aspect
            prompts, ``reference_aspects``).
        mode: ``"all"`` gives one example per (image, critique); ``"sample"`` gives one example per
            image with one critique chosen by :func:`sample_reference_index`.
        aspect_conditioned: ask about the critique's aspect (:func:`aspect_prompt`) where the dataset
            labels aspects; critiques without an aspect keep ``prompt``.
        seed: sampling seed (``mode="sample"``).
        epoch: epoch number folded into the sampling, for per-epoch resampling.
        prompt: the general prompt, by default the paper's :data:`~modeling_ase_mllm.data.prompts.AESTHETIC_PROMPT`.

    Returns:
        Dataset: columns ``images`` (list of one image, decoded lazily) and ``messages``.
    """
    features = conversation_features(dataset.features.get("image"))
    chunks, rows = [], []
    for row in iter_conversation_rows(dataset, mode, aspect_conditioned, seed, epoch, prompt):
        rows.append(row)
        if len(rows) == _ROWS_PER_CHUNK:
            chunks.append(dataset_from_rows(rows, features))
            rows = []
    if rows or not chunks:
        chunks.append(dataset_from_rows(rows, features))
    return chunks[0] if len(chunks) == 1 else concatenate_datasets(chunks)


def to_resampled_epochs(
    dataset: Dataset,
    num_epochs: int,
    aspect_conditioned: bool = False,
    seed: int = 0,
    prompt: str = AESTHETIC_PROMPT,
) -> Dataset:
    """``mode="sample"`` conversations for epochs ``0 .. num_epochs-1``, concatenated.

    Train one pass over the result (e.g. ``num_train_epochs=1``) to see each image ``num_epochs`` times,
    each time with a freshly sampled critique.
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    per_epoch = [to_conversations(dataset, "sample", aspect_conditioned, seed, e, prompt) for e in range(num_epochs)]
    return concatenate_datasets(per_epoch)
