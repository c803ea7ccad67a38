#!/usr/bin/env bash
# The first run on a GPU host: settles what the GPU-free tests cannot (issue 18).
#
# Builds two virtual environments from this checkout (NVIDIA's package index added, since TensorRT's
# wheels are not all on PyPI):
#   cu12: TensorRT 10 + onnxruntime-gpu <= 1.26 (CUDA 12)  -> ort-cuda, ort-trt (TensorRT 10 EP), tensorrt 10
#   cu13: TensorRT 11 + onnxruntime-gpu >= 1.28 (CUDA 13)  -> ort-cuda, tensorrt 11
# In each: the ort_cuda / tensorrt (/ ort_trt) tests, a probe of ONNX Runtime's CUDA-graph replay
# (does the run return before the GPU is done?), and a tiny sweep: ort-cuda with CUDA graphs off/on and
# CUDA-event vs host clock, ort-trt, tensorrt, each INT8/FP16 engine's inspector JSON saved next to the
# rows (OUT/<env>/inspector/, to replace tests/runtimes/fixtures/). Ends with a one-screen summary per
# runtime: what ran, event vs host compute, h2d / compute / d2h.
#
# Bounded: the whole script stops after --budget seconds (default 480 = 8 minutes); each step gets what
# is left. Without an NVIDIA GPU it says so and exits 0.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--envs cu12,cu13] [--help]

  --dry-run        print each step (commands included) without running anything
  --out DIR        where environments, rows, logs and inspector JSON go (default: gpu-check-<date>)
  --budget S       stop everything after S seconds (default 480)
  --envs LIST      which stacks to build and run (default cu12,cu13)

Exit status: 0 when every step ran (or there is no GPU here), 1 when a step failed, 124 when the budget ran out.
EOF
}

DRY=0; OUT="gpu-check-$(date +%Y%m%d-%H%M%S)"; BUDGET=480; ENVS="cu12,cu13"
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        --budget) BUDGET="$2"; shift ;;
        --envs) ENVS="$2"; shift ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a whole number of seconds, not '$BUDGET'" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(realpath -m "$OUT")"  # steps cd into their environment's folder
NVIDIA_INDEX="https://pypi.nvidia.com"
START=$(date +%s)
FAILED=0

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME COMMAND...: print it; run it under what is left of the budget; log to OUT/logs/NAME.log
step() {
    local name="$1"; shift
    echo "==> $name"
    echo "    $*"
    [ "$DRY" = 1 ] && return 0
    local remaining; remaining=$(left)
    if [ "$remaining" -le 5 ]; then
        echo "    budget spent: skipped"; FAILED=124; return 124
    fi
    mkdir -p "$OUT/logs"
    timeout --kill-after=5 "$remaining" bash -c "$*" >"$OUT/logs/$name.log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then echo "    ok ($(( $(date +%s) - START )) s so far)"
    else
        echo "    FAILED (exit $rc; log: $OUT/logs/$name.log):"; tail -n 5 "$OUT/logs/$name.log" | sed 's/^/      /'
        [ $rc -eq 124 ] && FAILED=124 || { [ "$FAILED" = 0 ] && FAILED=1; }
    fi
    return 0
}

if [ "$DRY" = 0 ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    echo "gpu_check.sh: no NVIDIA GPU here (nvidia-smi finds none): nothing to check; run it on a GPU host."
    exit 0
fi
[ "$DRY" = 0 ] && { mkdir -p "$OUT"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.csv"; }

sweep_toml() {  # $1 = env name: the runtimes it can run
    local runtimes='"ort-cuda", "tensorrt"'
    [ "$1" = cu12 ] && runtimes='"ort-cuda", "ort-trt", "tensorrt"'
    cat <<EOF
[run]
runtimes = [$runtimes]
devices = ["cuda:0"]
batch_sizes = [1, 32]
eval_samples = 500
min_iters = 200
min_time_s = 0.5
interleave_rounds = 3
timeout_s = 300

[runtime_options.ort-cuda]
cuda_graph = [false, true]
clock = ["auto", "host"]

[runtime_options.tensorrt]
inspector_dir = "$OUT/$1/inspector"

[[models]]
name = "fashion_cnn"
weights = "builtin"
dataset = "fashion-mnist-subset"

[[variants]]
name = "fp32"
precision = "fp32"

[[variants]]
name = "fp16"
precision = "fp16"

[[variants]]
name = "int8-trt"
calibration = "minmax"
activation_type = "QInt8"
symmetric_activation = true
per_channel = true
calib_samples = 128
EOF
}

# Does ORT's CUDA-graph replay return before the GPU is done? (PR #28686: only then can events time it.)
PROBE='
import numpy as np, onnxruntime as ort
from cuda.bindings import runtime as rt
from quantbench.runtimes.cuda_mem import load_backend
from quantbench.exporters.registry import ASSETS
err, stream = rt.cudaStreamCreate()
o = {"device_id": "0", "enable_cuda_graph": "1", "user_compute_stream": str(load_backend().stream_handle(stream))}
s = ort.InferenceSession(str(ASSETS / "cifar10_cnn.onnx"), providers=[("CUDAExecutionProvider", o)])
x = ort.OrtValue.ortvalue_from_numpy(np.zeros((256, 3, 32, 32), np.float32), "cuda", 0)
y = ort.OrtValue.ortvalue_from_shape_and_type([256, 10], np.float32, "cuda", 0)
b = s.io_binding()
b.bind_ortvalue_input(s.get_inputs()[0].name, x)
b.bind_ortvalue_output(s.get_outputs()[0].name, y)
r = ort.RunOptions()
r.add_run_config_entry("disable_synchronize_execution_providers", "1")
states = []
for _ in range(20):
    s.run_with_iobinding(b, r)
    states.append(int(rt.cudaStreamQuery(stream)[0]))
    rt.cudaStreamSynchronize(stream)
busy = sum(1 for q in states[2:] if q != 0)
verdict = ("asynchronous: CUDA events can time it (set ORT_ASYNC_GRAPH_REPLAY in runtimes/ort_cuda.py)" if busy
           else "synchronous, or too fast to tell: keep host timing")
print(f"onnxruntime {ort.__version__}: CUDA-graph replay returned with GPU work still queued in {busy}/18 runs: {verdict}")
'

for ENV in ${ENVS//,/ }; do
    case "$ENV" in
        cu12) EXTRAS="tensorrt10-cu12,ort-gpu-cu12,data,test"; MARKERS="tensorrt or ort_cuda or ort_trt"; REQUIRE="tensorrt,ort_cuda,ort_trt" ;;
        cu13) EXTRAS="tensorrt-cu13,ort-gpu-cu13,data,test"; MARKERS="tensorrt or ort_cuda"; REQUIRE="tensorrt,ort_cuda" ;;
        *) echo "gpu_check.sh: unknown environment '$ENV' (cu12, cu13)" >&2; exit 2 ;;
    esac
    VENV="$OUT/$ENV/venv"; PY="$VENV/bin/python"
    step "$ENV-venv" "python3 -m venv '$VENV' && '$PY' -m pip install -q --upgrade pip && '$PY' -m pip install -q --extra-index-url $NVIDIA_INDEX -e '$ROOT[$EXTRAS]'"
    step "$ENV-devices" "cd '$OUT/$ENV' && '$PY' -m quantbench.harness.cli devices | tee devices.txt"
    step "$ENV-tests" "cd '$ROOT' && QUANTBENCH_REQUIRE=$REQUIRE '$PY' -m pytest -q -x -p no:cacheprovider -m '$MARKERS' tests/runtimes"
    step "$ENV-graph-probe" "cd '$OUT/$ENV' && '$PY' -c '$PROBE' | tee graph_probe.txt"
    if [ "$DRY" = 1 ]; then echo "    (sweep.toml:)"; sweep_toml "$ENV" | sed 's/^/      /'
    else mkdir -p "$OUT/$ENV"; sweep_toml "$ENV" > "$OUT/$ENV/sweep.toml"; fi
    step "$ENV-sweep" "cd '$OUT/$ENV' && '$PY' -m quantbench.harness.cli run sweep.toml -o '$OUT/$ENV' --no-report"
done

step "summary" "'${PY:-python3}' '$ROOT/benchmarks/gpu_check_summary.py' $(for e in ${ENVS//,/ }; do printf "'%s/%s/results.jsonl' " "$OUT" "$e"; done)"
[ "$DRY" = 0 ] && cat "$OUT/logs/summary.log" 2>/dev/null && cat "$OUT"/*/graph_probe.txt 2>/dev/null
echo "gpu_check.sh: done in $(( $(date +%s) - START )) s; everything is in $OUT (exit $FAILED)"
exit "$FAILED"
