#!/usr/bin/env bash
# The CUDA checks of this project in one script (run on a GPU machine from the repository
# root, with the package importable): device, train-step/inference benchmark CPU vs CUDA,
# fractional-GPU packing throughput, one CUDA trial end to end, and CUDA run-to-run determinism.
# Figures go to stdout and, when $OUT is set, to files under it.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
python3 bench/bench_train.py --reps 30 2>&1 | tee "$OUT/bench_train.txt"
python3 bench/bench_gpu_packing.py --epochs 2 --k 1 2 4 8 2>&1 | tee "$OUT/bench_packing.txt"
for run in 1 2; do
  python3 -m mismatch train --synthetic vessels --epochs 2 --device cuda --labelled-slices 10 \
    --set train.lr=0.001 --set "data.synthetic.size=[176,176]" --set train.snapshot_k=2 \
    --out "/tmp/gpu-trial-$run" --quiet 2>&1 | tee "$OUT/trial_$run.txt"
done
python3 - <<'PY' 2>&1 | tee "$OUT/determinism.txt"
import pandas as pd
a = pd.read_parquet("/tmp/gpu-trial-1/adhoc/images")
b = pd.read_parquet("/tmp/gpu-trial-2/adhoc/images")
cols = ["iou", "dice", "ece", "brier"]
diff = (a[cols] - b[cols]).abs().max()
print("CUDA run-to-run max abs difference per metric:", diff.to_dict())
print("identical rows:", bool((diff == 0).all()))
PY
