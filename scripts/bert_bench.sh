#!/usr/bin/env bash
# DP vs non-DP fine-tuning step of a BERT-base-shaped encoder, sotto (candle) and PyTorch +
# Opacus side by side on this machine, single-threaded CPU. One configuration per process;
# the implementations alternate so that a busy machine affects both alike.
#
#   cargo build --release -p sotto-training --example bert_step
#   python3 -m venv .venv && .venv/bin/pip install torch opacus
#   scripts/bert_bench.sh [batch] [seq_len] [steps] > bert-bench.jsonl
#
# Figures and their reading: docs/training.md ("Fine-tuning a BERT-base-shaped encoder").
set -euo pipefail
batch=${1:-4}
seq=${2:-128}
steps=${3:-3}
bin=${BERT_STEP_BIN:-target/release/examples/bert_step}
py=${PYTHON:-.venv/bin/python}
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for tuning in full bitfit; do
  for pair in "non_dp non_dp" "dp hooks" "dp_noise ghost"; do
    set -- $pair
    "$bin" "$tuning" "$1" "$batch" "$seq" "$steps"
    "$py" scripts/opacus_bert_step.py "$tuning" "$2" "$batch" "$seq" "$steps" 2>/dev/null
  done
done
