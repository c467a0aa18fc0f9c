"""Character error rate, a local `evaluate` module backed by jiwer (``evaluate.load("cer")`` needs the Hub).

wer, cer = modeling_lact_audio.asr.load_metrics()  # evaluate.load of this folder
cer.compute(predictions=["helo"], references=["hello"])  # 0.2
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Corpus character error rate: (substitutions + deletions + insertions) / reference
characters, summed over all pairs. Spaces count as characters (as in jiwer.cer); leading and trailing
spaces do not. No other normalisation is applied."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis strings.
    references: list of reference strings, one per prediction.
    return_details: when True, return a dict with ``cer``, ``substitutions``, ``deletions``,
        ``insertions``, ``hits`` and ``reference_chars`` instead of a float.
Returns:
    float CER (can exceed 1 with many insertions), or the dict above.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CER(evaluate.Metric):
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
            raise ValueError("CER of an empty list is undefined")
        out = jiwer.process_characters(list(references), list(predictions))
        errors = out.substitutions + out.deletions + out.insertions
        chars = out.substitutions + out.deletions + out.hits
        cer = errors / chars if chars else float(errors > 0)
        if not return_details:
            return cer
        return {
            "cer": cer,
            "substitutions": out.substitutions,
            "deletions": out.deletions,
            "insertions": out.insertions,
            "hits": out.hits,
            "reference_chars": chars,
        }
