"""The model card (``README.md``) of an exported recogniser, generated from its evaluation and training run."""

from .report import bar_checks, group_tables, markdown_tables

FRONT_MATTER = """---
license: apache-2.0
library_name: transformers
pipeline_tag: automatic-speech-recognition
tags: [lact, test-time-training, ctc, whisper-encoder, lact-audio]
---
"""


def _subset(results: dict, names: list[str]) -> dict:
    return {**results, "systems": {n: results["systems"][n] for n in names if n in results["systems"]}}


def render_model_card(results: dict, summary: dict, config, head_name: str = "lact", folder_name: str = "") -> str:
    """Markdown of the card.

    Args:
        results: the recogniser evaluation's ``results.json`` (every number in the card comes from it).
        summary: the head's training ``summary.json`` (arguments, history, best step, training time).
        config: the exported folder's ``LaCTAudioConfig``.
        head_name: the head's system name in ``results``.
        folder_name: the folder's name, for the usage lines.
    """
    args = summary.get("args", {})
    best = summary.get("best") or {}
    minutes = summary.get("train_seconds", 0) / 60
    whisper = [n for n in results["systems"] if n.startswith("whisper")]
    others = [n for n in results["systems"] if n not in (head_name, f"{head_name} + LM") and n not in whisper]
    shown = _subset(results, [head_name, f"{head_name} + LM", *whisper, *others])
    shown["reference_system"] = results.get("reference_system")  # the system the stored p-values compare with
    bars = "\n".join(bar_checks(results, f"{head_name} + LM", w) for w in whisper)
    lm = (results["systems"].get(f"{head_name} + LM") or {}).get("lm") or {}
    path = f"model_cards/checkpoints/{folder_name}" if folder_name else "<folder>"
    whisper_layers = config.whisper_config["encoder_layers"]
    output_dir = args.get("output_dir", f"outputs/recogniser/{head_name}")
    return f"""{FRONT_MATTER}
# lact-audio recogniser on Whisper tiny.en's encoder ({folder_name or "lact_whisper_ctc"})

An offline English character CTC recogniser: the pretrained Whisper tiny.en encoder (frozen, {whisper_layers}
layers, d_model {config.whisper_config["d_model"]}) feeds {config.num_hidden_layers} bidirectional LaCT blocks
(width {config.hidden_size}, fast-weight chunk {config.lact_chunk_size} frames, Muon {config.muon_steps} steps,
sliding-window attention of {config.window_size} frames each side) and a CTC head over {config.vocab_size}
characters; a word 3-gram LM (train-split text only) is shipped for beam search. The LaCT blocks were
trained on *sessions* (2-8 utterances of one speaker, the fast weights carried across them), so the model
can carry its fast-weight state across a speaker's utterances at test time.

**Read the numbers below before using it.** It was trained for {args.get("max_steps", "?")} steps
({minutes:.0f} minutes on 2 CPU cores) on cached encoder states of {
        summary.get("args", {}).get("extra", {}).get("train_rows", "?")
    } synthetic training utterances. With CTC decoding it does not reach Whisper tiny.en's own quality on real
speech; joint decoding with the shipped Whisper decoder does (see below, when the folder ships `attention_decoder/`).

## Use

```python
import modeling_lact_audio  # registers the Auto classes (or pass trust_remote_code=True)
from transformers import pipeline
from modeling_lact_audio.asr import Transcriber
from modeling_lact_audio.recogniser.lm import CTCBeamSearchDecoder

asr = pipeline("automatic-speech-recognition", model="{path}", chunk_length_s=30)
print(asr("utterance.wav")["text"])  # greedy CTC; 16 kHz mono
lm = CTCBeamSearchDecoder.from_pretrained("{path}")  # the shipped word LM, settings tuned on validation
asr_lm = pipeline("automatic-speech-recognition", model="{path}", decoder=lm)
transcriber = Transcriber.from_pretrained("{path}", use_lm=True)  # batches, audio over 30 s in windows
```

The feature extractor is Whisper's own (log-mel, 80 bins, padded to the encoder's 30 s window); pass
`return_attention_mask=True` when calling the model yourself, so it keeps only the frames of real audio.
Whisper's encoder is not causal: this model does not stream (the streaming model is `lact_small_ctc`).

## Training

Heads trained on the encoder states of the lact-audio corpus (synthetic espeak-ng / festival / flite / Piper
voices), cached once (`cache/whisper_tiny_en_states`, 30 s windows, fp16):

    python run_scripts/train_recogniser.py --model {head_name} --output {output_dir} \\
        --train-rows {args.get("extra", {}).get("train_rows", "?")} --max-steps {args.get("max_steps", "?")} \\
        --learning-rate {args.get("learning_rate", "?")} --warmup-steps {args.get("warmup_steps", "?")} \\
        --batch-frames {args.get("batch_frames", "?")} --max-utterances {args.get("max_utterances", "?")} \\
        --lr-scheduler-type {args.get("lr_scheduler_type", "cosine")} --lact-chunk-size {config.lact_chunk_size} \
        --validation-rows 300 --eval-every {args.get("eval_every", "?")}

AdamW (weight decay {args.get("weight_decay", "?")}), {args.get("lr_scheduler_type", "cosine")} learning-rate
schedule, SpecAugment-style masks on the cached states, {args.get("single_fraction", 0) * 100:.0f}%
single-utterance sessions. Best validation step
{best.get("step", "?")}: WER {100 * best.get("wer", float("nan")):.1f}%, CER {100 * best.get("cer", float("nan")):.1f}%
(greedy, 300 validation utterances). LM: IRSTLM 3-gram over the train split's sentences; LM weight
{lm.get("lm_weight", "?")}, word bonus {lm.get("word_score", "?")}, beam {lm.get("beam_size", "?")}, chosen on
validation only.

## Evaluation

{results["rows_per_split"]} utterances per test split, the same utterances for every system, 95% bootstrap
intervals. Whisper tiny.en zero-shot uses its own decoder. Produced by:

    {results.get("command") or "eval/recogniser_eval.py"}

{bars}
{markdown_tables(shown)}
{group_tables(shown)}
## Limits

- Trained on synthetic voices only; `test_real` (real recordings) shows how far that carries.
- English characters only; numbers are expected spelt out.
- Offline only; audio over 30 s is read in independent 30 s windows.
- A few hundred CPU training steps: more steps and more of the 13,129 training utterances would help; the
  numbers above are what this folder does, not what the architecture can do.
"""


JOINT_BEGIN, JOINT_END = "<!-- joint-decoding:begin -->", "<!-- joint-decoding:end -->"


def joint_card_section(results: dict, folder_name: str = "lact_whisper_ctc") -> str:
    """The card's section on joint CTC / attention decoding, from ``eval/recogniser_joint_eval.py``'s results
    (the joint system is their ``reference_system``), between markers so it can be replaced."""
    name = results["reference_system"]
    system = results["systems"][name]
    joint = system.get("joint", {})
    whisper = [n for n in results["systems"] if n.startswith("whisper")]
    bars = "\n".join(bar_checks(results, name, w) for w in whisper)
    tuning = joint.get("tuning", {})
    grid = "\n".join(
        f"| {g['ctc_weight']:g} | "
        + " | ".join(f"{100 * g[s]['wer']:.1f}" for s in tuning.get("sets", {}))
        + f" | {100 * g['mean_wer']:.1f} |"
        for g in tuning.get("grid", [])
    )
    whisper_rtf = results["systems"][whisper[0]].get("rtf") if whisper else None
    speed = f" ({whisper[0]}: {whisper_rtf:.3f})" if whisper_rtf else ""
    header = " | ".join(f"{s} WER %" for s in tuning.get("sets", {}))
    tuning_table = (
        f"| CTC weight | {header} | mean |\n|---|{'---|' * len(tuning.get('sets', {}))}---|\n{grid}\n"
        if grid
        else "Untuned.\n"
    )
    return f"""{JOINT_BEGIN}
## Joint CTC / attention decoding (`attention_decoder/`)

The folder also ships Whisper tiny.en's pretrained decoder (float16, MIT licence, OpenAI), which reads the same
frozen encoder states. `Transcriber.from_pretrained("model_cards/checkpoints/{folder_name}",
use_attention_decoder=True)` runs its beam search ({joint.get("num_beams", "?")} beams) with the LaCT CTC head's
prefix log-probabilities mixed in at weight {joint.get("ctc_weight", "?")} (Watanabe et al. 2017): the decoder
brings a language model of real speech, the CTC head keeps each hypothesis on the frames. Transcripts come out
spelt and unpunctuated. Real-time factor {system["rtf"]:.3f} on 2 CPU cores{speed}.

The CTC weight was chosen on validation (synthetic voices) and `train_real` (recorded speech this head never
trained on), by their mean WER; no test split was read:

{tuning_table}
    {tuning.get("command", "")}

Measured on the test splits ({results["rows_per_split"]} utterances each, the same as above):

    {results.get("command") or ""}

{bars}
{markdown_tables(results)}
{JOINT_END}
"""


def with_joint_section(card: str, section: str) -> str:
    """``card`` with its joint-decoding section replaced by ``section`` (put before ``## Training`` if absent)."""
    if JOINT_BEGIN in card and JOINT_END in card:
        head, rest = card.split(JOINT_BEGIN, 1)
        return head + section.rstrip("\n") + rest.split(JOINT_END, 1)[1]
    if "\n## Training" in card:
        head, rest = card.split("\n## Training", 1)
        return head + "\n" + section + "\n## Training" + rest
    return card.rstrip("\n") + "\n\n" + section
