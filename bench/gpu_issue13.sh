#!/usr/bin/env bash
# Issue 13's GPU checks in one script, under 8 minutes (run on a CUDA machine from the
# repository root, with the package importable): the device; the sync-free CUDA step test;
# bench_fusion fused vs K concurrent processes on one GPU (what Ray's fractional GPUs do) for
# K 1..32, with the Table I GPU-hour estimate from those figures; bench_gpu_modes (eager,
# channels_last, bf16, torch.compile, CUDA graphs; one trial and a fused group of 8); a tiny
# `mismatch study run --fuse auto` (the GPU branch of fuse: auto); bench_3d_step on CUDA.
# Figures go to stdout and to $OUT/<step>.txt; $OUT/summary.txt has each step's exit and time.
#
#   bash bench/gpu_issue13.sh             # on the GPU machine
#   bash bench/gpu_issue13.sh --dry-cpu   # every step on the CPU at --quick sizes (proves the script)
#
# Each step runs under `timeout` capped by what is left of BUDGET_S (default 450 s), so the
# script ends in time even if a step hangs; a step that would get under 10 s is skipped.
# Steps run most important first; estimated H200 times are in each step's comment.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-issue13}"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-450}"
DRY=0
[[ "${1:-}" == "--dry-cpu" ]] && DRY=1
mkdir -p "$OUT"
: > "$OUT/summary.txt"
export PYTHONUNBUFFERED=1
START=$SECONDS
WORK="$(mktemp -d /tmp/gpu-issue13.XXXXXX)"

# step NAME CAP_S CMD...: CMD under timeout min(CAP_S, time left), to stdout and $OUT/NAME.txt
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then
    echo "== $name: skipped, out of time" | tee "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  local note=""
  ((rc == 124 || rc == 137)) && note=" (timed out)"
  echo "== $name: exit $rc$note after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

if ! "$PY" -c "import mismatch, torch" 2>/dev/null; then
  echo "the mismatch package is not importable with $PY: pip install -e . first" >&2
  exit 2
fi
if ((DRY)); then
  DEV=cpu
  FUSION_ARGS=(--size 32 --width 4 --ks 1 2 --separate processes --steps 3 --warmup 1)  # --quick's sizes, fewer steps
  ADAM_ARGS=(--size 32 --width 4 --steps 3 --warmup 1)
  MODES_ARGS=(--quick --k 8 --row-timeout 60 --steps 3 --warmup 2)
  SIZE=32 WIDTH=4 GPU=0
  D3_ARGS=(--patch 16 32 32 --width 4 --batch 1 --steps 1 --warmup 0)
else
  DEV=cuda
  FUSION_ARGS=(--ks 1 2 4 8 16 32 --separate processes --steps 10 --warmup 3)
  ADAM_ARGS=(--steps 10 --warmup 3)
  MODES_ARGS=(--k 8 --row-timeout 75)
  SIZE=176 WIDTH=24 GPU=1
  D3_ARGS=(--steps 3 --warmup 1)
fi

# ~5 s. The device.
step device 20 bash -c "nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>&1 || true;
  $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no CUDA device\")'"

# ~20 s. The sync-free hot path: a CUDA step under set_sync_debug_mode("error") (skips without CUDA).
# With it, MaskedAdam's foreach path on CUDA: bit-identity with Adam(foreach=True) for shared
# scalars, the 1e-6 bound for per-member scalars.
step sync_free_test 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_device_slices.py \
  tests/fusion/test_masked_adam_foreach.py -k cuda -rs

# ~120 s (K = 32: 32 processes start at once; they time their steps together after warm-up).
# Fused vs K separate processes per member-step, memory, and the Table I estimate.
step bench_fusion 170 "$PY" bench/bench_fusion.py --device "$DEV" "${FUSION_ARGS[@]}"

# ~20 s. MaskedAdam per-tensor against foreach (the CUDA default) at K = 8 and 32, fused only
# matters here; the separate column repeats the solo step (sequential, in this process).
step adam_foreach_off 40 "$PY" bench/bench_fusion.py --device "$DEV" --ks 8 32 --separate sequential \
  --adam-foreach off "${ADAM_ARGS[@]}"

# ~60 s (Ray start ~15 s, one fused group of 2 members, 1 epoch at 176x176). fuse: auto's GPU branch.
cat > "$WORK/study.yaml" <<YAML
name: gpu13_fuse_auto
storage: $WORK/runs
base:
  data: {synthetic: {kind: vessels, cases: 6, size: [$SIZE, $SIZE], slices: 10, seed: 0}}
  protocol: {unlabelled_cases: 2, validation_cases: 1, test_cases: 2}
  train: {epochs: 1, snapshot_k: 1, prediction_maps: 1, stream: two-stream, lr: 0.001}
methods:
  - {name: mismatch, width: $WIDTH, alpha: [0.002, 0.01]}
grid: {labelled_slices: [2], fold: [0], seed: [0]}
resources: {cpu: 2, gpu: $GPU, fuse: auto}
max_failures: 1
YAML
step fuse_auto_study 90 bash -c "
  $PY -m mismatch study run '$WORK/study.yaml' --tracking none > '$WORK/study.log' 2>&1
  echo \"study run exit \$?\"; grep -i 'fuse auto' '$WORK/study.log'; tail -n 6 '$WORK/study.log'
  $PY - '$WORK/runs/gpu13_fuse_auto' <<'PY'
import sys
import pandas as pd
trials = pd.read_parquet(sys.argv[1] + '/trials')
shown = ['trial_id', 'status', 'error', 'fuse_group', 'fuse_size', 'device', 'train_time_s', 'peak_memory_mb']
print(trials[[c for c in shown if c in trials]].to_string(max_colwidth=60))
rows = len(pd.read_parquet(sys.argv[1] + '/images'))
ok = len(trials) == 2 and (trials.status == 'completed').all() and (trials.fuse_size == 2).all() \
    and trials.fuse_group.nunique() == 1 and trials.fuse_group.iloc[0] != '' and rows > 0
print(f'rows check: {len(trials)} trial rows, {rows} image rows, one fused group of 2: {\"OK\" if ok else \"FAILED\"}')
sys.exit(0 if ok else 1)
PY"

# ~20 s. One 3D step at the LA patch size (mm3d width 16, batch 2, 80x112x112).
step bench_3d_step 45 "$PY" bench/bench_3d_step.py --device "$DEV" "${D3_ARGS[@]}"

# ~150 s (10 rows, each its own process; the compile rows ~30-60 s each). Execution modes.
step bench_gpu_modes 200 "$PY" bench/bench_gpu_modes.py --device "$DEV" "${MODES_ARGS[@]}"

rm -rf "$WORK"
echo "== total $((SECONDS - START)) s; outputs in $OUT" | tee -a "$OUT/summary.txt"
cat "$OUT/summary.txt"
