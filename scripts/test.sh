#!/usr/bin/env bash
# Runs every test: installs what is needed (scripts/setup.sh), then checks formatting, lints,
# and runs the unit and integration tests (parity against ../shared/fixtures, or
# $SKILLPACK_FIXTURES) in release mode, so llama.cpp is built once, builds the CUDA trainer
# (scripts/build-cuda.sh --check), then the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets --quiet -- -D warnings
# The API documentation builds without a warning (its examples run as doc tests below).
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps --workspace --quiet
# The C API's static library, which tests/c_api.rs links a C program against.
cargo build --release --locked -p skillpack-capi
cargo test --release --locked --workspace -- --test-threads 1
# The CUDA trainer compiles (toolkit from PyPI wheels; nothing runs on a GPU here).
scripts/build-cuda.sh --check
# Every fuzz target briefly (60 s each, two at a time), after replaying fuzz/regressions.
FUZZ_SECONDS=${FUZZ_SECONDS:-60} scripts/fuzz.sh
