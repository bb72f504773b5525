"""Training examples that cannot train, found before step 0: images that do not decode, sequences over the limit.

Without this, a corrupt image stops the run when its batch comes up (and again after `--resume`), and one very
long critique makes a batch that no memory holds. Both passes run in every process on the same data and give the
same examples, so a resumed or distributed run sees the same dataset.

- `check_images`: every image of every example is opened and decoded (a JPEG at 1/8 scale: a truncated file still
  fails, in a fraction of the time), in order; `bad_images="stop"` names the first that fails (example and file),
  `"skip"` drops the examples that hold one and counts them. The sizes it reads (EXIF rotation applied) give the
  image tokens.
- `fit_lengths`: each example's length in tokens: its conversation rendered by the processor's chat template and
  tokenized, each image as the processor expands it (`_get_num_multimodal_tokens`, from its size, without tiling
  it). Over `limit` (the recipe's `max_length`, else the model's positions), the critique is cut at a token
  boundary so that the example fits (`long_critiques="truncate"`), or the example is dropped (`"skip"`, and when
  even the prompt and images do not fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from ..image_processing_ase_mllm import SWAPPED_ORIENTATIONS, decode_image, exif_orientation, open_image
from ..processing_ase_mllm import IMAGE_PLACEHOLDER


@dataclass
class Screening:
    """What the passes found: the examples left, the ones dropped and why, the critiques cut, the longest length."""

    examples: int = 0
    bad_images: list[tuple[int, str]] = field(default_factory=list)  # (example index, what failed)
    truncated: int = 0
    skipped_long: int = 0
    longest: int = 0  # tokens, before cutting
    longest_kept: int = 0  # tokens, after
    limit: int | None = None

    def summary(self) -> str:
        parts = [f"{self.examples} examples"]
        if self.bad_images:
            index, problem = self.bad_images[0]
            parts.append(f"{len(self.bad_images)} with an image that does not decode skipped (first: example {index}, "
                         f"{problem})")
        if self.truncated or self.skipped_long:
            over = f"over {self.limit:,} tokens"
            parts += [f"{self.truncated} critique(s) {over} truncated"] * bool(self.truncated)
            parts += [f"{self.skipped_long} example(s) {over} skipped"] * bool(self.skipped_long)
        parts.append(f"longest {self.longest:,} tokens")
        return "; ".join(parts)


def image_rows(dataset, batch_size: int = 64):
    """Each example's images as stored: `{"bytes", "path"}` dicts of a `datasets.Image` column, read from Arrow
    without decoding (or, for another column type, the values as they come)."""
    from datasets import Image, List

    feature = dataset.features.get("images")
    if not (isinstance(feature, List) and isinstance(feature.feature, Image)):
        yield from dataset["images"]
        return
    for batch in dataset.select_columns(["images"]).with_format("arrow").iter(batch_size=batch_size):
        yield from batch.column("images").to_pylist()


def open_stored(image, number: int):
    """`(name, opened PIL image)` of one stored image (a dict of `bytes`/`path`, a path, or a PIL image)."""
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return getattr(image, "filename", "") or f"image {number}", open_image(image)
    if isinstance(image, dict):
        name = image.get("path") or f"image {number}"
        source = BytesIO(image["bytes"]) if image.get("bytes") is not None else image.get("path")
    else:
        name, source = str(image), image
    try:
        return name, PIL.Image.open(source)
    except (OSError, ValueError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"image {name!r} could not be read: {error}") from error


def check_images(dataset, bad_images: str, screening: Screening):
    """`(dataset, sizes)`: the examples whose images all decode, and each kept example's image sizes
    `(height, width)`, as displayed (EXIF rotation applied). `bad_images`: "stop" (raise, naming the example and the
    file) or "skip"."""
    kept, sizes = [], []
    for index, images in enumerate(image_rows(dataset)):
        row_sizes, problem = [], None
        for number, image in enumerate(images or []):
            try:
                name, opened = open_stored(image, number)
                width, height = opened.size
                swapped = exif_orientation(opened) in SWAPPED_ORIENTATIONS
                decode_image(opened, repr(name), draft_size=(1, 1))
            except ValueError as error:
                problem = str(error)
                break
            row_sizes.append((width, height) if swapped else (height, width))
        if problem is None:
            kept.append(index)
            sizes.append(row_sizes)
        elif bad_images == "stop":
            raise ValueError(f"training example {index}: {problem} (bad_images: skip leaves such examples out)")
        else:
            screening.bad_images.append((index, problem))
    return (dataset if len(kept) == len(dataset) else dataset.select(kept)), sizes


def rendered(processor, messages) -> str:
    """The conversation as the collator renders it, each image placeholder as one image token."""
    text = processor.apply_chat_template(messages, tokenize=False)
    return text.replace(IMAGE_PLACEHOLDER, processor.context_image_token)


def fit_lengths(dataset, processor, sizes, limit: int, long_critiques: str, screening: Screening):
    """The examples cut or dropped to at most `limit` tokens (see the module docstring); `sizes` from
    `check_images`."""
    tokenizer = processor.tokenizer
    messages = dataset["messages"]
    image_tokens = [sum(processor._get_num_multimodal_tokens(image_sizes=row).num_image_tokens) - len(row)
                    if row else 0 for row in sizes]
    lengths = [len(ids) + extra for ids, extra in zip(
        tokenizer([rendered(processor, conversation) for conversation in messages])["input_ids"], image_tokens)]
    screening.limit, screening.longest = limit, max(lengths, default=0)
    kept, changed = [], {}
    for index, (conversation, length) in enumerate(zip(messages, lengths)):
        if length <= limit:
            kept.append(index)
            screening.longest_kept = max(screening.longest_kept, length)
            continue
        cut = truncated(processor, conversation, length, limit, image_tokens[index]) if long_critiques == "truncate" else None
        if cut is None:
            screening.skipped_long += 1
            continue
        changed[index], length = cut
        kept.append(index)
        screening.truncated += 1
        screening.longest_kept = max(screening.longest_kept, length)
    if changed:
        column = [changed.get(index, conversation) for index, conversation in enumerate(messages)]
        feature = dataset.features["messages"]
        dataset = dataset.remove_columns("messages").add_column("messages", column, feature=feature)
    return dataset if len(kept) == len(dataset) else dataset.select(kept)


def truncated(processor, conversation, length: int, limit: int, image_tokens: int):
    """`(conversation, its length)`: the conversation with its last answer cut at a token boundary so that it takes
    at most `limit` tokens; None when the rest of it alone is longer."""
    tokenizer = processor.tokenizer
    turn = next((message for message in reversed(conversation) if message["role"] == "assistant"), None)
    if turn is None:
        return None
    item = next((item for item in reversed(turn["content"]) if item.get("text")), None)
    if item is None:
        return None
    text = item["text"]
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    keep = len(offsets)
    for _ in range(4):  # a cut can merge differently at its edge: measure again, cut again
        keep -= length - limit
        if keep <= 0:
            return None
        item["text"] = text[:offsets[keep - 1][1]]
        length = len(tokenizer(rendered(processor, conversation))["input_ids"]) + image_tokens
        if length <= limit:
            return conversation, length
    return None


def screen_dataset(dataset, processor, limit: int, bad_images: str, long_critiques: str):
    """`(dataset, Screening)`: `check_images`, then `fit_lengths`."""
    screening = Screening()
    dataset, sizes = check_images(dataset, bad_images, screening)
    dataset = fit_lengths(dataset, processor, sizes, limit, long_critiques, screening)
    screening.examples = len(dataset)
    return dataset, screening


__all__ = ["Screening", "check_images", "fit_lengths", "screen_dataset"]
