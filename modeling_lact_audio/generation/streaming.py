"""Audio continuation with an audio-token LM: all at once, or chunk by chunk while the model generates.

:func:`generate_continuation` runs ``model.generate`` on a prompt of codes and returns the new codes.
:func:`stream_generate_audio` runs the same ``generate`` call in a background thread with a
``transformers`` streamer (the ``TextIteratorStreamer`` pattern: each new frame is handed over through a
queue) and yields :class:`AudioChunk` s as soon as ``chunk_frames`` new frames are decoded to audio, so the
first audio is ready long before the continuation is finished. :func:`streaming_latency` summarises when
the chunks were ready.

Codes follow the LM's MusicGen convention: one sequence is ``[K, T]`` (``K = config.num_codebooks``), which
``generate`` sees as K rows.
"""

import copy
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

__all__ = ["AudioChunk", "generate_continuation", "stream_generate_audio", "streaming_latency", "samples_per_frame"]


@dataclass
class AudioChunk:
    """One piece of a streamed continuation.

    Attributes:
        codes: ``[K, n]`` int64: the new code frames of this chunk.
        audio: ``[n * samples_per_frame]`` float32 waveform of those frames at the tokenizer's sampling rate.
        frame_start: index of the chunk's first frame within the continuation (0 = first new frame).
        seconds: wall seconds from the call of :func:`stream_generate_audio` until this chunk was ready.
    """

    codes: torch.LongTensor
    audio: np.ndarray
    frame_start: int
    seconds: float


def samples_per_frame(audio_tokenizer) -> int:
    """Waveform samples per code frame of ``audio_tokenizer``: EnCodec's hop for a ``LaCTAudioTokenizer`` with
    ``backend="encodec"``, ``config.samples_per_frame`` where the config has one (Codec2), else
    ``config.hop_length`` (``mel_rvq``: 256 samples at 16 kHz, 62.5 frames per second)."""
    config = audio_tokenizer.config
    if getattr(config, "backend", None) == "encodec":
        return int(audio_tokenizer.encodec.config.hop_length)
    if getattr(config, "samples_per_frame", None):
        return int(config.samples_per_frame)
    return int(config.hop_length)


def _check_prompt(model, prompt_codes) -> torch.LongTensor:
    K = model.config.num_codebooks
    if not isinstance(prompt_codes, torch.Tensor):
        prompt_codes = torch.as_tensor(np.asarray(prompt_codes))
    if prompt_codes.dtype.is_floating_point or prompt_codes.dtype.is_complex or prompt_codes.dtype == torch.bool:
        raise ValueError(f"prompt_codes must be integer codes (torch.long), got {prompt_codes.dtype}")
    if prompt_codes.dim() != 2 or prompt_codes.shape[0] != K or prompt_codes.shape[1] < 1:
        raise ValueError(
            f"prompt_codes must be [K={K}, T] with T >= 1 (one sequence, the model's num_codebooks rows), got "
            f"{tuple(prompt_codes.shape)}"
        )
    V = model.config.codebook_size
    low, high = int(prompt_codes.min()), int(prompt_codes.max())
    if low < 0 or high >= V:
        raise ValueError(f"prompt_codes must lie in [0, codebook_size={V}), got values in [{low}, {high}]")
    return prompt_codes.long()


def _check_frames(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _generate_kwargs(model, prompt_codes, max_new_frames, generation_config, conditioning_embeds) -> dict:
    """The keyword arguments of the ``model.generate`` call both entry points make."""
    prompt_codes = _check_prompt(model, prompt_codes)
    max_new_frames = _check_frames("max_new_frames", max_new_frames)
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise ValueError(f"generation_config must be a transformers GenerationConfig, got {type(generation_config)}")
    config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    config.max_new_tokens = config.min_new_tokens = max_new_frames
    # An audio code never ends a continuation: without an EOS id, generate neither stops early nor masks a code.
    config.eos_token_id = None
    kwargs = {"input_ids": prompt_codes.to(model.device), "generation_config": config}
    if conditioning_embeds is not None:
        dim = model.config.condition_dim
        if not isinstance(conditioning_embeds, torch.Tensor) or tuple(conditioning_embeds.shape) != (1, dim):
            got = tuple(conditioning_embeds.shape) if isinstance(conditioning_embeds, torch.Tensor) else None
            raise ValueError(
                f"conditioning_embeds must be a tensor [1, condition_dim={dim}] (one sequence), got "
                f"{got if got is not None else type(conditioning_embeds).__name__}"
            )
        kwargs["conditioning_embeds"] = conditioning_embeds.to(model.device)
    return kwargs


@torch.no_grad()
def generate_continuation(
    model, prompt_codes, max_new_frames: int, generation_config=None, conditioning_embeds=None
) -> torch.LongTensor:
    """The ``max_new_frames`` code frames ``model`` generates after ``prompt_codes``.

    Args:
        model: a ``LaCTAudioForCausalLM`` or ``BaselineAudioTransformer`` (anything with that ``generate``).
        prompt_codes: ``[K, T]`` int64 codes (``K = model.config.num_codebooks``, ``T >= 1``).
        max_new_frames: frames to generate; exactly that many come back (no EOS: ``eos_token_id`` is unset).
        generation_config: a ``GenerationConfig`` (copied; its length fields are overridden); default greedy.
        conditioning_embeds: ``[1, condition_dim]`` float or None (a conditioning prefix frame).

    Returns:
        ``[K, max_new_frames]`` int64 on the model's device: the new codes only, not the prompt.
    """
    kwargs = _generate_kwargs(model, prompt_codes, max_new_frames, generation_config, conditioning_embeds)
    out = model.generate(**kwargs)
    return out[:, kwargs["input_ids"].shape[1] :]


class _Cancelled(Exception):
    """Raised inside the generation thread when the consumer stopped reading the stream."""


class _FrameStreamer(BaseStreamer):
    """Hands each generated frame ``[K]`` to a queue; ``generate`` calls ``put`` with the prompt first.

    With ``pause_every`` set, ``put`` waits after every ``pause_every``-th frame until the consumer has decoded
    that chunk (``resume``): sampling on the CPU draws from torch's global generator, which the mel_rvq
    decoder reseeds and restores around Griffin-Lim, so the two must not overlap.
    """

    END = object()

    def __init__(self, pause_every: int | None = None):
        self.frames: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.decoded = threading.Event()
        self.pause_every = pause_every
        self._prompt_seen = False
        self._count = 0

    def put(self, value):
        if self.cancelled.is_set():
            raise _Cancelled()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.frames.put(value.reshape(-1).to("cpu", torch.long).clone())
        self._count += 1
        if self.pause_every and self._count % self.pause_every == 0:
            self.decoded.wait()
            self.decoded.clear()

    def resume(self):
        self.decoded.set()

    def end(self):
        self.frames.put(self.END)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _decode_chunk(audio_tokenizer, codes, start: int, stop: int, context_frames: int, hop: int) -> np.ndarray:
    """Audio ``[(stop - start) * hop]`` float32 of frames ``codes[:, start:stop]`` (``codes [K, N]``: prompt and
    continuation so far), decoded after up to ``context_frames`` earlier frames and trimmed to its own samples.

    Frame ``i`` owns samples ``[i * hop, (i + 1) * hop)``. The last frame is repeated once so that a decoder
    giving ``(frames - 1) * hop`` samples (``mel_rvq``) also covers the chunk's last frame.
    """
    first = max(0, start - context_frames)
    piece = torch.cat([codes[:, first:stop], codes[:, stop - 1 : stop]], dim=1)  # [K, context + n + 1]
    audio = audio_tokenizer.decode(piece[None])[0]
    offset, n = (start - first) * hop, (stop - start) * hop
    if audio.shape[-1] < offset + n:
        raise ValueError(
            f"the audio tokenizer decoded {piece.shape[1]} frames to {audio.shape[-1]} samples, fewer than the "
            f"{offset + n} expected at {hop} samples per frame"
        )
    return audio[offset : offset + n].detach().to("cpu", torch.float32).numpy()


def stream_generate_audio(
    model,
    audio_tokenizer,
    prompt_codes,
    max_new_frames: int,
    chunk_frames: int = 125,
    generation_config=None,
    conditioning_embeds=None,
    context_frames: int = 32,
) -> Iterator[AudioChunk]:
    """Generate a continuation and yield its audio chunk by chunk while the model is still generating.

    ``model.generate`` (the call :func:`generate_continuation` makes) starts at once in a background thread and
    passes each new frame through a streamer and a queue; every ``chunk_frames`` frames (and the rest at the
    end) are decoded with up to ``context_frames`` earlier frames (prompt or generated) as left context, then
    trimmed to their own samples, so a chunk starts from a decoder state that has heard what precedes it.
    Decoding runs in the caller's thread, overlapping the generation of the next frames; except when sampling on
    the CPU: then generation pauses while a chunk is decoded, since both would use torch's global CPU generator
    (the mel_rvq decoder reseeds it for Griffin-Lim), and a seeded stream then samples exactly what
    :func:`generate_continuation` samples after the same ``torch.manual_seed``.

    Args:
        model, prompt_codes ``[K, T]``, max_new_frames, generation_config, conditioning_embeds ``[1, condition_dim]``:
            as for :func:`generate_continuation`.
        audio_tokenizer: decodes ``[1, K, n]`` codes to ``[1, L]`` audio (``LaCTAudioTokenizer``); its
            samples per frame come from :func:`samples_per_frame`.
        chunk_frames: new frames per chunk (125 = 2 s at 62.5 frames per second).
        context_frames: earlier frames decoded before each chunk as left context (0: none).

    Returns:
        an iterator of :class:`AudioChunk`: the codes concatenated equal :func:`generate_continuation`'s for
        greedy decoding, and the audio concatenated has exactly ``max_new_frames * samples_per_frame`` samples.
        An exception raised in the generation thread is raised again by the iterator. Closing the iterator
        early stops the generation at its next frame.
    """
    started = time.perf_counter()
    kwargs = _generate_kwargs(model, prompt_codes, max_new_frames, generation_config, conditioning_embeds)
    chunk_frames = _check_frames("chunk_frames", chunk_frames)
    context_frames = _check_frames("context_frames", context_frames, minimum=0)
    hop = samples_per_frame(audio_tokenizer)
    sampling_on_cpu = kwargs["generation_config"].do_sample and kwargs["input_ids"].device.type == "cpu"
    streamer = _FrameStreamer(pause_every=chunk_frames if sampling_on_cpu else None)

    def run():
        try:
            model.generate(**kwargs, streamer=streamer)
        except _Cancelled:
            streamer.frames.put(streamer.END)
        except BaseException as error:  # handed to the consumer, which raises it
            streamer.frames.put(_Failure(error))

    worker = threading.Thread(target=run, name="stream_generate_audio", daemon=True)
    worker.start()
    prompt = kwargs["input_ids"].to("cpu")
    total = kwargs["generation_config"].max_new_tokens
    return _chunks(streamer, worker, audio_tokenizer, prompt, total, chunk_frames, context_frames, hop, started)


def _chunks(streamer, worker, audio_tokenizer, prompt, total, chunk_frames, context_frames, hop, started):
    frames, emitted = [], 0
    try:
        while True:
            item = streamer.frames.get()
            if isinstance(item, _Failure):
                raise item.error
            done = item is streamer.END
            if not done:
                frames.append(item)
            if len(frames) - emitted >= chunk_frames or (done and len(frames) > emitted):
                stop = len(frames) if done else emitted + chunk_frames
                codes = torch.cat([prompt, torch.stack(frames[:stop], dim=1)], dim=1)  # [K, T + stop]
                T = prompt.shape[1]
                audio = _decode_chunk(audio_tokenizer, codes, T + emitted, T + stop, context_frames, hop)
                streamer.resume()
                yield AudioChunk(
                    codes=codes[:, T + emitted :].clone(),
                    audio=audio,
                    frame_start=emitted,
                    seconds=time.perf_counter() - started,
                )
                emitted = stop
            if done:
                break
        if emitted != total:
            raise RuntimeError(f"generate produced {emitted} frames, {total} were asked for")
    finally:
        streamer.cancelled.set()
        streamer.resume()
        worker.join()


def streaming_latency(chunks: list[AudioChunk], frame_rate: float) -> dict:
    """When the chunks of one :func:`stream_generate_audio` call were ready.

    Args:
        chunks: the call's chunks in order (``[N]``, N >= 1).
        frame_rate: code frames per second of audio (62.5 for the 16 kHz ``mel_rvq`` tokenizer).

    Returns:
        ``{"time_to_first_audio_s", "per_chunk_latency_s" [N], "mean_chunk_latency_s", "real_time_factor",
        "audio_seconds", "wall_seconds"}``: the first chunk's ready time; each chunk's time since the previous
        one was ready (the first: since the call); their mean; the wall seconds until the last chunk over the
        seconds of audio generated (below 1: faster than real time).
    """
    if not chunks:
        raise ValueError("streaming_latency needs at least one AudioChunk, got none")
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
    ready = [c.seconds for c in chunks]
    if any(b < a for a, b in zip(ready, ready[1:])):
        raise ValueError(f"the chunks' ready times must not decrease (pass them in order), got {ready}")
    per_chunk = [ready[0]] + [b - a for a, b in zip(ready, ready[1:])]
    audio_seconds = sum(c.codes.shape[1] for c in chunks) / frame_rate
    return {
        "time_to_first_audio_s": ready[0],
        "per_chunk_latency_s": per_chunk,
        "mean_chunk_latency_s": float(np.mean(per_chunk)),
        "real_time_factor": ready[-1] / audio_seconds,
        "audio_seconds": audio_seconds,
        "wall_seconds": ready[-1],
    }
