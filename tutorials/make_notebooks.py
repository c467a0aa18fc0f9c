"""Write the tutorial notebooks of this folder from the cells below, without outputs.

    python tutorials/make_notebooks.py            # rewrite tutorials/*.ipynb
    python tutorials/make_notebooks.py --check    # exit 1 if a committed notebook differs from its source here

Edit a tutorial here, not in Jupyter, and rerun this script: the committed notebooks stay free of outputs
and their diffs stay readable. Every notebook starts with a parameter cell: ``LACT_TUTORIAL_TINY=1`` (what
CI runs, ``tests/scripts/test_tutorials.py``) picks sizes that run in seconds on one CPU thread, and
``LACT_TUTORIAL_OUTPUT`` where the notebooks write (default ``outputs/tutorials`` in the repository).
"""

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def parameters(name: str, tiny_settings: str) -> str:
    """The first code cell of every notebook: tiny or full settings, the repository root, the output folder."""
    return f'''# Parameters. CI runs every tutorial with LACT_TUTORIAL_TINY=1: sizes that take seconds on a CPU thread.
import os
from pathlib import Path

TINY = os.environ.get("LACT_TUTORIAL_TINY", "0") == "1"
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "model_cards").is_dir())  # the repository
OUTPUT = Path(os.environ.get("LACT_TUTORIAL_OUTPUT", ROOT / "outputs" / "tutorials")) / "{name}"
OUTPUT.mkdir(parents=True, exist_ok=True)
{tiny_settings}'''


LIBRIVOX = """# Real speech: five LibriVox utterances of one reader with transcripts, from Debian's
# pocketsphinx-testdata (`make corpus-deps` installs it; the corpus builder puts them in its test_real split).
import re

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
if not (LIBRIVOX / "transcription").is_file():
    raise FileNotFoundError(f"{LIBRIVOX} is missing: apt-get install pocketsphinx-testdata (or `make corpus-deps`)")
utterances = []  # (wav path, transcript), in reading order
for line in (LIBRIVOX / "transcription").read_text().splitlines():
    text, name = re.fullmatch(r"<s> (.*) </s> \\((\\S+)\\)", line.strip()).groups()
    utterances.append((LIBRIVOX / f"{name}.wav", text))
for path, text in utterances:
    print(path.name, "|", text)"""


TRANSCRIBE_AND_STREAM = [
    (
        "md",
        """# 1. Transcribe a file, then stream it in microphone-sized chunks

A LaCT recogniser keeps per-head **fast weights** that every large chunk of frames updates; the state
(fast weights, the attention window, the tokens of a chunk still filling up) lives in a
`LaCTCache`, which is how a model streams. This tutorial

1. transcribes a recording with the shipped offline recogniser `lact_whisper_ctc` (LaCT blocks and a
   CTC head on Whisper tiny.en's frozen encoder) through the 🤗 `pipeline`;
2. streams the same recording through the streaming checkpoint `lact_small_ctc`
   (`lact_order="update_apply"`, block-causal attention) in blocks of 80 ms, as a microphone delivers
   them, with one `LaCTCache` carried from block to block.

The shipped checkpoints are research artefacts trained for minutes on two CPU cores: their model cards
say what they reach. The transcripts below are what they produce, not a claim of quality.""",
    ),
    ("code", parameters("01_transcribe_and_stream", "NUM_UTTERANCES = 1 if TINY else 5")),
    ("code", LIBRIVOX),
    (
        "md",
        """## Transcribe a file

Importing `modeling_lact_audio` registers the models and processors with the Auto classes, so the
checkpoint folder loads like any transformers model. The pipeline decodes the file with ffmpeg and
resamples it to 16 kHz.""",
    ),
    (
        "code",
        """from transformers import pipeline

import modeling_lact_audio  # noqa: F401  (registers the Auto classes)

RECOGNISER = ROOT / "model_cards" / "checkpoints" / "lact_whisper_ctc"
asr = pipeline("automatic-speech-recognition", model=str(RECOGNISER))
path, reference = utterances[1]
print("reference: ", reference)
print("transcript:", asr(str(path))["text"])""",
    ),
    (
        "md",
        """The same model through the library's `Transcriber` (what the evaluation scripts use): waveforms
in, greedy transcripts out, or beam search with the checkpoint's word 3-gram LM (`use_lm=True`). WER
and CER come from the local `evaluate` modules.""",
    ),
    (
        "code",
        """from modeling_lact_audio.asr import Transcriber, load_metrics, normalize_for_scoring
from modeling_lact_audio.data import SAMPLING_RATE, read_audio

wer, cer = load_metrics()
greedy = Transcriber.from_pretrained(RECOGNISER)
with_lm = Transcriber.from_pretrained(RECOGNISER, use_lm=True)
audio = [read_audio(p) for p, _ in utterances[:NUM_UTTERANCES]]  # float32 [L] at 16 kHz each
references = [normalize_for_scoring(t) for _, t in utterances[:NUM_UTTERANCES]]
for name, transcriber in (("greedy", greedy), ("word LM", with_lm)):
    hypotheses = [normalize_for_scoring(t) for t in transcriber(audio)]
    print(f"{name:8s} WER {wer.compute(predictions=hypotheses, references=references):.1%} "
          f"CER {cer.compute(predictions=hypotheses, references=references):.1%}: {hypotheses[0]}")""",
    ),
    (
        "md",
        """## Stream it

`lact_small_ctc` updates its fast weights once per LaCT chunk of `lact_chunk_size` backbone frames
(`lact_chunk_size * total_stride` log-mel frames, 2.56 s) and reads each chunk after updating on it.
A microphone delivers much smaller blocks. Two ways to serve them with one carried `LaCTCache`:

- **chunk-aligned**: buffer blocks until a LaCT chunk is complete, then run the model on it. The
  result equals one call over the whole recording exactly; the latency is one chunk.
- **every block**: run the model on each block as it arrives. The cache holds the partial chunk, and
  a partial chunk updates the weights as a short chunk, so the transcript can differ a little from
  the offline one; the latency is one block.

Blocks must be a multiple of the front end's stride (4 frames), except the last. The feature
extractor normalises an utterance over all its frames, as in training, so the features are computed
once here and handed out block by block; a live system would normalise with running statistics.""",
    ),
    (
        "code",
        """import time

import torch

from modeling_lact_audio import LaCTCache

streamer = Transcriber.from_pretrained(ROOT / "model_cards" / "checkpoints" / "lact_small_ctc")
model, processor = streamer.model, streamer.processor
config = model.config
frames_per_second = SAMPLING_RATE / config.feature_hop_length  # log-mel frames
block = config.total_stride * round(0.1 * frames_per_second / config.total_stride)  # 100 ms to a stride multiple
chunk = config.lact_chunk_size * config.total_stride
print(f"microphone blocks of {block} frames ({1000 * block / frames_per_second:.0f} ms), "
      f"LaCT chunks of {chunk} frames ({chunk / frames_per_second:.2f} s)")


def microphone(features, block):
    \"\"\"The feature frames a live microphone would deliver, ``[1, block, n_mels]`` at a time.\"\"\"
    for start in range(0, features.shape[1], block):
        yield features[:, start : start + block]


@torch.no_grad()
def stream(blocks, run_every, show=False):
    \"\"\"Run the model whenever ``run_every`` frames have arrived (and on what is left at the end), carrying
    one LaCTCache. Returns the transcript and the compute milliseconds of each call.\"\"\"
    cache, buffered, ids, latencies = LaCTCache(config.num_hidden_layers), [], [], []

    def run():
        nonlocal cache, buffered
        start = time.perf_counter()
        out = model(input_features=torch.cat(buffered, 1), past_key_values=cache, use_cache=True)
        latencies.append(1000 * (time.perf_counter() - start))
        cache, buffered = out.past_key_values, []
        ids.append(out.logits.argmax(-1))  # [1, frames of this call, vocab] -> greedy ids
        if show:
            heard = cache.seen_inputs / frames_per_second
            print(f"  {heard:5.2f} s heard: {processor.batch_decode(torch.cat(ids, 1))[0]!r}")

    for piece in blocks:
        buffered.append(piece)
        if sum(p.shape[1] for p in buffered) >= run_every:
            run()
    if buffered:
        run()
    return processor.batch_decode(torch.cat(ids, 1))[0], latencies""",
    ),
    (
        "code",
        """for (path, _), waveform in zip(utterances[:NUM_UTTERANCES], audio):
    features = processor(audio=waveform, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_features"]
    print(f"{path.name}: {len(waveform) / SAMPLING_RATE:.2f} s, features {tuple(features.shape)}")
    offline = streamer([waveform])[0]
    aligned, aligned_ms = stream(microphone(features, block), run_every=chunk, show=True)
    eager, eager_ms = stream(microphone(features, block), run_every=block)
    print(f"  offline:       {offline!r}")
    print(f"  chunk-aligned: {aligned!r} ({len(aligned_ms)} calls, {sum(aligned_ms) / len(aligned_ms):.0f} ms each)")
    print(f"  every block:   {eager!r} ({len(eager_ms)} calls, {sum(eager_ms) / len(eager_ms):.0f} ms each)")
    assert aligned == offline, (aligned, offline)  # a chunk-aligned stream equals one call""",
    ),
    (
        "md",
        """The carried cache keeps a constant size whatever the length of the stream: fast weights and
momentum per layer, the attention window's keys and values, and the front end's convolution context.
Tutorial 2 carries it across utterances instead of across blocks.""",
    ),
]


SPEAKER_ADAPTATION = [
    (
        "md",
        """# 2. Adapt to a speaker with a carried cache, and keep the adaptation as a preset

The fast weights of a LaCT model change with every chunk it reads. Carrying the `LaCTCache` from one
utterance of a speaker to the next is test-time adaptation without a gradient step:
`cache.start_new_utterance()` keeps the adapted fast weights (and momentum) and forgets the stream's
position, attention window and pending tokens. `LaCTCache.save_pretrained` keeps the adapted state on
disk as a *preset*, and `LaCTCache.from_pretrained` starts a later session from it.

This tutorial uses the shipped `lact_whisper_ctc` on one LibriVox reader. Measured on the project's
corpus (see the README's adaptation results), the shipped head barely reads its LaCT branch, so
carrying the state changes its transcripts little: the numbers below show the mechanics, not a gain.""",
    ),
    ("code", parameters("02_speaker_adaptation", "NUM_UTTERANCES = 3 if TINY else 5  # the last one is held out")),
    ("code", LIBRIVOX),
    (
        "code",
        """import json

import torch

from modeling_lact_audio import LaCTCache
from modeling_lact_audio.adaptation.fast_weight_stats import fast_weight_vector, initial_fast_weight_vector
from modeling_lact_audio.asr import Transcriber, load_metrics, normalize_for_scoring
from modeling_lact_audio.data import SAMPLING_RATE, read_audio

recogniser = Transcriber.from_pretrained(ROOT / "model_cards" / "checkpoints" / "lact_whisper_ctc")
model, processor = recogniser.model, recogniser.processor
wer, _ = load_metrics()
initial = initial_fast_weight_vector(model)  # every LaCT layer's w0, w1, w2 before any update


@torch.no_grad()
def transcribe(path, cache=None):
    \"\"\"One utterance from ``cache``'s fast weights (None: the model's own). Returns the transcript, the cache
    (updated in place: after the call it holds the weights adapted to this utterance too) and the logits.\"\"\"
    features = processor(audio=read_audio(path), sampling_rate=SAMPLING_RATE, return_tensors="pt")
    out = model(input_features=features["input_features"], past_key_values=cache, use_cache=cache is not None)
    return processor.batch_decode(out.logits.argmax(-1))[0], out.past_key_values, out.logits""",
    ),
    (
        "md",
        """## Reset versus carried

Each utterance once from the model's own fast weights (reset), once from the state the previous
utterances of the speaker left (carried). The first utterance starts from the model's weights either
way.""",
    ),
    (
        "code",
        """adapt, (held_out_path, held_out_text) = utterances[: NUM_UTTERANCES - 1], utterances[NUM_UTTERANCES - 1]
cache = LaCTCache(model.config.num_hidden_layers)
reset, carried = [], []
for path, reference in adapt:
    reset.append(transcribe(path)[0])
    text, cache, _ = transcribe(path, cache)
    carried.append(text)
    cache.start_new_utterance()  # keep the adapted fast weights for the next utterance
    drift = (fast_weight_vector(cache) - initial).norm() / initial.norm()
    print(f"{path.name}: fast weights {drift:.2%} away from the initial ones")
    print(f"  reset:   {reset[-1]!r}\\n  carried: {carried[-1]!r}\\n  truth:   {reference!r}")
references = [normalize_for_scoring(t) for _, t in adapt]
for name, hypotheses in (("reset", reset), ("carried", carried)):
    score = wer.compute(predictions=[normalize_for_scoring(h) for h in hypotheses], references=references)
    print(f"{name:8s} WER {score:.1%}")""",
    ),
    (
        "md",
        """## Save the adaptation as a preset

A preset is exactly what `start_new_utterance()` keeps: per layer the fast weights, their reference
row norms and (when the model uses it) momentum, in `fast_weights.safetensors`, and
`lact_cache.json`, which ties the preset to the model's architecture with a config fingerprint and
to its tensors with a SHA-256.""",
    ),
    (
        "code",
        """preset = OUTPUT / "preset_librivox_reader"
cache.save_pretrained(preset, model.config)
print(sorted(p.name for p in preset.iterdir()))
print(json.dumps(json.loads((preset / "lact_cache.json").read_text()), indent=1))""",
    ),
    (
        "md",
        """## Start a later session from the preset

`from_pretrained` checks the fingerprint and the checksum, then returns a cache ready for a new
utterance. Transcribing the held-out utterance from it gives exactly what the live, carried cache
gives.""",
    ),
    (
        "code",
        """from transformers import AutoConfig

loaded = LaCTCache.from_pretrained(preset, model.config)
from_preset, _, logits_preset = transcribe(held_out_path, loaded)
from_live, _, logits_live = transcribe(held_out_path, cache)
fresh = transcribe(held_out_path)[0]
print(f"truth:       {held_out_text!r}\\nfresh model: {fresh!r}\\nfrom preset: {from_preset!r}")
assert torch.equal(logits_preset, logits_live), "a preset must continue exactly like the cache it was saved from"

other = AutoConfig.from_pretrained(ROOT / "model_cards" / "checkpoints" / "lact_small_ctc")
try:  # a preset only loads into a model of the architecture that made it
    LaCTCache.from_pretrained(preset, other)
except ValueError as error:
    print("refused for lact_small_ctc:", str(error)[:200], "...")""",
    ),
]


GENERATE_AUDIO = [
    (
        "md",
        """# 3. Generate audio tokens and decode them to a wav

`LaCTAudioForCausalLM` is an autoregressive LM over `num_codebooks` parallel streams of audio codes
(MusicGen's layout: `input_ids` are `[batch * num_codebooks, T]`) with `generate()` and a
constant-size `LaCTCache`. `LaCTAudioTokenizer` turns audio into codes and back; its offline
`mel_rvq` backend quantises normalised log-mel frames with residual k-means codebooks and decodes with
Griffin-Lim.

Here a tiny tokenizer is fitted and a tiny LM is trained on one reader's codes, then the LM continues a
half-second prompt. With the tiny setting's 30 steps the continuation is a babble with the reader's
spectral colour; with 300 steps the LM has memorised these five utterances and replays pieces of them.
Neither is a speech model: this shows the interfaces, from codes to a wav file.""",
    ),
    (
        "code",
        parameters(
            "03_generate_audio_tokens",
            "TRAIN_STEPS, SECONDS = (30, 1.0) if TINY else (300, 4.0)\nNUM_CODEBOOKS, CODEBOOK_SIZE = 4, 64",
        ),
    ),
    ("code", LIBRIVOX),
    (
        "md",
        """## Fit the audio tokenizer

One code frame per `hop_length` samples (62.5 frames per second at 16 kHz). Decoding the codes of a
recording gives the tokenizer's own quality: the ceiling for anything the LM generates.""",
    ),
    (
        "code",
        """import soundfile as sf
import torch

from modeling_lact_audio.data import SAMPLING_RATE, read_audio
from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig

torch.manual_seed(0)
waveforms = [read_audio(p) for p, _ in utterances]
tokenizer = LaCTAudioTokenizer(
    LaCTAudioTokenizerConfig(backend="mel_rvq", num_codebooks=NUM_CODEBOOKS, codebook_size=CODEBOOK_SIZE)
)
tokenizer.fit(waveforms, sampling_rate=SAMPLING_RATE, seed=0)
codes = [tokenizer.encode(w, sampling_rate=SAMPLING_RATE) for w in waveforms]  # [1, K, T'] int64 each
frame_rate = SAMPLING_RATE / tokenizer.config.hop_length
print(f"{frame_rate:.1f} code frames per second; first utterance: codes {tuple(codes[0].shape)}")
reconstruction = tokenizer.decode(codes[0])[0]  # [L] float32
sf.write(OUTPUT / "reconstruction.wav", reconstruction.numpy(), SAMPLING_RATE)""",
    ),
    (
        "md",
        """## A tiny LM, trained a few steps on these codes

The `tiny` preset with the LM task's defaults: `lact_order="apply_update"` and causal attention, so
every frame is predicted from the past only. Training is plain teacher forcing: `labels=input_ids`
(the model shifts them).""",
    ),
    (
        "code",
        """import math

from modeling_lact_audio import LaCTAudioForCausalLM
from modeling_lact_audio.presets import preset_config

config = preset_config("tiny", task="lm", num_codebooks=NUM_CODEBOOKS, codebook_size=CODEBOOK_SIZE)
lm = LaCTAudioForCausalLM(config)
print(f"{sum(p.numel() for p in lm.parameters()) / 1e6:.2f}M parameters, LaCT chunks of {config.lact_chunk_size}")

crop = 128  # frames per training row
optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
generator = torch.Generator().manual_seed(0)
lm.train()
for step in range(1, TRAIN_STEPS + 1):
    rows = []
    for c in codes:  # one random crop per utterance: a batch of 5 rows, [5, K, crop]
        start = int(torch.randint(0, c.shape[-1] - crop, (1,), generator=generator))
        rows.append(c[0, :, start : start + crop])
    input_ids = torch.stack(rows).reshape(-1, crop)  # [B * K, T]: row b * K + k is codebook k of row b
    loss = lm(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step == 1 or step % max(1, TRAIN_STEPS // 5) == 0:
        print(f"step {step:4d}: loss {loss.item():.3f} (uniform guessing: {math.log(CODEBOOK_SIZE):.3f})")
_ = lm.eval()""",
    ),
    (
        "md",
        """## Generate and decode

`generate()` works as for any transformers LM: greedy, top-k, nucleus and temperature sampling.
Beam search is refused, because fast weights cannot be rewound per beam.""",
    ),
    (
        "code",
        """prompt = codes[1][:, :, : round(0.5 * frame_rate)]  # [1, K, T0]: half a second of the reader
new_frames = round(SECONDS * frame_rate)
with torch.no_grad():
    generated = lm.generate(
        input_ids=prompt.reshape(-1, prompt.shape[-1]),  # [1 * K, T0]
        max_new_tokens=new_frames,
        do_sample=True,
        top_k=16,
        temperature=0.9,
    )
generated = generated.reshape(1, NUM_CODEBOOKS, -1)  # [1, K, T0 + new_frames]
print("generated codes", tuple(generated.shape), "last frames of codebook 0:", generated[0, 0, -8:].tolist())
audio = tokenizer.decode(generated)[0]  # [L] float32 at 16 kHz
sf.write(OUTPUT / "generated.wav", audio.numpy(), SAMPLING_RATE)
print(f"wrote {OUTPUT / 'generated.wav'}: {len(audio) / SAMPLING_RATE:.2f} s, peak {audio.abs().max():.2f}")
assert generated.shape[-1] == prompt.shape[-1] + new_frames and torch.isfinite(audio).all()""",
    ),
    (
        "code",
        """from IPython.display import Audio, display

display(Audio(reconstruction.numpy(), rate=SAMPLING_RATE), Audio(audio.numpy(), rate=SAMPLING_RATE))""",
    ),
]


TRAIN_AND_EVALUATE = [
    (
        "md",
        """# 4. Train and evaluate a tiny model

The training library behind `run_scripts/train.py` (`modeling_lact_audio.training`) trains any model
of the suite with Accelerate on a corpus saved with `datasets`; the evaluation library behind
`eval/asr_eval.py` (`modeling_lact_audio.asr_evaluation`) scores saved folders with WER and CER and
their bootstrap intervals. This tutorial builds a corpus, trains the `tiny` LaCT recogniser for a few
steps with MLflow tracking, reads the run back and evaluates the result next to the shipped
`lact_tiny_ctc`. A few steps do not make a recogniser: expect error rates near 100%.""",
    ),
    (
        "code",
        parameters(
            "04_train_and_evaluate",
            'STEPS, EVAL_ROWS = (8, 4) if TINY else (300, 50)\nCORPUS = OUTPUT / ("corpus_tiny" if TINY else "corpus")',
        ),
    ),
    (
        "md",
        """## A corpus

`modeling_lact_audio.corpus.build` synthesises speech with the offline voices (espeak-ng, festival,
flite, Piper), mixes in recorded noise and adds real speech; `tiny=True` makes a few examples per
split in seconds. It writes a data card (`README.md`) beside the data.""",
    ),
    (
        "code",
        """import datasets

from modeling_lact_audio.corpus.build import build

build(str(CORPUS), hours=0.2, seed=0, tiny=TINY, workers=1, progress=False)  # a finished build is kept
print({split: len(rows) for split, rows in datasets.load_from_disk(str(CORPUS)).items()})
print((CORPUS / "README.md").read_text()[:600], "...")""",
    ),
    (
        "md",
        """## Train

`main(argv)` takes what the command line takes: a YAML file of defaults, then flags. With
`--report_to mlflow` the run is tracked in an MLflow store inside the run folder (`mlflow.db`);
rerunning the same command resumes from the newest checkpoint.""",
    ),
    (
        "code",
        """import json

from accelerate.state import AcceleratorState

from modeling_lact_audio.training.trainer import main as train

RUN = OUTPUT / "run"
argv = [str(ROOT / "run_scripts" / "configs" / "tiny_cpu.yaml"), "--corpus", str(CORPUS), "--output_dir", str(RUN)]
argv += ["--max_steps", str(STEPS), "--warmup_steps", "2", "--logging_steps", "1"]
argv += ["--eval_steps", str(STEPS), "--save_steps", str(STEPS), "--max_eval_examples", str(EVAL_ROWS)]
argv += ["--dataloader_num_workers", "0", "--progress_bar", "false", "--report_to", "mlflow"]
summary = train(argv)
AcceleratorState._reset_state(reset_partial_state=True)  # lets this kernel train again
print(summary)
steps = [json.loads(line) for line in (RUN / "log.jsonl").read_text().splitlines()]
print("losses:", [round(s["loss"], 2) for s in steps if "loss" in s])""",
    ),
    (
        "md",
        """## Read the tracked run back

Everything the run logged is in its MLflow store: hyper-parameters with the git commit and the data
card's hash, step metrics, the resolved model config and the last validation as a table. `mlflow ui
--backend-store-uri sqlite:///.../mlflow.db` shows the same in a browser.""",
    ),
    (
        "code",
        """import mlflow

client = mlflow.MlflowClient(f"sqlite:///{RUN / 'mlflow.db'}")
experiment = client.get_experiment_by_name(RUN.name)
run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
print({k: run.data.params[k] for k in ("model/model", "model/preset", "train/max_steps", "git_commit")})
print("data card sha256:", run.data.params["data_card_sha256"])
print("train/loss:", [round(m.value, 3) for m in client.get_metric_history(run.info.run_id, "train/loss")])
print(client.load_table(experiment.experiment_id, "final_eval.json", run_ids=[run.info.run_id]))""",
    ),
    (
        "md",
        """## Evaluate

`evaluate_models` transcribes each split with each folder and reports WER and CER with 95% bootstrap
intervals and the real-time factor; `best/` holds the model and processor of the best validation.""",
    ),
    (
        "code",
        """from IPython.display import Markdown, display

from modeling_lact_audio.asr_evaluation import evaluate_models, markdown_table

models = {"trained here": str(RUN / "best"), "lact_tiny_ctc": str(ROOT / "model_cards/checkpoints/lact_tiny_ctc")}
results = evaluate_models(models, str(CORPUS), ["test_seen", "test_real"], max_examples=EVAL_ROWS, samples=200)
display(Markdown(markdown_table(results)))""",
    ),
]


NOTEBOOKS = {
    "01_transcribe_and_stream.ipynb": TRANSCRIBE_AND_STREAM,
    "02_speaker_adaptation.ipynb": SPEAKER_ADAPTATION,
    "03_generate_audio_tokens.ipynb": GENERATE_AUDIO,
    "04_train_and_evaluate.ipynb": TRAIN_AND_EVALUATE,
}


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A v4 notebook of ``cells`` (``("md" | "code", source)``), without outputs, with stable cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{i:02d}"
        if i == 1:
            cell.metadata["tags"] = ["parameters"]  # papermill's convention for the cell to override
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(cells) -> str:
    return nbformat.writes(notebook(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare the committed notebooks with their source")
    parser.add_argument("--output", type=Path, default=HERE, help="folder to write (default: this one)")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path, text = args.output / name, render(cells)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date with tutorials/make_notebooks.py: {stale}; rerun it", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
