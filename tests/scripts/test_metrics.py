"""The local evaluate modules (modeling_lact_audio/metrics/{wer,cer}, package data) against jiwer."""

import jiwer
import pytest

from modeling_lact_audio.asr import METRICS_DIR, load_metrics

REFERENCES = ["the cat sat on the mat", "hello world", "a b c d", "spaces  here ", ""]
PREDICTIONS = ["the cat sat on mat", "hello word", "a x c d e", "spaces here", "extra"]


@pytest.fixture(scope="module")
def wer():
    return load_metrics()[0]


@pytest.fixture(scope="module")
def cer():
    return load_metrics()[1]


def test_metrics_load_from_the_package_folder(wer, cer):
    # package data: an installed (non-editable) package ships them next to asr.py
    assert (METRICS_DIR / "wer" / "wer.py").is_file() and (METRICS_DIR / "cer" / "cer.py").is_file()
    assert "jiwer" in wer.info.reference_urls[0] and "jiwer" in cer.info.reference_urls[0]


def test_wer_known_values(wer):
    assert wer.compute(predictions=["hello word"], references=["hello world"]) == pytest.approx(0.5)
    assert wer.compute(predictions=["a b c"], references=["a b c"]) == 0.0
    # 1 deletion out of 6 words, 1 substitution out of 2: corpus WER sums before dividing.
    got = wer.compute(predictions=PREDICTIONS[:2], references=REFERENCES[:2])
    assert got == pytest.approx(2 / 8)


def test_wer_matches_jiwer(wer):
    expected = jiwer.wer(REFERENCES[:4], PREDICTIONS[:4])
    assert wer.compute(predictions=PREDICTIONS[:4], references=REFERENCES[:4]) == pytest.approx(expected)
    details = wer.compute(predictions=PREDICTIONS[:4], references=REFERENCES[:4], return_details=True)
    out = jiwer.process_words(REFERENCES[:4], PREDICTIONS[:4])
    assert (details["substitutions"], details["deletions"], details["insertions"]) == (
        out.substitutions,
        out.deletions,
        out.insertions,
    )
    assert details["reference_words"] == 14


def test_cer_matches_jiwer(cer):
    assert cer.compute(predictions=["helo"], references=["hello"]) == pytest.approx(0.2)
    expected = jiwer.cer(REFERENCES[:4], PREDICTIONS[:4])
    assert cer.compute(predictions=PREDICTIONS[:4], references=REFERENCES[:4]) == pytest.approx(expected)


def test_empty_reference_counts_insertions(wer, cer):
    # An empty reference contributes insertions but no reference words.
    assert wer.compute(predictions=PREDICTIONS, references=REFERENCES) == pytest.approx(
        jiwer.process_words(REFERENCES, PREDICTIONS).wer
    )
    assert wer.compute(predictions=["x"], references=[""]) == 1.0
    assert wer.compute(predictions=[""], references=[""]) == 0.0
    assert cer.compute(predictions=["abc"], references=[""]) == 1.0


def test_bad_inputs(wer):
    with pytest.raises(ValueError):
        wer.compute(predictions=["a", "b"], references=["a"])
