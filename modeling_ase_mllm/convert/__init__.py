"""Checkpoints from elsewhere into ASE-MLLM, one module per source format: InternVL2/2.5/3 (`internvl`, with its
tokenizer carried over by `tokenizer` and shards streamed by `shards`), Qwen-VL-Chat (`qwen_vl`, its tiktoken
tokenizer rebuilt as a `tokenizers` one), the released EAT weights (`eat`); and
transformers' native InternVL holding our weights (`twin`), for parity."""
