"""Markdown report and PNG plots generated from the efficiency JSON (``suite.main`` calls ``write_report``).

``python eval/efficiency/report.py eval/results/efficiency/efficiency.json`` regenerates the report and
plots next to an existing JSON, also one written before a field was added (every newer field is optional).
"""

from __future__ import annotations

from pathlib import Path

GiB = 1024**3


def _ms(s):
    return "" if s is None else f"{1e3 * s:.1f}"


def _spread(r):
    if "median_s" not in r:
        return f"stopped: {r.get('stopped', '?')}"
    n = r.get("n", 1)
    tag = " (warm-up only)" if r.get("warmup_only") else ""
    return f"{_ms(r['median_s'])} [{_ms(r['min_s'])}, {_ms(r['max_s'])}] n={n}{tag}"


def _mem(b):
    return "" if b is None else f"{b / GiB:.2f}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(mixer: str) -> dict:
    color = {"lact": "C0", "sliding_window": "C1", "attention": "C2"}.get(mixer, "C3")
    return {"color": color, "marker": "o", "linestyle": "-"}


def _finish(ax, xlabel: str, ylabel: str, title: str, ylog: bool = True) -> None:
    """Axes over doubling sizes: log2 x, log y (unless ``ylog`` is False), grid and legend."""
    ax.set_xscale("log", base=2)
    if ylog:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def plot_layer(layer, path):
    """Time of each mixer against T (forward, forward+backward) and its forward+backward peak memory."""
    fig, axes = _plt().subplots(1, 3, figsize=(15, 4.2))
    mixers = sorted({r["mixer"] for r in layer["records"]})

    def series(mixer, mode, value):
        rows = [r for r in layer["records"] if r["mixer"] == mixer and r["mode"] == mode]
        return sorted((r["T"], value(r)) for r in rows if value(r) is not None)

    for ax, mode in zip(axes[:2], ("fwd", "fwd_bwd")):
        for mixer in mixers:
            pts = series(mixer, mode, lambda r: r.get("median_s"))
            if pts:
                ax.plot(*zip(*pts), label=mixer, **_style(mixer))
            stop = [r for r in layer["records"] if r["mixer"] == mixer and r["mode"] == mode and "median_s" not in r]
            if stop and pts:
                ax.annotate(f"stop@{min(r['T'] for r in stop) // 1024}k", pts[-1], fontsize=7)
        _finish(ax, "T (frames)", "seconds", f"one mixer, {mode}")
    for mixer in mixers:
        pts = series(mixer, "fwd_bwd", lambda r: None if r.get("peak_mem_bytes") is None else r["peak_mem_bytes"] / GiB)
        if pts:
            axes[2].plot(*zip(*pts), label=mixer, **_style(mixer))
    _finish(axes[2], "T (frames)", "peak memory above base (GiB)", "fwd+bwd peak memory")
    _save(fig, path)


def plot_decode(model, path):
    """Time per decoded token and size of the decoding state against the context, LaCT and the baseline."""
    fig, axes = _plt().subplots(1, 2, figsize=(10, 4))
    for m in ("lact", "baseline"):
        pts = sorted(
            (r["context"], r["mean_s"] * 1e3, r["cache_bytes"] / 2**20)
            for r in model["decode"]
            if r.get("model") == m and "mean_s" in r
        )
        if pts:
            c, t, mb = zip(*pts)
            axes[0].plot(c, t, marker="o", label=m)
            axes[1].plot(c, mb, marker="o", label=m)
    _finish(axes[0], "context (frames)", "ms per token (mean over the steps)", "audio-token LM decoding", ylog=False)
    _finish(axes[1], "context (frames)", "cache size (MiB)", "decoding state", ylog=False)
    _save(fig, path)


def plot_stream(stream, path):
    """Compute per chunk (median, min..p90) and algorithmic latency against the chunk length."""
    recs = [r for r in stream["records"] if "median_s" in r]
    fig, ax = _plt().subplots(figsize=(6, 4))
    if recs:
        x = [r["chunk_ms"] for r in recs]
        ax.errorbar(
            x,
            [1e3 * r["median_s"] for r in recs],
            yerr=[
                [1e3 * (r["median_s"] - r["min_s"]) for r in recs],
                [1e3 * (r["p90_s"] - r["median_s"]) for r in recs],
            ],
            marker="o",
            capsize=3,
            label="compute per chunk (median, min..p90)",
        )
        ax.plot(x, [r["algorithmic_latency_ms"] for r in recs], marker="s", label="algorithmic latency")
    ax.axhline(20, color="k", linestyle="--", label="20 ms bar")
    _finish(ax, "chunk (ms)", "ms", "streaming CTC, 1 thread")
    _save(fig, path)


def plot_op(op, path):
    """GFLOP/s of each op configuration against the machine's GEMM rates."""
    recs = op["records"]
    fig, ax = _plt().subplots(figsize=(7, 4))
    labels = [f"D{r['D']} c{r['chunk']}\n{r['dtype']}" for r in recs]
    ax.bar(range(len(recs)), [r["gflops"] for r in recs], color=["C0" if r["dtype"] == "fp32" else "C1" for r in recs])
    ax.axhline(op["sgemm_gflops"], color="k", linestyle="--", label=f"fp32 SGEMM {op['sgemm_gflops']:.0f}")
    if op.get("bf16_gemm_gflops"):
        ax.axhline(op["bf16_gemm_gflops"], color="C1", linestyle=":", label=f"bf16 GEMM {op['bf16_gemm_gflops']:.0f}")
    ax.set_xticks(range(len(recs)), labels, fontsize=7)
    ax.set_ylabel("GFLOP/s")
    ax.set_title("lact_swiglu forward")
    ax.legend(fontsize=8)
    _save(fig, path)


def _jobs(jobs) -> list:
    """Report lines saying how each worker job ended and how long it ran."""
    return ["", "Worker jobs: " + ", ".join(f"{k}: {v['status'][:80]} ({v['wall_s']:.0f} s)" for k, v in jobs.items())]


def _plot(plots, key) -> list:
    return ["", f"![{key}]({plots[key]})"] if key in plots else []


def _cpu_features(m) -> str:
    features = m.get("cpu_features")
    if not features:
        return ""
    native = "native bf16" if features["native_bf16"] else "no native bf16 (bf16 is emulated)"
    return f"- CPU capability {features['capability']}, {native}"


def render(results, plots) -> str:
    """The Markdown report of ``results`` (the suite's JSON); ``plots`` maps a section to its PNG's file name."""
    m = results["machine"]
    lines = [
        f"# Efficiency: LaCT against full and sliding-window attention ({results['mode']} run)",
        "",
        "Generated from the JSON by `eval/efficiency/report.py`; do not edit by hand.",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"- torch {m['torch']}, transformers {m.get('transformers', '?')}, python {m['python']}, "
        f"allocator {m.get('allocator', 'glibc malloc')}"
        + "".join(
            f"; section re-run: {', '.join(r['sections'])} ({r['machine'].get('allocator', 'glibc malloc')})"
            for r in results.get("resumed", [])
        ),
        *([_cpu_features(m)] if _cpu_features(m) else []),
        f"- load average at start {m['loadavg'][0]:.2f}, at end {m.get('loadavg_end', [float('nan')])[0]:.2f} "
        "(the cores are shared: every record carries the load average it ran under)",
        f"- preset `{results['sizes']['preset']}`; times are medians [min, max] over n "
        + (
            f"samples after a warm-up, in ms ({results['timing']})"
            if "timing" in results
            else "runs after a warm-up, in ms"
        ),
        "",
        "## Bars",
        "",
        "| bar | target | measured | pass |",
        "|---|---|---|---|",
    ]
    for b in results.get("bars", []):
        p = "n/a" if b["pass"] is None else ("yes" if b["pass"] else "**no**")
        lines.append(f"| {b['bar']} | {b['target']} | {b['measured']} | {p} |")
    op = results.get("op")
    if op:
        bf16_gemm = op.get("bf16_gemm_gflops")
        lines += [
            "",
            "## Op (`lact_swiglu`, chunked)",
            "",
            f"fp32 SGEMM {op['sgemm_gflops']:.0f} GFLOP/s"
            + ("" if bf16_gemm is None else f", bf16 GEMM {bf16_gemm:.0f} GFLOP/s")
            + "."
            + ("" if not op.get("bf16_skipped") else f" bf16 rows skipped: {op['bf16_skipped']}."),
            "",
            "| T | H | D=Dh | chunk | dtype | ms | GFLOP/s | % SGEMM | bf16 speed-up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in op["records"]:
            sp = f"{r['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in r else ""
            lines.append(
                f"| {r['T']} | {r['H']} | {r['D']} | {r['chunk']} | {r['dtype']} | {_spread(r)} | {r['gflops']:.1f} | "
                f"{100 * r['fraction_of_sgemm']:.0f}% | {sp} |"
            )
        ref = op.get("reference_vs_chunked")
        if ref:
            lines += [
                "",
                f"Reference loop vs chunked (T={ref['T']}, H={ref['H']}, D={ref['D']}, chunk={ref['chunk']}): "
                f"{_ms(ref['reference_s'])} ms vs {_ms(ref['chunked_s'])} ms, **{ref['speedup']:.0f}x** faster.",
            ]
        lines += _plot(plots, "op")
    layer = results.get("layer")
    if layer:
        lines += [
            "",
            "## Layer: one mixer, hidden size "
            + str(next((r["hidden"] for r in layer["records"] if "hidden" in r), "?"))
            + ", batch 1",
            "",
            "`lact` = LaCT fast weights + its window attention (shared qkv); `sliding_window` / `attention` = SDPA "
            "only. Window mixers run attention in query blocks of `lact_chunk_size` frames (each block sees its "
            "chunk plus the window); full attention without padding runs SDPA without a mask. "
            "Peak memory is above the inputs (GiB). Sizes are skipped after an out-of-memory point or when "
            "the extrapolated single-run time exceeds the cap.",
            "",
            "| mixer | mode | T | ms | tokens/s | peak GiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(layer["records"], key=lambda r: (r["mixer"], r["mode"], r["T"])):
            tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else ""
            lines.append(
                f"| {r['mixer']} | {r['mode']} | {r['T']} | {_spread(r)} | {tps} | {_mem(r.get('peak_mem_bytes'))} |"
            )
        lines += [
            "",
            "Fitted exponent of time against T (log-log least squares):",
            "",
            "| mixer/mode | all T | 8k..64k |",
            "|---|---|---|",
        ]
        for k, e in layer["exponents"].items():
            f = lambda x: "" if x is None else f"{x:.2f}"
            lines.append(f"| {k} | {f(e['all'])} | {f(e['8k_64k'])} |")
        lines += _jobs(layer["jobs"])
        lines += _plot(plots, "layer")
    model = results.get("model")
    if model:
        lines += [
            "",
            f"## Model: `{results['sizes']['preset']}` CTC preset, LaCT vs `BaselineASRTransformer` "
            "(full attention, matched parameters)",
            "",
            "| model | mode | frames | audio s | ms | tokens/s | RTF | peak GiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(model["records"], key=lambda r: (r["model"], r["mode"], r["T"])):
            tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else ""
            rtf = f"{r['rtf']:.3f}" if "rtf" in r else ""
            if "median_s" not in r and "audio_s" not in r:
                lines.append(f"| {r['model']} | {r['mode']} | {r['T']} | | stopped: {str(r.get('stopped'))[:80]} ||||")
                continue
            lines.append(
                f"| {r['model']} | {r['mode']} | {r['T']} | {r.get('audio_s', 0):.0f} | {_spread(r)} | {tps} | {rtf} | "
                f"{_mem(r.get('peak_mem_bytes'))} |"
            )
        lines += [
            "",
            f"### Decoding (audio-token LM, `{results['sizes']['preset']}`): one step = one frame of all codebooks",
            "",
            "| model | context | ms/token median | mean | p90 | max | cache MiB | cache growth B/token "
            "| peak MiB during steps |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(model["decode"], key=lambda r: (r["model"], r["context"])):
            if "median_s" not in r:
                lines.append(f"| {r['model']} | {r['context']} | stopped: {r.get('stopped')} |||||||")
                continue
            lines.append(
                f"| {r['model']} | {r['context']} | {_ms(r['median_s'])} | {_ms(r['mean_s'])} | {_ms(r['p90_s'])} | "
                f"{_ms(r['max_s'])} | {r['cache_bytes'] / 2**20:.2f} | {r['cache_growth_bytes_per_token']:.0f} | "
                f"{(r['peak_mem_bytes'] or 0) / 2**20:.1f} |"
            )
        lines += _jobs(model["jobs"])
        lines += _plot(plots, "decode")
    stream = results.get("stream")
    if stream:
        lines += [
            "",
            f"## Streaming CTC (`{results['sizes']['preset']}`, one thread)",
            "",
            "Algorithmic latency = chunk + STFT look-ahead (n_fft - hop). Compute is per chunk call through "
            "`LaCTCache` (`update_apply`: every call updates the fast weights with its frames).",
            "",
            "| chunk ms | model frames | compute ms median | p90 | max | chunks | RTF | algorithmic ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in stream["records"]:
            if "median_s" not in r:
                lines.append(f"| {r['chunk_ms']} | stopped: {r.get('stopped')} |||||||")
                continue
            lines.append(
                f"| {r['chunk_ms']} | {r['model_frames_per_chunk']} | {_ms(r['median_s'])} | {_ms(r['p90_s'])} | "
                f"{_ms(r['max_s'])} | {r['chunks']} | {r['rtf']:.3f} | {r['algorithmic_latency_ms']:.0f} |"
            )
        lines += _plot(plots, "stream")
    flops = results.get("flops")
    if flops:
        lines += [
            "",
            "## FLOPs",
            "",
            "Analytic count (`modeling_lact_audio/benchmarks/flops.py`) against `FlopCounterMode`:",
            "",
            "| mixer | T | mode | analytic GFLOP | counted GFLOP | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for c in flops["check"]:
            lines.append(
                f"| {c['mixer']} | {c['T']} | {c['mode']} | {c['analytic'] / 1e9:.3f} | {c['counted'] / 1e9:.3f} "
                f"| {c['ratio']:.3f} |"
            )
        lines += [
            "",
            "Executed forward MFLOP per frame (window mixers: about chunk + window keys a query; full attention: T):",
            "",
            "| mixer | " + " | ".join(flops["executed_fwd_flops_per_token"]["lact"]) + " |",
            "|---|" + "---|" * len(flops["executed_fwd_flops_per_token"]["lact"]),
        ]
        for mixer, per in flops["executed_fwd_flops_per_token"].items():
            lines.append(f"| {mixer} | " + " | ".join(f"{v / 1e6:.2f}" for v in per.values()) + " |")
        if flops["achieved"]:
            lines += [
                "",
                "Achieved GFLOP/s of the layer runs (executed = what the code computes; useful = visible keys only):",
                "",
                "| mixer | mode | T | executed GFLOP/s | useful GFLOP/s |",
                "|---|---|---|---|---|",
            ]
            for a in sorted(flops["achieved"], key=lambda a: (a["mixer"], a["mode"], a["T"])):
                lines.append(
                    f"| {a['mixer']} | {a['mode']} | {a['T']} | {a['gflops_executed']:.1f} | {a['gflops_useful']:.1f} |"
                )
    notes = results.get("notes")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(results, out_dir: Path, stem: str) -> Path:
    """Write the PNG plots ``<stem>_<section>.png`` and ``REPORT[_quick|_smoke].md`` for ``results``.

    ``stem`` is the JSON's name without suffix (``efficiency``, ``efficiency_quick``, ...). Returns the report's path.
    """
    out_dir = Path(out_dir)
    suffix = stem[len("efficiency") :]
    plots = {}
    for key, fn, section in (
        ("op", plot_op, "op"),
        ("layer", plot_layer, "layer"),
        ("decode", plot_decode, "model"),
        ("stream", plot_stream, "stream"),
    ):
        if results.get(section):
            name = f"{stem}_{key}.png"
            fn(results[section], out_dir / name)
            plots[key] = name
    path = out_dir / f"REPORT{suffix}.md"
    path.write_text(render(results, plots) + render_companions(out_dir))
    return path


def render_companions(out_dir: Path) -> str:
    """Sections from the op's side-by-side runs saved next to the suite's JSON, when they are there:
    ``lact_op_compare*.json`` (``eval/bench_lact_op.py --compare``: ours against the official LaCT loop, one
    section per run, e.g. one per CPU kind) and ``lact_op_compile_cpu*.json`` (``benchmarks.compile_cpu``: eager
    against ``torch.compile``, one section per run)."""
    import json

    from .op_compare import markdown as compare_markdown

    lines = []
    for compare in sorted(Path(out_dir).glob("lact_op_compare*.json")):
        table = compare_markdown(json.loads(compare.read_text())).splitlines()
        lines += ["", f"## The op against the official LaCT loop (`{compare.name}`)", "", *table[2:]]
    for compiled in sorted(Path(out_dir).glob("lact_op_compile_cpu*.json")):
        record = json.loads(compiled.read_text())
        m = record["machine"]
        lines += [
            "",
            f"## `torch.compile` of the op on the CPU (`{compiled.name}`)",
            "",
            f"CPU: {m['cpu']} ({_cpu_features(m).removeprefix('- ')}), {record['threads']} thread(s); "
            "forward without autograd, Muon on, "
            "best of the repeats by process CPU time; compile = the first call's seconds.",
            "",
            "| heads x D, chunk | T | eager | compiled | speed-up | compile | max abs diff |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in record["points"]:
            lines.append(
                f"| {p['H']} x {p['D']}, chunk {p['chunk']} | {p['T']} | {p['eager_s'] * 1e3:.0f} ms | "
                f"{p['compiled_s'] * 1e3:.0f} ms | {p['speedup']:.2f}x | {p['compile_s']:.0f} s | "
                f"{p['max_abs_diff']:.1e} |"
            )
    return "\n".join(lines) + ("\n" if lines else "")
