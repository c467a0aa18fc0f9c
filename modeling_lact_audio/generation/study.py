"""The generation study's measurements: use of context, continuations, decoding cost and streaming, as JSON.

Every piece writes its JSON under ``<results>/`` (one file per model, or per prompt x model x decoding setting
for the continuations) and skips what is already there, so an interrupted evaluation resumes where it stopped.

- ``nll``: held-out NLL per code by target position (bins of ``bin_seconds``) over the held-out voice
  sequences, cut at ``max_context_seconds``, each in one forward from an empty state, conditioned on the
  Resemblyzer embedding of the sequence's first 30 s; all codebooks and codebook 0 alone. A forward that runs
  out of memory is recorded as such (``"error"``).
- ``generate``: continuations of ``continuation_seconds`` after prompts of each of ``prompt_seconds``. Per voice
  sequence every prompt ends at the same frame (``min(T - continuation, longest prompt)``), so the prompts of
  one voice differ only in how much context comes before the same real continuation. Decoded through the
  tokenizer and scored with ``window_metrics.continuation_metrics`` against the prompt's original audio; the
  real continuation is scored the same way, decoded through the tokenizer (this tokenizer's ceiling) and as
  recorded. The main decoding setting (nucleus, top_p 0.9, temperature 1.0) runs on every prompt; greedy,
  top-k 50 and temperature 0.7 on the first ``subset_prompts`` prompts of the longest prompt length.
- ``cost``: ``decode_cost.decoding_cost`` after random contexts of ``cost_context_seconds``.
- ``stream``: ``streaming.stream_generate_audio`` after the first prompt, its ``streaming_latency``.
- listening samples (``generate``): for the first ``samples`` prompts (the first of the shortest and of the
  longest length), the last ``sample_context_seconds`` of the prompt and the first ``sample_seconds`` of each
  model's continuation and of the real one, decoded together, as 16 kHz wav files and spectrogram PNGs.
"""

import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..ablations.lm_model import target_nll
from ..audio_quality import speaker_embedding
from ..data import SAMPLING_RATE
from .decode_cost import decoding_cost
from .streaming import generate_continuation, stream_generate_audio, streaming_latency
from .study_data import GenerationData, VoiceSequence
from .training import GENERATORS, load_generator
from .window_metrics import continuation_metrics

PIECES = ("nll", "generate", "cost", "stream")
MAIN_SETTING = "nucleus"
DECODING = {
    "nucleus": {"do_sample": True, "top_p": 0.9, "temperature": 1.0, "top_k": 0},
    "greedy": {"do_sample": False},
    "top_k50": {"do_sample": True, "top_k": 50, "temperature": 1.0},
    "temperature0.7": {"do_sample": True, "temperature": 0.7, "top_k": 0},
}
REAL = ("real_decoded", "real_original")


@dataclass
class StudySettings:
    """What the evaluation measures and how much of it (the defaults fit about 35 minutes on 2 CPU cores)."""

    results: str = "eval/results/generation"
    models: str = "outputs/generation"
    kinds: tuple = GENERATORS
    threads: int = 2
    bin_seconds: float = 10.0
    max_context_seconds: float = 300.0
    prompt_seconds: tuple = (30.0, 60.0, 300.0)
    prompts_per_length: tuple = (4, 4, 2)
    continuation_seconds: float = 30.0
    subset_prompts: int = 2
    window_seconds: float = 5.0
    use_dnsmos: bool = True
    cost_context_seconds: tuple = (1.0, 4.0, 16.0, 60.0, 120.0, 300.0)
    cost_new_frames: int = 64
    stream_seconds: float = 10.0
    stream_chunk_frames: int = 125
    samples: int = 2
    sample_context_seconds: float = 4.0
    sample_seconds: float = 8.0
    seed: int = 0


@dataclass
class Prompt:
    """A prompt: frames ``[end - prompt_frames, end)`` of held-out sequence ``sequence``; its real continuation
    is ``[end, end + continuation_frames)``."""

    id: str
    voice: str
    sequence: int
    end: int
    prompt_frames: int
    continuation_frames: int
    prompt_seconds: float

    @property
    def start(self) -> int:
        """First frame of the prompt."""
        return self.end - self.prompt_frames


def select_prompts(heldout: list[VoiceSequence], frame_rate: float, settings: StudySettings) -> list[Prompt]:
    """The study's prompts, shortest length first; per length at most ``prompts_per_length`` voices (in the
    sequences' order) whose prompt end leaves room for that prompt."""
    longest = round(max(settings.prompt_seconds) * frame_rate)
    cont = round(settings.continuation_seconds * frame_rate)
    prompts = []
    for seconds, count in zip(settings.prompt_seconds, settings.prompts_per_length):
        frames = round(seconds * frame_rate)
        chosen = 0
        for i, seq in enumerate(heldout):
            end = min(seq.codes.shape[1] - cont, longest)
            if end < frames or chosen >= count:
                continue
            name = seq.voice.replace(":", "-").replace("+", "-")
            prompts.append(Prompt(f"{name}__{int(seconds)}s", seq.voice, i, end, frames, cont, seconds))
            chosen += 1
    if not prompts:
        raise ValueError("no held-out sequence is long enough for the shortest prompt and the continuation")
    return prompts


def write_json(path: Path, value) -> None:
    """Write ``value`` as JSON to ``path`` under a temporary name first (a killed run leaves no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _conditioning(audio: np.ndarray) -> torch.Tensor:
    """``conditioning_embeds [1, 256]`` float32: the Resemblyzer embedding of ``audio [L]``."""
    return torch.from_numpy(speaker_embedding(audio).astype(np.float32))[None]


# ---------------------------------------------------------------------------------------------- use of context


@torch.no_grad()
def position_nll(model, codes: np.ndarray, bin_frames: int, conditioning_embeds=None) -> dict:
    """Next-code NLL of ``codes [K, T]`` in one forward, by target position.

    Returns ``{"sums" [n_bins], "sums_codebook0" [n_bins], "frames" [n_bins]}`` (float64 nats / int): the NLL
    summed over the K codebooks (and over codebook 0 alone) of the frames predicted at positions ``t = 1 .. T-1``
    with ``t // bin_frames == i``, and how many frames that is (``n_bins = ceil(T / bin_frames)``).
    """
    T = codes.shape[1]
    nll = target_nll(model, codes, conditioning_embeds)  # [K, T - 1]
    bins, n_bins = np.arange(1, T) // bin_frames, math.ceil(T / bin_frames)
    return {
        "sums": np.bincount(bins, nll.sum(0), n_bins).tolist(),
        "sums_codebook0": np.bincount(bins, nll[0], n_bins).tolist(),
        "frames": np.bincount(bins, minlength=n_bins).tolist(),
    }


def run_nll(model, kind: str, data: GenerationData, settings: StudySettings) -> dict:
    """The ``nll`` piece of one model: ``{"kind", "bin_frames", "bin_seconds", "num_codebooks", "sequences":
    [{"voice", "frames", "sums", "sums_codebook0", "frames_per_bin", "seconds"} or {"voice", "frames",
    "error"}]}``."""
    bin_frames = round(settings.bin_seconds * data.frame_rate)
    limit = round(settings.max_context_seconds * data.frame_rate)
    out = {
        "kind": kind,
        "bin_frames": bin_frames,
        "bin_seconds": bin_frames / data.frame_rate,
        "num_codebooks": model.config.num_codebooks,
        "sequences": [],
    }
    for seq in tqdm(data.heldout, desc=f"nll {kind}"):
        codes = seq.codes[:, :limit]
        first = round(min(30.0 * data.frame_rate, codes.shape[1]))
        cond = _conditioning(data.audio(seq, 0, first))
        entry = {"voice": seq.voice, "frames": int(codes.shape[1])}
        start = time.perf_counter()
        try:
            scores = position_nll(model, codes, bin_frames, cond)
            entry.update(sums=scores["sums"], sums_codebook0=scores["sums_codebook0"], frames_per_bin=scores["frames"])
        except (RuntimeError, MemoryError) as error:  # full attention past what fits
            entry["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        entry["seconds"] = time.perf_counter() - start
        out["sequences"].append(entry)
    return out


# ---------------------------------------------------------------------------------------------- generation


def decoding_config(setting: str) -> GenerationConfig:
    """The ``GenerationConfig`` of a decoding setting of :data:`DECODING`."""
    return GenerationConfig(**DECODING[setting], pad_token_id=0)


def generation_items(prompts: list[Prompt], settings: StudySettings) -> list[tuple[Prompt, str, str]]:
    """``(prompt, model or real_*, setting)`` of every continuation to score, in run order: the main setting on
    every prompt, the others on the first ``subset_prompts`` prompts of the longest length."""
    longest = max(p.prompt_seconds for p in prompts)
    subset = [p for p in prompts if p.prompt_seconds == longest][: settings.subset_prompts]
    items = []
    for prompt in prompts:
        items += [(prompt, real, "-") for real in REAL]
        items += [(prompt, kind, MAIN_SETTING) for kind in settings.kinds]
    for prompt in subset:
        items += [(prompt, kind, s) for s in DECODING if s != MAIN_SETTING for kind in settings.kinds]
    return items


def item_path(results: Path, prompt: Prompt, system: str, setting: str) -> Path:
    """Where one scored continuation's JSON lives."""
    return results / "generate" / f"{prompt.id}__{system}__{setting}.json"


def _sample_files(
    results: Path, prompt: Prompt, system: str, data: GenerationData, codes: np.ndarray, settings: StudySettings
) -> dict:
    """Write ``samples/<prompt>__<system>.wav`` and ``.png`` (prompt tail + continuation ``codes [K, n]``, decoded
    together) and return their paths relative to ``results``."""
    seq = data.heldout[prompt.sequence]
    tail = round(settings.sample_context_seconds * data.frame_rate)
    head = round(settings.sample_seconds * data.frame_rate)
    joined = np.concatenate([seq.codes[:, prompt.end - tail : prompt.end], codes[:, :head]], axis=1)
    audio = np.clip(data.decode(joined), -1, 1)
    folder = results / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{prompt.id}__{system}"
    sf.write(folder / f"{stem}.wav", audio, SAMPLING_RATE, subtype="PCM_16")
    spectrogram_png(audio, folder / f"{stem}.png", boundary_s=tail / data.frame_rate, title=stem)
    return {"wav": f"samples/{stem}.wav", "png": f"samples/{stem}.png"}


def spectrogram_png(audio: np.ndarray, path: Path, boundary_s: float, title: str) -> None:
    """A log-magnitude spectrogram of 16 kHz ``audio [L]`` with a line at ``boundary_s`` (prompt | continuation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.specgram(audio + 1e-7, NFFT=512, Fs=SAMPLING_RATE, noverlap=384, cmap="magma")
    ax.axvline(boundary_s, color="cyan", linewidth=1.5)
    ax.set_xlabel("seconds (prompt | continuation)")
    ax.set_ylabel("Hz")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_generation_item(
    prompt: Prompt, system: str, setting: str, model, data: GenerationData, settings: StudySettings, cache: dict
) -> dict:
    """Generate (or take the real) continuation of ``prompt``, decode it and score it.

    Returns ``{"prompt", "voice", "prompt_seconds", "system", "setting", "continuation_seconds", "generate_seconds",
    "metrics" (continuation_metrics), "sample" (paths, for sample prompts)}``. ``cache`` keeps each prompt's
    original audio and conditioning between calls.
    """
    seq = data.heldout[prompt.sequence]
    if prompt.id not in cache:
        audio = data.audio(seq, prompt.start, prompt.end)
        cache.clear()  # one prompt at a time: a 5-minute prompt's audio is 19 MB
        cache[prompt.id] = (audio, _conditioning(audio))
    prompt_audio, condition = cache[prompt.id]
    stop = prompt.end + prompt.continuation_frames
    started = time.perf_counter()
    if system == "real_original":
        codes, audio = None, data.audio(seq, prompt.end, stop)
    else:
        if system == "real_decoded":
            codes = seq.codes[:, prompt.end : stop].astype(np.int64)
        else:
            torch.manual_seed(settings.seed + zlib.crc32(f"{prompt.id}/{system}/{setting}".encode()))
            prompt_codes = torch.from_numpy(seq.codes[:, prompt.start : prompt.end].astype(np.int64))
            codes = generate_continuation(
                model, prompt_codes, prompt.continuation_frames, decoding_config(setting), condition
            ).numpy()
        audio = data.decode(codes)
    generate_seconds = time.perf_counter() - started
    metrics = continuation_metrics(
        np.clip(audio, -1, 1), prompt_audio, window_seconds=settings.window_seconds, use_dnsmos=settings.use_dnsmos
    )
    return {
        "prompt": prompt.id,
        "voice": prompt.voice,
        "prompt_seconds": prompt.prompt_seconds,
        "system": system,
        "setting": setting,
        "continuation_seconds": prompt.continuation_frames / data.frame_rate,
        "window_seconds": settings.window_seconds,
        "generate_seconds": generate_seconds,
        "metrics": metrics,
        "codes": None if codes is None else codes,
    }


def run_generate(data: GenerationData, models: dict, settings: StudySettings, frame_seconds: dict) -> None:
    """The ``generate`` piece: every item of :func:`generation_items` not scored yet, plus the listening samples
    of the first ``samples`` prompts (the first of the shortest and of the longest length)."""
    results = Path(settings.results)
    prompts = select_prompts(data.heldout, data.frame_rate, settings)
    write_json(results / "prompts.json", [asdict(p) for p in prompts])
    items = [it for it in generation_items(prompts, settings) if not item_path(results, *it).exists()]
    candidates = [prompts[0].id, max(prompts, key=lambda p: p.prompt_seconds).id]
    sample_prompts = list(dict.fromkeys(candidates))[: settings.samples]
    estimate = sum(
        (p.continuation_frames * frame_seconds.get(s, 0.0)) + 0.6 * p.continuation_frames / data.frame_rate
        for p, s, _ in items
    )
    print(f"generate: {len(items)} continuations to score, about {estimate / 60:.1f} min", flush=True)
    cache: dict = {}
    for prompt, system, setting in tqdm(items, desc="generate"):
        result = run_generation_item(prompt, system, setting, models.get(system), data, settings, cache)
        codes = result.pop("codes")
        if prompt.id in sample_prompts and setting in (MAIN_SETTING, "-") and system != "real_original":
            result["sample"] = _sample_files(results, prompt, system, data, codes, settings)
        write_json(item_path(results, prompt, system, setting), result)


# ---------------------------------------------------------------------------------------------- cost, streaming


def run_cost(model, kind: str, data: GenerationData, settings: StudySettings) -> dict:
    """The ``cost`` piece of one model: ``{"kind", "new_frames", "points": [decoding_cost row or {"context_frames",
    "context_seconds", "error"}]}``, contexts in increasing order (a context that does not fit is recorded)."""
    points = []
    for seconds in tqdm(sorted(settings.cost_context_seconds), desc=f"cost {kind}"):
        frames = max(1, round(seconds * data.frame_rate))
        try:
            points += decoding_cost(
                model, model.config.num_codebooks, [frames], settings.cost_new_frames, data.frame_rate, settings.seed
            )
        except (RuntimeError, MemoryError) as error:
            points.append(
                {
                    "context_frames": frames,
                    "context_seconds": frames / data.frame_rate,
                    "error": f"{type(error).__name__}: {str(error)[:300]}",
                }
            )
    return {"kind": kind, "new_frames": settings.cost_new_frames, "points": points}


def run_stream(model, kind: str, data: GenerationData, settings: StudySettings) -> dict:
    """The ``stream`` piece of one model: :func:`streaming.streaming_latency` of ``stream_seconds`` of audio
    streamed in chunks of ``stream_chunk_frames`` after the first prompt (nucleus sampling), plus ``{"kind",
    "prompt", "prompt_seconds", "chunk_frames", "chunks"}``."""
    prompt = select_prompts(data.heldout, data.frame_rate, settings)[0]
    seq = data.heldout[prompt.sequence]
    condition = _conditioning(data.audio(seq, prompt.start, prompt.end))
    codes = torch.from_numpy(seq.codes[:, prompt.start : prompt.end].astype(np.int64))
    torch.manual_seed(settings.seed)
    chunks = list(
        stream_generate_audio(
            model,
            data.tokenizer(),
            codes,
            round(settings.stream_seconds * data.frame_rate),
            chunk_frames=settings.stream_chunk_frames,
            generation_config=decoding_config(MAIN_SETTING),
            conditioning_embeds=condition,
        )
    )
    latency = streaming_latency(chunks, data.frame_rate)
    return {
        "kind": kind,
        "prompt": prompt.id,
        "prompt_seconds": prompt.prompt_seconds,
        "chunk_frames": settings.stream_chunk_frames,
        "chunks": len(chunks),
        **latency,
    }


@torch.no_grad()
def frame_seconds_per_model(models: dict, data: GenerationData, frames: int = 16) -> dict:
    """Seconds one generated frame takes per model (``frames`` greedy frames after a 64-frame prompt), for the
    time estimates."""
    out = {}
    for kind, model in models.items():
        prompt = torch.from_numpy(data.heldout[0].codes[:, :64].astype(np.int64))
        start = time.perf_counter()
        generate_continuation(model, prompt, frames)
        out[kind] = (time.perf_counter() - start) / frames
    return out


def run_study(data: GenerationData, settings: StudySettings, only=PIECES) -> None:
    """Run the pieces in ``only`` (of :data:`PIECES`) for every model in ``settings.kinds`` from
    ``<settings.models>/<kind>/``, skipping the JSON files already written under ``settings.results``."""
    torch.set_num_threads(settings.threads)
    results = Path(settings.results)
    unknown = set(only) - set(PIECES)
    if unknown:
        raise ValueError(f"unknown pieces {sorted(unknown)}: choose from {PIECES}")
    models, infos = {}, {}
    for kind in settings.kinds:
        models[kind], infos[kind] = load_generator(Path(settings.models) / kind)
    write_json(results / "models.json", infos)
    per_frame = frame_seconds_per_model(models, data)
    print("seconds per generated frame: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in per_frame.items()))
    for kind, model in models.items():
        if "nll" in only and not (results / "nll" / f"{kind}.json").exists():
            write_json(results / "nll" / f"{kind}.json", run_nll(model, kind, data, settings))
    if "generate" in only:
        run_generate(data, models, settings, per_frame)
    for kind, model in models.items():
        if "cost" in only and not (results / "cost" / f"{kind}.json").exists():
            write_json(results / "cost" / f"{kind}.json", run_cost(model, kind, data, settings))
        if "stream" in only and not (results / "stream" / f"{kind}.json").exists():
            write_json(results / "stream" / f"{kind}.json", run_stream(model, kind, data, settings))
