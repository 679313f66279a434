#!/usr/bin/env bash
# DP vs non-DP fine-tuning step of a BERT-base-shaped encoder, sotto (candle) and PyTorch +
# Opacus side by side on this machine, single-threaded CPU. One configuration per process;
# the implementations alternate so that a busy machine affects both alike.
#
#   cargo build --release -p sotto-training --example bert_step
#   python3 -m venv .venv && .venv/bin/pip install torch opacus
#   scripts/bert_bench.sh [batch] [seq_len] [steps] > bert-bench.jsonl
#   # also the AVX-512 build: cargo build --release -p sotto-training --features avx512 \
#   #   --example bert_step --target-dir target/avx512, then
#   # BERT_STEP_BIN2=target/avx512/release/examples/bert_step scripts/bert_bench.sh ...
#
# Figures and their reading: docs/training.md ("Fine-tuning a BERT-base-shaped encoder").
set -euo pipefail
batch=${1:-4}
seq=${2:-128}
steps=${3:-3}
bin=${BERT_STEP_BIN:-target/release/examples/bert_step}
# Optionally a second build, e.g. with `--features avx512` (run after the first).
bin2=${BERT_STEP_BIN2:-}
py=${PYTHON:-.venv/bin/python}
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for tuning in full bitfit; do
  for pair in "non_dp non_dp" "dp hooks" "dp_noise ghost"; do
    set -- $pair
    "$bin" "$tuning" "$1" "$batch" "$seq" "$steps"
    if [ -n "$bin2" ]; then "$bin2" "$tuning" "$1" "$batch" "$seq" "$steps"; fi
    "$py" scripts/opacus_bert_step.py "$tuning" "$2" "$batch" "$seq" "$steps" 2>/dev/null
  done
done
