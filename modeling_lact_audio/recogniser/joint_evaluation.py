"""Evaluate a recogniser folder's joint CTC / attention decoding on the test splits, beside earlier systems."""

import json
import time
from pathlib import Path

from ..asr import normalize_for_scoring
from ..modeling_lact_audio import count_parameters
from .evaluation import GROUP_COLUMNS, kept_systems, paired_bootstrap_pvalue, score_split, write_json


def evaluate_joint_decoding(
    folder: str,
    corpus: str,
    splits: list[str],
    rows: int,
    output: str,
    kept: dict | None = None,
    name: str | None = None,
    command: str | None = None,
    batch_size: int = 8,
) -> dict:
    """Joint decoding of ``folder`` (its shipped ``attention_decoder/`` and tuned settings) on ``rows`` utterances of
    each split (``load_split(..., shuffle_seed=0)``, the subset every recogniser evaluation uses).

    Args:
        folder: a recogniser folder with ``attention_decoder/`` (``run_scripts/add_attention_decoder.py``).
        corpus: the corpus folder.
        splits: the test splits.
        rows: rows per split.
        output: where ``results.json``, ``REPORT.md`` and ``results.png`` go.
        kept: systems of an earlier evaluation on the same utterances, ``{"results": results.json's dict, "names":
            {name there: name here}}``; the paired p-values compare the joint system with each.
        name: the joint system's name (default: ``"<folder name> joint CTC/attention (ctc_weight w)"``).
        command: the command line, recorded.

    Returns the results dict written to ``output/results.json`` (the joint system is its ``reference_system``).
    """
    from transformers import AutoProcessor

    from ..data import SAMPLING_RATE, load_split, read_audio
    from .attention_decoder import ATTENTION_DECODER_FOLDER, JointCTCAttentionDecoder, joint_transcripts
    from .report import plot, render_report

    decoder = JointCTCAttentionDecoder.from_pretrained(folder)
    extractor = AutoProcessor.from_pretrained(folder).feature_extractor  # Whisper's, as the model was trained on
    config = json.loads((Path(folder) / ATTENTION_DECODER_FOLDER / "joint_config.json").read_text())
    tuned_on = ", ".join(f"{k} ({v} utterances)" for k, v in config.get("tuning", {}).get("sets", {}).items())
    name = name or f"{Path(folder).name} joint CTC/attention (ctc_weight {decoder.ctc_weight:g})"
    results = {
        "splits": splits,
        "rows_per_split": rows,
        "systems": {},
        "reference_system": name,
        "command": command,
        "uids": {},
        "groups": {},
        "notes": [
            f"`{name}`: Whisper tiny.en's pretrained decoder (shipped in `{ATTENTION_DECODER_FOLDER}/`, float16) "
            f"in beam search ({decoder.num_beams} beams, its {decoder.candidates} best tokens per step) with the "
            f"LaCT CTC head's prefix scores mixed in at weight {decoder.ctc_weight:g}, chosen on "
            f"{tuned_on or 'nothing (untuned)'}; "
            "transcripts spelt and unpunctuated, as the CTC head writes.",
        ],
    }
    loaded = {split: load_split(corpus, split, max_rows=rows, shuffle_seed=0) for split in splits}
    for split, data in loaded.items():
        results["uids"][split] = [str(u) for u in data["uid"]]
        results["groups"][split] = {c: [str(v) for v in data[c]] for c in GROUP_COLUMNS.get(split, ())}
    if kept:  # checked before decoding: kept systems must be on these utterances
        results["systems"].update(kept_systems(kept["results"], kept["names"], results["uids"]))
    output = Path(output)
    # Transcripts are saved split by split and reused when the same utterances are decoded with the same
    # settings again (an interrupted evaluation resumes; decoding is its slow part).
    settings = {k: config.get(k) for k in ("ctc_weight", "num_beams", "candidates", "max_new_tokens")}
    saved_file = output / "transcripts.json"
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    if saved.get("settings") != settings:
        saved = {"settings": settings, "splits": {}}
    system, seconds, audio_seconds = {"splits": {}}, 0.0, 0.0
    for split, data in loaded.items():
        audio = [read_audio(c) for c in data["audio"]]
        audio_seconds += sum(len(a) for a in audio) / SAMPLING_RATE
        entry = saved["splits"].get(split, {})
        if entry.get("uids") != results["uids"][split]:
            start = time.perf_counter()
            hyps = joint_transcripts(decoder, extractor, audio, [decoder.ctc_weight], batch_size)[decoder.ctc_weight]
            entry = {"uids": results["uids"][split], "texts": hyps, "seconds": time.perf_counter() - start}
            saved["splits"][split] = entry
            write_json(saved_file, saved)
        seconds += entry["seconds"]
        hyps = entry["texts"]
        references = [normalize_for_scoring(t) for t in data["text"]]
        system["splits"][split] = score_split(references, [normalize_for_scoring(t) for t in hyps])
    system.update(
        rtf=seconds / audio_seconds,
        # Everything inference runs: the encoder, the LaCT blocks and head, and Whisper's decoder.
        parameters=count_parameters(decoder.recogniser, trainable_only=False)
        + count_parameters(decoder.whisper.model.decoder, trainable_only=False),
        joint=config,
    )
    results["systems"][name] = system
    for other, entry in results["systems"].items():
        for split, scores in entry["splits"].items():
            if other != name:
                scores["p_vs_reference"] = paired_bootstrap_pvalue(
                    system["splits"][split]["counts"]["word_errors"],
                    scores["counts"]["word_errors"],
                    scores["counts"]["words"],
                )
    write_json(output / "results.json", results)
    (output / "REPORT.md").write_text(render_report(results))
    plot(results, output / "results.png")
    return results
