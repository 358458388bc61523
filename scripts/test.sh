#!/usr/bin/env bash
# Runs every test: installs what is needed (scripts/setup.sh), then checks formatting, lints,
# and runs the unit and integration tests (parity against ../shared/fixtures, or
# $SKILLPACK_FIXTURES) in release mode, so llama.cpp is built once, builds the CUDA trainer
# (scripts/build-cuda.sh --check), then the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time, printed as it ends and summed up at the end (CI's budget is 30 min).
TIMES=()
phase() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  TIMES+=("$(printf '%5d s  %s' $((SECONDS - start)) "$name")")
  echo "[test] $name: $((SECONDS - start)) s" >&2
}
# llama.cpp is compiled by three builds with different cargo features or target directories
# (release, the CUDA check, the fuzz targets), each a new cmake tree with the same sources and
# flags: through ccache (installed by setup) it compiles once. The build trees differ, so the
# compiler's working directory is left out of the hash.
export SKILLPACK_CCACHE=1
phase setup scripts/setup.sh
if command -v ccache >/dev/null; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_NOHASHDIR=1
fi
phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --release --locked --workspace --all-targets --quiet -- -D warnings
# The API documentation builds without a warning (its examples run as doc tests below).
RUSTDOCFLAGS="-D warnings" phase doc cargo doc --release --locked --no-deps --workspace --quiet
# The C API's static library, which tests/c_api.rs links a C program against. Built with the whole
# workspace: alone (-p skillpack-capi) its dependencies resolve to fewer features and serde,
# candle and tokenizers compile a second time (2m50s of CI against seconds).
phase capi cargo build --release --locked --workspace
phase tests cargo test --release --locked --workspace -- --test-threads 1
# The CUDA trainer compiles (toolkit from PyPI wheels; nothing runs on a GPU here).
phase cuda-check scripts/build-cuda.sh --check
# Every fuzz target briefly (30 s each, two at a time: a smoke run inside CI's 30 minutes; long runs
# are `FUZZ_SECONDS=1800 scripts/fuzz.sh`), after replaying fuzz/regressions:
# unoptimized and without a sanitizer, so llama.cpp comes from ccache (scripts/fuzz.sh).
FUZZ_SECONDS=${FUZZ_SECONDS:-30} FUZZ_BUILD=${FUZZ_BUILD:---dev -s none} phase fuzz scripts/fuzz.sh
printf '[test] wall time per phase:\n' >&2
printf '  %s\n' "${TIMES[@]}" >&2
echo "[test] total: $SECONDS s" >&2
