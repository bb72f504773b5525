"""What the model is asked: the paper's question, and the aspect-conditioned ones.

Light on purpose (no imports): the command line checks `--aspect` against `ASPECT_PHRASES` before loading anything.
"""

# The paper's training and test prompt (ASE-MLLM, §IV.B).
AESTHETIC_PROMPT = "Comment on this image from an aesthetic perspective."

# Human-readable phrases for aspect names (PCCD's seven, plus DPC-Captions' merged ones).
ASPECT_PHRASES: dict[str, str] = {
    "general_impression": "general impression",
    "subject_of_photo": "subject",
    "composition": "composition",
    "use_of_camera": "camera settings",
    "depth_of_field": "depth of field",
    "color_lighting": "color and lighting",
    "focus": "focus",
    "depth_and_focus": "depth of field and focus",
    "impression_and_subject": "general impression and subject",
}


def aspect_prompt(aspect: str) -> str:
    """Prompt asking about one aspect, e.g. ``"Comment on the composition of this image."``.

    Unknown aspect names are turned into a phrase by replacing underscores with spaces.
    """
    phrase = ASPECT_PHRASES.get(aspect, aspect.replace("_", " "))
    return f"Comment on the {phrase} of this image."


__all__ = ["AESTHETIC_PROMPT", "ASPECT_PHRASES", "aspect_prompt"]
