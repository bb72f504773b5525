"""Which split of each AIC dataset is trained on and which is scored, so that a number can be compared with the
papers' numbers: the paper-comparable protocol of each dataset, and its alternatives.

Light on purpose (no imports beyond the standard library): the command line lists the protocols in its help and
checks `--protocol` without loading anything. `docs/datasets.md` holds the same table with its sources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    """One way of training and scoring on a dataset.

    Attributes:
        dataset: the reader's name (`registry.DATASET_NAMES`).
        name: the protocol's name, unique within the dataset (`--protocol`).
        train_split: the split trained on.
        eval_split: the split whose scores are reported.
        whose: whose split it is, and the papers whose numbers follow it.
        source: where the split files come from.
    """

    dataset: str
    name: str
    train_split: str
    eval_split: str
    whose: str
    source: str

    def describe(self) -> str:
        """One line for reports: ``"aric: train on train, evaluate on val (ARIC ...)"``."""
        return f"{self.dataset} protocol {self.name!r}: train on {self.train_split}, evaluate on {self.eval_split} ({self.whose})"

    def to_dict(self) -> dict:
        return asdict(self)


# The first protocol of each dataset is its default: the one Table I's numbers are compared under.
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("pccd", "aestheval", "train", "test",
             "Aestheval's 2022 split (Nieto et al., NeurIPS 2022 Datasets & Benchmarks; the BLIP baselines), not the "
             "ICCV 2017 split of CNN-LSTM-WD, AO and AF: 203 of the 300 photos of the ICCV authors' evaluation list "
             "are outside Aestheval's test and validation files",
             "mediatechnologycenter/Aestheval aestheval/data/PCCD/guru_{train,validation,test}.json"),
    Protocol("rpcd", "aestheval", "train", "test",
             "the RPCD authors' random 70/10/20 split (Nieto et al., NeurIPS 2022 Datasets & Benchmarks)",
             "Zenodo record 6985507; mediatechnologycenter/Aestheval aestheval/data/reddit/{train,validation,test}_ids.csv"),
    Protocol("dpc2022", "aric", "train", "val",
             "ARIC's (Zhong et al., AAAI 2023): its captioner trains on the comment-pair file and is scored on val.csv "
             "(image_caption_demo.py, generation_eval.py); no ARIC script reads test.csv",
             "the DPC2022 release: anotation/comments/train_split_by_val_scored_comment_id_pair.csv, "
             "anotation/test_and_val/val.csv"),
    Protocol("dpc2022", "release", "train", "test",
             "the DPC2022 release's own train.csv and test.csv, which no published number uses",
             "the DPC2022 release: anotation/train/train.csv, anotation/test_and_val/test.csv"),
    Protocol("ava_captions", "ghosal", "train", "test",
             "Ghosal et al.'s (ICCVW 2019) random split by their cleaning script (5,000 test, 5,000 val lines)",
             "CLEAN_AVA_FULL_AFTER_SUBJECTIVE_CLEANING.json's `split` field (V-Sense/Aesthetic-Image-Captioning-ICCVW-2019)"),
    Protocol("mini_aic", "mini", "train", "test", "this project's bundled set (no paper)",
             "modeling_ase_mllm/data/mini_aic.json"),
)


def dataset_protocols(dataset: str) -> tuple[Protocol, ...]:
    """The protocols of a dataset (its reader's name), the default first."""
    return tuple(protocol for protocol in PROTOCOLS if protocol.dataset == dataset)


def protocol_names(dataset: str) -> tuple[str, ...]:
    return tuple(protocol.name for protocol in dataset_protocols(dataset))


def get_protocol(dataset: str, name: str | None = None) -> Protocol:
    """The protocol `name` of `dataset` (its default when `name` is None); `ValueError` names the known ones."""
    known = dataset_protocols(dataset)
    if not known:
        raise ValueError(f"{dataset}: no protocols are known for this dataset")
    if name is None:
        return known[0]
    for protocol in known:
        if protocol.name == name:
            return protocol
    raise ValueError(f"{dataset}: unknown protocol {name!r}; it has {[p.name for p in known]}")


def protocol_for_split(dataset: str, split: str, name: str | None = None) -> Protocol | None:
    """The protocol a score of `dataset`'s `split` follows: protocol `name` (the default if None) when `split` is its
    evaluation split, else None (the number then follows no published protocol)."""
    protocol = get_protocol(dataset, name)
    return protocol if protocol.eval_split == split else None


__all__ = ["Protocol", "PROTOCOLS", "dataset_protocols", "get_protocol", "protocol_for_split", "protocol_names"]
