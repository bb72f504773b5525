"""The loss trains the answer only: image, padding and prompt tokens carry no label."""

import torch
import torch.nn.functional as F

from conftest import PROMPT, random_image, user_turn


ANSWER = "The colors are warm and the composition is balanced."


def _conversation(image):
    return [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
    ]


def _manual_loss(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def test_assistant_mask_covers_exactly_the_answer_and_its_stop_token(processor):
    batch = processor.apply_chat_template(
        [_conversation(random_image(300, 500))], tokenize=True, return_dict=True, return_tensors="pt",
        return_assistant_tokens_mask=True,
    )
    mask = batch["assistant_masks"][0].bool()
    answer_ids = batch["input_ids"][0][mask]
    assert processor.tokenizer.decode(answer_ids) == ANSWER + "<|im_end|>"
    assert not torch.isin(answer_ids, torch.tensor(processor.image_token_ids)).any()


def test_loss_on_answer_tokens_only(make_model, processor):
    model = make_model(gate=0.5)
    batch = processor.apply_chat_template(
        [_conversation(random_image(300, 500, seed=s)) for s in (1, 2)], tokenize=True, return_dict=True,
        return_tensors="pt", return_assistant_tokens_mask=True,
    )
    labels = batch["input_ids"].masked_fill(batch.pop("assistant_masks") == 0, -100)
    out = model(**batch, labels=labels)
    assert torch.allclose(out.loss, _manual_loss(out.logits, labels), atol=1e-6)


def test_model_masks_image_and_pad_tokens_itself(make_model, processor):
    """Given `labels = input_ids`, image tokens and left padding are excluded; text tokens are kept."""
    model = make_model(gate=0.5)
    texts = [processor.apply_chat_template(user_turn(), add_generation_prompt=True), "<image>\nshort"]
    batch = processor(images=[random_image(200, 300), random_image(100, 100)], text=texts, return_tensors="pt", padding=True)
    ids = batch["input_ids"]
    out = model(**batch, labels=ids.clone())
    manual = ids.masked_fill(torch.isin(ids, torch.tensor(processor.image_token_ids)), -100)
    manual = manual.masked_fill(batch["attention_mask"] == 0, -100)
    assert (manual != -100).sum() > 10 and (batch["attention_mask"] == 0).any()
    assert torch.allclose(out.loss, _manual_loss(out.logits, manual), atol=1e-6)
