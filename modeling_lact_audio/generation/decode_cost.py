"""What decoding costs after a long context: time per generated second and the cache's memory.

:func:`decoding_cost` prefills a random prompt of each context length, then decodes frame by frame through the
cache (:func:`greedy_decode`) and reports the times, the bytes the cache holds (:func:`cache_nbytes`) and the
process's peak RSS increase. A LaCT LM's cache (fast weights, a pending chunk, an attention window) stays the
same size however long the context; a full-attention baseline's KV cache grows with it.
"""

import math
import time

import torch

from ..ablations.measure import PeakRSS

__all__ = ["decoding_cost", "greedy_decode", "cache_nbytes"]


def cache_nbytes(cache) -> int:
    """Bytes of memory the tensors reachable from ``cache`` keep alive.

    Walks the object's attributes, lists, tuples, dicts and dataclass fields (a ``LaCTCache``: per layer the
    fast weights, momentum, pending chunk and working buffers, and the attention window's keys, values and
    mask). Each underlying storage counts once with its full size, so views (fast weights inside one stacked
    buffer, a window sliced out of a longer key tensor) are neither double counted nor under counted.
    """
    storages, seen = {}, set()
    stack = [cache]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, (int, float, bool, str, bytes, torch.dtype)):
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[(item.device, storage.data_ptr())] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return int(sum(storages.values()))


@torch.no_grad()
def greedy_decode(model, prompt_codes: torch.LongTensor, new_frames: int) -> dict:
    """Prefill ``prompt_codes`` in one forward, then decode ``new_frames`` frames one at a time, greedily.

    Each step feeds the previous frame ``[K, 1]`` with the cache and takes the argmax of each codebook's
    logits; the timings include that Python-side work (and a device synchronisation on CUDA).

    Args:
        model: a ``LaCTAudioForCausalLM`` or ``BaselineAudioTransformer``.
        prompt_codes: ``[K, T]`` int64 on the model's device (``T >= 1``).
        new_frames: frames to decode (>= 1).

    Returns:
        ``{"codes" [K, new_frames] int64, "cache", "prefill_seconds", "decode_seconds"}``; the first new frame
        comes from the prefill's last logits, so ``decode_seconds`` covers ``new_frames`` forwards of one frame
        (the last one fills the cache with the last frame, as a continuing stream would).
    """
    sync = torch.cuda.synchronize if prompt_codes.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = model(input_ids=prompt_codes, use_cache=True)
    step = out.logits[:, -1].argmax(-1, keepdim=True)  # [K, 1]
    sync()
    prefill = time.perf_counter() - start
    cache, frames = out.past_key_values, [step]
    start = time.perf_counter()
    for _ in range(new_frames):
        out = model(input_ids=step, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        step = out.logits[:, -1].argmax(-1, keepdim=True)
        frames.append(step)
    sync()
    decode = time.perf_counter() - start
    return {
        "codes": torch.cat(frames[:new_frames], dim=1),
        "cache": cache,
        "prefill_seconds": prefill,
        "decode_seconds": decode,
    }


def decoding_cost(
    model, num_codebooks: int, context_frames: list[int], new_frames: int = 64, frame_rate: float = 62.5, seed: int = 0
) -> list[dict]:
    """Prefill and decoding cost of ``model`` after contexts of each length in ``context_frames``.

    For each length T: random codes ``[K, T]`` (``torch.Generator`` seeded with ``seed + T``) as the prompt,
    :func:`greedy_decode` of ``new_frames`` frames, the cache's bytes afterwards (:func:`cache_nbytes`) and the
    increase of the process's peak RSS over prefill and decoding (``ablations.measure.PeakRSS``, sampled every
    50 ms; memory the allocator kept from an earlier, longer context is reused, so compare within one
    length sweep in increasing order). The model is put in eval mode.

    Args:
        model: a ``LaCTAudioForCausalLM`` or ``BaselineAudioTransformer``.
        num_codebooks: K; must equal ``model.config.num_codebooks``.
        context_frames: prompt lengths in frames (each >= 1).
        new_frames: frames decoded after each prompt.
        frame_rate: code frames per second of audio (62.5 for the 16 kHz ``mel_rvq`` tokenizer).
        seed: seeds the random prompts.

    Returns:
        one dict per context length, in the given order: ``{"context_frames", "context_seconds",
        "prefill_seconds", "decode_seconds", "seconds_per_generated_second" (decode seconds / seconds of audio
        decoded), "real_time_factor" ((prefill + decode) seconds / seconds decoded: what a listener waits,
        prompt included), "cache_bytes", "peak_rss_increase_mib"}``. A LaCT cache's bytes depend on the
        context only through the pending chunk (``(T + new_frames) % lact_chunk_size`` frames).
    """
    config = model.config
    if num_codebooks != config.num_codebooks:
        raise ValueError(f"num_codebooks={num_codebooks} but the model has config.num_codebooks={config.num_codebooks}")
    if isinstance(new_frames, bool) or not isinstance(new_frames, int) or new_frames < 1:
        raise ValueError(f"new_frames must be an int >= 1, got {new_frames!r}")
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
    lengths = list(context_frames)
    if not lengths or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in lengths):
        raise ValueError(f"context_frames must be a non-empty list of ints >= 1, got {context_frames!r}")
    model.eval()
    generated_seconds = new_frames / frame_rate
    results = []
    for T in lengths:
        generator = torch.Generator().manual_seed(seed + T)
        prompt = torch.randint(0, config.codebook_size, (num_codebooks, T), generator=generator).to(model.device)
        with PeakRSS() as rss:
            run = greedy_decode(model, prompt, new_frames)
        results.append(
            {
                "context_frames": T,
                "context_seconds": T / frame_rate,
                "prefill_seconds": run["prefill_seconds"],
                "decode_seconds": run["decode_seconds"],
                "seconds_per_generated_second": run["decode_seconds"] / generated_seconds,
                "real_time_factor": (run["prefill_seconds"] + run["decode_seconds"]) / generated_seconds,
                "cache_bytes": cache_nbytes(run["cache"]),
                "peak_rss_increase_mib": rss.peak_mib - rss.start_mib,
            }
        )
        del run
    return results
