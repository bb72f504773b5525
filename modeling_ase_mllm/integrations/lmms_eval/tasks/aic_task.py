"""An lmms-eval task over an AIC split, read by ase-mllm's own readers (`data.registry.load_aic_dataset`), offline.

lmms-eval loads a task's data with `datasets.load_dataset` or, with `load_from_disk`, from a saved folder. The
bundled mini set and the public releases are neither, so the first run saves the split's DatasetDict into
`~/.cache/ase_mllm/lmms_eval/<dataset>` and hands lmms-eval that folder. Where the data lives: `dataset_path` in
the YAML is the reader's name; the environment variable `ASE_MLLM_<NAME>` (e.g. `ASE_MLLM_PCCD`) gives the
release's folder or a folder written by `ase-mllm prepare-data`; the mini set needs none.
"""

import os
from pathlib import Path

from lmms_eval.api.task import ConfigurableTask

from modeling_ase_mllm.utils.cache import cache_dir


class AicCaptionTask(ConfigurableTask):
    def __init__(self, config: dict | None = None, **kwargs):
        # lmms-eval hands a YAML-declared task class its whole config, `class` key included, which TaskConfig refuses.
        super().__init__(config={key: value for key, value in (config or {}).items() if key != "class"}, **kwargs)

    def download(self, dataset_kwargs=None) -> None:
        from datasets import DatasetDict, load_from_disk

        from modeling_ase_mllm.data.registry import load_aic_dataset

        name = self.config.dataset_path
        source = os.environ.get(f"ASE_MLLM_{name.upper()}")
        if source is not None and (Path(source) / "dataset_dict.json").is_file():
            folder = Path(source)  # prepared by `ase-mllm prepare-data`
        else:
            folder = cache_dir("lmms_eval", name)
            if not (folder / "dataset_dict.json").is_file():
                if source is None and name != "mini_aic":
                    raise ValueError(f"task {self.config.task}: set ASE_MLLM_{name.upper()} to the {name} release's "
                                     "folder (or to a folder written by `ase-mllm prepare-data`)")
                splits = load_aic_dataset(name, source) if source is not None else load_aic_dataset(name)
                DatasetDict(splits).save_to_disk(str(folder))
        load_from_disk(str(folder))  # fails here, naming the folder, if it is not a saved DatasetDict
        self.DATASET_PATH = str(folder)
        super().download({**(dataset_kwargs or {}), "load_from_disk": True})
