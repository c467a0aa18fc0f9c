"""Word error rate, a local `evaluate` module backed by jiwer (``evaluate.load("wer")`` needs the Hub).

wer, cer = modeling_lact_audio.asr.load_metrics()  # evaluate.load of this folder
wer.compute(predictions=["hello word"], references=["hello world"])  # 0.5
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Corpus word error rate: (substitutions + deletions + insertions) / reference words,
summed over all pairs (not a mean of per-utterance rates). Words are split on whitespace; no other
normalisation is applied, so normalise both sides first if casing or punctuation should not count."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis strings.
    references: list of reference strings, one per prediction.
    return_details: when True, return a dict with ``wer``, ``substitutions``, ``deletions``,
        ``insertions``, ``hits`` and ``reference_words`` instead of a float.
Returns:
    float WER (can exceed 1 with many insertions), or the dict above.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, return_details=False):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
        if not references:
            raise ValueError("WER of an empty list is undefined")
        out = jiwer.process_words(list(references), list(predictions))
        errors = out.substitutions + out.deletions + out.insertions
        words = out.substitutions + out.deletions + out.hits
        wer = errors / words if words else float(errors > 0)
        if not return_details:
            return wer
        return {
            "wer": wer,
            "substitutions": out.substitutions,
            "deletions": out.deletions,
            "insertions": out.insertions,
            "hits": out.hits,
            "reference_words": words,
        }
