"""The demo app, as a Hub Space ships it: streamed transcription with speaker adaptation, and audio continuation.

``run_scripts/app.py`` calls :func:`launch_app`; everything runs offline from local folders.

- **Transcribe**: upload or record audio; a streaming recogniser (``attention_pattern="block_causal"``,
  e.g. ``model_cards/checkpoints/lact_small_ctc``) reads it one LaCT chunk at a time with its ``LaCTCache``
  and the transcript grows chunk by chunk. Features are normalised over the whole recording, as in
  training, so a recording is read whole before the model streams over it.
- **Keep adapting to this speaker**: the cache (the fast weights) is carried from one transcription to the
  next, with ``cache.start_new_utterance()`` between them (as ``adaptation.streams.run_utterance`` does);
  "Reset" forgets it.
- **Continue audio**: with a generator folder (``LaCTAudioForCausalLM`` plus its ``audio_tokenizer/``, as
  ``run_scripts/train.py --task lm`` saves it), a prompt's audio codes are continued with ``generate()`` and
  decoded back to audio. No generator ships with the repository, so without ``--generator DIR`` the tab
  says which folder to pass.

Bad uploads (not audio, empty, NaN, an unsupported rate) raise ``gr.Error`` with the library's message.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf
import torch
import torchaudio

from .asr import Transcriber
from .cache_lact_audio import LaCTCache
from .data import SAMPLING_RATE
from .processors import LaCTAudioTokenizer
from .processors.audio_input import check_sampling_rate, to_mono_float

DEFAULT_MODEL = "model_cards/checkpoints/lact_small_ctc"
GENERATOR_TOKENIZER_FOLDER = "audio_tokenizer"
NO_GENERATOR = (
    "No generator checkpoint ships with this demo. Launch it with `--generator DIR`, where DIR is a folder "
    "saved by `run_scripts/train.py --task lm` (a `LaCTAudioForCausalLM` with its `audio_tokenizer/`)."
)


@dataclass
class SpeakerState:
    """What the app keeps between transcriptions of one browser session.

    ``cache``: the ``LaCTCache`` of the last transcription (its fast weights), or None (nothing adapted);
    ``utterances`` and ``seconds``: how much audio those fast weights have read.
    """

    cache: LaCTCache | None = None
    utterances: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        if self.cache is None:
            return "Fast weights: fresh (nothing adapted)."
        return f"Fast weights adapted on {self.utterances} utterance(s), {self.seconds:.1f} s of audio."


def read_upload(path) -> tuple[np.ndarray, int]:
    """An uploaded or recorded file as a mono waveform, validated by the library.

    Args:
        path: the file Gradio hands over (``gr.Audio(type="filepath")``), or None.

    Returns:
        ``(audio, rate)``: float32 ``[L]`` (channels averaged) and the file's sampling rate in Hz.

    Raises:
        gr.Error: no file, a file neither soundfile nor FFmpeg can read, or audio the library rejects (empty, NaN/Inf,
            out-of-range peak); the message is the library's.
    """
    if path is None:
        raise gr.Error("No audio: upload a file or record one first.")
    name = Path(path).name
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)  # [L, C]
    except sf.LibsndfileError as err:
        audio, rate = decode_with_ffmpeg(path, name, err)
    try:
        # A mono file goes in as [L], so an empty one reads as empty rather than as a [0, 1] array.
        wave = to_mono_float(audio[:, 0] if audio.shape[1] == 1 else audio, where=name)
        check_sampling_rate(rate, name=f"{name}'s sampling rate")
    except ValueError as err:
        raise gr.Error(str(err)) from err
    return wave.numpy(), rate


def decode_with_ffmpeg(path, name: str, libsndfile_error) -> tuple[np.ndarray, int]:
    """What libsndfile does not read (webm/opus from a browser's recorder, m4a, aac), through torchcodec's FFmpeg
    decoder: ``(audio float32 [L, C], rate)``; a file FFmpeg cannot read either raises ``gr.Error``."""
    from torchcodec.decoders import AudioDecoder

    try:
        samples = AudioDecoder(str(path)).get_all_samples()
    except RuntimeError as err:
        raise gr.Error(
            f"{name}: not an audio file this demo can read ({libsndfile_error.error_string}); upload wav, flac, "
            "ogg, mp3, webm or m4a."
        ) from err
    return samples.data.T.contiguous().numpy(), samples.sample_rate


def fast_weights(cache: LaCTCache) -> list[torch.Tensor]:
    """The fast weights ``w0, w1, w2`` of every layer that holds them (the adapted state), in layer order."""
    return [w for lc in cache.layer_caches if lc.fast is not None for w in (lc.fast.w0, lc.fast.w1, lc.fast.w2)]


class DemoApp:
    """The app's logic, callable without a browser.

    Args:
        model_dir: a recogniser folder (``Transcriber.from_pretrained``); streamed when its config is
            ``attention_pattern="block_causal"``, otherwise transcribed in one call.
        generator_dir: a generator folder (``LaCTAudioForCausalLM`` + ``audio_tokenizer/``), or None.
        device: where the models run.

    Raises:
        FileNotFoundError: a folder (or the generator's ``audio_tokenizer/``) is missing.
        ValueError: the generator and its audio tokenizer disagree on codebooks.
    """

    def __init__(self, model_dir=DEFAULT_MODEL, generator_dir=None, device: str = "cpu"):
        self.model_dir = str(model_dir)
        self.transcriber = Transcriber.from_pretrained(self.model_dir, device=device)
        config = self.transcriber.model.config
        self.streams = self.transcriber.kind == "ctc" and getattr(config, "attention_pattern", None) == "block_causal"
        # Mel frames per streamed piece: one LaCT chunk of model frames.
        self.piece = config.lact_chunk_size * config.total_stride if self.streams else None
        self.generator = self.audio_tokenizer = None
        if generator_dir is not None:
            self.generator, self.audio_tokenizer = load_generator(generator_dir, device)

    @torch.no_grad()
    def transcribe(self, path, keep_adapting: bool, state: SpeakerState | None):
        """Transcribe a file, yielding the growing transcript.

        Args:
            path: the audio file.
            keep_adapting: start from ``state``'s fast weights (a new utterance of the same speaker) and
                keep the updated ones; False reads from the trained weights and leaves ``state`` as it is.
            state: what earlier calls left (None: nothing).

        Yields:
            ``(transcript so far, SpeakerState, status line)`` after every streamed chunk; the last
            transcript is the whole one.
        """
        audio, rate = read_upload(path)
        state = state or SpeakerState()
        carried = state if keep_adapting else SpeakerState()
        seconds = len(audio) / rate
        if not self.streams:
            wave = torchaudio.functional.resample(torch.from_numpy(audio), rate, SAMPLING_RATE)
            (text,) = self.transcriber([wave.numpy()])
            yield text, state, f"{self.model_dir} does not stream; transcribed in one call ({seconds:.1f} s)."
            return
        processor, model = self.transcriber.processor, self.transcriber.model
        try:
            features = processor(audio=audio, sampling_rate=rate, return_tensors="pt")["input_features"]
        except ValueError as err:
            raise gr.Error(f"{Path(path).name}: {err}") from err
        cache = carried.cache.start_new_utterance() if carried.cache is not None else None
        features = features.to(self.transcriber.device)  # [1, T, n_mels]
        ids, text = [], ""
        total = -(-features.shape[1] // self.piece)
        for i, start in enumerate(range(0, features.shape[1], self.piece)):
            out = model(input_features=features[:, start : start + self.piece], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            ids.append(out.logits.argmax(-1))  # [1, T'_i]
            # CTC collapses repeats across chunk boundaries, so the whole id sequence is decoded each time.
            text = processor.batch_decode(torch.cat(ids, 1))[0]
            yield text, state, f"Streaming: chunk {i + 1}/{total}."
        if keep_adapting:
            state = SpeakerState(cache, carried.utterances + 1, carried.seconds + seconds)
            yield text, state, state.describe()
        else:
            yield text, state, f"Read with the trained weights (adaptation off). {state.describe()}"

    def reset(self) -> tuple[SpeakerState, str]:
        """Forget the adapted fast weights: ``(fresh state, status line)``."""
        state = SpeakerState()
        return state, state.describe()

    @torch.no_grad()
    def continue_audio(self, path, seconds: float, temperature: float, top_k: int, seed: int):
        """Continue a prompt recording with the generator.

        Args:
            path: the prompt audio file (any rate; resampled by the audio tokenizer).
            seconds: audio to generate after the prompt.
            temperature, top_k: sampling settings of ``generate()``.
            seed: seeds the sampling.

        Returns:
            ``(sampling_rate, audio float32 [L])``: the prompt's decoded codes followed by the continuation.

        Raises:
            gr.Error: no generator loaded (the message names ``--generator``), or a bad prompt file.
        """
        if self.generator is None:
            raise gr.Error(NO_GENERATOR)
        audio, rate = read_upload(path)
        tokenizer = self.audio_tokenizer
        try:
            codes = tokenizer.encode(audio, sampling_rate=rate)  # [1, K, T0]
        except ValueError as err:
            raise gr.Error(f"{Path(path).name}: {err}") from err
        sampling_rate = tokenizer.config.sampling_rate
        new_frames = max(1, round(seconds * tokenizer.num_frames(sampling_rate)))
        torch.manual_seed(int(seed))
        generated = self.generator.generate(
            input_ids=codes.reshape(-1, codes.shape[-1]).to(self.generator.device),  # [K, T0]
            max_new_tokens=new_frames,
            do_sample=True,
            temperature=float(temperature),
            top_k=int(top_k),
        )
        waveform = tokenizer.decode(generated.reshape(1, codes.shape[1], -1).cpu())[0]  # [L]
        return sampling_rate, waveform.numpy()


def load_generator(folder, device: str = "cpu"):
    """``(LaCTAudioForCausalLM, LaCTAudioTokenizer)`` from a generator folder (the model at its top, the
    tokenizer in ``audio_tokenizer/``), checked to agree on ``num_codebooks`` and ``codebook_size``."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / GENERATOR_TOKENIZER_FOLDER / "config.json").exists():
        raise FileNotFoundError(
            f"{folder} holds no {GENERATOR_TOKENIZER_FOLDER}/: a generator folder is what "
            "run_scripts/train.py --task lm saves (the model with its audio tokenizer)"
        )
    generator = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    tokenizer = LaCTAudioTokenizer.from_pretrained(folder / GENERATOR_TOKENIZER_FOLDER).eval()
    for name in ("num_codebooks", "codebook_size"):
        if getattr(generator.config, name) != getattr(tokenizer.config, name):
            raise ValueError(
                f"{folder}: the generator has {name}={getattr(generator.config, name)} but its audio tokenizer "
                f"has {getattr(tokenizer.config, name)}"
            )
    return generator, tokenizer


def build_demo(app: DemoApp) -> gr.Blocks:
    """The Gradio interface over ``app``: a transcription tab and an audio continuation tab."""
    with gr.Blocks(title="lact-audio demo", analytics_enabled=False) as demo:
        gr.Markdown(f"# lact-audio demo\nRecogniser: `{app.model_dir}`")
        state = gr.State(None)
        with gr.Tab("Transcribe"):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
            keep = gr.Checkbox(value=False, label="Keep adapting to this speaker (carry the fast weights)")
            with gr.Row():
                transcribe = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
                reset = gr.Button("Reset adaptation", elem_id="reset")
            transcript = gr.Textbox(label="Transcript", lines=3, elem_id="transcript")
            status = gr.Markdown(SpeakerState().describe(), elem_id="status")
            transcribe.click(app.transcribe, [audio, keep, state], [transcript, state, status])
            reset.click(app.reset, None, [state, status])
        with gr.Tab("Continue audio"):
            if app.generator is None:
                gr.Markdown(NO_GENERATOR, elem_id="no-generator")
            else:
                prompt = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Prompt", elem_id="prompt")
                with gr.Row():
                    seconds = gr.Slider(0.5, 10.0, value=2.0, step=0.5, label="Seconds to generate")
                    temperature = gr.Slider(0.1, 2.0, value=0.9, step=0.1, label="Temperature")
                    top_k = gr.Slider(1, 256, value=16, step=1, label="Top-k")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                generate = gr.Button("Continue", variant="primary", elem_id="continue")
                continuation = gr.Audio(label="Prompt + continuation", type="numpy", elem_id="continuation")
                generate.click(app.continue_audio, [prompt, seconds, temperature, top_k, seed], continuation)
    return demo


def launch_app(model_dir=DEFAULT_MODEL, generator_dir=None, device: str = "cpu", **launch_kwargs):
    """Build the app and ``launch()`` it offline (analytics off); ``launch_kwargs`` go to ``Blocks.launch``
    (``server_name``, ``server_port``, ``prevent_thread_lock``, ...). Returns the running ``gr.Blocks``."""
    # Gradio reads this at launch for its version check and telemetry; a Space may set it too.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo = build_demo(DemoApp(model_dir, generator_dir, device))
    demo.queue(default_concurrency_limit=1)  # one model, CPU-bound: requests wait their turn
    # System fonts: the default theme would fetch Google Fonts, and the demo runs offline.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.launch(**{"theme": theme, **launch_kwargs})
    return demo
