"""Efficiency benchmark: LaCT against full and sliding-window attention, from the op to the models.

Sections (``--sections``, all by default):

- ``op``: the chunked op's GFLOP/s against this machine's SGEMM rate, fp32 and bf16 autocast, and the
  reference loop against the chunked path (``op.py``). bf16 rows run only where bf16 is native (CUDA,
  or a CPU with AVX512-BF16/AMX): elsewhere PyTorch emulates it and they are skipped, with the reason.
- ``layer``: one ``LaCTAudioMixer`` (LaCT + window attention) against SDPA full attention and SDPA
  sliding-window attention of the same hidden size, forward and forward+backward, T = 1k..64k frames,
  each mixer in its own worker process (peak memory, out-of-memory and time caps recorded); fitted
  exponent of time against T.
- ``model``: training-step tokens/s and offline inference real-time factor of the ``small`` CTC preset,
  LaCT against ``BaselineASRTransformer``; decoding time and memory per generated token of the
  audio-token LM at growing contexts, ``LaCTCache`` against the baseline's growing KV cache.
- ``stream``: per-chunk compute latency, algorithmic latency and real-time factor of the streaming CTC
  model on ONE thread, chunks of 80/160/320/640 ms.
- ``flops``: analytic FLOPs per layer checked against ``FlopCounterMode``; achieved FLOP/s of the layer runs.

Writes ``<output-dir>/efficiency[_quick|_smoke].json``, PNG plots and ``REPORT[_quick|_smoke].md``.
Every figure is the median of repeated runs after a warm-up, with min/max; load average, threads, torch
version, CPU model and CPU features are recorded. Speed is measured here, never asserted.

Usage::

    python -m modeling_lact_audio.benchmarks            # full run (about 25 minutes on 2 CPU cores)
    python -m modeling_lact_audio.benchmarks --quick    # small sizes, a few minutes
    python -m modeling_lact_audio.benchmarks --smoke    # tiny sizes, seconds (the smoke test)
    python -m modeling_lact_audio.benchmarks --device cuda   # bf16 autocast, torch.cuda peak memory

(``python eval/efficiency/run.py`` is the same.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ..cpu_features import cpu_capability, cpu_has_native_bf16
from ..mixer_lact_audio import LaCTAudioMixer
from .flops import counted_flops, mixer_flops, visible_keys
from .jobs import layer_config, run_job
from .measure import TIMING, fit_exponent, machine_info
from .op import bench_config, bench_reference, gemm_rate
from .report import write_report

SECTIONS = ("op", "layer", "model", "stream", "flops")
MIXERS = ("lact", "sliding_window", "attention")
RESULTS = Path("eval") / "results" / "efficiency"

# Sizes per mode. ``frames`` are model frames (after the front end's subsampling: 25 per second of audio
# for the log-mel presets); decode contexts are audio-token frames. ``budget_s``: time spent measuring one
# point after its warm-up; ``point_cap_s``: a ladder stops before a size predicted to run longer.
SIZES = {
    "smoke": dict(
        preset="tiny",
        layer_T=(128, 256),
        train_T=(128, 256),
        infer_T=(128, 256),
        decode_ctx=(64, 128),
        decode_steps=8,
        prefill_piece=64,
        stream_ms=(80, 160),
        stream_seconds=1.0,
        flop_check_T=64,
        op=dict(gemm_n=256, configs=[(512, 1, 64, 128)], reference=(64, 1, 16, 16)),
        budget_s=0.2,
        point_cap_s=20.0,
        job_timeout_s=60.0,
        mem_cap_gb=4.0,
    ),
    "quick": dict(
        preset="small",
        layer_T=(1024, 2048, 4096),
        train_T=(512, 1024),
        infer_T=(512, 1024),
        decode_ctx=(256, 1024),
        decode_steps=32,
        prefill_piece=256,
        stream_ms=(80, 160, 320, 640),
        stream_seconds=5.0,
        flop_check_T=256,
        op=dict(gemm_n=1024, configs=[(2048, 1, 256, 512), (2048, 2, 128, 512)], reference=(256, 2, 64, 64)),
        budget_s=10.0,
        point_cap_s=30.0,
        job_timeout_s=240.0,
        mem_cap_gb=8.0,
    ),
    "full": dict(
        preset="small",
        layer_T=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
        train_T=(2048, 8192, 16384),
        infer_T=(2048, 8192, 16384),
        decode_ctx=(1024, 4096, 16384, 32768),
        decode_steps=64,
        prefill_piece=1024,
        stream_ms=(80, 160, 320, 640),
        stream_seconds=20.0,
        flop_check_T=512,
        op=dict(
            gemm_n=2048,
            configs=[(8192, 1, 256, 512), (8192, 1, 256, 2048), (8192, 1, 512, 512), (8192, 2, 128, 512)],
            reference=(512, 2, 64, 64),
        ),
        budget_s=20.0,
        point_cap_s=150.0,
        model_point_cap_s=200.0,
        job_timeout_s=600.0,
        mem_cap_gb=10.0,
    ),
}


def _job(args, size, **job):
    return {
        "device": args.device,
        "threads": args.threads,
        "preset": size["preset"],
        "budget_s": size["budget_s"],
        "point_cap_s": size["point_cap_s"],
        "mem_cap_gb": args.mem_cap_gb or size["mem_cap_gb"],
        **job,
    }


def bf16_skip_reason(device: str) -> str | None:
    """Why bf16 rows are not run on ``device`` (None: bf16 is native there)."""
    if device == "cuda" or cpu_has_native_bf16():
        return None
    return (
        f"CPU capability {cpu_capability()} without avx512_bf16/amx_bf16: PyTorch emulates bf16 here, orders of "
        "magnitude slower than fp32, so bf16 rows are not run"
    )


def section_op(args, size):
    """The op's forward GFLOP/s per configuration against this machine's GEMM, and the reference loop's speed."""
    device, budget = args.device, size["budget_s"]
    bf16_skipped = bf16_skip_reason(device)
    dtypes = ("fp32",) if bf16_skipped else ("fp32", "bf16")
    n = size["op"]["gemm_n"] * (4 if device == "cuda" else 1)  # a GPU needs larger products to reach its rate
    sgemm = gemm_rate(n, torch.float32, device, budget)
    bf16 = None if bf16_skipped else gemm_rate(n, torch.bfloat16, device, budget)
    records = [
        bench_config(T, H, D, D, chunk, 5, "fwd", dt, budget, device)
        for T, H, D, chunk in size["op"]["configs"]
        for dt in dtypes
    ]
    reference = None
    if device == "cpu":
        reference = bench_reference(*size["op"]["reference"], budget)
    fp32 = {(r["T"], r["H"], r["D"], r["chunk"]): r for r in records if r["dtype"] == "fp32"}
    for r in records:
        r["fraction_of_sgemm"] = r["gflops"] / sgemm
        r["loadavg"] = list(os.getloadavg())
        if r["dtype"] == "bf16":
            r["speedup_vs_fp32"] = fp32[(r["T"], r["H"], r["D"], r["chunk"])]["median_s"] / r["median_s"]
    return {
        "sgemm_gflops": sgemm,
        "bf16_gemm_gflops": bf16,
        "bf16_skipped": bf16_skipped,
        "records": records,
        "reference_vs_chunked": reference,
    }


def _unreached(res, sizes, modes, **keys) -> list:
    """One ``stopped`` record per mode whose ladder the worker left before its end (it died or timed out)."""
    out = []
    for mode in modes:
        done = {r["T"] for r in res["records"] if r["mode"] == mode}
        missing = [T for T in sizes if T not in done]
        if missing:
            out.append({**keys, "mode": mode, "T": missing[0], "stopped": res["status"]})
    return out


def section_layer(args, size):
    """Each mixer's ladder of T in its own worker, and the fitted exponent of time against T."""
    records, jobs, modes = [], {}, ("fwd", "fwd_bwd")
    for mixer in MIXERS:
        job = _job(args, size, kind="layer", mixer=mixer, Ts=list(size["layer_T"]), modes=list(modes))
        res = run_job(job, size["job_timeout_s"], args.inline)
        jobs[mixer] = {"status": res["status"], "wall_s": res["wall_s"]}
        records += res["records"] + _unreached(res, size["layer_T"], modes, section="layer", mixer=mixer)
    fits = {}
    for mixer in sorted({r["mixer"] for r in records}):
        for mode in modes:
            pts = sorted(
                (r["T"], r["median_s"])
                for r in records
                if r["mixer"] == mixer and r["mode"] == mode and "median_s" in r
            )
            big = [(T, t) for T, t in pts if T >= 8192]
            fits[f"{mixer}/{mode}"] = {
                "all": fit_exponent([T for T, _ in pts], [t for _, t in pts]),
                "8k_64k": fit_exponent([T for T, _ in big], [t for _, t in big]),
                "T_range_8k_64k": [big[0][0], big[-1][0]] if len(big) >= 2 else None,
            }
    return {"records": records, "exponents": fits, "jobs": jobs}


def section_model(args, size):
    """Training step and offline inference of the CTC models; decoding steps of the audio-token LMs."""
    out, modes = {"records": [], "decode": [], "jobs": {}}, ("infer", "train")
    for model in ("lact", "baseline"):
        job = _job(args, size, kind="model", model=model, Ts=list(size["train_T"]), modes=list(modes))
        job["point_cap_s"] = size.get("model_point_cap_s", size["point_cap_s"])
        res = run_job(job, size["job_timeout_s"], args.inline)
        out["records"] += res["records"] + _unreached(res, size["train_T"], modes, section="model", model=model)
        out["jobs"][f"model/{model}"] = {"status": res["status"], "wall_s": res["wall_s"]}
    for model in ("lact", "baseline"):
        job = _job(
            args,
            size,
            kind="decode",
            model=model,
            contexts=list(size["decode_ctx"]),
            steps=size["decode_steps"],
            prefill_piece=size["prefill_piece"],
        )
        res = run_job(job, size["job_timeout_s"], args.inline)
        out["decode"] += res["records"]
        out["jobs"][f"decode/{model}"] = {"status": res["status"], "wall_s": res["wall_s"]}
    return out


def section_stream(args, size):
    """Per-chunk latency of the streaming CTC model, on one thread."""
    job = _job(args, size, kind="stream", chunk_ms=list(size["stream_ms"]), seconds=size["stream_seconds"])
    job["threads"] = 1
    res = run_job(job, size["job_timeout_s"], args.inline)
    return {"records": res["records"], "threads": 1, "job": {"status": res["status"], "wall_s": res["wall_s"]}}


def section_flops(args, size, layer):
    """Analytic FLOPs checked against ``FlopCounterMode``, and the achieved FLOP/s of the layer runs."""
    T = size["flop_check_T"]
    checks = []
    for mixer in MIXERS:
        config = layer_config(size["preset"], mixer)
        torch.manual_seed(0)
        module = LaCTAudioMixer(config, 0)
        for mode in ("fwd", "fwd_bwd"):
            analytic, counted = mixer_flops(config, T, mode), counted_flops(module, T, mode)
            checks.append(
                {
                    "mixer": mixer,
                    "T": T,
                    "mode": mode,
                    "analytic": analytic,
                    "counted": counted,
                    "ratio": counted / analytic,
                }
            )
    achieved = []
    for r in (layer or {}).get("records", []):
        if "median_s" not in r:
            continue
        config = layer_config(size["preset"], r["mixer"])
        executed = mixer_flops(config, r["T"], r["mode"])
        useful = mixer_flops(config, r["T"], r["mode"], useful=True, keys=visible_keys(r["T"], config))
        achieved.append(
            {
                "mixer": r["mixer"],
                "T": r["T"],
                "mode": r["mode"],
                "flops_executed": executed,
                "flops_useful": useful,
                "gflops_executed": executed / r["median_s"] / 1e9,
                "gflops_useful": useful / r["median_s"] / 1e9,
            }
        )
    per_token = {}
    for mixer in MIXERS:
        config = layer_config(size["preset"], mixer)
        per_token[mixer] = {str(T): mixer_flops(config, T) / T for T in size["layer_T"]}
    return {"check": checks, "achieved": achieved, "executed_fwd_flops_per_token": per_token}


def _median(records, **match):
    for r in records:
        if all(r.get(k) == v for k, v in match.items()) and "median_s" in r:
            return r
    return None


def _layer_bars(layer) -> list:
    recs = layer["records"]
    lact_name, attn_name = "lact", "attention"
    if not any(r["mixer"] == lact_name for r in recs):
        return []
    time_at = lambda mixer, T: (_median(recs, mixer=mixer, mode="fwd_bwd", T=T) or {}).get("median_s")
    ratio, measured = None, "not measured at 32k"
    if time_at(lact_name, 32768) and time_at(attn_name, 32768):
        ratio = time_at(attn_name, 32768) / time_at(lact_name, 32768)
        measured = f"{ratio:.2f}x at 32k"
    else:
        common = [T for T in sorted({r["T"] for r in recs}) if time_at(lact_name, T) and time_at(attn_name, T)]
        if common:
            Tc = common[-1]
            measured += f"; largest T both ran: {Tc}, ratio {time_at(attn_name, Tc) / time_at(lact_name, Tc):.2f}x"
        stops = [
            r for r in recs if r["mixer"] in (lact_name, attn_name) and r["mode"] == "fwd_bwd" and r.get("stopped")
        ]
        measured += "".join(f"; {r['mixer']} stopped at {r['T']}: {str(r['stopped'])[:60]}" for r in stops)
    bars = [
        {
            "bar": "LaCT mixer fwd+bwd at 32k vs full attention",
            "target": ">= 4x faster",
            "measured": measured,
            "pass": None if ratio is None else ratio >= 4,
        }
    ]
    e = layer["exponents"].get(f"{lact_name}/fwd_bwd", {})
    rng = e.get("T_range_8k_64k")
    bars.append(
        {
            "bar": "LaCT mixer fwd+bwd time exponent, 8k..64k",
            "target": "<= 1.1",
            "measured": "not measured (fewer than 2 points >= 8k)"
            if e.get("8k_64k") is None
            else f"{e['8k_64k']:.2f} (T {rng[0]}..{rng[1]})",
            "pass": None if e.get("8k_64k") is None else e["8k_64k"] <= 1.1 and rng[1] >= 65536,
        }
    )
    return bars


def evaluate_bars(results) -> list:
    """The issue's bars, measured in this run: ``{"bar", "target", "measured", "pass"}`` (pass None: not measured)."""
    bars = []
    layer = results.get("layer")
    if layer:
        bars += _layer_bars(layer)
    model = results.get("model")
    if model:
        dec = [r for r in model["decode"] if r.get("model") == "lact" and "median_s" in r]
        if len(dec) >= 2:
            lo, hi = min(dec, key=lambda r: r["context"]), max(dec, key=lambda r: r["context"])
            ratio = hi["mean_s"] / lo["mean_s"]
            bars.append(
                {
                    "bar": f"LaCT decode time per token, context {hi['context']} vs {lo['context']} (step mean)",
                    "target": "<= 1.2x",
                    "measured": f"{ratio:.2f}x (median {hi['median_s'] / lo['median_s']:.2f}x)",
                    "pass": ratio <= 1.2 if hi["context"] >= 32768 else None,
                }
            )
    stream = results.get("stream")
    if stream:
        r = next((r for r in stream["records"] if r.get("chunk_ms") == 160 and "median_s" in r), None)
        bars.append(
            {
                "bar": "streaming CTC, 160 ms chunk compute, 1 thread",
                "target": "< 20 ms",
                "measured": "not measured"
                if r is None
                else f"{1e3 * r['median_s']:.1f} ms (p90 {1e3 * r['p90_s']:.1f})",
                "pass": None if r is None else r["median_s"] < 0.020,
            }
        )
    op = results.get("op")
    if op:
        big = [r for r in op["records"] if r["chunk"] >= 512 and r["D"] >= 256]
        f32 = [r for r in big if r["dtype"] == "fp32"]
        b16 = [r for r in big if r["dtype"] == "bf16"]
        if f32:
            worst = min(f32, key=lambda r: r["fraction_of_sgemm"])
            bars.append(
                {
                    "bar": "op fwd fp32, chunk >= 512, head dim >= 256: fraction of SGEMM (worst config)",
                    "target": ">= 90%",
                    "measured": f"{100 * worst['fraction_of_sgemm']:.0f}% (D={worst['D']}, chunk={worst['chunk']})",
                    "pass": worst["fraction_of_sgemm"] >= 0.9,
                }
            )
        bf16_bar = "op fwd bf16 autocast vs fp32, chunk >= 512, head dim >= 256 (worst config)"
        if op.get("bf16_skipped"):
            bars.append({"bar": bf16_bar, "target": ">= 3x", "measured": "skipped: no native bf16", "pass": None})
        elif b16:
            worst = min(b16, key=lambda r: r["speedup_vs_fp32"])
            # The ceiling: a large bf16 GEMM's own speed-up over fp32 on this machine, measured in the same run.
            gemm = (op.get("bf16_gemm_gflops") or 0) / op["sgemm_gflops"] if op.get("sgemm_gflops") else None
            ceiling = "" if gemm is None else f"; the machine's bf16 GEMM itself is {gemm:.2f}x its fp32 GEMM"
            bars.append(
                {
                    "bar": bf16_bar,
                    "target": ">= 3x",
                    "measured": f"{worst['speedup_vs_fp32']:.2f}x (D={worst['D']}, chunk={worst['chunk']}){ceiling}",
                    "pass": worst["speedup_vs_fp32"] >= 3,
                }
            )
    return bars


def main(argv=None) -> dict:
    """Run the chosen sections, write the JSON, the report and the plots; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes (seconds; the smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="default: %(default)s (working directory)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--mem-cap-gb", type=float, default=None, help="address-space cap of each CPU worker")
    parser.add_argument(
        "--inline", action="store_true", help="run the workers in this process (default with --smoke: no start-up cost)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="start from an earlier run's JSON: run only --sections, keep the others, rewrite JSON and report",
    )
    parser.add_argument("--note", action="append", default=[], help="a remark to record in the JSON and report")
    parser.add_argument("--point-cap-s", type=float, default=None, help="skip a size predicted to run longer")
    args = parser.parse_args(argv)
    args.inline = args.inline or args.smoke
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = dict(SIZES[name])
    if args.point_cap_s:
        size["point_cap_s"] = args.point_cap_s
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = "efficiency" if name == "full" else f"efficiency_{name}"

    results = {
        "mode": name,
        "machine": machine_info(args.device),
        "sizes": dict(size),
        "timing": TIMING,
        "timing_s": {},
    }
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        resumed = {"sections": args.sections, "machine": machine_info(args.device), "timing": TIMING}
        results.setdefault("resumed", []).append(resumed)
    results["notes"] = results.get("notes", []) + args.note
    run_section = {
        "op": section_op,
        "layer": section_layer,
        "model": section_model,
        "stream": section_stream,
        "flops": lambda args, size: section_flops(args, size, results.get("layer")),
    }
    for section in SECTIONS:
        if section not in args.sections:
            continue
        t0 = time.perf_counter()
        print(f"[efficiency] {section} ... (load {os.getloadavg()[0]:.1f})", flush=True)
        results[section] = run_section[section](args, size)
        results["timing_s"][section] = time.perf_counter() - t0
        results["bars"] = evaluate_bars(results)
        (args.output_dir / f"{stem}.json").write_text(json.dumps(results, indent=2))
        print(f"[efficiency] {section} done in {results['timing_s'][section]:.0f} s", flush=True)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["bars"] = evaluate_bars(results)
    path = args.output_dir / f"{stem}.json"
    path.write_text(json.dumps(results, indent=2))
    report = write_report(results, args.output_dir, stem)
    print(f"wrote {path} and {report}")
    return results
