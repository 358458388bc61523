#!/usr/bin/env bash
# Training speed, ours against PEFT, measured side by side: `skillpack train --bench` and PEFT's
# side (../shared/tools/peft-bench.sh: AdaLoRA init_r 12 -> 8 on all 7 linear modules of the
# default model dequantized to f32, batch 4 x 256 tokens, loss on every token, AdamW) back to
# back, ROUNDS times, on the same machine and threads. Ours runs once per precision in MATMULS
# (default "bf16 f32": `--matmul bf16` on AMX CPUs, and f32 as PEFT computes); where the CPU has
# no AMX, bf16 is skipped. Prints each round's tokens/s and ratios, and one JSON line per round
# on stdout.
#
#   scripts/bench-vs-peft.sh [ROUNDS=3]
#
# Environment: THREADS (2), MODEL (the default model), PEFT_BENCH (the PEFT script),
# BIN (a skillpack binary; default target/release/skillpack), MATMULS.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
THREADS=${THREADS:-2}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PEFT_BENCH=${PEFT_BENCH:-../shared/tools/peft-bench.sh}
BIN=${BIN:-target/release/skillpack}
MATMULS=${MATMULS:-bf16 f32}
[[ -x "$BIN" ]] || { echo "build first (cargo build --release)" >&2; exit 1; }
[[ -x "$PEFT_BENCH" ]] || { echo "$PEFT_BENCH not found" >&2; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  declare -A ours=()
  for matmul in $MATMULS; do
    if ! json=$(RAYON_NUM_THREADS=$THREADS "$BIN" train --bench --base "$MODEL" --method adalora \
      --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --r 12 --target-r 8 \
      --alpha 32 --batch 4 --max-len 256 --matmul "$matmul" --json 2>/dev/null); then
      echo "round $round: --matmul $matmul does not run here: skipped" >&2
      continue
    fi
    ours[$matmul]=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['tokens_per_s'])" "$json")
  done
  peft=$("$PEFT_BENCH" "$MODEL" "$THREADS" 6 2>/dev/null | sed -n 's/^peft adalora: \([0-9.]*\) tokens\/s.*/\1/p')
  line="{\"round\":$round,\"threads\":$THREADS,\"peft_tokens_per_s\":$peft"
  text="round $round: PEFT $peft tokens/s"
  for matmul in "${!ours[@]}"; do
    ratio=$(python3 -c "print(f'{${ours[$matmul]} / $peft:.3f}')")
    text="$text; skillpack --matmul $matmul ${ours[$matmul]} tokens/s = $ratio x PEFT"
    line="$line,\"skillpack_${matmul}_tokens_per_s\":${ours[$matmul]},\"ratio_${matmul}\":$ratio"
  done
  echo "$text" >&2
  echo "$line}"
  unset ours
done
