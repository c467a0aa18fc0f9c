"""The recogniser report: bars checked as measured, per-condition breakdowns computed from per-utterance counts."""

from modeling_lact_audio.recogniser.evaluation import score_split
from modeling_lact_audio.recogniser.report import bar_checks, group_tables, render_report


def _results(ours_hyp: str, whisper_hyp: str, n: int = 40) -> dict:
    refs = ["the cat sat on the mat"] * n
    splits = ["test_seen", "test_unseen_speakers", "test_noise", "test_real"]
    systems = {
        "lact + LM": {"splits": {s: score_split(refs, [ours_hyp] * n) for s in splits}},
        "whisper tiny.en zero-shot (greedy)": {"splits": {s: score_split(refs, [whisper_hyp] * n) for s in splits}},
    }
    return {
        "splits": splits,
        "rows_per_split": n,
        "systems": systems,
        "reference_system": "lact",
        "groups": {"test_noise": {"snr_db": ["0.0"] * (n // 2) + ["10.0"] * (n // 2)}},
        "command": "python eval/recogniser_eval.py --head lact=x",
    }


def test_bars_are_met_only_when_measured_so():
    good = bar_checks(
        _results("the cat sat on the mat", "a dog sat on a rug"), "lact + LM", "whisper tiny.en zero-shot (greedy)"
    )
    assert good.count("| yes |") == 4 and "| no |" not in good
    bad = bar_checks(
        _results("a dog sat on a rug", "the cat sat on the mat"), "lact + LM", "whisper tiny.en zero-shot (greedy)"
    )
    assert bad.count("| no |") == 4
    assert bar_checks(_results("x", "y"), "missing", "whisper tiny.en zero-shot (greedy)") == ""


def test_group_tables_split_the_counts_by_condition():
    results = _results("the cat sat on the mat", "a dog sat on a rug")
    # make the 10 dB half perfect and the 0 dB half all wrong for lact + LM
    refs = ["the cat sat on the mat"] * 40
    results["systems"]["lact + LM"]["splits"]["test_noise"] = score_split(refs, ["x"] * 20 + refs[:20])
    table = group_tables(results)
    assert "test_noise by snr_db" in table and "0.0 (n=20)" in table and "10.0 (n=20)" in table
    row = next(line for line in table.splitlines() if line.startswith("| lact + LM"))
    assert "| 100.0 [100.0, 100.0] | 0.0 [0.0, 0.0] |" in row
    report = render_report(results)
    assert report.startswith("# Recogniser evaluation") and "python eval/recogniser_eval.py --head lact=x" in report


def test_model_card_carries_the_measured_numbers_and_the_commands():
    from modeling_lact_audio import LaCTAudioConfig
    from modeling_lact_audio.recogniser.model_card import render_model_card

    results = _results("the cat sat on the mat", "a dog sat on a rug")
    results["systems"]["lact + LM"]["lm"] = {"lm_weight": 0.5, "word_score": 1.0, "beam_size": 50}
    summary = {
        "args": {"max_steps": 360, "learning_rate": 0.002, "extra": {"train_rows": 2500}, "single_fraction": 0.25},
        "best": {"step": 360, "wer": 0.5, "cer": 0.2},
        "train_seconds": 3600,
    }
    whisper = {"d_model": 384, "encoder_layers": 4, "max_source_positions": 1500, "num_mel_bins": 80}
    config = LaCTAudioConfig(frontend="whisper_encoder", whisper_config=whisper, lact_chunk_size=128)
    card = render_model_card(results, summary, config, "lact", "lact_whisper_ctc")
    assert card.startswith("---\nlicense: apache-2.0") and "360 steps" in card and "(60 minutes" in card
    assert "LM weight\n0.5, word bonus 1.0" in card and "--lact-chunk-size 128" in card
    assert "| test_seen | WER interval below Whisper's | 0.0 [0.0, 0.0]" in card
    assert "python eval/recogniser_eval.py --head lact=x" in card


def test_p_value_table_uses_the_stored_reference_and_marks_missing_values():
    from modeling_lact_audio import LaCTAudioConfig
    from modeling_lact_audio.recogniser.model_card import render_model_card

    results = _results("the cat sat on the mat", "a dog sat on a rug")
    results["reference_system"] = "lact + LM"
    whisper = results["systems"]["whisper tiny.en zero-shot (greedy)"]["splits"]
    for split in results["splits"][:-1]:  # one split without a p-value: shown as "-"
        whisper[split]["p_vs_reference"] = 0.0123
    report = render_report(results)
    assert "WER: lact + LM against each system" in report
    assert "| whisper tiny.en zero-shot (greedy) | 0.0123 | 0.0123 | 0.0123 | - |" in report
    config = LaCTAudioConfig(
        frontend="whisper_encoder",
        whisper_config={"d_model": 384, "encoder_layers": 4, "max_source_positions": 1500, "num_mel_bins": 80},
    )
    card = render_model_card(results, {"args": {}}, config, "lact", "lact_whisper_ctc")
    assert "| whisper tiny.en zero-shot (greedy) | 0.0123 | 0.0123 | 0.0123 | - |" in card


def test_systems_are_kept_from_an_earlier_evaluation_only_on_the_same_utterances():
    import pytest

    from modeling_lact_audio.recogniser.evaluation import kept_systems

    earlier = _results("the cat sat on the mat", "a dog sat on a rug")
    earlier["uids"] = {s: [f"{s}-{i}" for i in range(40)] for s in earlier["splits"]}
    earlier["systems"]["lact + LM"].update(train_steps=360, train_rows=2500)
    kept = kept_systems(earlier, {"lact + LM": "baseline + LM"}, earlier["uids"])
    assert list(kept) == ["baseline + LM"] and kept["baseline + LM"]["kept_from"] == earlier["command"]
    assert kept["baseline + LM"]["splits"] == earlier["systems"]["lact + LM"]["splits"]
    # keeping a system the earlier evaluation had itself kept names the evaluation that scored it
    earlier["systems"]["old"] = {**earlier["systems"]["lact + LM"], "kept_from": "python first_evaluation"}
    assert kept_systems(earlier, {"old": "old"}, earlier["uids"])["old"]["kept_from"] == "python first_evaluation"
    with pytest.raises(ValueError, match=r"no system \['bilstm'\]"):
        kept_systems(earlier, {"bilstm": "bilstm"}, earlier["uids"])
    other = {**earlier["uids"], "test_real": ["x"] * 40}
    with pytest.raises(ValueError, match="test_real: the earlier evaluation did not score the same utterances"):
        kept_systems(earlier, {"lact + LM": "x"}, other)
    with pytest.raises(ValueError, match="has no uids for it"):
        kept_systems({**earlier, "uids": {}}, {"lact + LM": "x"}, earlier["uids"])
    # the report says which systems were kept, their budget, and the command that scored them
    results = _results("the cat sat on the mat", "a dog sat on a rug")
    results["systems"].update(kept)
    report = render_report(results)
    row = next(line for line in report.splitlines() if line.startswith("| baseline + LM (kept)"))
    assert "| 360 | 2500 |" in row
    assert "scored on the same utterances by an earlier evaluation" in report


def test_lm_tuning_extends_its_grid_past_an_edge_that_holds_the_best_point(monkeypatch):
    import torch

    from modeling_lact_audio.recogniser import evaluation

    class Decoder:  # "transcribes" every utterance as its own settings
        def __init__(self, vocab, folder, beam_size, lm_weight, word_score):
            self.settings = (lm_weight, word_score)

        def __call__(self, padded, lengths):
            return [self.settings] * len(lengths)

    def score(references, predictions):  # best at lm_weight 3, word bonus -2: outside the starting grid
        w, s = predictions[0]
        return {"wer": (w - 3) ** 2 + (s + 2) ** 2, "cer": 0.0}

    monkeypatch.setattr(evaluation, "CTCBeamSearchDecoder", Decoder)
    log_probs = [torch.zeros(5, 3), torch.zeros(4, 3)]
    tuned = evaluation.tune_lm(log_probs, ["a", "b"], {}, "lm", score, lm_weights=(0.0, 1.0, 2.0), word_scores=(-1, 0))
    assert (tuned["lm_weight"], tuned["word_score"], tuned["edge"]) == (3.0, -2, [])
    assert len({(g["lm_weight"], g["word_score"]) for g in tuned["grid"]}) == len(tuned["grid"])  # none scored twice
    capped = evaluation.tune_lm(
        log_probs, ["a", "b"], {}, "lm", score, lm_weights=(0.0, 0.5), word_scores=(0, 1), max_extensions=1
    )
    assert capped["lm_weight"] == 1.0 and "largest lm_weight" in capped["edge"]
