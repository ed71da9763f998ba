#!/usr/bin/env bash
# GPU check (issue 9, item 8): on a machine with an NVIDIA GPU, in at most 8 minutes, run
#   1. the CUDA tests (tests/test_compress_cuda.py and tests/test_kernels_*.py, -k "cuda or triton"),
#   2. a whole mpirun job (1 server + 4 workers) with device = "cuda",
#   3. python -m psgd.bench compress and round on CUDA (JSON),
# each step under timeout, logs and JSON under $OUT (default ./gpu-out), then $OUT/summary.json
# with pass/fail per step. Exit status 1 when any step failed.
#
# Usage: OUT=gpu-out bash tests/gpu_check.sh
#   PYTHON (default python3: the machine's, not a venv), MPIRUN (default mpirun), DEVICE (default
#   cuda; cpu runs the same plumbing on a machine without a GPU), D (the benches' vector size,
#   default ResNet-18's 11,173,962; small for a quick plumbing run). The repository root goes on
#   PYTHONPATH. numba and pytest are pip-installed when missing and the index is reachable (without
#   numba the kernels' torch references run); without scikit-learn the job trains the synthetic task.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
py=${PYTHON:-python3}
mpirun=${MPIRUN:-mpirun}
device=${DEVICE:-cuda}
d=${D:-11173962}
budget=${GPU_CHECK_BUDGET_S:-470}  # all steps together; 8 minutes with room to write the summary
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
cd "$here" || exit 1
start=$(date +%s)
failed=0
results=()

# step NAME LIMIT_S CMD...: run CMD under timeout (its limit, or what is left of the budget),
# output in $OUT/NAME.log; record pass, fail (exit status) or skipped (no time left).
step() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$((budget - ($(date +%s) - start)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    results+=("{\"step\": \"$name\", \"status\": \"skipped\", \"why\": \"8-minute budget spent\"}")
    failed=1
    return
  fi
  t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  local status=pass
  [ $rc -ne 0 ] && status=fail && failed=1
  [ $rc -eq 124 ] && echo "timed out after ${limit}s" >>"$OUT/$name.log"
  results+=("{\"step\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0)), \"limit_s\": $limit, \"log\": \"$name.log\"}")
  echo "[gpu_check] $name: $status (exit $rc, $(($(date +%s) - t0)) s)"
}

# installed only when missing; a failed install is no failure of the check (logged)
ensure() {
  "$py" -c "import $1" 2>/dev/null && return
  timeout 30 "$py" -m pip install -q "$2" >>"$OUT/install.log" 2>&1 ||
    timeout 30 "$py" -m pip install -q --break-system-packages "$2" >>"$OUT/install.log" 2>&1 ||
    echo "could not install $2" >>"$OUT/install.log"
}

step environment 30 "$py" -c "
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': cuda,
                  'gpu': torch.cuda.get_device_name(0) if cuda else None}))
assert cuda or '$device' != 'cuda', 'torch sees no CUDA device'
"
nvidia-smi >"$OUT/nvidia-smi.log" 2>&1
ensure numba numba
ensure pytest pytest
"$py" - >"$OUT/modules.json" 2>&1 <<'PY'
import importlib.util, json
print(json.dumps({m: importlib.util.find_spec(m) is not None for m in ("numba", "triton", "cupy", "mpi4py", "sklearn", "pytest")}))
PY

tests=()
for f in tests/test_compress_cuda.py tests/test_kernels_*.py; do
  [ -f "$f" ] && tests+=("$f")
done
if [ ${#tests[@]} -gt 0 ]; then
  step cuda_tests 120 "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" -k "cuda or triton" \
    --junitxml="$OUT/cuda_tests.xml"
else
  results+=("{\"step\": \"cuda_tests\", \"status\": \"fail\", \"why\": \"no CUDA test files\"}")
  failed=1
fi

task=()
"$py" -c "import sklearn" 2>/dev/null || task=(--set task.name=synthetic)
extra=()
"$mpirun" --version 2>/dev/null | grep -q "Open MPI" && extra=(--allow-run-as-root --oversubscribe)
rm -rf "$OUT/run"
step mpirun_job 100 "$mpirun" "${extra[@]}" -n 5 "$py" -m psgd.train --set device="$device" --set rounds=200 \
  "${task[@]}" --quiet --out "$OUT/run"
step mpirun_job_on_device 10 "$py" -c "
import json, sys
s = json.load(open('$OUT/run/summary.json'))
print(json.dumps(s['devices']), s['mode'], s['rounds'], s['final_loss'])
assert s['mode'] == 'mpi' and s['workers'] == 4, 'not an MPI job of 4 workers'
assert all(d.startswith('$device') for d in [s['devices']['server'], *s['devices']['workers']]), 'not on $device'
"

step bench_compress 120 "$py" -m psgd.bench compress --devices "$device" --d "$d" --repeat 3 --out "$OUT/bench_compress.json" --table
step bench_round 75 "$py" -m psgd.bench round --device "$device" --d "$d" --repeat 3 --out "$OUT/bench_round.json" --table

{
  echo "{\"device\": \"$device\", \"wall_s\": $(($(date +%s) - start)), \"passed\": $([ $failed -eq 0 ] && echo true || echo false),"
  echo " \"steps\": ["
  for i in "${!results[@]}"; do
    sep=","
    [ "$i" -eq $((${#results[@]} - 1)) ] && sep=""
    echo "  ${results[$i]}$sep"
  done
  echo " ]}"
} >"$OUT/summary.json"
cat "$OUT/summary.json"
exit $failed
