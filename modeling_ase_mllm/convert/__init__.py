"""Checkpoints from elsewhere into ASE-MLLM, one module per source format: InternVL2/2.5/3 (`internvl`, with its
tokenizer carried over by `tokenizer` and shards streamed by `shards`), the released EAT weights (`eat`); and
transformers' native InternVL holding our weights (`twin`), for parity."""
