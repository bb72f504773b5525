"""The eleven aesthetic-image-captioning metrics as an `evaluate` module that loads offline.

    import evaluate
    from modeling_ase_mllm.evaluation.metrics import EVALUATE_MODULE_PATH
    aic = evaluate.load(EVALUATE_MODULE_PATH)
    aic.compute(predictions=["warm light ..."], references=[["ref a", "ref b"]])

It calls `modeling_ase_mllm.evaluation.metrics.score_predictions`, the code behind `ase-mllm evaluate`.
"""

import datasets
import evaluate

from modeling_ase_mllm.evaluation.metrics import score_predictions
from modeling_ase_mllm.evaluation.spice import SpiceOptions


_DESCRIPTION = """BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap 1.2, PTB-tokenised, whole corpus in one call)
plus SPICE, SPICE-L, Precision and Recall (official SPICE 1.0 on Stanford CoreNLP 3.6.0, whose jars are fetched
from Maven Central on first use; reported unavailable, with the reason, when that is forbidden or fails)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one caption per image.
    references: a list of reference critiques per image.
    pr_variant: "independent" (default: each maximum over references on its own) or "best_f" (both from the
        reference with the best F).
    spice_corenlp_dir: folder that holds (or receives) the CoreNLP 3.6.0 jars (default: $SPICE_CORENLP_DIR, else
        ~/.cache/ase_mllm/spice).
    download: fetch missing jars from Maven Central (default: yes, unless $SPICE_NO_DOWNLOAD is set).
    spice_heap: the SPICE JVM's maximum heap, e.g. "6g" (default: $SPICE_JAVA_HEAP, else 4g).
    spice_threads: SPICE parsing threads (default: one per processor, at most 4).
    spice: False leaves the four SPICE-family metrics out.
Returns:
    Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr, SPICE, SPICE-L, Precision, Recall (None when unavailable),
    unavailable (metric -> reason), num_images, pr_variant, spice_backend.
"""

_CITATION = "Tao et al., Aesthetic Image Captioning with Saliency Enhanced MLLMs, arXiv 2509.04378."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AicMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, pr_variant="independent", spice_corenlp_dir=None, download=None,
                 spice_heap=None, spice_threads=None, spice=True):
        ids = [str(index) for index in range(len(predictions))]
        options = spice and SpiceOptions(corenlp_dir=spice_corenlp_dir, download=download, heap=spice_heap,
                                         threads=spice_threads)
        return score_predictions(dict(zip(ids, predictions)), dict(zip(ids, references)), pr_variant, options)
