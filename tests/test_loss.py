"""The loss trains the answer only: image, padding and prompt tokens carry no label."""

import torch
import torch.nn.functional as F

from conftest import PROMPT, random_image


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


def test_collator_masks_image_and_pad_tokens_also_without_assistant_only_loss(make_model, processor):
    """With `assistant_only_loss=False` every text token is labelled; image tokens and padding still are not (the
    model takes `labels` as given: the collator owns the masking)."""
    from modeling_ase_mllm.training.collator import AseMllmDataCollator

    model = make_model(gate=0.5)
    def example(image, question, answer):
        return {"images": [image], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}

    examples = [example(random_image(200, 300), PROMPT, ANSWER), example(random_image(100, 100), "short", "Fine.")]
    batch = AseMllmDataCollator(processor, assistant_only_loss=False)(examples)
    ids, labels = batch["input_ids"], batch["labels"]
    manual = ids.masked_fill(torch.isin(ids, torch.tensor(processor.image_token_ids)), -100)
    manual = manual.masked_fill(batch["attention_mask"] == 0, -100)
    assert torch.equal(labels, manual)
    assert (manual != -100).sum() > 10 and (batch["attention_mask"] == 0).any()
    out = model(**batch)
    assert torch.allclose(out.loss, _manual_loss(out.logits, manual), atol=1e-6)