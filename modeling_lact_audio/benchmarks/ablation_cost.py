"""What the ablation study's fast-weight options cost, and that they are right, on one device.

    python -m modeling_lact_audio.benchmarks.ablation_cost --device cuda --output eval/results/ablations/cost_gpu
    python -m modeling_lact_audio.benchmarks.ablation_cost --device cpu --quick --output /tmp/cost   # tiny shapes

Two parts, one JSON (``ablation_cost.json``) and a Markdown table (``ABLATION_COST.md``):

- **checks**: every update rule (``RULES``) with fixed and variable chunk boundaries (``chunk_ends``), in
  every order, through ``lact_swiglu(backend="auto")`` against ``lact_swiglu_reference`` on the same
  device (outputs and the gradients of ``q, k, v, lr`` and the initial weights), float64 (in float32,
  Newton-Schulz and Adam's division amplify rounding to ~1e-2, which would hide a real error), small
  shapes; the largest absolute difference relative to the reference's largest magnitude per tensor.
- **cost**: forward+backward of the op (``B=1``; bf16 autocast on CUDA, float32 elsewhere) for every
  sequence length x chunk size x rule x boundary kind: median seconds (CUDA events / perf_counter),
  tokens per second and the peak memory torch allocated (CUDA only). Variable boundaries are
  pause-like: segments of uniformly random length in ``[chunk/2, chunk]`` (so about 1.3x as many chunks
  as fixed boundaries at the same ``chunk_size``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..kernels import FastWeightState, lact_swiglu, lact_swiglu_reference
from .measure import machine_info, release_memory
from .op import make_inputs
from .op_gpu import error_text, time_call

# name -> op options; momentum rules also get per-token momentum in [0.5, 0.9).
RULES = {
    "muon5": {"update_rule": "sgd", "muon_steps": 5},
    "muon1": {"update_rule": "sgd", "muon_steps": 1},
    "sgd": {"update_rule": "sgd", "muon_steps": 0},
    "sgd_momentum": {"update_rule": "sgd", "muon_steps": 0, "momentum": True},
    "adam": {"update_rule": "adam", "muon_steps": 0},
}
ORDERS = ("apply_update", "update_apply", "bidirectional")
BOUNDARIES = ("fixed", "variable")


def pause_like_ends(B: int, T: int, chunk: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """``[B, T]`` bool: True at the last frame of segments of uniformly random length in ``[chunk//2, chunk]``."""
    g = torch.Generator().manual_seed(seed)
    ends = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        t = -1
        while True:
            t += int(torch.randint(max(chunk // 2, 1), chunk + 1, (1,), generator=g))
            if t >= T:
                break
            ends[b, t] = True
    return ends.to(device)


def op_call(inputs: list, rule: str, order: str, chunk: int, chunk_ends, reference: bool = False):
    """One op call on ``make_inputs`` tensors -> output ``o [1, T, H, D]``."""
    q, k, v, lr, w0, w1, w2 = inputs
    options = dict(RULES[rule])
    momentum = None
    if options.pop("momentum", False):
        momentum = 0.5 + 0.4 * torch.sigmoid(q[..., 0].detach())  # [1, T, H], a fixed function of the input
    state = FastWeightState.from_weights(w0, w1, w2)
    kwargs = dict(chunk_size=chunk, order=order, momentum=momentum, chunk_ends=chunk_ends, **options)
    if reference:
        o, _ = lact_swiglu_reference(q, k, v, lr, state, **kwargs)
    else:
        o, _ = lact_swiglu(q, k, v, lr, state, backend="auto", **kwargs)
    return o


def relative_errors(fast: list, ref: list, names: list) -> dict:
    """``{name: max|fast - ref| / max|ref|}`` per tensor."""
    out = {}
    for name, a, b in zip(names, fast, ref):
        scale = float(b.abs().max()) or 1.0
        out[name] = float((a.float() - b.float()).abs().max()) / scale
    return out


def check_options(device: str, T: int = 150, H: int = 2, D: int = 16, chunk: int = 32) -> list[dict]:
    """Fast op against the reference, float64, for every rule x boundary kind x order (forward and gradients)."""
    names = ["o", "dq", "dk", "dv", "dlr", "dw0", "dw1", "dw2"]
    rows = []
    for rule in RULES:
        for boundaries in BOUNDARIES:
            for order in ORDERS:
                torch.manual_seed(0)
                base = [t.double() for t in make_inputs(T, H, D, D, device=device)]
                ends = pause_like_ends(1, T, chunk, device=device) if boundaries == "variable" else None
                results = []
                try:
                    for reference in (False, True):
                        inputs = [t.clone().requires_grad_(True) for t in base]
                        o = op_call(inputs, rule, order, chunk, ends, reference=reference)
                        o.float().square().mean().backward()
                        results.append([o.detach()] + [t.grad for t in inputs])
                    errors = relative_errors(results[0], results[1], names)
                    rows.append({"rule": rule, "boundaries": boundaries, "order": order, "max_rel_error": errors})
                except Exception as err:  # recorded: one failing option must not hide the others
                    rows.append({"rule": rule, "boundaries": boundaries, "order": order, "error": error_text(err)})
    return rows


def _train_step(inputs, rule, order, chunk, ends, device, bf16) -> None:
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        o = op_call(inputs, rule, order, chunk, ends)
    o.float().square().mean().backward()


def cost_points(
    device: str, lengths: list[int], chunks: list[int], H: int, D: int, budget_s: float, order: str = "update_apply"
) -> list[dict]:
    """Forward+backward time and peak memory of the op for every length x chunk x rule x boundary kind."""
    use_bf16 = device == "cuda"
    rows = []
    for T in lengths:
        for chunk in chunks:
            for rule in RULES:
                for boundaries in BOUNDARIES:
                    row = {"T": T, "chunk": chunk, "rule": rule, "boundaries": boundaries, "order": order}
                    try:
                        torch.manual_seed(0)
                        inputs = make_inputs(T, H, D, D, requires_grad=True, device=device)
                        ends = pause_like_ends(1, T, chunk, device=device) if boundaries == "variable" else None

                        timing = time_call(
                            lambda i=inputs, r=rule, c=chunk, e=ends: _train_step(i, r, order, c, e, device, use_bf16),
                            device,
                            budget_s,
                        )
                        row.update(timing, tokens_per_s=T / timing["median_s"])
                    except Exception as err:
                        row["error"] = error_text(err)
                    rows.append(row)
                    release_memory(device)
    return rows


def markdown(result: dict) -> str:
    """The checks and the cost table as Markdown."""
    where = result["machine"].get("gpu") or result["machine"].get("cpu") or result["device"]
    lines = [f"# Ablation options: checks and cost on {where}", ""]
    lines += ["## Fast op against the reference (largest relative difference over o and all gradients)", ""]
    lines += ["| rule | boundaries | order | max rel. error |", "|---|---|---|---|"]
    for r in result["checks"]:
        value = r.get("error") or f"{max(r['max_rel_error'].values()):.2e}"
        lines.append(f"| {r['rule']} | {r['boundaries']} | {r['order']} | {value} |")
    lines += ["", "## Forward+backward cost (B=1, H={H}, D={D}, order {order})".format(**result["shape"]), ""]
    lines += ["| T | chunk | rule | boundaries | ms | tokens/s | peak MiB |", "|---|---|---|---|---|---|---|"]
    for r in result["cost"]:
        if "error" in r:
            lines.append(f"| {r['T']} | {r['chunk']} | {r['rule']} | {r['boundaries']} | {r['error']} | | |")
            continue
        mem = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f}"
        lines.append(
            f"| {r['T']} | {r['chunk']} | {r['rule']} | {r['boundaries']} | {1e3 * r['median_s']:.1f} "
            f"| {r['tokens_per_s']:.0f} | {mem} |"
        )
    return "\n".join(lines) + "\n"


def run(device: str, quick: bool, budget_s: float) -> dict:
    """Both parts on ``device`` (``quick``: tiny shapes for a dry run) -> the result dictionary."""
    if quick:
        lengths, chunks, H, D = [256], [32, 64], 2, 16
    else:
        lengths, chunks, H, D = [16384, 65536], [512, 1024, 2048, 4096], 4, 128
    started = time.time()
    checks = check_options(device)
    cost = cost_points(device, lengths, chunks, H, D, budget_s)
    return {
        "device": device,
        "machine": machine_info(device),
        "shape": {"H": H, "D": D, "order": "update_apply", "lengths": lengths, "chunks": chunks},
        "rules": RULES,
        "checks": checks,
        "cost": cost,
        "seconds": time.time() - started,
    }


def main(argv=None) -> dict:
    """Parse the command line, run, write ``ablation_cost.json`` and ``ABLATION_COST.md``; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a dry run; CPU tests)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timed calls per cost point")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    result = run(args.device, args.quick, args.budget)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation_cost.json").write_text(json.dumps(result, indent=1))
    (out / "ABLATION_COST.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
