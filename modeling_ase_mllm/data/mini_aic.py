"""A bundled mini aesthetic-image-captioning set for offline CPU demos and tests.

Nine photographs that scikit-image ships inside its package (no download) with two to four critiques
each, written for this project and labelled with PCCD's aspects (``mini_aic.json`` beside this module). The split is
fixed in the data file: six photos for ``train``, three for ``test``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from datasets import DatasetDict

from .errors import AICDataError, RecordLocation
from .records import SplitCollector, require_field
from .schema import PCCD_ASPECTS, make_example

MINI_AIC_FILE = Path(__file__).parent / "mini_aic.json"
MINI_AIC_SPLITS: tuple[str, ...] = ("train", "test")


def load_mini_aic_records(path: Path = MINI_AIC_FILE) -> list[dict[str, Any]]:
    """Read and check the mini set's data file.

    Args:
        path: the JSON data file (the bundled one by default).

    Returns:
        list[dict]: one dict per photo with ``image_id``, ``skimage_name``, ``split`` and
        ``critiques`` (a list of ``{"aspect", "text"}``).
    """
    with open(path, encoding="utf-8") as handle:
        photos = json.load(handle)["photos"]
    for index, photo in enumerate(photos):
        loc = RecordLocation(path, index, photo.get("image_id"))
        require_field(photo, "skimage_name", str, loc)
        if require_field(photo, "split", str, loc) not in MINI_AIC_SPLITS:
            raise loc.error("split", f"must be one of {MINI_AIC_SPLITS}")
        for i, critique in enumerate(require_field(photo, "critiques", list, loc)):
            if require_field(critique, "aspect", str, loc) not in PCCD_ASPECTS:
                raise loc.error(f"critiques[{i}].aspect", f"must be one of {PCCD_ASPECTS}")
            require_field(critique, "text", str, loc)
    return photos


def load_skimage_photo(name: str) -> "PIL.Image.Image":  # noqa: F821 - PIL is imported lazily
    """Load one of scikit-image's bundled sample photos as a PIL image, without network access.

    Args:
        name: a ``skimage.data`` function name, e.g. ``"astronaut"``.

    Returns:
        PIL.Image.Image: the photo (grey-scale photos stay in mode ``"L"``).
    """
    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        raise ImportError("the mini AIC set needs scikit-image: pip install 'ase-mllm[demo]'") from err
    from PIL import Image

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise AICDataError(f"{MINI_AIC_FILE}: skimage.data has no sample photo {name!r}")
    return Image.fromarray(loader())


def load_mini_aic(splits: Sequence[str] | None = None) -> DatasetDict:
    """Load the bundled mini AIC set with the same schema as the dataset readers.

    Args:
        splits: subset of ``("train", "test")``; both by default.

    Returns:
        DatasetDict: ``train`` (6 photos) and ``test`` (3 photos); ``references`` with aligned
        ``reference_aspects``, images embedded as PNG bytes.
    """
    chosen = list(MINI_AIC_SPLITS if splits is None else splits)
    unknown = [name for name in chosen if name not in MINI_AIC_SPLITS]
    if unknown:
        raise ValueError(f"mini_aic: unknown split(s) {unknown}; this dataset has {list(MINI_AIC_SPLITS)}")
    collector = SplitCollector("mini_aic", chosen, requested=splits)
    for photo in load_mini_aic_records():
        if photo["split"] not in chosen:
            continue
        example = make_example(
            "mini_aic",
            photo["image_id"],
            load_skimage_photo(photo["skimage_name"]),
            references=[critique["text"] for critique in photo["critiques"]],
            reference_aspects=[critique["aspect"] for critique in photo["critiques"]],
        )
        collector.add(photo["split"], example)
    return collector.finish()
