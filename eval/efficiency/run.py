"""Efficiency benchmark: LaCT against full and sliding-window attention, from the op to the models.

Sections (``--sections``, all by default):

- ``op``: the chunked op's GFLOP/s against this machine's SGEMM rate, fp32 and bf16 autocast, and the
  reference loop against the chunked path (``eval/bench_lact_op.py``'s functions).
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
version and CPU model are recorded. Speed is measured here, never asserted.

Usage::

    python eval/efficiency/run.py                      # full run (about 25 minutes on 2 CPU cores)
    python eval/efficiency/run.py --quick              # small sizes, a few minutes
    python eval/efficiency/run.py --smoke              # tiny sizes, seconds (the smoke test)
    python eval/efficiency/run.py --device cuda        # bf16 autocast, CUDA events, torch.cuda peak memory
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import torch  # noqa: E402
from bench_lact_op import bench_config, bench_reference, gemm_rate, make_inputs, op_flops  # noqa: E402
from flops import counted_flops, mixer_flops, visible_keys  # noqa: E402
from harness import RESULTS, SIZES, fit_exponent, machine_info, run_job  # noqa: E402
from report import write_report  # noqa: E402

SECTIONS = ("op", "layer", "model", "stream", "flops")
MIXERS = ("lact", "sliding_window", "attention")
STREAM_FEATURES = dict(sampling_rate=16000, hop_length=160, n_fft=400)  # LaCTFeatureExtractor's defaults


def _job(args, size, **job):
    return {
        "device": args.device,
        "threads": args.threads,
        "preset": size["preset"],
        "repeats": size["repeats"],
        "budget_s": size["budget_s"],
        "point_cap_s": size["point_cap_s"],
        "mem_cap_gb": args.mem_cap_gb or size["mem_cap_gb"],
        **job,
    }


def _op_cuda(size, repeats):
    """The op section on a GPU: CUDA-event timing of ``lact_swiglu`` under bf16 autocast and fp32."""
    from modeling_lact_audio.kernels import FastWeightState, lact_swiglu

    def gemm(dtype):
        n = size["op"]["gemm_n"] * 4
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        return 2 * n**3 / harness.measure(lambda: a @ b, "cuda", repeats + 2)["median_s"] / 1e9

    sgemm, bf16 = gemm(torch.float32), gemm(torch.bfloat16)
    records = []
    for T, H, D, chunk in size["op"]["configs"]:
        q, k, v, lr, w0, w1, w2 = (t.cuda() for t in make_inputs(T, H, D, D))
        for dt in ("fp32", "bf16"):

            def run(q=q, k=k, v=v, lr=lr, ws=(w0, w1, w2), chunk=chunk, bf16=dt == "bf16"):
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    lact_swiglu(q, k, v, lr, FastWeightState.from_weights(*ws), chunk_size=chunk)

            t = harness.measure(run, "cuda", repeats)
            flops = op_flops(T, H, D, D, chunk, 5)
            records.append(
                {"T": T, "H": H, "D": D, "Dh": D, "chunk": chunk, "muon_steps": 5, "mode": "fwd", "dtype": dt, **t}
                | {"gflops": flops / t["median_s"] / 1e9}
            )
    return sgemm, bf16, records, None


def section_op(args, size):
    repeats = size["repeats"]
    if args.device == "cuda":
        sgemm, bf16, records, reference = _op_cuda(size, repeats)
    else:
        n = size["op"]["gemm_n"]
        sgemm, bf16 = gemm_rate(n, torch.float32, repeats + 2), gemm_rate(n, torch.bfloat16, repeats + 2)
        records = [
            bench_config(T, H, D, D, chunk, 5, "fwd", dt, repeats)
            for T, H, D, chunk in size["op"]["configs"]
            for dt in ("fp32", "bf16")
        ]
        T, H, D, chunk = size["op"]["reference"]
        reference = bench_reference(T, H, D, chunk, 1)
    fp32 = {(r["T"], r["H"], r["D"], r["chunk"]): r for r in records if r["dtype"] == "fp32"}
    for r in records:
        r.setdefault("n", repeats)  # bench_lact_op.bench_config: median of ``repeats`` runs after one warm-up
        r["fraction_of_sgemm"] = r["gflops"] / sgemm
        r["loadavg"] = list(os.getloadavg())
        if r["dtype"] == "bf16":
            r["speedup_vs_fp32"] = fp32[(r["T"], r["H"], r["D"], r["chunk"])]["median_s"] / r["median_s"]
    return {"sgemm_gflops": sgemm, "bf16_gemm_gflops": bf16, "records": records, "reference_vs_chunked": reference}


def section_layer(args, size):
    records, jobs = [], {}
    for mixer in MIXERS:
        job = _job(args, size, kind="layer", mixer=mixer, Ts=list(size["layer_T"]), modes=["fwd", "fwd_bwd"])
        res = run_job(job, size["job_timeout_s"], args.inline)
        jobs[mixer] = {"status": res["status"], "wall_s": res["wall_s"]}
        records += res["records"]
        for mode in ("fwd", "fwd_bwd"):
            done = {r["T"] for r in res["records"] if r["mode"] == mode}
            missing = [T for T in size["layer_T"] if T not in done]
            if missing:  # the worker died or timed out before reaching these sizes
                records.append(
                    {"section": "layer", "mixer": mixer, "mode": mode, "T": missing[0], "stopped": res["status"]}
                )
    fits = {}
    for mixer in sorted({r["mixer"] for r in records}):
        for mode in ("fwd", "fwd_bwd"):
            pts = sorted(
                (r["T"], r["median_s"])
                for r in records
                if r["mixer"] == mixer and r["mode"] == mode and "median_s" in r
            )
            big = [(T, t) for T, t in pts if T >= 8192]
            fits[f"{mixer}/{mode}"] = {
                "all": fit_exponent(*zip(*pts)) if len(pts) >= 2 else None,
                "8k_64k": fit_exponent(*zip(*big)) if len(big) >= 2 else None,
                "T_range_8k_64k": [big[0][0], big[-1][0]] if len(big) >= 2 else None,
            }
    return {"records": records, "exponents": fits, "jobs": jobs}


def section_model(args, size):
    out = {"records": [], "decode": [], "jobs": {}}
    for model in ("lact", "baseline"):
        job = _job(args, size, kind="model", model=model, Ts=list(size["train_T"]), modes=["infer", "train"])
        job["point_cap_s"] = size.get("model_point_cap_s", size["point_cap_s"])
        res = run_job(job, size["job_timeout_s"], args.inline)
        out["records"] += res["records"]
        out["jobs"][f"model/{model}"] = {"status": res["status"], "wall_s": res["wall_s"]}
        for mode in ("infer", "train"):
            done = {r["T"] for r in res["records"] if r["mode"] == mode}
            missing = [T for T in size["train_T"] if T not in done]
            if missing:  # the worker died or timed out before reaching these sizes
                out["records"].append(
                    {"section": "model", "model": model, "mode": mode, "T": missing[0], "stopped": res["status"]}
                )
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
    job = _job(
        args, size, kind="stream", chunk_ms=list(size["stream_ms"]), seconds=size["stream_seconds"], **STREAM_FEATURES
    )
    job["threads"] = 1
    res = run_job(job, size["job_timeout_s"], args.inline)
    return {"records": res["records"], "threads": 1, "job": {"status": res["status"], "wall_s": res["wall_s"]}}


def section_flops(args, size, layer):
    from worker import layer_config

    from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer

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
        if b16:
            worst = min(b16, key=lambda r: r["speedup_vs_fp32"])
            # The ceiling: a large bf16 GEMM's own speed-up over fp32 on this machine, measured in the same run.
            gemm = op.get("bf16_gemm_gflops", 0) / op["sgemm_gflops"] if op.get("sgemm_gflops") else None
            ceiling = "" if gemm is None else f"; the machine's bf16 GEMM itself is {gemm:.2f}x its fp32 GEMM"
            bars.append(
                {
                    "bar": "op fwd bf16 autocast vs fp32, chunk >= 512, head dim >= 256 (worst config)",
                    "target": ">= 3x",
                    "measured": f"{worst['speedup_vs_fp32']:.2f}x (D={worst['D']}, chunk={worst['chunk']}){ceiling}",
                    "pass": worst["speedup_vs_fp32"] >= 3,
                }
            )
    return bars


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes (seconds; the smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
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

    results = {"mode": name, "machine": machine_info(args.device), "sizes": dict(size), "timing_s": {}}
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        results.setdefault("resumed", []).append({"sections": args.sections, "machine": machine_info(args.device)})
    results["notes"] = results.get("notes", []) + args.note
    for section in ("op", "layer", "model", "stream", "flops"):
        if section not in args.sections:
            continue
        t0 = time.perf_counter()
        print(f"[efficiency] {section} ... (load {os.getloadavg()[0]:.1f})", flush=True)
        if section == "flops":
            results["flops"] = section_flops(args, size, results.get("layer"))
        else:
            results[section] = globals()[f"section_{section}"](args, size)
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


if __name__ == "__main__":
    main()
