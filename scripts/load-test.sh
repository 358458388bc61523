#!/usr/bin/env bash
# Load test on loopback, bounded (stops by itself): `skillpack serve` and `skillpack proxy` in
# front of llama-server, each with CLIENTS concurrent clients x REQUESTS requests mixing
# WEIGHTINGS. Every answer must equal the single-request answer for its weighting.
#
#   scripts/load-test.sh [PACK]        # default pack: examples/packs/medical-smollm2
#
# Environment: CLIENTS (16), REQUESTS (50), MAX_TOKENS (8), WEIGHTINGS, OUT (JSON results dir).
set -euo pipefail
cd "$(dirname "$0")/.."

PACK=${1:-examples/packs/medical-smollm2}
CLIENTS=${CLIENTS:-16}
REQUESTS=${REQUESTS:-50}
MAX_TOKENS=${MAX_TOKENS:-8}
WEIGHTINGS=${WEIGHTINGS:-"qa=1;ner=0.5,re=0.5;mcqa=1;route:auto;route:none"}
OUT=${OUT:-runs/load-test}
scripts/setup.sh >&2
BIN=target/release/skillpack
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for() { # URL
  for _ in $(seq 600); do
    curl -fs "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "no answer from $1" >&2
  return 1
}

load() { # NAME URL
  echo "== $1" >&2
  "$BIN" bench load --url "$2" --clients "$CLIENTS" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" \
    --weightings "$WEIGHTINGS" --json >"$OUT/$1.json"
  python3 -c "import json;d=json.load(open('$OUT/$1.json'));print('$1: {requests} requests, {errors} errors, {mismatches} mismatches, p50 {latency_p50_s:.3f} s, p99 {latency_p99_s:.3f} s, {requests_per_s:.2f} req/s'.format(**d))"
}

"$BIN" serve --pack "$PACK" --port 18180 --slots 2 --threads 1 --queue 64 >/dev/null &
pids+=($!)
wait_for http://127.0.0.1:18180
load serve http://127.0.0.1:18180
kill -TERM "${pids[-1]}"

LLAMA_SERVER=$(scripts/llama-server.sh)
# shellcheck disable=SC2046 # the flags are meant to split
"$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port 18181 -t 2 -c 4096 --parallel 2 -fa off \
  $("$BIN" pack llama-server-args "$PACK" 2>/dev/null) >"$OUT/llama-server.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:18181
"$BIN" proxy --upstream http://127.0.0.1:18181 --pack "$PACK" --port 18182 >/dev/null &
pids+=($!)
wait_for http://127.0.0.1:18182
load proxy http://127.0.0.1:18182
