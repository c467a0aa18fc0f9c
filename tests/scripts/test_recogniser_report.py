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
