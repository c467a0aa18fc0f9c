#!/usr/bin/env bash
# The prepared check for a lent GPU (at most about 8 minutes on an H200, no network needed):
#
#   eval/gpu_check.sh [--budget SECONDS] [--results DIR] [--compare OFFICIAL_FILE]
#   eval/gpu_check.sh --dry-run [--results DIR]    # the same steps on the CPU, tiny shapes, < 1 minute
#
# Steps, each under its own `timeout`; a failed step is recorded and the next one runs:
#   install        pip install --no-deps --no-build-isolation -e . (else a symlinked package on PYTHONPATH)
#   environment    nvidia-smi, versions, the device                           -> env.json
#   triton_tests   pytest tests/ops/test_lact_triton.py + the Triton cases of the ablation options -> pytest.log
#   ablation_options  benchmarks.ablation_cost: adam / chunk_ends against the reference, cost by chunk
#                  -> ablation_cost/{ablation_cost.json,ABLATION_COST.md}
#   bench_quick    eval/bench_lact_op.py --device cuda --quick                 -> bench_op_quick.{json,md}
#   train_step     one a40_base training step, synthetic batches (train_step_gpu) -> train_step.json
#   memory         the memory plan against max_memory_allocated (benchmarks.memory_gpu) -> memory_gpu.json
#   inference      bf16/fp16 against fp32 inference of lact_small_ctc (benchmarks.inference_gpu; speech from
#                  .gpu_carry/espeak_speech.npz when present, else synthetic audio) -> inference_gpu.json
#   bench_default  eval/bench_lact_op.py --device cuda, in the time left        -> bench_op.{json,md}
# Everything lands in DIR (default eval/results/gpu; a temporary folder with --dry-run), with
# gpu_check.json (every step's status, seconds and summary) and gpu_check.log (all output); when $OUT is
# set, those files (8 at most) are copied into it. Exit status 0 when every step passed or was skipped.
# PYTHON (default python3) is the interpreter.

set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
# a relative path stays valid in the steps that run elsewhere (cd /tmp)
[[ "$PYTHON" == */* ]] && PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
DRY_RUN=0
BUDGET=450
RESULTS=""
COMPARE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --budget) BUDGET=$2; shift ;;
        --results) RESULTS=$2; shift ;;
        --compare) COMPARE=(--compare "$2"); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$RESULTS" ]; then
    if [ "$DRY_RUN" = 1 ]; then RESULTS=$(mktemp -d)/gpu; else RESULTS=eval/results/gpu; fi
fi
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LOG="$RESULTS/gpu_check.log"
STEPS="$RESULTS/steps.tsv"
rm -f "$RESULTS"/{gpu_check.json,env.json,pytest.log,bench_op_quick.json,bench_op_quick.md,bench_op.json,bench_op.md}
rm -f "$RESULTS"/{train_step.json,memory_gpu.json,MEMORY_GPU.md,inference_gpu.json}
rm -rf "$RESULTS/ablation_cost"
: > "$LOG"
: > "$STEPS"
START=$(date +%s)

say() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# record NAME STATUS RC SECONDS NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STEPS"; say "$1: $2 (rc $3, $4 s) $5"; }

# run_step NAME TIMEOUT_S STEP_LOG COMMAND...: the command's output goes to STEP_LOG and gpu_check.log; the
# timeout is cut to what is left of the budget (a step with under 20 s left is skipped)
run_step() {
    local name=$1 limit=$2 step_log=$3
    shift 3
    local t0 rc status cap
    cap=$(($(left) - 10))
    if [ "$cap" -lt 20 ]; then
        record "$name" skipped "" 0 "budget spent (${BUDGET} s)"
        return
    fi
    [ "$limit" -gt "$cap" ] && limit=$cap
    t0=$(date +%s)
    say "$name: $* (timeout ${limit}s)"
    timeout --kill-after=15 "$limit" "$@" > "$step_log" 2>&1
    rc=$?
    cat "$step_log" >> "$LOG"
    case $rc in
        0) status=passed ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    record "$name" "$status" "$rc" "$(($(date +%s) - t0))" ""
}

left() { echo $((BUDGET - ($(date +%s) - START))); }

# --- install: the package importable as modeling_lact_audio(.kernels, .processors) without network
t0=$(date +%s)
SHIM_ROOT=$(mktemp -d)
trap 'rm -rf "$SHIM_ROOT"' EXIT
make_shim() {
    # kernels/ and processors/ install inside modeling_lact_audio (setup.py's package_dir): the same tree
    # out of symlinks, for a python3 where pip cannot install.
    mkdir -p "$SHIM_ROOT/modeling_lact_audio"
    for entry in "$REPO"/modeling_lact_audio/*; do ln -sfn "$entry" "$SHIM_ROOT/modeling_lact_audio/"; done
    ln -sfn "$REPO/kernels" "$SHIM_ROOT/modeling_lact_audio/kernels"
    ln -sfn "$REPO/processors" "$SHIM_ROOT/modeling_lact_audio/processors"
}
IMPORT_CHECK="import importlib.util, modeling_lact_audio.kernels as k, modeling_lact_audio.processors
assert importlib.util.find_spec('modeling_lact_audio.kernels.triton'), 'no modeling_lact_audio.kernels.triton'
print(k.__file__)"
if [ "$DRY_RUN" = 1 ]; then
    # never touch the interpreter's packages here (the later steps import the installed package): check
    # that the fallback imports
    make_shim
    if shim_file=$(cd /tmp && PYTHONPATH="$SHIM_ROOT" "$PYTHON" -c "$IMPORT_CHECK" 2>> "$LOG") \
        && [[ "$shim_file" == "$SHIM_ROOT"/* ]]; then
        record install passed 0 $(($(date +%s) - t0)) "dry run: the symlinked fallback package imports"
    else
        record install failed 1 $(($(date +%s) - t0)) "dry run: import check failed"
    fi
else
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INDEX=1 timeout 90 "$PYTHON" -m pip install --no-deps --no-build-isolation \
        --disable-pip-version-check --no-input -e . >> "$LOG" 2>&1
    pip_rc=$?
    if [ $pip_rc = 0 ] && (cd /tmp && "$PYTHON" -c "$IMPORT_CHECK") >> "$LOG" 2>&1; then
        record install passed 0 $(($(date +%s) - t0)) "pip install -e ."
    else
        make_shim
        export PYTHONPATH="$SHIM_ROOT${PYTHONPATH:+:$PYTHONPATH}"
        if (cd /tmp && "$PYTHON" -c "$IMPORT_CHECK") >> "$LOG" 2>&1; then
            record install passed 0 $(($(date +%s) - t0)) "pip failed (rc $pip_rc): symlinked package on PYTHONPATH"
        else
            record install failed 1 $(($(date +%s) - t0)) "pip failed (rc $pip_rc) and the symlinked package does not import"
        fi
    fi
fi

# --- environment
if command -v nvidia-smi > /dev/null; then
    run_step nvidia_smi 30 "$RESULTS/nvidia_smi.log" nvidia-smi
elif [ "$DRY_RUN" = 1 ]; then
    record nvidia_smi skipped "" 0 "dry run: no nvidia-smi"
else
    record nvidia_smi failed 127 0 "nvidia-smi not found"
fi
run_step environment 60 "$RESULTS/environment.log" "$PYTHON" -c "
import json, platform, sys
import torch, transformers, accelerate
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = None
env = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
       'triton': triton_version, 'transformers': transformers.__version__, 'accelerate': accelerate.__version__,
       'cuda_available': torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(device=p.name, capability=list(torch.cuda.get_device_capability(0)), memory_gib=p.total_memory / 2**30)
print(json.dumps(env, indent=1))
open(sys.argv[1], 'w').write(json.dumps(env, indent=1))
if not torch.cuda.is_available() and not int(sys.argv[2]):
    sys.exit('torch sees no CUDA device')
" "$RESULTS/env.json" "$DRY_RUN"

# --- the Triton kernels' tests on CUDA (collected only in a dry run)
TRITON_TESTS=tests/ops/test_lact_triton.py
if [ ! -f "$TRITON_TESTS" ]; then
    record triton_tests skipped "" 0 "$TRITON_TESTS is absent"
    echo "$TRITON_TESTS is absent" > "$RESULTS/pytest.log"
elif [ "$DRY_RUN" = 1 ]; then
    run_step triton_tests 60 "$RESULTS/pytest.log" "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only "$TRITON_TESTS"
else
    # with the ablation options' Triton cases (their files switch to CUDA when one is present)
    run_step triton_tests 180 "$RESULTS/pytest.log" "$PYTHON" -m pytest -q -p no:cacheprovider -rfE -k triton \
        "$TRITON_TESTS" tests/ops/test_lact_op_update_rule.py tests/ops/test_lact_op_chunk_ends.py
fi

# --- the ablation study's op options (update_rule="adam", chunk_ends) on the device: the fast op against the
# reference in float64 and their cost against chunk size and length (benchmarks.ablation_cost)
if [ "$DRY_RUN" = 1 ]; then
    run_step ablation_options 120 "$RESULTS/ablation_options.log" "$PYTHON" -m modeling_lact_audio.benchmarks.ablation_cost \
        --device cpu --quick --budget 0.01 --output "$RESULTS/ablation_cost"
else
    run_step ablation_options 240 "$RESULTS/ablation_options.log" "$PYTHON" -m modeling_lact_audio.benchmarks.ablation_cost \
        --device cuda --budget 0.4 --output "$RESULTS/ablation_cost"
fi

# --- the op benchmark: the quick grid, then (after the training step) the default grid in the time left
# bench NAME TIMEOUT_S TOTAL_BUDGET_S OUT_STEM ARGS...: run eval/bench_lact_op.py, copy its json/md to OUT_STEM.*
bench() {
    local name=$1 limit=$2 total=$3 stem=$4
    shift 4
    rm -rf "$RESULTS/$name"
    run_step "$name" "$limit" "$RESULTS/$name.log" "$PYTHON" eval/bench_lact_op.py --output-dir "$RESULTS/$name" \
        --total-budget "$total" ${COMPARE[@]+"${COMPARE[@]}"} "$@"
    for ext in json md; do
        for f in "$RESULTS/$name"/lact_op_gpu*."$ext"; do [ -f "$f" ] && cp "$f" "$RESULTS/$stem.$ext"; done
    done
}
if [ "$DRY_RUN" = 1 ]; then
    bench bench_quick 60 30 bench_op_quick --grid tiny --compile-backend eager --budget 0.01 --matmul-size 128
else
    bench bench_quick 170 100 bench_op_quick --device cuda --quick
fi

# --- one training step of a40_base (bf16, synthetic batches of its shapes)
TRAIN=("$PYTHON" -m modeling_lact_audio.benchmarks.train_step_gpu run_scripts/configs/a40_base.yaml
       --output "$RESULTS/train_step.json")
if [ "$DRY_RUN" = 1 ]; then
    run_step train_step 60 "$RESULTS/train_step.log" "${TRAIN[@]}" --device cpu --steps 1 --preset tiny \
        --max_frames_per_batch 400 --max_seconds 2 --max_batch_size 2 --mixed_precision no
else
    run_step train_step 150 "$RESULTS/train_step.log" "${TRAIN[@]}" --device cuda --steps 3
fi

# --- the memory plan against the allocator's peak, and half-precision inference against fp32
if [ "$DRY_RUN" = 1 ]; then
    run_step memory 60 "$RESULTS/memory.log" "$PYTHON" -m modeling_lact_audio.benchmarks.memory_gpu --dry-run \
        --output "$RESULTS"
    run_step inference 60 "$RESULTS/inference.log" "$PYTHON" -m modeling_lact_audio.benchmarks.inference_gpu \
        --dry-run --output "$RESULTS"
else
    run_step memory 60 "$RESULTS/memory.log" "$PYTHON" -m modeling_lact_audio.benchmarks.memory_gpu \
        --point base:10 --point base:60 --output "$RESULTS"
    run_step memory_large 60 "$RESULTS/memory_large.log" "$PYTHON" -m modeling_lact_audio.benchmarks.memory_gpu \
        --point large:30 --checkpointing on --output "$RESULTS"
    SPEECH=()
    [ -f .gpu_carry/espeak_speech.npz ] && SPEECH=(--audio .gpu_carry/espeak_speech.npz)
    run_step inference 60 "$RESULTS/inference.log" "$PYTHON" -m modeling_lact_audio.benchmarks.inference_gpu \
        ${SPEECH[@]+"${SPEECH[@]}"} --output "$RESULTS"
fi

if [ "$DRY_RUN" = 1 ]; then
    # the budget path: every point is skipped at once
    bench bench_default 60 0 bench_op --grid tiny --compile-backend eager --budget 0.01 --matmul-size 128
elif [ "$(left)" -ge 150 ]; then
    bench bench_default $(($(left) - 20)) $(($(left) - 70)) bench_op --device cuda
else
    record bench_default skipped "" 0 "$(left) s of the ${BUDGET} s budget left (150 needed)"
fi

# --- the summary: gpu_check.json, the tables, the files for $OUT
"$PYTHON" - "$RESULTS" "$DRY_RUN" "$BUDGET" "$(($(date +%s) - START))" <<'EOF' 2>&1 | tee -a "$LOG"
import json
import sys
from pathlib import Path

results, dry_run, budget, elapsed = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])


def load(name):
    path = results / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


steps = []
for line in (results / "steps.tsv").read_text().splitlines():
    name, status, rc, seconds, note = (line.split("\t") + [""] * 5)[:5]
    steps.append({"name": name, "status": status, "rc": int(rc) if rc else None, "seconds": int(seconds), "note": note})
pytest_log = (results / "pytest.log").read_text() if (results / "pytest.log").exists() else ""
pytest_lines = [line for line in pytest_log.splitlines() if line.strip()]
summary = {
    "dry_run": dry_run,
    "budget_s": budget,
    "elapsed_s": elapsed,
    "all_passed": all(s["status"] in ("passed", "skipped") for s in steps),
    "steps": steps,
    "environment": load("env.json"),
    "pytest_summary": pytest_lines[-1] if pytest_lines else None,
}
for name in ("bench_op_quick.json", "bench_op.json"):
    bench = load(name)
    if bench is not None:
        records = bench["records"] + bench["mixer"]
        summary[name.removesuffix(".json")] = {
            "grid": bench["grid"],
            "complete": bench["complete"],
            "stopped": bench.get("stopped"),
            "peak": bench["peak"],
            "records": len(records),
            "errors": sorted({f"{r.get('variant', 'mixer')}: {r['error']}" for r in records if "error" in r})[:20],
            "skipped": sum("skipped" in r for r in records),
        }
train = load("train_step.json")
if train is not None:
    keys = ("error", "median_step_s", "first_step_s", "peak_mem_bytes", "audio_seconds_per_second", "mixed_precision",
            "attention", "micro_batch", "num_parameters")
    summary["train_step"] = {k: train[k] for k in keys if k in train}
summary["memory_gpu"] = load("memory_gpu.json")
summary["inference_gpu"] = load("inference_gpu.json")
summary["ablation_cost"] = load("ablation_cost/ablation_cost.json")  # small: it comes back inside gpu_check.json
(results / "gpu_check.json").write_text(json.dumps(summary, indent=1))
for name in ("bench_op_quick.md", "bench_op.md"):
    if (results / name).exists():
        print((results / name).read_text())
print(json.dumps({k: summary[k] for k in ("all_passed", "elapsed_s", "steps", "pytest_summary")}, indent=1))
EOF

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    # 8 files at most come back; the Markdown tables are remade from the JSON
    for f in gpu_check.json gpu_check.log pytest.log bench_op_quick.json bench_op.json train_step.json memory_gpu.json \
             inference_gpu.json; do
        [ -f "$RESULTS/$f" ] && cp "$RESULTS/$f" "$OUT/$f"
    done
    say "copied the results into $OUT"
fi
say "results in $RESULTS"
"$PYTHON" -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['all_passed'] else 1)" \
    "$RESULTS/gpu_check.json"
