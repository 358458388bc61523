#!/usr/bin/env bash
# Training speed, ours against PEFT, measured side by side: `skillpack train --bench` and PEFT's
# side (../shared/tools/peft-bench.sh: AdaLoRA init_r 12 -> 8 on all 7 linear modules of the
# default model dequantized to f32, batch 4 x 256 tokens, loss on every token, AdamW) back to
# back, ROUNDS times, on the same machine and threads. Prints each round's tokens/s and ratio,
# and one JSON line per round on stdout.
#
#   scripts/bench-vs-peft.sh [ROUNDS=3]
#
# Environment: THREADS (2), MODEL (the default model), PEFT_BENCH (the PEFT script),
# BIN (a skillpack binary; default target/release/skillpack).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
THREADS=${THREADS:-2}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PEFT_BENCH=${PEFT_BENCH:-../shared/tools/peft-bench.sh}
BIN=${BIN:-target/release/skillpack}
[[ -x "$BIN" ]] || { echo "build first (cargo build --release)" >&2; exit 1; }
[[ -x "$PEFT_BENCH" ]] || { echo "$PEFT_BENCH not found" >&2; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  ours=$(RAYON_NUM_THREADS=$THREADS "$BIN" train --bench --base "$MODEL" --method adalora \
    --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --r 12 --target-r 8 \
    --alpha 32 --batch 4 --max-len 256 --json | python3 -c "import json,sys;print(json.load(sys.stdin)['tokens_per_s'])")
  peft=$("$PEFT_BENCH" "$MODEL" "$THREADS" 6 2>/dev/null | sed -n 's/^peft adalora: \([0-9.]*\) tokens\/s.*/\1/p')
  ratio=$(python3 -c "print(f'{$ours / $peft:.3f}')")
  printf 'round %d: skillpack %.1f tokens/s, PEFT %.1f tokens/s: %s x PEFT\n' "$round" "$ours" "$peft" "$ratio" >&2
  printf '{"round":%d,"skillpack_tokens_per_s":%s,"peft_tokens_per_s":%s,"ratio":%s,"threads":%s}\n' \
    "$round" "$ours" "$peft" "$ratio" "$THREADS"
done
