"""Worker subprocess of the efficiency benchmark: ``python worker.py '<job json>'``.

Runs one job (a ladder of sizes for one mixer or model) and prints one ``@@record {json}`` line per
measured point, so the parent keeps every completed point even when a later one runs out of memory,
hits the time cap or the job is killed. Job kinds: ``layer``, ``model`` (training step + offline
inference), ``decode`` (audio-token LM) and ``stream`` (streaming CTC). Not meant to be run by hand.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

import torch
from harness import PeakMemory, autocast, emit, is_oom, limit_address_space, measure, predicted_next, sync

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC
from modeling_lact_audio.baselines import BaselineASRTransformer, BaselineAudioTransformer
from modeling_lact_audio.frontend_lact_audio import frames_per_second
from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer
from modeling_lact_audio.presets import preset_config

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def _release_memory(device: str) -> None:
    """Give freed memory back (so the next point's peak is measured from a low base)."""
    if device == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:
        _LIBC.malloc_trim(0)


def layer_config(preset: str, mixer: str):
    """The ``preset`` CTC config (streaming pattern) with ``mixer`` swapped in; full attention has no window."""
    config = preset_config(preset, "ctc", mixer=mixer, **({"window_size": None} if mixer == "attention" else {}))
    config._attn_implementation = "sdpa"
    return config


def _point(job, fn, T, mode, extra, budget_s):
    """Time and measure one point; returns the record (``oom`` set when an allocation failed)."""
    device = job["device"]
    _release_memory(device)
    rec = {"T": T, "mode": mode, **extra}
    try:
        with PeakMemory(device) as mem:
            t = measure(fn, device, job["repeats"], budget_s)
        rec.update(t, peak_mem_bytes=mem.peak_bytes, mem_method=mem.method)
    except (RuntimeError, MemoryError) as err:
        if not is_oom(err):
            raise
        rec.update(stopped="oom", error=str(err).splitlines()[0][:200])
    rec["loadavg"] = list(os.getloadavg())
    return rec


class Ladder:
    """Ascending sizes for one mode; stops at the first out-of-memory point or a predicted time-cap overrun."""

    def __init__(self, cap_s: float):
        self.cap_s, self.Ts, self.times, self.stopped = cap_s, [], [], None

    def skip(self, T: int) -> str | None:
        if self.stopped:
            return self.stopped
        if self.times:
            pred = predicted_next(self.Ts, self.times, T)
            if pred > self.cap_s:
                self.stopped = f"time cap: predicted {pred:.0f} s per run > {self.cap_s:.0f} s"
        return self.stopped

    def add(self, rec: dict) -> None:
        if rec.get("stopped"):
            self.stopped = rec["stopped"]
        else:
            self.Ts.append(rec["T"])
            self.times.append(rec["median_s"])


def run_layer(job):
    device, mixer = job["device"], job["mixer"]
    config = layer_config(job["preset"], mixer)
    torch.manual_seed(0)
    module = LaCTAudioMixer(config, 0).to(device)
    d = config.hidden_size
    ladders = {m: Ladder(job["point_cap_s"]) for m in job["modes"]}
    for T in job["Ts"]:
        x = torch.randn(1, T, d, device=device)
        pos = torch.arange(T, device=device)

        xg = x.clone().requires_grad_(True)

        def fwd(x=x, pos=pos):
            with torch.inference_mode(), autocast(device):
                module(x, pos)

        def fwd_bwd(xg=xg, pos=pos):
            with autocast(device):
                out, _ = module(xg, pos)
            out.float().square().mean().backward()
            xg.grad = None
            module.zero_grad(set_to_none=True)

        for mode in job["modes"]:
            extra = {"section": "layer", "mixer": mixer, "hidden": d}
            reason = ladders[mode].skip(T)
            if reason is None and mode == "fwd_bwd" and ladders.get("fwd") and ladders["fwd"].stopped == "oom":
                reason = "oom"
            if reason:
                emit({"T": T, "mode": mode, **extra, "stopped": reason, "skipped": True})
                ladders[mode].stopped = reason
                continue
            rec = _point(job, {"fwd": fwd, "fwd_bwd": fwd_bwd}[mode], T, mode, extra, job["budget_s"])
            if "median_s" in rec:
                rec["tokens_per_s"] = T / rec["median_s"]
            ladders[mode].add(rec)
            emit(rec)


def run_model(job):
    """Training step (AdamW, CTC loss) and offline inference of the ``preset`` CTC model or its baseline."""
    device = job["device"]
    config = preset_config(job["preset"], "ctc")
    torch.manual_seed(0)
    if job["model"] == "lact":
        model = LaCTAudioForCTC(config)
    else:
        model = BaselineASRTransformer.from_lact_config(config, mixer="attention")
    model.config._attn_implementation = "sdpa"
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    stride, fps = config.total_stride, frames_per_second(config)
    ladders = {m: Ladder(job["point_cap_s"]) for m in job["modes"]}
    for T in job["Ts"]:
        feats = torch.randn(1, T * stride, config.num_mel_bins, device=device)
        labels = torch.randint(1, config.vocab_size, (1, max(1, T // 8)), device=device)

        def infer(feats=feats):
            model.eval()
            with torch.inference_mode(), autocast(device):
                model(input_features=feats)

        def train(feats=feats, labels=labels):
            model.train()
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                loss = model(input_features=feats, labels=labels).loss
            loss.backward()
            opt.step()

        for mode in job["modes"]:
            extra = {"section": "model", "model": job["model"], "params": n_params, "audio_s": T / fps}
            reason = ladders[mode].skip(T)
            if reason:
                emit({"T": T, "mode": mode, **extra, "stopped": reason, "skipped": True})
                continue
            rec = _point(job, {"infer": infer, "train": train}[mode], T, mode, extra, job["budget_s"])
            if "median_s" in rec:
                rec["tokens_per_s"] = T / rec["median_s"]
                rec["rtf"] = rec["median_s"] / (T / fps)
            ladders[mode].add(rec)
            emit(rec)
        opt.zero_grad(set_to_none=True)


def cache_bytes(cache) -> int:
    """Bytes held by the tensors of a ``LaCTCache`` (fast weights, momentum, pending chunk, window KV)."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()

    for lc in cache.layer_caches:
        for t in (lc.keys, lc.values, lc.key_mask):
            add(t)
        if lc.fast is not None:
            f = lc.fast
            for t in (f.w0, f.w1, f.w2, f.w0_norm, f.w1_norm, f.w2_norm, f.m0, f.m1, f.m2):
                add(t)
            if f.pending is not None:
                for t in (f.pending.k, f.pending.v, f.pending.lr, f.pending.momentum, f.pending.mask):
                    add(t)
    for t in cache.frontend_states or []:
        add(t)
    return total


def _step_timer(device):
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return lambda: (end.record(), torch.cuda.synchronize(), start.elapsed_time(end) / 1e3)[-1]
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def _summary(times):
    s = sorted(times)
    return {
        "median_s": s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2]),
        "mean_s": sum(s) / len(s),
        "min_s": s[0],
        "p90_s": s[min(len(s) - 1, int(0.9 * len(s)))],
        "max_s": s[-1],
        "n": len(s),
    }


def run_decode(job):
    """Prefill the audio-token LM to each context in pieces through its cache, then time single-token steps."""
    device = job["device"]
    config = preset_config(job["preset"], "lm")
    torch.manual_seed(0)
    if job["model"] == "lact":
        model = LaCTAudioForCausalLM(config)
    else:
        model = BaselineAudioTransformer.from_lact_config(config, mixer="attention")
    model.config._attn_implementation = "sdpa"
    model = model.to(device).eval()
    K, V = config.num_codebooks, config.codebook_size
    cache, prefill_s = None, 0.0
    for ctx in job["contexts"]:
        seen = 0 if cache is None else cache.seen_inputs
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), autocast(device):
                while seen < ctx:
                    n = min(job["prefill_piece"], ctx - seen)
                    ids = torch.randint(0, V, (K, n), device=device)
                    cache = model(input_ids=ids, past_key_values=cache, use_cache=True).past_key_values
                    seen += n
                sync(device)
                prefill_s += time.perf_counter() - t0
                _release_memory(device)
                ids = torch.randint(0, V, (K, 1), device=device)
                for _ in range(2):  # warm-up steps
                    cache = model(input_ids=ids, past_key_values=cache, use_cache=True).past_key_values
                before = cache_bytes(cache)
                times = []
                with PeakMemory(device) as mem:
                    for _ in range(job["steps"]):
                        stop = _step_timer(device)
                        cache = model(input_ids=ids, past_key_values=cache, use_cache=True).past_key_values
                        times.append(stop())
                after = cache_bytes(cache)
        except (RuntimeError, MemoryError) as err:
            if not is_oom(err):
                raise
            emit({"section": "decode", "model": job["model"], "context": ctx, "stopped": "oom"})
            return
        emit(
            {
                "section": "decode",
                "model": job["model"],
                "context": ctx,
                "context_at_start": cache.seen_inputs - job["steps"],
                **_summary(times),
                "cache_bytes": after,
                "cache_growth_bytes_per_token": (after - before) / job["steps"],
                "peak_mem_bytes": mem.peak_bytes,
                "mem_method": mem.method,
                "prefill_s_cumulative": prefill_s,
                "loadavg": list(os.getloadavg()),
            }
        )


def run_stream(job):
    """Feed the streaming CTC model its features chunk by chunk through the cache; time every chunk."""
    device = job["device"]
    config = preset_config(job["preset"], "ctc")
    torch.manual_seed(0)
    model = LaCTAudioForCTC(config).to(device).eval()
    model.config._attn_implementation = "sdpa"
    hop_s, win_s = job["hop_length"] / job["sampling_rate"], job["n_fft"] / job["sampling_rate"]
    n_feat = int(round(job["seconds"] / hop_s))
    feats = torch.randn(1, n_feat, config.num_mel_bins, device=device)
    for chunk_ms in job["chunk_ms"]:
        piece = int(round(chunk_ms / 1000 / hop_s))
        if piece % config.total_stride:
            emit({"section": "stream", "chunk_ms": chunk_ms, "stopped": "chunk not a multiple of the front-end stride"})
            continue
        with torch.inference_mode(), autocast(device):
            cache = None
            for s in range(0, min(n_feat, 4 * piece), piece):  # warm-up stream
                cache = model(input_features=feats[:, s : s + piece], past_key_values=cache, use_cache=True)
                cache = cache.past_key_values
            cache, times = None, []
            for s in range(0, n_feat - piece + 1, piece):
                stop = _step_timer(device)
                out = model(input_features=feats[:, s : s + piece], past_key_values=cache, use_cache=True)
                times.append(stop())
                cache = out.past_key_values
        audio_s = len(times) * piece * hop_s
        emit(
            {
                "section": "stream",
                "chunk_ms": chunk_ms,
                "feature_frames_per_chunk": piece,
                "model_frames_per_chunk": piece // config.total_stride,
                "lact_chunk_frames": config.lact_chunk_size,
                **_summary(times),
                "chunks": len(times),
                "rtf": sum(times) / audio_s,
                "algorithmic_latency_ms": chunk_ms + 1000 * (win_s - hop_s),
                "threads": torch.get_num_threads(),
                "loadavg": list(os.getloadavg()),
            }
        )


JOBS = {"layer": run_layer, "model": run_model, "decode": run_decode, "stream": run_stream}


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    if job["device"] == "cpu" and job.get("mem_cap_gb"):
        limit_address_space(job["mem_cap_gb"])
    JOBS[job["kind"]](job)


if __name__ == "__main__":
    main()
