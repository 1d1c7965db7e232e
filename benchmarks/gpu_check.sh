#!/usr/bin/env bash
# One short GPU check (issue 23), run from the repository root on a machine with a GPU:
#   bash benchmarks/gpu_check.sh [PYTHON] [DATA_DIR]
# PYTHON: the venv's interpreter (default .venv/bin/python); DATA_DIR: the folder holding
# mnist/ (default: cnnlab's own lookup). Prints, in about five minutes on one GPU:
#   1. the chapter's three cases, 2 epochs each, `cnnlab train --device cuda`;
#   2. the speedrun, one seed, `cnnlab speedrun --device cuda`;
#   3. the RGB networks' training steps on the GPU (profile_step.py --only rgb);
#   4. a one-GPU torchrun of case 1 (the data-parallel code path, one process).
# Without a CUDA device it prints one line and exits 0: nothing is checked there (the same
# code paths are covered on the CPU by the tests; the CUDA tests skip with a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
DATA=()
if [ $# -ge 2 ]; then DATA=(--data-dir "$2"); fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing checked"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), torch.__version__)'

summary() {  # seconds per epoch after the first, and the test accuracy, of a run folder
    "$PY" - "$1" <<'EOF'
import json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines()[1:]]
secs = [float(r[-1]) for r in rows]
acc = json.loads((run / "metrics.json").read_text())["test_accuracy"]
print(f"{run.name}: {statistics.median(secs[1:] or secs):.2f} s/epoch, test accuracy {acc:.4f}")
EOF
}

echo "== 1. the chapter's cases, --device cuda, 2 epochs"
for case in 1 2 3; do
    "$PY" -m cnnlab.cli train --case "$case" --device cuda --epochs 2 --quiet \
        "${DATA[@]}" --out "$WORK/case$case" > "$WORK/case$case.log"
    summary "$WORK/case$case"
done

echo "== 2. the speedrun, --device cuda, one seed"
"$PY" -m cnnlab.cli speedrun --device cuda --seeds 1 "${DATA[@]}" | tail -n 3

echo "== 3. the RGB networks, one training step at batch 32 on the GPU"
"$PY" benchmarks/profile_step.py --only rgb --device cuda --steps 50 --no-keras \
    --out "$WORK/profile" | grep -E '^\| (cifar_cnn|vgg_bn|resnet_small) '

echo "== 4. torchrun, one process on one GPU, case 1, 1 epoch"
"$PY" -m torch.distributed.run --standalone --nproc-per-node=1 -m cnnlab.cli train \
    --case 1 --device cuda --epochs 1 --quiet "${DATA[@]}" --out "$WORK/ddp" \
    > "$WORK/ddp.log" 2>&1
summary "$WORK/ddp"
echo "gpu_check: done"
