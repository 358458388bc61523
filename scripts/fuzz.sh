#!/usr/bin/env bash
# Fuzzes skillpack's parsers with cargo-fuzz (libFuzzer, AddressSanitizer):
#   gguf     GGUF models and adapters (Rust header reader, adapter reading, llama.cpp loaders)
#   peft     PEFT adapter directories (config + safetensors), converted for a tiny llama
#   pack     pack manifests, checked against a base and opened by the skill engine
#   router   router files (config + weights), then routing
#   jsonl    instruction JSONL, rendered and tokenized with the default model's vocabulary
#   request  serve/proxy request bodies, planned, rendered with the chat template, tokenized
#
#   scripts/fuzz.sh                               # every target for FUZZ_SECONDS (60) each
#   FUZZ_RUNS=1000000 FUZZ_SECONDS=1800 scripts/fuzz.sh gguf   # 10^6 executions (or 30 min)
#   FUZZ_BUILD="--dev -s none" scripts/fuzz.sh    # the test command's brief runs (see below)
#
# First it replays fuzz/regressions/<target>/ (inputs that once crashed). A crash, panic, leak
# or input over FUZZ_RSS_MB (2048) fails the run; the input lands in fuzz/artifacts/<target>/.
# Per-target figures go to fuzz/report.tsv. FUZZ_JOBS (2) targets run at once.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${*:-gguf peft pack router jsonl request}
SECONDS_EACH=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:--1}
RSS_MB=${FUZZ_RSS_MB:-2048}
JOBS=${FUZZ_JOBS:-2}

# cargo-fuzz needs nightly flags: rustup's nightly when installed, else the stable toolchain
# with RUSTC_BOOTSTRAP.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=+nightly
else
  TOOLCHAIN=
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

scripts/setup.sh >&2
MODEL=${SKILLPACK_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
export SKILLPACK_FUZZ_MODEL=$PWD/$MODEL
echo "== seeds and assets" >&2
cargo run --release --locked --quiet --example fuzz_seeds -- fuzz >&2
echo "== building the fuzz targets" >&2
# FUZZ_BUILD: cargo-fuzz's build options, by default optimized with debug assertions and
# AddressSanitizer. cc-rs passes -fsanitize=address on to llama.cpp's cmake, so llama.cpp is
# compiled again, instrumented, as RelWithDebInfo; without -g its ASan build is about a quarter
# quicker (llama-model.cpp: 22.9 s against 30.1 s here), and reports inside llama.cpp then name
# functions without line numbers. The test command's brief runs use `--dev -s none`: unoptimized
# Rust with overflow checks, no sanitizer, so llama.cpp keeps the release build's flags and
# ccache hands its objects over, and the build takes minutes instead of a quarter of an hour;
# they still catch panics, aborts inside llama.cpp, crashes, inputs over the memory limit and
# time-outs.
BUILD=${FUZZ_BUILD:--O -a}
if [[ " $BUILD " != *" -s none "* ]]; then
  export CMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" CMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG"
fi
# shellcheck disable=SC2086 # BUILD is a list of options
cargo $TOOLCHAIN fuzz build $BUILD >&2

LOGS=fuzz/logs
mkdir -p "$LOGS"
fuzz_one() {
  local target=$1
  local log=$LOGS/$target.log
  if [ -d "fuzz/regressions/$target" ]; then
    cargo $TOOLCHAIN fuzz run $BUILD "$target" "fuzz/regressions/$target" -- -runs=0 >"$log.regressions" 2>&1 ||
      { echo "$target: a regression input fails again (see $log.regressions)" >&2; return 1; }
  fi
  local start=$SECONDS status=0
  cargo $TOOLCHAIN fuzz run $BUILD "$target" -- \
    -max_total_time="$SECONDS_EACH" -runs="$RUNS" -rss_limit_mb="$RSS_MB" \
    -malloc_limit_mb="$RSS_MB" -max_len=65536 -timeout=30 -print_final_stats=1 >"$log" 2>&1 || status=$?
  local execs rss crashes
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "${execs:-0}" $((SECONDS - start)) "${rss:-0}" "$crashes" "$status"
  if [ "$status" -ne 0 ]; then
    echo "$target: libFuzzer exited $status; last lines of $log:" >&2
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -20 >&2 || tail -20 "$log" >&2
    return 1
  fi
}
export -f fuzz_one
export TOOLCHAIN SECONDS_EACH RUNS RSS_MB LOGS BUILD

REPORT=fuzz/report.tsv
printf 'target\texecutions\tseconds\tpeak_rss_mb\tartifacts\tstatus\n' >"$REPORT"
failed=0
printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'fuzz_one {}' >>"$REPORT" || failed=1
column -t -s $'\t' "$REPORT" >&2
# The targets' scratch directories (libFuzzer exits without running destructors).
rm -rf /dev/shm/skillpack-fuzz-* "${TMPDIR:-/tmp}"/skillpack-fuzz-*
exit $failed
