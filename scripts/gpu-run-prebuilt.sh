#!/usr/bin/env bash
# The GPU checks of docs/training.md ("GPU") with binaries built by scripts/cuda-build-pip.sh,
# on a machine with the CUDA 13 driver and a Python whose `nvidia` packages hold the CUDA 13
# libraries (e.g. a PyTorch cu130 install):
#
#   scripts/gpu-run-prebuilt.sh DIR     # DIR holds sotto and bert_step; about 1.5 minutes
set -uo pipefail
dir=${1:?usage: gpu-run-prebuilt.sh DIR-with-sotto-and-bert_step}
libcuda=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
nv=$(python3 -c "import nvidia, os; print(':'.join(os.path.join(p, 'cu13', 'lib') for p in nvidia.__path__))")
export LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}" LD_PRELOAD="$libcuda"
work=$(mktemp -d)
summary='import json, sys; d = json.loads(sys.stdin.read().strip().splitlines()[-1]); print({k: d.get(k) for k in ["accuracy", "epsilon", "noise_multiplier", "rounds", "steps"]})'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for d in cuda cpu; do
    s=$(date +%s%N)
    "$dir/sotto" --json train --central --device $d --epochs 5 --no-audit --out "$work/c$d" | python3 -c "$summary"
    echo "central $d: $(( ($(date +%s%N) - s) / 1000000 )) ms"
    s=$(date +%s%N)
    "$dir/sotto" --json train --device $d --rounds 30 --no-audit --out "$work/m$d" | python3 -c "$summary"
    echo "multi-party $d: $(( ($(date +%s%N) - s) / 1000000 )) ms"
done
"$dir/sotto" --json evaluate --model "$work/ccuda" --data digits --split test --device cuda
for t in full bitfit; do for m in non_dp dp dp_noise; do
    "$dir/bert_step" $t $m 32 128 3 cuda
done; done
rm -rf "$work"
