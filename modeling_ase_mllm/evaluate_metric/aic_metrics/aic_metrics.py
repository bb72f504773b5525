"""The eleven aesthetic-image-captioning metrics as an `evaluate` module that loads offline.

    import evaluate
    from modeling_ase_mllm.metrics import EVALUATE_MODULE_PATH
    aic = evaluate.load(EVALUATE_MODULE_PATH)
    aic.compute(predictions=["warm light ..."], references=[["ref a", "ref b"]])

It calls `modeling_ase_mllm.metrics.score_predictions`, the code behind `ase-mllm evaluate`.
"""

import datasets
import evaluate

from modeling_ase_mllm.metrics import score_predictions


_DESCRIPTION = """BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap 1.2, PTB-tokenised, whole corpus in one call)
plus SPICE, SPICE-L, Precision and Recall (official SPICE 1.0 when the CoreNLP 3.6.0 jars are given, otherwise
reported unavailable with the reason)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one caption per image.
    references: a list of reference critiques per image.
    spice_corenlp_dir: folder with the CoreNLP 3.6.0 jars (default: $SPICE_CORENLP_DIR).
    pr_variant: "independent" (default) or "best_f".
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

    def _compute(self, predictions, references, spice_corenlp_dir=None, pr_variant="independent"):
        ids = [str(index) for index in range(len(predictions))]
        return score_predictions(
            dict(zip(ids, predictions)), dict(zip(ids, references)), spice_corenlp_dir=spice_corenlp_dir,
            pr_variant=pr_variant,
        )
