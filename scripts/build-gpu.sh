#!/usr/bin/env bash
# Builds skillpack with llama.cpp's CUDA backend (`--features gpu`), so run/chat/eval/serve can
# offload layers with `--gpu-layers N`, on a machine with or without a GPU, with the CUDA toolkit
# and cuBLAS from PyPI wheels. Prints the binary's path.
#
#   scripts/build-gpu.sh                      # target/gpu/release/skillpack
#   CUDA_COMPUTE_CAP=89 scripts/build-gpu.sh  # for another GPU generation (default 90: H100/H200)
#   scripts/build-gpu.sh --with-trainer       # also the CUDA trainer (`cuda`): target/gpu-trainer
#
# For a machine whose driver is CUDA 13.0 (driver 580), build with that toolkit:
# SKILLPACK_CUDA_VERSION=13.0.88 (cuBLAS 13.0 follows); the trainer's kernels are PTX and need a
# driver at least as new as the nvcc that wrote them. GGML_CUDA_FA=OFF compiles ggml's
# flash-attention kernels empty (quicker to build; llama.cpp then attends without them).
#
# Not part of the test command: ggml's CUDA kernels take long to compile on two cores.
#
# Linking: llama-cpp-sys-2 links CUDA statically on Linux (cudart_static, cublas_static,
# cublasLt_static, culibos). PyPI has the static runtime but not cuBLAS's static archives, so
# this script hands the linker empty archives under those names and links the real shared
# cuBLAS from the `nvidia-cublas` wheel instead (its directory goes into the binary's RUNPATH).
# The `gpu` feature builds ggml without CUDA's virtual memory management (`cuda-no-vmm`), so
# nothing links the driver library: the binary finds libcuda through the GPU driver at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/cuda-toolkit.sh --env)"
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# cuBLAS: headers to compile ggml-cuda, shared libraries to link and run. Same release line as
# the toolkit (CUDA 13).
case "${SKILLPACK_CUDA_VERSION:-13.4}" in
  13.0*) CUBLAS_VERSION=${CUBLAS_VERSION:-13.0.2.14} ;;
  *) CUBLAS_VERSION=${CUBLAS_VERSION:-13.4.0.1} ;;
esac
FEATURES=gpu
TARGET_DIR=target/gpu
if [[ ${1:-} == --with-trainer ]]; then
  FEATURES="gpu cuda"
  TARGET_DIR=target/gpu-trainer
  export CUDA_COMPUTE_CAP
fi
CACHE=${SKILLPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skillpack}
CUBLAS_DIR="$CACHE/cublas-$CUBLAS_VERSION"

say() { printf '\033[1m[build-gpu]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[build-gpu] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [[ ! -f "$CUBLAS_DIR/.complete" ]]; then
  say "installing nvidia-cublas==$CUBLAS_VERSION from PyPI into $CUBLAS_DIR"
  rm -rf "$CUBLAS_DIR.partial"
  python3 -m pip install --quiet --no-deps --target "$CUBLAS_DIR.partial" \
    "nvidia-cublas==$CUBLAS_VERSION" || die "pip could not install nvidia-cublas==$CUBLAS_VERSION"
  rm -rf "$CUBLAS_DIR"
  mv "$CUBLAS_DIR.partial" "$CUBLAS_DIR"
  touch "$CUBLAS_DIR/.complete"
fi
CUBLAS_ROOT=$(dirname "$(dirname "$(find "$CUBLAS_DIR" -name 'cublas_v2.h' -print -quit)")")
[[ -d "$CUBLAS_ROOT/lib" ]] || die "no cuBLAS headers/libraries under $CUBLAS_DIR"
CUBLAS_LIB="$CUBLAS_ROOT/lib"
# The wheel ships versioned names only; the linker wants libcublas.so / libcublasLt.so.
for lib in cublas cublasLt; do
  so=$(find "$CUBLAS_LIB" -maxdepth 1 -name "lib$lib.so.*" -print -quit)
  [[ -n "$so" ]] || die "no lib$lib.so.* in $CUBLAS_LIB"
  [[ -e "$CUBLAS_LIB/lib$lib.so" ]] || ln -s "$(basename "$so")" "$CUBLAS_LIB/lib$lib.so"
done

# Empty archives standing in for the static cuBLAS and culibos llama-cpp-sys-2 asks for.
LINK_DIR="$CACHE/gpu-link-$CUBLAS_VERSION"
mkdir -p "$LINK_DIR"
for name in cublas_static cublasLt_static culibos; do
  [[ -f "$LINK_DIR/lib$name.a" ]] || printf '!<arch>\n' >"$LINK_DIR/lib$name.a"
done

# ggml-cuda is compiled by CMake: nvcc from the toolkit, cuBLAS headers from the wheel, kernels
# for one GPU generation only (CUDAARCHS; all of them would take hours here).
export CUDACXX="$CUDA_HOME/bin/nvcc"
export CUDAToolkit_ROOT="$CUDA_HOME"
export CUDAARCHS="${CUDA_COMPUTE_CAP}-real"
export CPATH="$CUBLAS_ROOT/include${CPATH:+:$CPATH}"
export LIBRARY_PATH="$CUBLAS_LIB:$CUDA_HOME/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# candle-kernels compiles its quantized-matmul and MoE kernels (about 25 s of nvcc each, 5-6 min
# in all) on half the cores by default: one nvcc at a time on 2 cores. Use every core.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK_DIR -L native=$CUDA_HOME/lib -L native=$CUBLAS_LIB \
-C link-arg=-Wl,--no-as-needed -C link-arg=-lcublas -C link-arg=-lcublasLt \
-C link-arg=-Wl,-rpath,$CUBLAS_LIB"
say "CUDA_HOME=$CUDA_HOME, cuBLAS $CUBLAS_VERSION, kernels for compute capability $CUDA_COMPUTE_CAP"
cargo build --release --locked --features "$FEATURES" --target-dir "$TARGET_DIR" --bin skillpack
BIN=$TARGET_DIR/release/skillpack
say "built $BIN; it loads at run time:"
readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p' | grep -E 'cu|nvrtc' >&2 || true
echo "$BIN"
