"""The jobs of the efficiency benchmark, and how the suite runs them.

A job is a ladder of sizes for one mixer or model: kinds ``layer``, ``model`` (training step + offline
inference), ``decode`` (audio-token LM) and ``stream`` (streaming CTC). ``run_job`` runs one in a worker
process, ``python -m modeling_lact_audio.benchmarks.jobs '<job json>'``, with an address-space cap, so
a point that runs out of memory is recorded instead of killing the benchmark (or a neighbour's job);
the worker prints one ``@@record {json}`` line per measured point, so the parent keeps every completed
point even when a later one fails, hits the time cap or the job is killed. Tiny sizes run inline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import torch

from .. import LaCTAudioForCausalLM, LaCTAudioForCTC
from ..baselines import BaselineASRTransformer, BaselineAudioTransformer
from ..data import SAMPLING_RATE
from ..mixer_lact_audio import LaCTAudioMixer
from ..presets import preset_config
from ..processors import LaCTFeatureExtractor
from .measure import (
    PeakMemory,
    is_oom,
    limit_address_space,
    measure,
    predicted_next,
    release_memory,
    summarize,
    time_once,
    time_steps,
)

RECORD_PREFIX = "@@record "
WORKER_MODULE = "modeling_lact_audio.benchmarks.jobs"


def emit(record: dict) -> None:
    """Worker side: hand one record to the parent (one JSON line, flushed at once)."""
    print(RECORD_PREFIX + json.dumps(record), flush=True)


def autocast(device: str):
    """bf16 autocast on CUDA (the GPU path), nothing on the CPU (fp32: fp16/bf16 SDPA backward is slow there)."""
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def layer_config(preset: str, mixer: str):
    """The ``preset`` CTC config (streaming pattern) with ``mixer`` swapped in; full attention has no window."""
    config = preset_config(preset, "ctc", mixer=mixer, **({"window_size": None} if mixer == "attention" else {}))
    config._attn_implementation = "sdpa"
    return config


def _model(job, task: str):
    """The ``preset`` model for ``task`` (``"ctc"`` or ``"lm"``) on the job's device, and its config.

    LaCT, or with ``job["model"] == "baseline"`` the same model with full attention in every mixer.
    """
    config = preset_config(job["preset"], task)
    torch.manual_seed(0)
    if job.get("model", "lact") == "lact":
        model = (LaCTAudioForCTC if task == "ctc" else LaCTAudioForCausalLM)(config)
    else:
        baseline = BaselineASRTransformer if task == "ctc" else BaselineAudioTransformer
        model = baseline.from_lact_config(config, mixer="attention")
    model.config._attn_implementation = "sdpa"
    return model.to(job["device"]), config


class Ladder:
    """Ascending sizes for one mode; stops at the first out-of-memory point or a predicted time-cap overrun."""

    def __init__(self, cap_s: float):
        self.cap_s, self.Ts, self.times, self.stopped = cap_s, [], [], None

    def skip(self, T: int) -> str | None:
        """Why ``T`` is not run (None: run it)."""
        if self.stopped:
            return self.stopped
        if self.times:
            pred = predicted_next(self.Ts, self.times, T)
            if pred > self.cap_s:
                self.stopped = f"time cap: predicted {pred:.0f} s per run > {self.cap_s:.0f} s"
        return self.stopped

    def run(self, job, fn, T: int, mode: str, extra: dict, reason: str | None = None) -> dict:
        """Time and measure ``fn`` at size ``T``, or record why not (``reason``, a predicted overrun, an
        earlier out-of-memory point); returns the record, with ``tokens_per_s`` when measured."""
        reason = reason or self.skip(T)
        if reason:
            self.stopped = reason
            return {"T": T, "mode": mode, **extra, "stopped": reason, "skipped": True}
        release_memory(job["device"])
        rec = {"T": T, "mode": mode, **extra}
        try:
            rec.update(measure(fn, job["device"], job["budget_s"]))
        except (RuntimeError, MemoryError) as err:
            if not is_oom(err):
                raise
            rec.update(stopped="oom", error=str(err).splitlines()[0][:200])
        rec["loadavg"] = list(os.getloadavg())
        if rec.get("stopped"):
            self.stopped = rec["stopped"]
        else:
            self.Ts.append(T)
            self.times.append(rec["median_s"])
            rec["tokens_per_s"] = T / rec["median_s"]
        return rec


def run_layer(job):
    """One ``LaCTAudioMixer`` on ``[1, T, hidden]``, forward and forward+backward, at every T of the ladder."""
    device, mixer = job["device"], job["mixer"]
    config = layer_config(job["preset"], mixer)
    torch.manual_seed(0)
    module = LaCTAudioMixer(config, 0).to(device)
    d = config.hidden_size
    ladders = {m: Ladder(job["point_cap_s"]) for m in job["modes"]}
    for T in job["Ts"]:
        x = torch.randn(1, T, d, device=device)
        xg = x.clone().requires_grad_(True)

        def fwd(x=x):
            with torch.inference_mode(), autocast(device):
                module(x)

        def fwd_bwd(xg=xg):
            with autocast(device):
                out, _ = module(xg)
            out.float().square().mean().backward()
            xg.grad = None
            module.zero_grad(set_to_none=True)

        for mode in job["modes"]:
            # a forward that ran out of memory rules out its backward at the same size
            oom = mode == "fwd_bwd" and "fwd" in ladders and ladders["fwd"].stopped == "oom"
            extra = {"section": "layer", "mixer": mixer, "hidden": d}
            fn = {"fwd": fwd, "fwd_bwd": fwd_bwd}[mode]
            emit(ladders[mode].run(job, fn, T, mode, extra, reason="oom" if oom else None))


def run_model(job):
    """Training step (AdamW, CTC loss) and offline inference of the ``preset`` CTC model or its baseline."""
    device = job["device"]
    model, config = _model(job, "ctc")
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    stride, fps = config.total_stride, SAMPLING_RATE / config.inputs_to_logits_ratio
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
            rec = ladders[mode].run(job, {"infer": infer, "train": train}[mode], T, mode, extra)
            if "median_s" in rec:
                rec["rtf"] = rec["median_s"] / (T / fps)
            emit(rec)
        opt.zero_grad(set_to_none=True)


def cache_bytes(cache) -> int:
    """Bytes held by the tensors of a ``LaCTCache`` (fast weights, momentum and second moments, pending chunk,
    window KV)."""
    tensors = {}
    for lc in cache.layer_caches:
        for t in (lc.keys, lc.values, lc.key_mask):
            tensors[id(t)] = t
        if lc.fast is not None:
            f = lc.fast
            for t in (f.w0, f.w1, f.w2, f.w0_norm, f.w1_norm, f.w2_norm, f.m0, f.m1, f.m2, f.v0, f.v1, f.v2):
                tensors[id(t)] = t
            if f.pending is not None:
                for t in (f.pending.k, f.pending.v, f.pending.lr, f.pending.momentum, f.pending.mask):
                    tensors[id(t)] = t
    for t in cache.frontend_states or []:
        tensors[id(t)] = t
    return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))


def run_decode(job):
    """Prefill the audio-token LM to each context in pieces through its cache, then time single-token steps."""
    device = job["device"]
    model, config = _model(job, "lm")
    model.eval()
    K, V = config.num_codebooks, config.codebook_size
    cache, prefill_s = None, 0.0

    def step(ids):
        nonlocal cache
        cache = model(input_ids=ids, past_key_values=cache, use_cache=True).past_key_values

    def prefill(ctx):
        seen = 0 if cache is None else cache.seen_inputs
        while seen < ctx:
            n = min(job["prefill_piece"], ctx - seen)
            step(torch.randint(0, V, (K, n), device=device))
            seen += n

    for ctx in job["contexts"]:
        try:
            with torch.inference_mode(), autocast(device):
                prefill_s += time_once(lambda ctx=ctx: prefill(ctx))
                release_memory(device)
                ids = torch.randint(0, V, (K, 1), device=device)
                for _ in range(2):  # warm-up steps
                    step(ids)
                before = cache_bytes(cache)
                with PeakMemory(device) as mem:
                    times = time_steps(lambda ids=ids: step(ids), job["steps"])
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
                **summarize(times),
                "cache_bytes": after,
                "cache_growth_bytes_per_token": (after - before) / job["steps"],
                "peak_mem_bytes": mem.peak_bytes,
                "mem_method": mem.method,
                "prefill_s_cumulative": prefill_s,
                "loadavg": list(os.getloadavg()),
            }
        )


def _stream(model, feats, piece: int, length: int) -> list[float]:
    """Seconds of each ``piece``-frame call of one stream over ``feats[:, :length]`` through a fresh cache."""
    starts = range(0, length - piece + 1, piece)
    pieces, cache = iter(starts), None

    def step():
        nonlocal cache
        s = next(pieces)
        cache = model(input_features=feats[:, s : s + piece], past_key_values=cache, use_cache=True).past_key_values

    return time_steps(step, len(starts))


def run_stream(job):
    """Feed the streaming CTC model its features chunk by chunk through the cache; time every chunk."""
    device = job["device"]
    model, config = _model(job, "ctc")
    model.eval()
    features = LaCTFeatureExtractor()
    hop_s, win_s = features.hop_length / features.sampling_rate, features.n_fft / features.sampling_rate
    n_feat = int(round(job["seconds"] / hop_s))
    feats = torch.randn(1, n_feat, config.num_mel_bins, device=device)
    for chunk_ms in job["chunk_ms"]:
        piece = int(round(chunk_ms / 1000 / hop_s))
        if piece % config.total_stride:
            emit({"section": "stream", "chunk_ms": chunk_ms, "stopped": "chunk not a multiple of the front-end stride"})
            continue
        with torch.inference_mode(), autocast(device):
            _stream(model, feats, piece, min(n_feat, 4 * piece))  # a warm-up stream
            times = _stream(model, feats, piece, n_feat)
        audio_s = len(times) * piece * hop_s
        emit(
            {
                "section": "stream",
                "chunk_ms": chunk_ms,
                "feature_frames_per_chunk": piece,
                "model_frames_per_chunk": piece // config.total_stride,
                "lact_chunk_frames": config.lact_chunk_size,
                **summarize(times),
                "chunks": len(times),
                "rtf": sum(times) / audio_s,
                "algorithmic_latency_ms": chunk_ms + 1000 * (win_s - hop_s),
                "threads": torch.get_num_threads(),
                "loadavg": list(os.getloadavg()),
            }
        )


JOBS = {"layer": run_layer, "model": run_model, "decode": run_decode, "stream": run_stream}


def _records(output: str) -> list:
    return [json.loads(line[len(RECORD_PREFIX) :]) for line in output.splitlines() if line.startswith(RECORD_PREFIX)]


def _run_inline(job: dict) -> tuple[str, str]:
    """Run ``job`` in this process: no memory isolation, no timeout, no worker start-up cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(job["threads"])
    out = io.StringIO()
    status = "ok (inline)"
    try:
        with contextlib.redirect_stdout(out):
            JOBS[job["kind"]](job)
    except Exception as err:  # a failed job is recorded, not fatal
        status = f"error (inline): {type(err).__name__}: {err}"
    finally:
        torch.set_num_threads(threads)
    return out.getvalue(), status


def run_job(job: dict, timeout_s: float, inline: bool = False) -> dict:
    """Run ``job`` in a worker process (or in this one with ``inline``); returns its records and how it ended.

    Returns:
        ``{"records": [...], "status": "ok" | "timeout" | "killed (rc=...)" | "error ...", "wall_s"}``.
        Records emitted before a timeout or a crash are kept, so a ladder of sizes keeps its completed points.
    """
    t0 = time.perf_counter()
    if inline:
        out, status = _run_inline(job)
        return {"records": _records(out), "status": status, "wall_s": time.perf_counter() - t0}
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        status = "ok" if proc.returncode == 0 else f"killed (rc={proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        status = "timeout"
    if status != "ok":
        tail = err.strip().splitlines()[-3:]
        status = status + (": " + " | ".join(tail) if tail else "")
    return {"records": _records(out), "status": status, "wall_s": time.perf_counter() - t0}


def main(argv=None) -> None:
    """Worker entry point: run the one job given as JSON, printing its records."""
    parser = argparse.ArgumentParser(description="Run one efficiency-benchmark job (started by run_job).")
    parser.add_argument("job", help="the job as JSON")
    job = json.loads(parser.parse_args(argv).job)
    torch.set_num_threads(job["threads"])
    if job["device"] == "cpu" and job.get("mem_cap_gb"):
        limit_address_space(job["mem_cap_gb"])
    JOBS[job["kind"]](job)


if __name__ == "__main__":
    main()
