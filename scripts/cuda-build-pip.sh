#!/usr/bin/env bash
# Builds `sotto` and the `bert_step` report with `--features cuda` on a machine WITHOUT a system
# CUDA toolkit or GPU, from NVIDIA's PyPI wheels (nvcc 13.0, headers, cuBLAS/cuRAND/NVRTC),
# for a GPU machine that has the CUDA 13 driver (r580+) and libraries but no Rust toolchain.
#
#   scripts/cuda-build-pip.sh [target-dir]     # about 20 minutes on 2 cores the first time
#
# nvcc 13.0 matches the r580 driver's PTX ISA (a newer nvcc emits PTX that driver refuses to
# JIT). The driver library libcuda.so.1 is not in the wheels: the link uses an empty stub and
# leaves the driver symbols unresolved; on the GPU machine run with
#   LD_PRELOAD=<path of libcuda.so.1> LD_LIBRARY_PATH=<dir of libcublas.so.13 ...>
# (scripts/gpu-run-prebuilt.sh does). CUDA_COMPUTE_CAP=90 builds the kernels for Hopper (H100,
# H200); set it for other GPUs.
set -euo pipefail
target=${1:-target-cuda}
venv=${CUDA_VENV:-/tmp/cuda13}
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cublas==13.*" "nvidia-curand==10.*" "nvidia-cuda-nvrtc==13.*"
cuda=$("$venv/bin/python" -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))")
(
    cd "$cuda/lib"
    for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
    ln -sf libcurand.so.10 libcurand.so
    stub=$(mktemp --suffix=.c)
    : > "$stub"
    gcc -shared -fPIC -o libcuda.so -Wl,-soname,libcuda.so.1 "$stub"
    rm -f "$stub"
)
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$cuda/lib"
export RUSTFLAGS="-C link-arg=-Wl,--unresolved-symbols=ignore-in-object-files -L $cuda/lib"
export CARGO_TARGET_DIR="$target"
cargo build --release --locked -p sotto --features cuda
cargo build --release --locked -p sotto-training --features cuda --example bert_step
echo "built $target/release/sotto and $target/release/examples/bert_step"
