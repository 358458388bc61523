#!/usr/bin/env bash
# Builds skillpack's CUDA trainer (`--features cuda`: candle's CUDA backend, for
# `skillpack train --device cuda:0`) on any Linux machine, GPU or not, with the CUDA toolkit from
# PyPI wheels (scripts/cuda-toolkit.sh).
#
#   scripts/build-cuda.sh            # the whole CLI -> target/cuda/release/skillpack
#   scripts/build-cuda.sh --check    # only the trainer and candle's CUDA backend (what the tests build)
#
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU generation the kernels are compiled
# for; 80 = A100, 89 = L4/RTX 40xx, 120 = RTX 50xx.
# The full build uses its own target directory: a CUDA binary needs the NVIDIA driver's
# libcuda.so.1 at run time, and must not replace the CPU binary tests and scripts use. To run it
# on a GPU machine, put the real cuBLAS/cuRAND (PyPI: nvidia-cublas, nvidia-curand) and the
# toolkit's lib/ on LD_LIBRARY_PATH; the toolkit's lib/stubs must never be there.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/cuda-toolkit.sh --env)"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# candle-kernels compiles its quantized-matmul and MoE kernels (about 25 s of nvcc each, 5-6 min
# in all) on half the cores by default: one nvcc at a time on 2 cores. Use every core.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
echo "[build-cuda] CUDA_HOME=$CUDA_HOME, nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP" >&2

if [[ ${1:-} == --check ]]; then
  # What the feature adds or changes: candle's CUDA backend, its kernels, cudarc and the trainer
  # (the only crate with CUDA code of its own), in the normal target directory, no link step.
  # The crates above the trainer compile against the same candle API with or without CUDA, so
  # they are left out (they cost minutes of the test command). llama.cpp's build is reused.
  cargo build --release --locked -p skillpack-train --lib --features skillpack-train/cuda
  echo "[build-cuda] skillpack-train built with its cuda feature" >&2
  exit 0
fi
cargo build --release --locked --features cuda --target-dir target/cuda
BIN=target/cuda/release/skillpack
echo "[build-cuda] built $BIN; it loads at run time:" >&2
readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p' | grep -E 'cu|nvrtc' >&2 || true
echo "$BIN"
