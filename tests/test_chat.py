"""InternVL-style `chat()` / `batch_chat()` answers are stripped, as InternVL's own are."""

from conftest import PROMPT, random_image
from modeling_ase_mllm.inference.chat import batch_chat, chat


def test_chat_answers_are_stripped_as_internvl_strips_them(make_model, processor):
    """A `▁word`-style first token decodes with a leading space (`' loransformers…'` from a converted InternVL2);
    InternVL's chat() returns `'loransformers…'`. Generation is pushed onto one such token with a sequence bias."""
    model = make_model(seed=4)
    tokenizer = processor.tokenizer
    spaced = next(i for i in range(len(tokenizer)) if (text := tokenizer.decode([i])).startswith(" ") and text.strip())
    generation = {"max_new_tokens": 3, "sequence_bias": {(spaced,): 100.0}}
    image = random_image(300, 500, seed=8)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )
    tokens = model.generate(**inputs, do_sample=False, **generation)[0, inputs["input_ids"].shape[1]:]
    decoded = processor.decode(tokens, skip_special_tokens=True)
    assert tokens.tolist() == [spaced] * 3 and decoded.startswith(" ")

    answer, history = chat(model, processor, image, PROMPT, generation, return_history=True)
    assert answer == decoded.strip() and answer != decoded and not answer.startswith(" ")
    assert history == [(PROMPT, answer)]
    assert batch_chat(model, processor, [image, None], [PROMPT, "Hello?"], generation) == [answer, answer]
