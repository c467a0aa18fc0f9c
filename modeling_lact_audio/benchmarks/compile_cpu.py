"""Does ``torch.compile`` of the LaCT op pay on the CPU? Eager against compiled (Inductor), same inputs (issue 12).

For each ``(heads, dim, chunk)`` point: the op's forward (no autograd, Muon on, T tokens, B=1) compiled with
``torch.compile`` (the first call's seconds are the compile time), then eager and compiled timed alternately,
best of ``--repeats`` by this process's CPU time (``time.process_time``: with one thread, the time the call
computed whatever else the machine runs), and the largest output difference between the two.

    python -m modeling_lact_audio.benchmarks.compile_cpu --output eval/results/lact_op_compile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..kernels import FastWeightState, lact_swiglu
from .measure import machine_info
from .op import make_inputs

POINTS = ((4, 256, 512), (4, 128, 512))


def compare_point(H: int, D: int, chunk: int, T: int, muon_steps: int, repeats: int) -> dict:
    """Eager vs ``torch.compile`` of one op call: ``{eager_s, compiled_s, compile_s, speedup, max_abs_diff, ...}``."""
    torch.manual_seed(0)
    inputs = make_inputs(T, H, D, D)

    def op(q, k, v, lr, w0, w1, w2):
        state = FastWeightState.from_weights(w0, w1, w2)
        return lact_swiglu(q, k, v, lr, state, chunk_size=chunk, muon_steps=muon_steps, output_final_state=False)[0]

    compiled = torch.compile(op)
    with torch.no_grad():
        start = time.perf_counter()
        out_compiled = compiled(*inputs)
        compile_s = time.perf_counter() - start
        out_eager = op(*inputs)
        times = {"eager": [], "compiled": []}
        for _ in range(repeats):
            for name, fn in (("eager", op), ("compiled", compiled)):
                start = time.process_time()
                fn(*inputs)
                times[name].append(time.process_time() - start)
    eager_s, compiled_s = min(times["eager"]), min(times["compiled"])
    return {
        "H": H,
        "D": D,
        "chunk": chunk,
        "T": T,
        "muon_steps": muon_steps,
        "eager_s": eager_s,
        "compiled_s": compiled_s,
        "compile_s": compile_s,
        "speedup": eager_s / compiled_s,
        "max_abs_diff": (out_compiled - out_eager).abs().max().item(),
        "max_abs_output": out_eager.abs().max().item(),
    }


def main(argv=None) -> dict:
    """Command line; writes and returns ``{"machine", "threads", "points"}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--muon-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--point", action="append", default=None, help="HEADS:DIM:CHUNK (default: 4:256:512 and 4:128:512)"
    )
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    points = [tuple(int(x) for x in p.split(":")) for p in args.point] if args.point else POINTS
    record = {"machine": machine_info("cpu"), "threads": args.threads, "points": []}
    for H, D, chunk in points:
        record["points"].append(compare_point(H, D, chunk, args.seq_len, args.muon_steps, args.repeats))
        print(json.dumps(record["points"][-1]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
