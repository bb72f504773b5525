"""InternVL's conversational API, for users coming from it: `chat()` and `batch_chat()` over `generate()`.

OpenGVLab's InternVL models carry these as methods; here they are functions of the model and its processor (tiling
and saliency need the processor, where InternVL takes a tokenizer), so that the model class holds only the model.

    answer = chat(model, processor, photo, "How is the light?", {"max_new_tokens": 64})
"""

from __future__ import annotations


def chat(model, processor, images, question: str, generation_config: dict | None = None, history=None,
         return_history: bool = False):
    """One answer, as InternVL's `chat()`; `images` (PIL image, path or list, or `None`) go with the first user turn.

    Args:
        model: an ASE-MLLM generation model (either family).
        processor: its processor.
        history: earlier `(question, answer)` pairs.
    Returns:
        The answer, or `(answer, history)` with `return_history=True`.
    """
    history = list(history or [])
    images = [] if images is None else list(images) if isinstance(images, (list, tuple)) else [images]
    turns = [*history, (question, None)]
    messages = []
    for index, (user_text, answer) in enumerate(turns):
        content = ([{"type": "image"}] * len(images) if index == 0 else []) + [{"type": "text", "text": user_text}]
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    answer = batch_chat(model, processor, [images], [messages], generation_config)[0]
    return (answer, [*history, (question, answer)]) if return_history else answer


def batch_chat(model, processor, images, questions, generation_config: dict | None = None,
               images_kwargs: dict | None = None) -> list[str]:
    """Answers for a batch, left-padded and stripped of surrounding whitespace, as InternVL's `batch_chat()`.

    Args:
        images: per sample, an image, a list of images, or `None`.
        questions: per sample, a question string (the images precede it) or a full message list.
        images_kwargs: image-processor options, e.g. `{"max_patches": 6}`.
    """
    inputs = chat_inputs(model, processor, images, questions, images_kwargs)
    return generate_answers(model, processor, inputs, generation_config)


def chat_inputs(model, processor, images, questions, images_kwargs: dict | None = None):
    """The processor's outputs for `batch_chat`'s arguments (each image tiled once, here), on the model's device with
    the pixels in its dtype."""
    per_sample = [[] if item is None else list(item) if isinstance(item, (list, tuple)) else [item] for item in images]
    prompts = []
    for sample_images, question in zip(per_sample, questions, strict=True):
        messages = question if isinstance(question, list) else [
            {"role": "user", "content": [{"type": "image"}] * len(sample_images) + [{"type": "text", "text": question}]}
        ]
        prompts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
    flat = [image for sample in per_sample for image in sample]
    inputs = processor(
        images=per_sample if flat else None, text=prompts, padding=True, images_kwargs=images_kwargs or {},
        return_tensors="pt",
    )
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def generate_answers(model, processor, inputs, generation_config: dict | None = None) -> list[str]:
    """Greedy answers (by default) to `chat_inputs`' batch, stripped as InternVL strips them."""
    output = model.generate(**inputs, **{"max_new_tokens": 256, "do_sample": False, **(generation_config or {})})
    # Stripped as InternVL strips them: an answer whose first piece is a `▁word` decodes with a leading space.
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [answer.strip() for answer in answers]


__all__ = ["chat", "batch_chat", "chat_inputs", "generate_answers"]
