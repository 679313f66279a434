#!/usr/bin/env bash
# The CUDA checks of issue 13, as one script for a machine with a GPU and the CUDA toolkit
# (nvcc): build with `--features cuda`, train centrally and multi-party on the GPU, evaluate the
# saved model there, and time BERT-base DP / non-DP steps (full and BiTFiT) on the GPU.
#
#   scripts/gpu_check.sh [out-dir]      # prints JSON lines; about 5-10 minutes with the build
set -euo pipefail
out=${1:-${OUT:-/tmp/sotto-gpu}}
mkdir -p "$out"
cargo build --release --features cuda --bin sotto
cargo build --release --features cuda -p sotto-training --example bert_step
sotto=target/release/sotto
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$sotto --json train --central --device cuda --epochs 5 --no-audit --out "$out/central" | tail -1
$sotto --json evaluate --model "$out/central" --data digits --split test --device cuda
$sotto --json train --device cuda --rounds 30 --no-audit --out "$out/multi" | tail -1
$sotto --json train --central --device cuda --model transformer --data sequence --epochs 2 \
  --no-audit --out "$out/transformer" | tail -1
for t in full bitfit; do for m in non_dp dp dp_noise; do
  target/release/examples/bert_step $t $m 32 128 5 cuda
done; done
