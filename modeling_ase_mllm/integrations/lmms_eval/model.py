"""`ase_mllm` for lmms-eval: batched `generate_until` through `inference.chat.batch_chat` (our processor, tiling and
EAT + LayerCAM saliency), exactly as `ase-mllm evaluate` captions.

Requests are answered in the order lmms-eval gives them, `batch_size` at a time (a batch never mixes tasks or
generation settings). Under `accelerate launch` each process takes its rank's requests (lmms-eval shards them).
"""

from __future__ import annotations

from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from ...evaluation.sharding import current_shards
from ...inference.captioning import load_model_and_processor
from ...inference.chat import batch_chat


class AseMllmLmms(lmms):
    """Args (lmms-eval's `--model_args`): `pretrained` (folder or Hub id), `max_tiles` (the model's own), `dtype`
    (auto); from lmms-eval's own flags: `batch_size` (`--batch_size`), `device` (`--device`; default cuda when
    available, or this process's device under accelerate)."""

    def __init__(self, pretrained: str, batch_size: int | str = 1, max_tiles: int | str | None = None,
                 device: str | None = None, dtype: str = "auto", max_batch_size=None, **kwargs):
        super().__init__()
        if kwargs:
            raise ValueError(f"ase_mllm: unknown model_args {sorted(kwargs)}; known: pretrained, max_tiles, dtype")
        shards = current_shards()
        self._rank, self._world_size = shards.rank, shards.world_size
        self.model, self.processor = load_model_and_processor(pretrained, device=device or shards.device, dtype=dtype)
        self.batch_size = int(batch_size)
        self.images_kwargs = {"max_patches": int(max_tiles)} if max_tiles else {}

    def generate_until(self, requests) -> list[str]:
        answers = []
        batches = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            key = (task, split, repr(sorted(gen_kwargs.items())))
            if not batches or batches[-1][0] != key or len(batches[-1][1]) == self.batch_size:
                batches.append((key, []))
            batches[-1][1].append(request.args)
        for _, batch in tqdm(batches, desc="ase_mllm", unit="batch", disable=self.rank != 0):
            gen_kwargs = batch[0][1]
            images = [doc_to_visual(self.task_dict[task][split][doc_id])
                      for _, _, doc_to_visual, doc_id, task, split in batch]
            answers += batch_chat(self.model, self.processor, images, [args[0] for args in batch],
                                  generation_settings(gen_kwargs), self.images_kwargs)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("ase_mllm answers generate_until tasks (captions) only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("ase_mllm answers generate_until tasks (captions) only")


def generation_settings(gen_kwargs: dict) -> dict:
    """lmms-eval's generation_kwargs as `generate()` arguments: greedy unless the task samples; `until` is left
    to the model's own stop token."""
    settings = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens", 128)),
                "num_beams": int(gen_kwargs.get("num_beams", 1))}
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
        settings.update(do_sample=True, temperature=float(gen_kwargs.get("temperature", 1.0)),
                        top_p=float(gen_kwargs.get("top_p", 1.0)))
    return settings
