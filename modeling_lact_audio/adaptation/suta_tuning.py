"""Choose SUTA's learning rate on a validation split, never on a test split.

SUTA's published rates (2e-5 on wav2vec2's feature extractor, 2e-4 on its LayerNorms) were tuned for another
model; on our heads, which read frozen cached Whisper states, ten AdamW steps at 2e-4 move the norm weights by
about 2e-3 and change no transcript. :func:`tune_suta_lr` runs the ``gradient`` protocol with SUTA alone
(``finetune_scopes=()``) at each rate on the speaker streams of a validation split and picks, per head, the rate
with the lowest WER (ties: the smaller rate). ``eval/adaptation/tune_suta.py`` is the command line; the chosen
rate then goes to ``run_adaptation.py gradient --suta-lr``.
"""

import time
from dataclasses import asdict, replace
from pathlib import Path

import datasets

from .experiment import AdaptationSettings, load_systems, run_protocol
from .gradient_protocols import SUTA


def check_tuning_split(split: str) -> None:
    """Raise if ``split`` is a test split: rates are tuned on held-out validation data only."""
    if "test" in split:
        raise ValueError(
            f"{split!r} is a test split: tune SUTA's rate on a validation split (e.g. 'validation') and report "
            "the test splits with the chosen rate"
        )


def tune_suta_lr(
    heads: dict[str, str],
    cache: str,
    rates: list[float],
    split: str = "validation",
    settings: AdaptationSettings | None = None,
) -> dict:
    """SUTA's WER at each rate on the speaker streams of ``split``, for each head, and the chosen rate.

    Args:
        heads: system name -> head folder (``save_recogniser``).
        cache: the folder of cached splits (``cache/<split>``).
        rates: AdamW learning rates to try (positive).
        split: a validation split with ``session_id`` streams (a split with "test" in its name is refused).
        settings: protocol options (``labelled`` utterances at each stream's start are skipped, as in the
            ``gradient`` protocol, so the tuned rate is scored on the same positions); its ``suta_lr`` and
            ``finetune_scopes`` are replaced.

    Returns:
        ``{"split", "rates", "settings", "heads": {name: {"runs": [{"suta_lr", "wer", "wer_ci", "cer",
        "relative_change", "relative_change_ci", "p_value", "utterances", "seconds_per_utterance"}],
        "reset_wer", "chosen_lr"}}, "wall_seconds"}``.
    """
    check_tuning_split(split)
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"rates must be positive learning rates, got {rates}")
    path = Path(cache) / split
    if not path.exists():
        raise FileNotFoundError(
            f"no cached split {split!r} in {cache} (encode it with run_scripts/cache_encoder_states.py)"
        )
    data = datasets.load_from_disk(str(path))
    base = replace(settings or AdaptationSettings(), finetune_scopes=())
    start = time.perf_counter()
    result = {"split": split, "rates": list(rates), "settings": asdict(base), "heads": {}}
    for name, system in load_systems(heads).items():
        runs, reset_wer = [], None
        for rate in rates:
            scored = run_protocol(
                "gradient", system, data, split, replace(base, suta_lr=rate), Path(".")
            )  # gradient writes no files
            suta, reset_wer = scored["conditions"][SUTA], scored["conditions"]["reset"]["wer"]
            change = suta["vs_baseline"]
            runs.append(
                {
                    "suta_lr": rate,
                    "wer": suta["wer"],
                    "wer_ci": suta["wer_ci"],
                    "cer": suta["cer"],
                    "relative_change": change["relative_change"],
                    "relative_change_ci": change["relative_change_ci"],
                    "p_value": change["p_value"],
                    "utterances": suta["utterances"],
                    "seconds_per_utterance": suta["seconds_per_utterance"],
                }
            )
        best = min(runs, key=lambda run: (run["wer"], run["suta_lr"]))
        result["heads"][name] = {"runs": runs, "reset_wer": reset_wer, "chosen_lr": best["suta_lr"]}
    result["wall_seconds"] = time.perf_counter() - start
    return result


def render_tuning_report(result: dict, command: str | None = None) -> str:
    """Markdown: per head, SUTA's WER and relative change against reset at each rate, and the chosen rate."""
    lines = [
        "# SUTA learning rate, tuned on a validation split",
        "",
        f"Split `{result['split']}` (speaker streams; the first {result['settings']['labelled']} utterances of "
        f"each stream skipped, as in the gradient protocol), {result['settings']['suta_steps']} AdamW steps per "
        "utterance on the normalisation layers, reset after each; greedy decoding. The chosen rate has the lowest "
        "WER (ties: the smaller rate). Relative change is against the reset model on the same utterances, with a "
        f"95% paired bootstrap interval. Wall time {result['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    for name, entry in result["heads"].items():
        lines += [
            f"## {name} (reset WER {100 * entry['reset_wer']:.1f}%, chosen lr {entry['chosen_lr']:g})",
            "",
            "| lr | n | WER % | rel. WER change % | p | s/utt |",
            "|---|---|---|---|---|---|",
        ]
        for run in entry["runs"]:
            low, high = run["wer_ci"]
            rel_low, rel_high = run["relative_change_ci"]
            lines.append(
                f"| {run['suta_lr']:g} | {run['utterances']} | {100 * run['wer']:.1f} [{100 * low:.1f}, "
                f"{100 * high:.1f}] | {100 * run['relative_change']:+.1f} [{100 * rel_low:+.1f}, "
                f"{100 * rel_high:+.1f}] | {run['p_value']:.3f} | {run['seconds_per_utterance']:.3f} |"
            )
        lines.append("")
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    return "\n".join(lines)
