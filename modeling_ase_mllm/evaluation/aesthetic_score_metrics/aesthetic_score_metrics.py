"""The aesthetic-score metrics as an `evaluate` module that loads offline.

    import evaluate
    from modeling_ase_mllm.evaluation.scores import SCORE_EVALUATE_MODULE_PATH
    scores = evaluate.load(SCORE_EVALUATE_MODULE_PATH)
    scores.compute(predictions=[5.4, 4.9], references=[5.6, 4.1])

It calls `modeling_ase_mllm.evaluation.scores.score_metrics`, the code behind `ase-mllm evaluate-score`.
"""

import datasets
import evaluate

from modeling_ase_mllm.evaluation.scores import score_metrics


_DESCRIPTION = """SRCC and PLCC (scipy) between predicted and human aesthetic scores, binary accuracy at 5.0 (a score
at or below 5.00 is low), and, given the predicted rating outputs and the vote counts, the EMD with r = 2 (root mean
square of the CDF difference per image, as EAT's EDMLoss, averaged over images)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one predicted score per image (EAT's Σ i·y_i).
    references: one human score per image (AVA: the mean rating of its votes).
    rating_outputs: optional, per image the ten predicted outputs for the ratings 1..10.
    votes: optional, per image the ten vote counts (with `rating_outputs`: the EMD).
Returns:
    srcc, plcc, accuracy, num_images, and emd when `rating_outputs` and `votes` are given.
"""

_CITATION = "He et al., EAT: An Enhancer for Aesthetics-Oriented Transformers, ACM MM 2023."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AestheticScoreMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, rating_outputs=None, votes=None):
        return score_metrics(list(predictions), list(references), rating_outputs, votes)
